"""The engine's layers, held by reading every import (lazy ones inside functions included).

volume (store) -> load -> lora -> sample -> video: a module imports only from its own layer or the
ones below it; the store imports no torch; the engine imports no ComfyUI; the nodes reach the engine
through its public names only.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINE = REPO / "wan_engine"
# rank of each part of the engine: a module may import from parts of its rank or lower
RANKS = {"errors": 0, "rules": 0, "store": 1, "load": 2, "lora": 3, "sample": 4, "video": 5,
         "report": 5, "prices": 5, "simulate": 5, "tiny_model": 6, "tiny_wan22": 6}
COMFY = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "server", "execution",
         "nodes", "latent_preview", "node_helpers"}
HEAVY = {"torch", "torchvision", "diffusers", "transformers", "accelerate", "peft", "numpy", "safetensors.torch"}


def _modules() -> list[Path]:
    return sorted(p for p in ENGINE.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, absolute, resolved the way Python resolves relative imports."""
    name = _name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names]   # `from pkg import submodule`
    return out


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "wan_engine" and len(parts) > 1 else None


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ENGINE)))
def test_no_module_imports_from_a_layer_above_it(path):
    own = _part(_name(path))
    if own is None:   # wan_engine/__init__.py
        return
    for imp in _imports(path):
        other = _part(imp)
        if other in RANKS:
            assert RANKS[other] <= RANKS[own], f"{_name(path)} ({own}) imports {imp} ({other}), a layer above"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ENGINE)))
def test_the_engine_imports_no_comfyui(path):
    for imp in _imports(path):
        assert imp.split(".")[0] not in COMFY, f"{_name(path)} imports ComfyUI's {imp}"


def test_the_store_imports_no_torch():
    for path in (ENGINE / "store").rglob("*.py"):
        for imp in _imports(path):
            assert imp not in HEAVY and imp.split(".")[0] not in HEAVY - {"safetensors.torch"}, \
                f"{_name(path)} imports {imp}: the store stays torch-free so `check` starts fast"


def test_the_store_runs_without_torch_loaded():
    code = ("import pkgutil, importlib, sys, wan_engine.store as s\n"
            "for m in pkgutil.walk_packages(s.__path__, 'wan_engine.store.'): importlib.import_module(m.name)\n"
            "import wanvolume\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _engine_aliases(tree: ast.AST) -> set[str]:
    """Names a nodes module binds to engine modules (``from ..wan_engine.store import find as volume``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wan_engine"):
            names |= {a.asname or a.name for a in node.names}
    return names


@pytest.mark.parametrize("path", sorted((REPO / "nodes").glob("*.py")), ids=lambda p: p.name)
def test_nodes_use_the_engines_public_names_only(path):
    tree = ast.parse(path.read_text())
    aliases = _engine_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wan_engine"):
            assert node.level >= 2, f"{path.name}: import the engine relatively (the pack is a package in ComfyUI)"
            for a in node.names:
                assert not a.name.startswith("_"), f"{path.name} imports the engine's private {a.name}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            assert not node.attr.startswith("_"), f"{path.name} uses the engine's private {node.value.id}.{node.attr}"


def test_the_engine_never_imports_the_nodes():
    for path in _modules():
        for imp in _imports(path):
            assert not imp.startswith("nodes"), f"{_name(path)} imports {imp}"
