"""``plan --simulate``'s output: the plan's estimate of each phase next to the simulated peak."""
from __future__ import annotations

from ..load import plan as memplan
from .fakecard import ATTENTION, USED
from .run import Simulation


def attention_label(sim: Simulation) -> str:
    """The kernels the figures are for (the DiT's, then any other the encoders used)."""
    used = [sim.attention] + sorted(USED - {sim.attention})
    return ", ".join(f"{k} ({ATTENTION[k]})" for k in used)


def to_dict(sim: Simulation) -> dict:
    doc = sim.plan.to_dict()
    for phase in doc["phases"]:
        m = sim.phases[phase["name"]]
        phase.update(simulated_peak_bytes=m.peak_bytes, simulated_gpu_weight_bytes=m.weight_bytes,
                     simulated_flops=m.flops)
    doc.update(simulated=True, attention=attention_label(sim))
    return doc


def overruns(sim: Simulation) -> list[str]:
    """One line per phase whose measured peak exceeds the card's usable VRAM."""
    gib = 2**30
    return [f"phase {n}: simulated peak {sim.phases[n].peak_bytes / gib:.2f} GiB exceeds the "
            f"{sim.plan.vram_bytes / gib:.2f} GiB usable on this card (plan {sim.plan.mode}, its "
            f"estimate {sim.plan.phase(n).peak_bytes / gib:.2f} GiB)" for n in sim.over()]


def table(sim: Simulation, set_name: str, gpu_gb: float) -> str:
    from ..store.progress import table as text_table

    gib = 2**30
    rows = []
    for phase in sim.plan.phases:
        m = sim.phases[phase.name]
        rows.append((phase.name, f"{phase.peak_bytes / gib:.2f}", f"{m.peak_bytes / gib:.2f}",
                     f"{m.weight_bytes / gib:.2f}", f"{phase.peak_bytes / max(1, m.peak_bytes):.3f}",
                     f"{m.flops / 1e12:.1f}", "yes" if m.peak_bytes <= sim.plan.vram_bytes else "NO"))
    w, h, f = sim.plan.size
    head = (f"simulated {set_name} at {w}x{h}x{f} on a {gpu_gb:g} GB card: {sim.plan.summary()}\n"
            f"attention: {attention_label(sim)}; GiB of the card's memory, TFLOP of work")
    return head + "\n" + text_table(("phase", "estimate", "simulated", "weights", "est/sim", "TFLOP",
                                     "fits"), rows)


def plan_for_simulation(counted, gpu_gb: float, reserve_gb: float, size: tuple[int, int, int],
                        precision: str) -> memplan.Plan:
    from . import fullsize

    fullsize.check_shapes(counted)
    vram = memplan.usable_vram(int(gpu_gb * 2**30), int(reserve_gb * 2**30))
    return memplan.plan_for(counted, vram, *size, precision=precision)


def run_and_print(counted, set_name: str, gpu_gb: float, reserve_gb: float, size: tuple[int, int, int],
                  precision: str, steps: int, cfg: float, as_json: bool) -> bool:
    """``plan --simulate``: simulate, print the table (or JSON) and the overruns; True if it fits."""
    import json
    import sys

    from . import run

    sim = run.simulate(plan_for_simulation(counted, gpu_gb, reserve_gb, size, precision), precision,
                       steps=steps, cfg=cfg, scaled=counted.fp8_files, gguf=counted.dit_gguf or None)
    print(json.dumps(to_dict(sim), indent=1) if as_json else table(sim, set_name, gpu_gb))
    for line in overruns(sim):
        print(line, file=sys.stderr)
    return not sim.over()
