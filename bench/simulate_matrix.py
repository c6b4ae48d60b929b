"""Every card x size x DiT file kind on the simulated card: the plan's estimate per phase next to
the simulated peak (wan_engine/simulate/matrix.py), and the cases where they disagree.

    .venv/bin/python bench/simulate_matrix.py            # Wan2.1: 28 cases, 17 run, ~5 min of CPU
    .venv/bin/python bench/simulate_matrix.py --wan22    # Wan2.2 A14B (two experts), bf16 and fp8_scaled
    .venv/bin/python bench/simulate_matrix.py --gguf     # a GGUF DiT, Q8_0 and Q4_K
    .venv/bin/python bench/simulate_matrix.py --all      # all of them
    .venv/bin/python bench/simulate_matrix.py --json     # the rows as JSON
    .venv/bin/python bench/simulate_matrix.py 24 832x480x81   # only these cards / sizes

A scaled fp8 case whose plan keeps no fp8 storage is the bf16 case (its scales are applied at
load) and is not run twice. Exit 1 if any case disagrees (over the card, or the estimate below the
simulated peak or more than 10 % above it).
"""
from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_engine.simulate import matrix  # noqa: E402


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    cards = {int(a) for a in argv if a.isdigit()}
    sizes = {tuple(int(v) for v in a.split("x")) for a in argv if "x" in a}
    rows, bad = [], 0
    families = matrix.WAN22 if "--wan22" in argv else matrix.GGUF if "--gguf" in argv else \
        matrix.WAN21 + matrix.WAN22 + matrix.GGUF if "--all" in argv else matrix.WAN21
    for case in matrix.cases(families):
        if (cards and case.gb not in cards) or (sizes and case.size not in sizes) or case.same_as_bf16():
            continue
        t0 = time.process_time()
        row = matrix.row(case, matrix.simulate(case))
        row["cpu_s"] = round(time.process_time() - t0, 1)
        rows.append(row)
        bad += bool(row["disagreements"])
        if "--json" not in argv:
            phases = "  ".join(f"{n} {p['estimate_gib']:.2f}/{p['simulated_gib']:.2f} ({p['est_over_sim']:.3f})"
                               for n, p in row["phases"].items())
            print(f"{row['case']:<32} {row['plan']:<58} est/sim GiB: {phases}  [{row['cpu_s']} s]"
                  + "".join(f"\n    DISAGREES {d}" for d in row["disagreements"]), flush=True)
    if "--json" in argv:
        print(json.dumps(rows, indent=1))
    print(f"{len(rows)} cases simulated, {bad} disagree; max RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
