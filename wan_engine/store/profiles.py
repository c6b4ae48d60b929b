"""Ready sets ("profiles") that `wanvolume.py preload --profile NAME` fetches.

A profile is a list of sources. Each source is one Hub repo at one revision, the files to take
(include globs) and where they land on the volume (source prefix -> destination folder). The
destinations below are the volume layout the loader scans; do not change them lightly.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from ..errors import WanVolumeError

COMFY_REPO = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
DIFFUSERS_720P = "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"
LORA_REPO = "Remade-AI/kissing"
# lightx2v's Wan2.1 I2V step/CFG-distill LoRAs (4 steps, cfg 1): their own repos keep the LoRA under
# loras/ with the same file name for 480P and 720P; Kijai's mirror has 480P files at ranks 8-256
# (no 720P I2V LoRA there: the community uses the 480P file at 720p too).
DISTILL_REPO = "lightx2v/Wan2.1-I2V-14B-{res}-StepDistill-CfgDistill-Lightx2v"
DISTILL_FILE = "loras/Wan21_I2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors"
DISTILL_MIRROR = "Kijai/WanVideo_comfy"
DISTILL_MIRROR_FILE = "Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank{rank}_bf16.safetensors"
DISTILL_RANKS = (32, 64, 128, 256)
# What `status` and `check` suggest when nothing is ready: a model set, the kissing LoRA and the
# distill LoRA the fast 720p workflow needs (the shipped 720p workflows then run: store/workflows.py).
RECOMMENDED = ("comfy-720p-bf16", "kissing-lora", "distill-lora-720p")


@dataclass(frozen=True)
class Source:
    """One repo's contribution to a profile."""

    repo: str
    revision: str = "main"
    include: tuple[str, ...] = ("*",)
    # (prefix in the repo, folder under <models>); the first matching prefix wins; "" matches all.
    mapping: tuple[tuple[str, str], ...] = ()

    def wants(self, repo_path: str) -> bool:
        return any(fnmatch.fnmatch(repo_path, g) for g in self.include)

    def destination(self, repo_path: str) -> str:
        """The file's path relative to <models>."""
        for prefix, dest in self.mapping:
            if repo_path.startswith(prefix):
                rest = repo_path[len(prefix):]
                return f"{dest.rstrip('/')}/{rest}" if dest else rest
        return f"{self.repo.split('/')[-1]}/{repo_path}"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    approx_gb: float
    sources: tuple[Source, ...] = field(default_factory=tuple)
    kind: str = "model_set"        # "model_set" | "lora"

    def provides(self) -> tuple[str, ...]:
        """Where its files land, as globs relative to <models> ("kissing-lora/*.safetensors")."""
        return tuple(src.destination(g) for src in self.sources for g in src.include)

    def fetches(self, relpath: str) -> bool:
        """Whether preloading this profile puts a file at ``relpath`` (relative to <models>)."""
        return any(fnmatch.fnmatchcase(relpath, g) for g in self.provides())


def repo_source(repo: str, revision: str = "main", include: tuple[str, ...] = ("*",)) -> Source:
    """`--repo OWNER/NAME` lands in <models>/NAME (the original setup guide's layout)."""
    return Source(repo, revision, include, (("", repo.split("/")[-1]),))


def _comfy(res: str, dit: str, umt5: str, gb: float, label: str) -> Profile:
    split = "split_files/"
    files = (f"{split}diffusion_models/wan2.1_i2v_{res}_14B_{dit}.safetensors",
             f"{split}text_encoders/{umt5}.safetensors",
             f"{split}clip_vision/clip_vision_h.safetensors",
             f"{split}vae/wan_2.1_vae.safetensors")
    mapping = tuple((f"{split}{d}/", d) for d in ("diffusion_models", "text_encoders",
                                                 "clip_vision", "vae"))
    tokenizer = Source(DIFFUSERS_720P, "main", ("tokenizer/*",),
                       (("tokenizer/", "tokenizers/umt5-xxl"),))
    return Profile(f"comfy-{res}-{label}",
                   f"Comfy-Org single files, {res.upper()} {label}: DiT, umt5, clip_vision_h, VAE, "
                   "umt5 tokenizer", gb, (Source(COMFY_REPO, "main", files, mapping), tokenizer))


def _build() -> dict[str, Profile]:
    out: list[Profile] = []
    for res in ("720p", "480p"):
        original = f"Wan-AI/Wan2.1-I2V-14B-{res.upper()}"
        out.append(Profile(f"wan21-i2v-{res}", f"{original}, original Wan layout", 82.0,
                           (repo_source(original),)))
        out.append(Profile(f"wan21-i2v-{res}-diffusers", f"{original}-Diffusers, diffusers layout",
                           90.0, (repo_source(f"{original}-Diffusers"),)))
        out.append(_comfy(res, "bf16", "umt5_xxl_fp16", 45.7, "bf16"))
        out.append(_comfy(res, "fp8_e4m3fn", "umt5_xxl_fp8_e4m3fn_scaled", 24.6, "fp8"))
    out.extend(_distill_profiles())
    out.extend(_wan22_profiles())
    out.append(Profile("kissing-lora", "Remade-AI/kissing LoRA (trained on the 480P base)", 0.36,
                       (Source(LORA_REPO, "main", ("*.safetensors",), (("", "kissing-lora"),)),),
                       kind="lora"))
    return {p.name: p for p in out}


def distill_lora_name(res: str) -> str:
    """The LoRA dropdown name of the rank-64 distill LoRA that `distill-lora-<res>` fetches."""
    return f"distill-lora-{res}/{DISTILL_FILE.split('/')[-1]}"


def _distill_profiles() -> list[Profile]:
    """lightx2v distill LoRAs: rank 64 from lightx2v per resolution; other ranks from the mirror."""
    out = []
    for res in ("480p", "720p"):
        repo = DISTILL_REPO.format(res=res.upper())
        out.append(Profile(f"distill-lora-{res}",
                           f"lightx2v 4-step/no-CFG distill LoRA for Wan2.1 I2V {res.upper()}, rank 64 "
                           f"({repo}; the fast workflows)", 0.74,
                           (Source(repo, "main", (DISTILL_FILE,), (("loras/", f"distill-lora-{res}"),)),),
                           kind="lora"))
    for rank in DISTILL_RANKS:
        path = DISTILL_MIRROR_FILE.format(rank=rank)
        out.append(Profile(f"distill-lora-480p-rank{rank}",
                           f"lightx2v distill LoRA, 480P, rank {rank}, bf16 ({DISTILL_MIRROR} mirror; "
                           "also used at 720p)", round(0.74 * rank / 64, 2),
                           (Source(DISTILL_MIRROR, "main", (path,), (("Lightx2v/", "loras/lightx2v"),)),),
                           kind="lora"))
    return out


WAN22_REPO = "Wan-AI/Wan2.2-I2V-A14B"
WAN22_COMFY_REPO = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
LIGHTNING_REPO = "lightx2v/Wan2.2-Lightning"
LIGHTNING_DIR = "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1"
LIGHTNING_COMFY = "split_files/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_{role}_noise.safetensors"


def lightning_lora_name(role: str) -> str:
    """The LoRA dropdown name of the Lightning LoRA for ``role`` ("high" / "low")."""
    return f"wan22-lightning/{LIGHTNING_DIR}/{role}_noise_model.safetensors"


def _wan22_profiles() -> list[Profile]:
    """Wan2.2 I2V A14B (two experts): original, diffusers, Comfy-Org files; the Lightning LoRAs."""
    split = "split_files/"
    out = [Profile("wan22-i2v-a14b", f"{WAN22_REPO}, original layout (two fp32 experts, ~57 GB each)",
                   126.0, (repo_source(WAN22_REPO),)),
           Profile("wan22-i2v-a14b-diffusers", f"{WAN22_REPO}-Diffusers, diffusers layout (transformer/ "
                   "= high noise, transformer_2/ = low noise)", 137.0, (repo_source(f"{WAN22_REPO}-Diffusers"),))]
    for label, dit, gb in (("fp16", "fp16", 64.0), ("fp8", "fp8_scaled", 35.5)):
        files = tuple(f"{split}diffusion_models/wan2.2_i2v_{r}_noise_14B_{dit}.safetensors" for r in ("high", "low"))
        files += (f"{split}text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", f"{split}vae/wan_2.1_vae.safetensors")
        mapping = tuple((f"{split}{d}/", d) for d in ("diffusion_models", "text_encoders", "vae"))
        tokenizer = Source(DIFFUSERS_720P, "main", ("tokenizer/*",), (("tokenizer/", "tokenizers/umt5-xxl"),))
        out.append(Profile(f"wan22-comfy-{label}", f"Comfy-Org Wan2.2 I2V A14B single files, {label}: high and "
                           "low noise experts, umt5 fp8 scaled, Wan2.1 VAE, umt5 tokenizer", gb,
                           (Source(WAN22_COMFY_REPO, "main", files, mapping), tokenizer)))
    lightning = tuple(f"{LIGHTNING_DIR}/{r}_noise_model.safetensors" for r in ("high", "low"))
    out.append(Profile("wan22-lightning-lora", f"lightx2v Lightning 4-step LoRAs for Wan2.2 I2V A14B, rank 64, "
                       f"one per expert ({LIGHTNING_REPO}; the fast Wan2.2 workflow)", 1.2,
                       (Source(LIGHTNING_REPO, "main", lightning, (("", "wan22-lightning"),)),), kind="lora"))
    comfy = tuple(LIGHTNING_COMFY.format(role=r) for r in ("high", "low"))
    out.append(Profile("wan22-lightning-lora-comfy", f"the same Lightning LoRAs as Comfy-Org renamed them "
                       f"({WAN22_COMFY_REPO}, into loras/)", 1.2,
                       (Source(WAN22_COMFY_REPO, "main", comfy, ((f"{split}loras/", "loras"),)),), kind="lora"))
    return out


PROFILES: dict[str, Profile] = _build()


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise WanVolumeError(f"unknown profile; known profiles: {', '.join(PROFILES)}",
                             field="--profile", value=name,
                             fix="pick one of the names listed, or use --repo OWNER/NAME") from None


def preload_command(profile: str, models_dir: object | None = None) -> str:
    """The exact command that fetches a profile."""
    tail = f" --models-dir {models_dir}" if models_dir else ""
    return f"python wanvolume.py preload --profile {profile}{tail}"


def profile_for_file(relpath: str, kind: str | None = None) -> Profile | None:
    """The profile that fetches exactly the file ``relpath`` (relative to <models>), if any.

    Matched by the file the profile provides, never by kind alone: a workflow that asks for the
    kissing LoRA must not be told to fetch the distill LoRA."""
    relpath = relpath.replace("\\", "/").lstrip("/")
    return next((p for p in PROFILES.values()
                 if (kind is None or p.kind == kind) and p.fetches(relpath)), None)


def fetch_hint(relpath: str, models_dir: object | None = None, kind: str | None = None) -> str:
    """How to get the file ``relpath``: the preload command of the profile that provides it, or
    the folder to put it in when no profile does."""
    profile = profile_for_file(relpath, kind)
    if profile is not None:
        return preload_command(profile.name, models_dir)
    folder, _, name = relpath.replace("\\", "/").rpartition("/")
    where = f"{models_dir or '<models>'}/{folder}/" if folder else f"{models_dir or '<models>'}/"
    return f"put {name} in {where} (no profile fetches it)"
