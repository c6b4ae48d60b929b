"""ComfyUI's model folders as users fill them: one model set per I2V DiT found there.

Like ComfyUI, every file below a kind's folder counts, subfolders included (``hf download
download ... split_files/diffusion_models/X --local-dir models/diffusion_models`` leaves
``diffusion_models/split_files/diffusion_models/X``), under any file name (renamed files,
Kijai's ``umt5-xxl-enc-bf16``). Each ``.safetensors``/``.gguf`` file is identified by its header
(store/identify.py); files that are none of the four parts are ignored.

Each I2V DiT is paired with the best umT5, CLIP vision and VAE whose sizes fit it (text width,
image width, latent channels), chosen by a stated, deterministic rule (``RULE``). The others
that fit stay listed in ``ModelSet.alternatives`` for the loader's explicit choices. The
tokenizer is ``tokenizers/umt5-xxl/`` when that folder exists, else it is built from the
``spiece_model`` tensor ComfyUI's umt5 files carry (layouts/spiece.py). Folders come per kind, so
ComfyUI's own folders and those of ``extra_model_paths.yaml`` combine into one set.
Torch-free: only headers are read, each once per version of the file (identify.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ..identify import SPIECE_TENSOR as SPIECE, Identity, identify_file, problem_of
from ..modelset import ModelSet

log = logging.getLogger(__name__)

LAYOUT = "comfy"
# kind (ComfyUI's folder_paths name) -> sub-folders of a models dir that hold it
SUBDIRS = {"diffusion_models": ("diffusion_models", "unet"), "text_encoders": ("text_encoders", "clip"),
           "clip_vision": ("clip_vision",), "vae": ("vae",)}
SUFFIXES = (".safetensors", ".gguf")
# component -> (identified kind, ComfyUI folder kind it is looked for in, the file users know)
PARTNERS = {"text_encoder": ("umt5", "text_encoders", "text_encoders/umt5_xxl_fp16.safetensors"),
            "image_encoder": ("clip_vision", "clip_vision", "clip_vision/clip_vision_h.safetensors"),
            "vae": ("vae", "vae", "vae/wan_2.1_vae.safetensors")}
# Preferred first: 16-bit, then fp32, then fp8 (scaled before plain).
PRECISION_ORDER = ("F16", "BF16", "F32", "F8_E4M3 scaled", "F8_E4M3")
RULE = ("partners that fit the DiT (text width, image width, latent channels); a umt5 whose "
        "tokenizer is at hand first; then precision fp16 > bf16 > fp32 > fp8_scaled > fp8; then the "
        "folder order (ComfyUI's own, then extra_model_paths.yaml) and the path's alphabetical order")
TOKENIZER = "tokenizers/umt5-xxl"
FIX = "run `python wanvolume.py preload --profile comfy-720p-bf16` (or comfy-720p-fp8)"


# A GGUF file whose header does not read: shown as a (damaged) DiT set, as a truncated
# safetensors DiT is, rather than silently left out.
DAMAGED_GGUF = Identity("dit", "gguf", "", i2v=True)


@dataclass(frozen=True)
class Found:
    path: Path
    what: Identity
    folder_kind: str      # the ComfyUI kind whose folder it lies in (as ComfyUI lists it)
    order: tuple          # (folder index, relative path): ties broken by where the file lies


def scan_comfy(models_dir: Path) -> list[ModelSet]:
    """The sets of one models dir laid out as ComfyUI's ``models/`` folder."""
    models_dir = Path(models_dir)
    kinds = {k: [models_dir / s for s in subs] for k, subs in SUBDIRS.items()}
    return scan_folders(kinds, root=models_dir)


def model_files(kinds: Mapping[str, Sequence[Path]]) -> list[Found]:
    """Every identified file below the kinds' folders (subfolders too), each file once."""
    seen: dict[Path, Found] = {}
    folders = [(kind, Path(d)) for kind in SUBDIRS for d in kinds.get(kind, ())]
    for i, (kind, folder) in enumerate(folders):
        if not folder.is_dir():
            continue
        for f in sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES and p.is_file()):
            if any(part.startswith(".") for part in f.relative_to(folder).parts):
                continue          # .cache/huggingface and other hidden folders hold no models
            key = f.resolve()
            what = identify_file(f) if key not in seen else None
            if what is None and f.suffix == ".gguf" and key not in seen and problem_of(f):
                what = DAMAGED_GGUF    # a GGUF is a DiT here: offer it so its damage is shown
            if what is not None:
                seen[key] = Found(f, what, kind, (i, f.relative_to(folder).as_posix()))
    return list(seen.values())


def scan_folders(kinds: Mapping[str, Sequence[Path]], root: Path | None = None) -> list[ModelSet]:
    """One set per I2V DiT found in any of the kinds' folders; partners from all of them.

    ``missing`` names the partners that no file fits.
    """
    found = model_files(kinds)
    dits = sorted((f for f in found if f.what.kind == "dit" and f.what.i2v
                   and f.folder_kind == "diffusion_models"), key=lambda f: f.order)
    tokenizer = _tokenizer_folder(kinds, root)
    names = _names(dits)
    sets = []
    for dit in dits:
        chosen, alternatives, missing = pair(dit, found, tokenizer is not None)
        components = {"transformer": dit.path, **chosen}
        if tokenizer is not None:
            components["tokenizer"] = tokenizer
        label = f"{dit.path.stem} (ComfyUI files: " + ", ".join(
            f"{PARTNERS[c][0]} {p.name}" for c, p in chosen.items()) + ")"
        sets.append(ModelSet(name=names[dit.path], layout=LAYOUT, root=root or dit.path.parent.parent,
                             components=components, missing=missing, alternatives=alternatives,
                             label=label + (f" missing {', '.join(missing)}" if missing else "")))
    return sets


def pair(dit: Found, found: Sequence[Found], have_tokenizer: bool, partners: Mapping = PARTNERS
         ) -> tuple[dict[str, Path], dict[str, dict[str, Path]], list[str]]:
    """The chosen partner per component (by ``RULE``), every fitting file per component by its
    name below its kind's folder as ComfyUI lists it (best first), and what is missing.
    ``partners``: the components wanted (Wan2.2's experts need no CLIP vision)."""
    chosen, alternatives, missing = {}, {}, []
    for comp, (kind, folder_kind, wanted) in partners.items():
        fits = sorted((f for f in found if f.what.kind == kind and f.folder_kind == folder_kind
                       and _fits(dit.what, f.what)), key=lambda f: _rank(f, have_tokenizer))
        alternatives[comp] = {f.order[1]: f.path for f in reversed(fits)}   # a name seen twice: the better file
        alternatives[comp] = dict(reversed(alternatives[comp].items()))
        if fits:
            chosen[comp] = fits[0].path
        else:
            missing.append(wanted)
    umt5 = next((f for f in found if f.path == chosen.get("text_encoder")), None)
    if umt5 is not None and not have_tokenizer and not umt5.what.spiece:
        missing.append(f"{TOKENIZER}/ (the umt5 file has no {SPIECE} tensor)")
    return chosen, alternatives, missing


def _fits(dit: Identity, part: Identity) -> bool:
    return all(dit.fit.get(k, v) == v for k, v in part.fit.items())


def _rank(f: Found, have_tokenizer: bool) -> tuple:
    precision = f.what.precision + (" scaled" if f.what.scaled else "")
    order = PRECISION_ORDER.index(precision) if precision in PRECISION_ORDER else len(PRECISION_ORDER)
    no_tokenizer = f.what.kind == "umt5" and not (have_tokenizer or f.what.spiece)
    return (no_tokenizer, order, f.order)


def _names(dits: list[Found]) -> dict[Path, str]:
    """``comfy/<file stem>``; DiTs sharing a stem (in two subfolders) are told apart by their
    path below the folder."""
    stems = [d.path.stem for d in dits]
    return {d.path: f"comfy/{d.path.stem}" if stems.count(d.path.stem) == 1
            else f"comfy/{d.order[1].rsplit('.', 1)[0]}" for d in dits}


def _tokenizer_folder(kinds: Mapping[str, Sequence[Path]], root: Path | None) -> Path | None:
    """``tokenizers/umt5-xxl`` next to the text encoders' folder (or in ``root``), if present."""
    bases = ([Path(root)] if root else []) + [Path(d).parent for d in kinds.get("text_encoders", ())]
    return next((b / TOKENIZER for b in bases if (b / TOKENIZER).is_dir()), None)


# ---- explicit choices (the loader's optional text_encoder / clip_vision / vae inputs) ----------

AUTO = "auto"
CHOICE_INPUTS = {"text_encoder": "text_encoder", "image_encoder": "clip_vision", "vae": "vae"}


def choice_options(sets: Sequence[ModelSet]) -> dict[str, list[str]]:
    """Per component: ``auto`` and every file name that fits some complete set's DiT."""
    out = {comp: [AUTO] for comp in CHOICE_INPUTS}
    for s in sets:
        for comp, names in s.alternatives.items():
            out[comp] += [n for n in names if n not in out[comp]]
    return out


def with_choices(found: ModelSet, choices: Mapping[str, str | None]) -> ModelSet:
    """``found`` with the chosen files instead of the automatic ones (``auto`` keeps them).

    A choice must be one of the files that fit this set's DiT (``found.alternatives``), named as
    the dropdown names it; anything else is an error naming the input, the value and the files
    that would do.
    """
    from dataclasses import replace

    from ...errors import InvalidInput

    picked = {c: n for c, n in choices.items() if n not in (None, "", AUTO)}
    if not picked:
        return found
    components = dict(found.components)
    for comp, name in picked.items():
        fits = found.alternatives.get(comp, {})
        if name not in fits:
            field = CHOICE_INPUTS.get(comp, comp)
            raise InvalidInput(
                f"no {field} file of that name fits the model set {found.name}"
                + ("" if found.layout == LAYOUT else f" (a {found.layout} set: its files are fixed)"),
                field=field, value=name,
                fix=f"pick {AUTO}" + (f" or one of: {', '.join(fits)}" if fits else ""))
        components[comp] = fits[name]
    missing = [m for m in found.missing if not m.startswith(TOKENIZER)]
    umt5 = identify_file(components["text_encoder"]) if "text_encoder" in components else None
    if umt5 is not None and "tokenizer" not in components and not umt5.spiece:
        missing.append(f"{TOKENIZER}/ (the umt5 file has no {SPIECE} tensor)")
    label = found.label.split(" (ComfyUI files", 1)[0] + " (ComfyUI files: " + ", ".join(
        f"{PARTNERS[c][0]} {components[c].name}" for c in PARTNERS if c in components) + "; chosen)"
    return replace(found, components=components, missing=missing, label=label)
