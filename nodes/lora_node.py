"""WanVolumeLoraApply: add a LoRA (the kissing LoRA first) to the pipe; chain to stack."""
from __future__ import annotations

from comfy_api.latest import io

from . import run_record, validation
from .common import CATEGORY, PipeHandle, WanPipe, extra_lora_dirs
from ..wan_engine.lora import apply as lora_engine
from ..wan_engine.lora import experts as lora_experts
from ..wan_engine.store import damage, headers, find as volume
from ..wan_engine import rules
from ..wan_engine.errors import InvalidInput

UI_KEY = "wanvolume_lora"      # the node output's ui key read by web/js/lora_report.js
NO_LORAS = "(no LoRA found: put .safetensors in <models>/loras/)"
def lora_options() -> list[str]:
    """LoRA files whose safetensors header fits the file; damaged ones are logged, not offered."""
    names = []
    for lf in volume.find_loras(extra_lora_dirs()):
        try:
            headers.safetensors_files("lora", lf.name, [lf.path], fix=damage.lora_fix(lf.name))
        except InvalidInput as exc:
            validation.warn_once(f"LoRA left out of the list: {exc}")
            continue
        names.append(lf.name)
    # The kissing LoRA first: it is what the shipped workflows use.
    names.sort(key=lambda n: (0 if "kiss" in n.lower() else 1, n))
    return names or [NO_LORAS]


class WanVolumeLoraApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanVolumeLoraApply",
            display_name="Wan LoRA Apply (volume)",
            category=CATEGORY,
            description=("Applies a Wan2.1 LoRA to the pipe at a strength. Chain several to stack them. "
                         "Changing only the strength reloads neither the base model nor the LoRA file."),
            inputs=[
                WanPipe.Input("pipe", tooltip="From the loader or another LoRA node."),
                io.Combo.Input("lora", options=lora_options(),
                               tooltip="LoRA files in <models>/loras/, LoRA folders on the volume "
                                       "(e.g. <models>/kissing-lora/) and ComfyUI's loras folder."),
                io.Float.Input("strength", default=1.0, min=lora_engine.STRENGTH_MIN, max=lora_engine.STRENGTH_MAX,
                               step=0.05, tooltip="1.0 is the kissing LoRA card's setting; 0 switches "
                                                  "the LoRA off exactly; negative values invert it."),
                io.Boolean.Input("fuse_lora", default=False, optional=True,
                                 tooltip="Merge the active LoRAs into the model's weights for the run: "
                                         "faster steps; the output differs from unfused only by float "
                                         "rounding. Strength changes unfuse first, so nothing is "
                                         "reloaded. On in any LoRA node of the chain fuses the whole "
                                         "chain. Ignored with fp8 storage."),
                io.Combo.Input("expert", options=list(lora_experts.EXPERT_CHOICES), default="both", optional=True,
                               tooltip="Wan2.2 sets (two experts): which expert gets this file. "
                                       + "; ".join(f"{k}: {v}" for k, v in lora_experts.EXPERT_HELP.items())
                                       + ". For a pair (high and low file) chain two LoRA nodes. A Wan2.1 set "
                                         "has one DiT: both."),
            ],
            outputs=[WanPipe.Output("pipe_out", display_name="pipe", tooltip="The pipe with this LoRA added.")],
        )

    @classmethod
    def validate_inputs(cls, input_types: dict | None = None, **values) -> bool:
        """The LoRA file first (naming it when damaged), then every input's own rule."""
        known = validation.given_values(cls, values, input_types)
        if "lora" in known:
            rules.text("lora", known["lora"])
            found = volume.get_lora(known["lora"], extra_lora_dirs())
            headers.safetensors_files("lora", known["lora"], [found.path], fix=damage.lora_fix(known["lora"]))
        validation.check_schema(cls, known)
        return True

    @classmethod
    @validation.checked
    def execute(cls, pipe: PipeHandle, lora: str, strength: float, fuse_lora: bool = False,
                expert: str = "both") -> io.NodeOutput:
        lora_engine.check_strength(strength)
        two = pipe.model_set.two_experts
        expert = lora_experts.check_expert(expert, two)
        found = volume.get_lora(lora, extra_lora_dirs())
        with run_record.current().phase("lora"):   # the run report: reading and matching the LoRA
            loaded = pipe.load()
            if two:
                reports = lora_experts.ensure(loaded, found.path, expert)
            else:
                lora_engine.ensure_adapter(loaded, found.path)   # logs the warning for a partial match
                reports = {"": lora_engine.report_for(loaded, found.path)}
        out = pipe.with_lora(lora_engine.LoraUse(str(found.path), float(strength), bool(fuse_lora), expert))
        shown = {role: r for role, r in reports.items() if r is not None}
        return io.NodeOutput(out, ui=report_ui(lora, shown) if shown else None)


def report_ui(name: str, reports: dict[str, lora_engine.LoraReport]) -> dict:
    """How the LoRA matched, for web/js/lora_report.js: sent with ``executed`` and kept in /history;
    one entry per expert on a Wan2.2 set (``expert``: "high" / "low"), one for a Wan2.1 set.

    Keys avoid ``filename``/``type``/``format``, which the frontend's queue panel reads as a file.
    """
    return {UI_KEY: [{"lora": name, "status": r.status, "matched": r.matched,
                      "total": r.total, "unmatched": r.unmatched, "skipped": len(r.skipped),
                      "deltas": r.patched, "lora_format": r.format,
                      "summary": (f"{role}-noise expert: " if role else "") + r.summary(),
                      **({"expert": role, "no_target": len(r.no_target)} if role else {})}
                     for role, r in reports.items()]}

