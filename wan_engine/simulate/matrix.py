"""Every card people rent x both video sizes x both kinds of DiT file, simulated (Wan2.1, and
Wan2.2's two experts).

The table the memory plan is checked against (tests/test_simulate.py, bench/simulate_matrix.py):
for each case the plan ``plan --gpu-gb N --size WxHxF`` makes, and the pack's own pipeline run at
full size on a simulated card of N GB (run.py). A scaled fp8 file whose plan keeps no fp8 storage
has its scales applied at load: in memory it is the bf16 set, so that case is the bf16 one.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..load import plan as memplan
from ..load import sizes
from . import report, run

CARDS_GB = (12, 16, 24, 32, 48, 80, 141)
SIZES = ((832, 480, 81), (1280, 720, 81))
SETS = {"bf16": "wan2.1-i2v-14b-720p", "fp8_scaled": "wan2.1-i2v-14b-720p-fp8-scaled",
        "wan2.2-bf16": "wan2.2-i2v-a14b", "wan2.2-fp8_scaled": "wan2.2-i2v-a14b-fp8-scaled",
        "gguf-q8_0": "wan2.1-i2v-14b-720p-q8_0", "gguf-q4_k": "wan2.1-i2v-14b-720p-q4_k"}
WAN21 = ("bf16", "fp8_scaled")
WAN22 = ("wan2.2-bf16", "wan2.2-fp8_scaled")
GGUF = ("gguf-q8_0", "gguf-q4_k")
RESERVE_GB = 0.4      # plan's default --reserve-gb
MARGIN = 0.10         # the plan's estimate: at most this much above the simulated peak, never below


@dataclass(frozen=True)
class Case:
    gb: int
    size: tuple[int, int, int]
    headers: str          # a key of SETS

    @property
    def label(self) -> str:
        return "{} GB {}x{}x{} {}".format(self.gb, *self.size, self.headers)

    def plan(self) -> memplan.Plan:
        return report.plan_for_simulation(sizes.reference(SETS[self.headers]), self.gb, RESERVE_GB,
                                          self.size, "bf16")

    @property
    def scaled(self) -> bool:
        return self.headers.endswith("fp8_scaled")

    def bf16(self) -> "Case":
        """The same card and size with the family's bf16 files."""
        return Case(self.gb, self.size, self.headers.replace("fp8_scaled", "bf16"))

    def same_as_bf16(self) -> bool:
        """A scaled fp8 set planned without fp8 storage runs as the bf16 set does."""
        return self.scaled and not self.plan().fp8_storage


def cases(headers=WAN21, sizes_=SIZES) -> list[Case]:
    return [Case(gb, size, h) for h in headers for size in sizes_ for gb in CARDS_GB]


def simulate(case: Case, replay: bool = True) -> run.Simulation:
    gguf = sizes.reference(SETS[case.headers]).dit_gguf or None
    return run.simulate(case.plan(), "bf16", replay=replay, scaled=case.scaled, gguf=gguf)


def disagreements(sim: run.Simulation) -> list[str]:
    """Each phase whose peak exceeds the card, or whose estimate is below the simulated peak or
    more than ``MARGIN`` above it."""
    out = [f"{n}: simulated {m.peak_bytes} B over the card's {sim.plan.vram_bytes} B"
           for n, m in sim.phases.items() if m.peak_bytes > sim.plan.vram_bytes]
    for phase in sim.plan.phases:
        m = sim.phases[phase.name]
        ratio = phase.peak_bytes / max(1, m.peak_bytes)
        if not 1.0 <= ratio <= 1 + MARGIN:
            out.append(f"{phase.name}: estimate {phase.peak_bytes} B is {ratio:.3f}x the simulated "
                       f"{m.peak_bytes} B (allowed 1.000-{1 + MARGIN:.3f})")
    return out


def row(case: Case, sim: run.Simulation) -> dict:
    gib = 2**30
    return {"case": case.label, "plan": sim.plan.summary(),
            "phases": {n: {"estimate_gib": round(sim.plan.phase(n).peak_bytes / gib, 2),
                           "simulated_gib": round(m.peak_bytes / gib, 2),
                           "weights_gib": round(m.weight_bytes / gib, 2),
                           "est_over_sim": round(sim.plan.phase(n).peak_bytes / max(1, m.peak_bytes), 3)}
                       for n, m in sim.phases.items()},
            "disagreements": disagreements(sim)}
