"""The memory plan's constants from the simulated card (wan_engine/simulate): working memory of
each phase, measured, next to what footprint.py estimates.

    .venv/bin/python bench/calibrate_simulation.py          # ~15 min of CPU on 2 cores, < 2 GB RAM
    .venv/bin/python bench/calibrate_simulation.py 1280x720x81 512    # one size, these tiles

For each video size the full-size set runs resident on an 80 GB card (every weight on the card,
so the working memory is the peak less the weights), decoding whole frames and in 512 and 256 px
tiles. It prints the bytes per unit each constant stands for; footprint.py holds the results.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_engine.load import footprint, plan as memplan, sizes  # noqa: E402
from wan_engine.simulate import run  # noqa: E402

SIZES = ((832, 480, 81), (1280, 720, 81))
TILES = (0, 512, 256)


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    counted = sizes.reference("wan2.1-i2v-14b-720p")
    gib = 2**30
    chosen = [tuple(int(v) for v in a.split("x")) for a in sys.argv[1:] if "x" in a] or SIZES
    tiles = tuple(int(a) for a in sys.argv[1:] if a.isdigit()) or TILES
    for width, height, frames in chosen:
        base = memplan.plan_for(counted, 80 * gib, width, height, frames, force="resident")
        tokens = footprint.latent_tokens(width, height, frames)
        for tile in tiles:
            sim = run.simulate(dataclasses.replace(base, decode_tile=tile))
            work = {n: m.peak_bytes - m.weight_bytes for n, m in sim.phases.items()}
            if tile == tiles[0]:
                print(f"{width}x{height}x{frames}: sample working {work['sample'] / gib:.3f} GiB = "
                      f"{work['sample'] / (tokens * 5120 * 2):.2f} x tokens x hidden x 2 B; encode working "
                      f"{work['encode'] / gib:.3f} GiB = {work['encode'] / (width * height):.0f} B/pixel; "
                      f"FLOPs encode {sim.phases['encode'].flops:.3g} sample {sim.phases['sample'].flops:.3g}")
            call = width * height if not tile else min(tile, width) * min(tile, height)
            video = footprint.video_bytes(width, height, frames)
            print(f"  decode {'whole' if not tile else tile}: working {work['decode'] / gib:.3f} GiB, "
                  f"{(work['decode'] - video) / call:.0f} B per call pixel beyond the video "
                  f"({sim.phases['decode'].flops:.3g} FLOPs)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
