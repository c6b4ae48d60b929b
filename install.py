"""ComfyUI-Manager runs this after cloning, with ComfyUI's own Python: install the pack's requirements
into that interpreter, saying first what will change and leaving ComfyUI's core packages alone.

    python install.py              plan (pip's dry run), print it, then install exactly that plan
    python install.py --dry-run    print the plan, change nothing

The plan lists every package pip would install, upgrade or downgrade. A plan that downgrades one of
ComfyUI's core packages (the names in ComfyUI's requirements.txt next to this pack, else a built-in
list), upgrades one past what ComfyUI's requirements allow, or changes torch/torchvision/torchaudio at
all, is refused (exit 3, nothing changed) unless --allow-core or WANVOLUME_INSTALL_ALLOW_CORE=1.
pip's own settings apply (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX, ...).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version
except ImportError:  # every pip carries it
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.version import InvalidVersion, Version

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
ALLOW_ENV = "WANVOLUME_INSTALL_ALLOW_CORE"
TORCH = ("torch", "torchvision", "torchaudio")  # ComfyUI owns these: never changed without the flag
# used when no ComfyUI requirements.txt is found (ComfyUI 0.3.75's, less its own frontend packages)
DEFAULT_CORE = TORCH + ("numpy", "transformers", "tokenizers", "safetensors", "sentencepiece",
                        "aiohttp", "yarl", "pillow", "scipy", "einops", "torchsde", "kornia",
                        "spandrel", "pydantic", "av", "tqdm", "pyyaml", "psutil")
EXIT_REFUSED, EXIT_PIP = 3, 4
PREFIX = "[ComfyUI-WanVolume]"
log = logging.getLogger("wanvolume.install")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Change:
    name: str
    old: str | None  # None: not installed now
    new: str

    @property
    def kind(self) -> str:
        if self.old is None:
            return "install"
        try:
            return "downgrade" if Version(self.new) < Version(self.old) else "upgrade"
        except InvalidVersion:
            return "change"

    def line(self) -> str:
        return f"  {self.kind:9} {self.name} {self.old or '-'} -> {self.new}"


def comfy_requirements(comfy_dir: Path | None = None) -> Path | None:
    """ComfyUI's requirements.txt: COMFYUI_DIR, else the tree this pack sits in (custom_nodes/<pack>)."""
    candidates = [comfy_dir] if comfy_dir else []
    if os.environ.get("COMFYUI_DIR"):
        candidates.append(Path(os.environ["COMFYUI_DIR"]))
    if HERE.parent.name == "custom_nodes":
        candidates.append(HERE.parent.parent)
    for d in candidates:
        if (d / "requirements.txt").is_file() and (d / "main.py").is_file():
            return d / "requirements.txt"
    return None


def core_specs(req_file: Path | None) -> dict[str, Requirement | None]:
    """ComfyUI's core packages -> the requirement ComfyUI states for them (None: no such file)."""
    specs: dict[str, Requirement | None] = {}
    if req_file is None:
        specs = {n: None for n in DEFAULT_CORE}
    else:
        for raw in req_file.read_text(encoding="utf-8").splitlines():
            text = raw.split("#", 1)[0].strip()
            if not text or text.startswith("-"):
                continue
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            specs[_norm(req.name)] = req
    for name in TORCH:
        specs.setdefault(name, None)
    return specs


def plan(requirements: Path) -> list[Change]:
    """pip's dry run of the requirements in this interpreter: what it would install or change."""
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
           "--report", "-", "-r", str(requirements)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"pip's dry run failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                           f"{proc.stderr.strip()[-2000:]}\nnothing was installed; a pip >= 22.2 is "
                           f"needed for the dry run (`{sys.executable} -m pip install -U pip`)")
    report = json.loads(proc.stdout)
    changes = []
    for item in report.get("install", []):
        name, new = item["metadata"]["name"], item["metadata"]["version"]
        try:
            old: str | None = metadata.version(name)
        except metadata.PackageNotFoundError:
            old = None
        changes.append(Change(_norm(name), old, new))
    return sorted(changes, key=lambda c: c.name)


def refusals(changes: list[Change], core: dict[str, Requirement | None]) -> list[str]:
    """Why each change to a core package is refused (empty: the plan may go ahead)."""
    out = []
    for c in changes:
        if c.name not in core:
            continue
        req = core[c.name]
        if c.name in TORCH:
            why = "ComfyUI owns torch, torchvision and torchaudio"
        elif c.kind == "downgrade":
            why = "a downgrade of one of ComfyUI's core packages"
        elif req is not None and req.specifier and not req.specifier.contains(c.new, prereleases=True):
            why = f"ComfyUI's requirements.txt asks for {req}"
        else:
            continue
        out.append(f"{c.name}: {c.kind} {c.old or '(not installed)'} -> {c.new} refused ({why}); "
                   f"install it yourself, or run again with --allow-core or {ALLOW_ENV}=1 to allow it")
    return out


def install(changes: list[Change]) -> int:
    """Install exactly the planned versions (their dependencies are in the plan already)."""
    pins = [f"{c.name}=={c.new}" for c in changes]
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", *pins]
    log.info("%s %s", PREFIX, " ".join(cmd))
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    ap.add_argument("--allow-core", action="store_true",
                    help=f"allow changes to ComfyUI's core packages (or {ALLOW_ENV}=1)")
    args = ap.parse_args(argv)
    allow = args.allow_core or os.environ.get(ALLOW_ENV, "") not in ("", "0")
    comfy_req = comfy_requirements()
    log.info("%s interpreter: %s", PREFIX, sys.executable)
    log.info("%s ComfyUI's core packages from: %s", PREFIX, comfy_req or "(no ComfyUI found; built-in list)")
    try:
        changes = plan(REQUIREMENTS)
    except RuntimeError as e:
        log.error("%s %s", PREFIX, e)
        return EXIT_PIP
    if not changes:
        log.info("%s nothing to install: every requirement is already met", PREFIX)
        return 0
    log.info("%s plan (pip install --dry-run -r %s):\n%s", PREFIX, REQUIREMENTS.name,
             "\n".join(c.line() for c in changes))
    refused = refusals(changes, core_specs(comfy_req))
    for r in refused:
        log.log(logging.WARNING if allow else logging.ERROR, "%s %s", PREFIX, r)
    if refused and not allow:
        log.error("%s refused: nothing was installed", PREFIX)
        return EXIT_REFUSED
    if args.dry_run:
        log.info("%s dry run: nothing was changed", PREFIX)
        return 0
    return install(changes)


if __name__ == "__main__":
    sys.exit(main())
