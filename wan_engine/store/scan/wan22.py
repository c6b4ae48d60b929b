"""Wan2.2 I2V A14B sets: two experts (high noise, low noise), no CLIP vision, same VAE and umT5.

An expert is a Wan DiT with 36 input channels and no CLIP image branch (told from its header:
``identify``). Which file is the high-noise and which the low-noise expert cannot be told from
the shapes: it comes from the folder and file names, by ``ROLE_RULE``; a name that says neither
is reported as ambiguous, never guessed.

- ``wan22`` (Wan-AI/Wan2.2-I2V-A14B): ``<set>/high_noise_model/`` and ``<set>/low_noise_model/``
  (config.json + shards each), ``models_t5_umt5-xxl-enc-bf16.pth``, ``Wan2.1_VAE.pth``,
  ``google/umt5-xxl/``.
- ``wan22-comfy``: expert files anywhere below ComfyUI's ``diffusion_models``/``unet`` folders
  (Comfy-Org ``wan2.2_i2v_{high,low}_noise_14B_*``, Kijai ``Wan2_2-I2V-A14B-{HIGH,LOW}_*``,
  QuantStack ``{HighNoise,LowNoise}/...-{HighNoise,LowNoise}-<Q>.gguf``); two files are a pair
  when their paths are equal once the role word is taken out. Partners (umT5, VAE, tokenizer) as
  for Wan2.1's ComfyUI files (comfy_files.pair).
- The diffusers layout (``transformer/`` + ``transformer_2/``) is scan/diffusers_folder.py's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import profiles
from ..identify import Identity
from ..modelset import ModelSet
from . import comfy_files, wan_original

LAYOUT_WAN = "wan22"
LAYOUT_COMFY = "wan22-comfy"
EXPERT_DIRS = {"transformer": "high_noise_model", "transformer_2": "low_noise_model"}
ROLE = {"transformer": "high", "transformer_2": "low"}
ROLE_RULE = ("the expert's role comes from its folder and file name: 'high' / 'low' as a word, "
             "alone or followed by 'noise' (high_noise, HIGH, HighNoise; low_noise, LOW, LowNoise), "
             "any case; a high and a low file pair when their paths are the same apart from that word")
_ROLE_WORD = re.compile(r"(?<![a-z])(high|low)(?:[_\- ]?noise)?(?![a-z])", re.IGNORECASE)
IN_DIM = 36        # 16 noise + 4 mask + 16 image-latent channels
PARTNERS = {k: v for k, v in comfy_files.PARTNERS.items() if k != "image_encoder"}
COMFY_FIX = "run `python wanvolume.py preload --profile wan22-comfy-fp8` (or wan22-comfy-fp16)"
WAN_FIX = "run `python wanvolume.py preload --profile wan22-i2v-a14b`"


def is_expert(what: Identity) -> bool:
    """A Wan2.2 A14B I2V expert: a DiT with 36 input channels and no CLIP image branch."""
    return what.kind == "dit" and not what.i2v and what.fit.get("in_dim") == IN_DIM


def role_of(relpath: str) -> str | None:
    """"high", "low", or None when the path names neither or both (``ROLE_RULE``)."""
    roles = {m.group(1).lower() for m in _ROLE_WORD.finditer(relpath)}
    return roles.pop() if len(roles) == 1 else None


def pair_key(relpath: str) -> str:
    """The path with the role word taken out (what the two experts of one set share)."""
    return _ROLE_WORD.sub("{}", relpath).lower()


# ---- the original Wan-AI layout -------------------------------------------------------------

def scan_wan22(models_dir: Path) -> list[ModelSet]:
    """Folders directly under ``models_dir`` holding ``high_noise_model/`` or ``low_noise_model/``."""
    sets = []
    for root in sorted(p for p in Path(models_dir).iterdir() if p.is_dir()) if Path(models_dir).is_dir() else []:
        if not any(wan_original.read_config(root / d) for d in EXPERT_DIRS.values()):
            continue
        comps, missing = {}, []
        for comp, sub in EXPERT_DIRS.items():
            folder = root / sub
            shards, absent = wan_original.dit_shards(folder) if folder.is_dir() else ([], [])
            comps[comp] = folder / wan_original.INDEX if (folder / wan_original.INDEX).is_file() \
                else folder / wan_original.SINGLE
            if not folder.is_dir() or wan_original.read_config(folder) is None:
                missing.append(f"{sub}/ (the {ROLE[comp]}-noise expert; fetch: "
                               f"{profiles.preload_command('wan22-i2v-a14b', models_dir)})")
            else:
                missing += [f"{sub}/{a}" for a in absent]
        for comp in ("text_encoder", "vae", "tokenizer"):
            comps[comp] = root / wan_original.FILES[comp]
            if not comps[comp].exists():
                missing.append(wan_original.FILES[comp])
        label = f"{root.name} (original Wan2.2 layout: high_noise_model/ + low_noise_model/)"
        sets.append(ModelSet(name=root.name, layout=LAYOUT_WAN, root=root, components=comps,
                             missing=missing,
                             label=label + (f" missing {', '.join(missing)}" if missing else "")))
    return sets


# ---- ComfyUI files -----------------------------------------------------------------------------

@dataclass
class _Group:
    key: str
    high: list[comfy_files.Found]
    low: list[comfy_files.Found]


def scan_wan22_comfy(models_dir: Path) -> list[ModelSet]:
    """Wan2.2 expert pairs in one models dir laid out as ComfyUI's ``models/`` folder."""
    models_dir = Path(models_dir)
    kinds = {k: [models_dir / s for s in subs] for k, subs in comfy_files.SUBDIRS.items()}
    found = comfy_files.model_files(kinds)
    experts = sorted((f for f in found if f.folder_kind == "diffusion_models" and is_expert(f.what)),
                     key=lambda f: f.order)
    tokenizer = comfy_files._tokenizer_folder(kinds, models_dir)
    groups: dict[str, _Group] = {}
    sets = []
    for f in experts:
        role = role_of(f.order[1])
        if role is None:
            sets.append(_ambiguous(f, models_dir))
            continue
        g = groups.setdefault(pair_key(f.order[1]), _Group(pair_key(f.order[1]), [], []))
        (g.high if role == "high" else g.low).append(f)
    pairs = [_comfy_set(g, found, tokenizer, models_dir) for g in groups.values()]
    names = [p.name for p in pairs]
    for g, p in zip(groups.values(), pairs):
        if names.count(p.name) > 1:
            p.name = _set_name((g.high or g.low)[0], whole_path=True)
    return sets + pairs


def _set_name(f: comfy_files.Found, whole_path: bool = False) -> str:
    """``comfy/<stem with {high,low} for the role word>`` (the path below the folder when two
    pairs share a stem)."""
    stem = f.order[1].rsplit(".", 1)[0] if whole_path else f.path.stem
    return "comfy/" + _ROLE_WORD.sub(lambda m: "{high,low}" + m.group(0)[len(m.group(1)):], stem)


def _counterpart(f: comfy_files.Found) -> str:
    """The file name the missing partner of ``f`` would have (role word swapped)."""
    def swap(m: re.Match) -> str:
        word = m.group(0)
        new = "low" if m.group(1).lower() == "high" else "high"
        new = new.upper() if m.group(1).isupper() else new.capitalize() if m.group(1)[0].isupper() else new
        return new + word[len(m.group(1)):]
    return _ROLE_WORD.sub(swap, f.order[1])


def _comfy_set(g: _Group, found, tokenizer: Path | None, models_dir: Path) -> ModelSet:
    first = (g.high or g.low)[0]
    components, missing = {}, []
    for comp, files in (("transformer", g.high), ("transformer_2", g.low)):
        if files:
            components[comp] = files[0].path
        else:
            want = f"diffusion_models/{_counterpart(first)}"
            missing.append(f"{want} (the {ROLE[comp]}-noise expert; fetch: "
                           f"{profiles.fetch_hint(want, models_dir)})")
    chosen, alternatives, lacking = comfy_files.pair(first, found, tokenizer is not None, PARTNERS)
    components.update(chosen)
    if tokenizer is not None:
        components["tokenizer"] = tokenizer
    missing += lacking
    label = (f"{_set_name(first).removeprefix('comfy/')} (Wan2.2 ComfyUI files: high "
             f"{components['transformer'].name if 'transformer' in components else '-'}, low "
             f"{components['transformer_2'].name if 'transformer_2' in components else '-'}, "
             + ", ".join(f"{PARTNERS[c][0]} {p.name}" for c, p in chosen.items()) + ")")
    return ModelSet(name=_set_name(first), layout=LAYOUT_COMFY, root=models_dir, components=components,
                    missing=missing, alternatives=alternatives,
                    label=label + (f" missing {', '.join(missing)}" if missing else ""))


def _ambiguous(f: comfy_files.Found, models_dir: Path) -> ModelSet:
    why = (f"cannot tell whether {f.order[1]} is the high- or the low-noise expert from its name "
           f"(rename it with high_noise or low_noise in the name, as the Hub's files have it)")
    return ModelSet(name="comfy/" + f.order[1].rsplit(".", 1)[0], layout=LAYOUT_COMFY, root=models_dir,
                    components={"transformer": f.path}, missing=[why],
                    label=f"{f.path.name} (a Wan2.2 expert, role unknown: {why})")


# ---- checks the loader runs at /prompt (headers and one small tensor; no hashing) -------------

def _patch_bytes(path: Path) -> bytes | None:
    """The raw bytes of the expert's ``patch_embedding.weight`` (safetensors, any prefix, any shard)."""
    from .. import stfile

    try:
        files = [f for f in stfile.weight_files(path) if f.suffix == ".safetensors" and f.is_file()]
    except stfile.HeaderError:
        return None
    for f in files:
        header = stfile.read_header(f)
        for name, t in header.tensors.items():
            if name.endswith("patch_embedding.weight"):
                with open(f, "rb") as fh:
                    fh.seek(t.start)
                    return fh.read(t.end - t.start)
    return None


def expert_problem(found: ModelSet) -> tuple[str, str, str] | None:
    """(file, problem, fix) when a Wan2.2 set's low-noise expert is damaged, not a Wan DiT, or the
    same weights as the high-noise one (one expert twice: two high experts, or two low ones)."""
    from .. import headers, stfile

    if not found.two_experts:
        return None
    fix = WAN_FIX if found.layout == LAYOUT_WAN else COMFY_FIX
    high, low = Path(found.components["transformer"]), Path(found.components["transformer_2"])
    try:
        files = [p for p in stfile.weight_files(low) if p.exists()]
    except stfile.HeaderError:
        files = []              # an unreadable index: the set's damage check names it
    bad = headers.damaged_file(files)
    if bad:
        return str(bad[0]), f"damaged: {bad[1]}", fix
    wrong = headers.not_wan_dit(files)
    if wrong:
        return str(wrong[0]), wrong[1], headers.WAN_DIT_FIX
    a, b = _patch_bytes(high), _patch_bytes(low)
    if a is not None and a == b:
        return (str(low), f"the same weights as the high-noise expert {high.name} (one expert twice: "
                "the set needs one high-noise and one low-noise expert)",
                f"put the low-noise expert there ({fix.removeprefix('run ')})")
    return None
