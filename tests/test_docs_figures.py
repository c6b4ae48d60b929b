"""The cost figures README.md quotes are the ones the code computes: `bench/costs.py`'s estimate
table (Pod prices, DiT only), the shipped Serverless prices (`wan_engine/prices.py`) and the
arithmetic the README does with them (one cent in seconds, the Serverless / Pod ratio, the cold
read). The plan tables are held by tests/test_docs_commands.py (they are that command's output).
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import REPO
from wan_engine import prices

README = " ".join((REPO / "README.md").read_text().split())
POD = {"H100": 2.99, "H200": 3.59, "RTX 4090": 0.69}          # as bench/costs.py states them
GPU_NAME = {"H100": "NVIDIA H100 80GB HBM3", "H200": "NVIDIA H200", "RTX 4090": "NVIDIA GeForce RTX 4090"}
CELL = re.compile(r"est\. (\d+) s, \$([\d.]+) \(pub\. (\d+) s, \$([\d.]+)\)")


def _serverless(gpu: str) -> float:
    price = prices.gpu_price_per_hour(GPU_NAME[gpu])
    assert price is not None, gpu
    return price


def _close(quoted: str, value: float) -> bool:
    """``quoted`` is ``value`` rounded to the digits it shows."""
    digits = len(quoted.split(".")[1]) if "." in quoted else 0
    return abs(float(quoted) - value) <= 0.5 * 10 ** -digits + 1e-9


@pytest.fixture(scope="module")
def costs_rows() -> dict[tuple[str, str, str], tuple[int, float, int, float]]:
    out = subprocess.run([sys.executable, str(REPO / "bench" / "costs.py")], capture_output=True,
                         text=True, cwd=REPO, timeout=60, check=True).stdout
    rows = {}
    row = re.compile(r"^\| (.+?) \(\$([\d.]+)\) \| (fast|full) \| (\d+p) \| \d+ \| "
                     r"(\d+) s \| \$([\d.]+) \| (\d+) s \| \$([\d.]+) \|$", re.M)
    for m in row.finditer(out):
        gpu, price, wf, res, est_s, est_usd, pub_s, pub_usd = m.groups()
        assert float(price) == POD[gpu], (gpu, price)
        rows[(gpu, wf, res)] = (int(est_s), float(est_usd), int(pub_s), float(pub_usd))
    assert len(rows) == 12, out
    return rows


def test_the_readme_cost_table_is_bench_costs_output(costs_rows):
    text = (REPO / "README.md").read_text()
    head = r"\| GPU \| fast 480p \| fast 720p \| full 480p \| full 720p \|\n\|[-|]+\|\n"
    table = re.search(head + r"((?:\|.*\|\n)+)", text).group(1)
    seen = 0
    for line in table.splitlines():
        gpu, *cells = [c.strip() for c in line.strip("|").split("|")]
        columns = [("fast", "480p"), ("fast", "720p"), ("full", "480p"), ("full", "720p")]
        for (wf, res), cell in zip(columns, cells):
            est_s, est_usd, pub_s, pub_usd = CELL.fullmatch(cell).groups()
            want = costs_rows[(gpu, wf, res)]
            assert (int(est_s), int(pub_s)) == (want[0], want[2]), (gpu, wf, res, cell, want)
            assert _close(est_usd, want[1]) and _close(pub_usd, want[3]), (gpu, wf, res, cell, want)
            seen += 1
    assert seen == 12


def test_the_prices_the_readme_names_are_the_shipped_ones():
    assert "H100 $2.99/h, H200 $3.59/h, RTX 4090 $0.69/h" in README          # Pod (bench/costs.py)
    serverless = {gpu: _serverless(gpu) for gpu in POD}
    assert ", ".join(f"{gpu} ${price:.2f}/h" for gpu, price in serverless.items()) in README
    ratios = [serverless[g] / POD[g] for g in POD]
    assert f"{min(ratios):.1f}-{max(ratios):.1f}x these" in README


def test_one_cent_in_seconds_at_both_price_lists():
    pod = [round(0.01 / (POD[g] / 3600)) for g in ("H200", "H100", "RTX 4090")]
    assert f"One cent is {pod[0]} s of an H200, {pod[1]} s of an H100, {pod[2]} s of a 4090" in README
    srv = [round(0.01 / (_serverless(g) / 3600)) for g in ("H200", "H100", "RTX 4090")]
    assert f"({srv[0]}, {srv[1]} and {srv[2]} s at the Serverless prices)" in README


def test_the_cold_read_estimate_is_its_own_arithmetic():
    from wan_engine.store import profiles

    small = profiles.PROFILES["comfy-720p-bf16"].approx_gb
    large = profiles.PROFILES["wan21-i2v-720p-diffusers"].approx_gb
    assert f"{small} GB (`comfy-720p-bf16`) to {large:.0f} GB" in README
    fastest, slowest = small * 1e9 / 400e6 / 60, large * 1e9 / 200e6 / 60   # minutes at 400 / 200 MB/s
    assert f"about {fastest:.0f}-{slowest:.1f} min" in README
    h100_pod, h100_srv = POD["H100"] / 3600, _serverless("H100") / 3600
    lo, hi = fastest * 60, slowest * 60
    assert f"${h100_pod * lo:.2f}-{h100_pod * hi:.2f} of H100 time at the Pod price" in README
    assert f"${h100_srv * lo:.2f}-{h100_srv * hi:.2f} at the Serverless price" in README


def test_the_intro_ranges_are_the_tables_ranges(costs_rows):
    """The opening paragraph's cents: the fast 480p column of the README's `plan --cards` table
    (that table is the command's output: tests/test_docs_commands.py) and the full rows of
    bench/costs.py (estimated and published)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"--cards --size 832x480x81`:\n\n```\n(.*?)```", text, re.S).group(1)
    fast = [float(m) for m in re.findall(r"^\S.*?\s{2,}\d+\s+\$([\d.]+)\s", block, re.M)]
    assert len(fast) >= 5, block
    assert f"${min(fast):.3f}-{max(fast):.3f} for the whole video at RunPod Serverless prices" in README
    full = [v for (_, wf, _), (_, est, _, pub) in costs_rows.items() if wf == "full" for v in (est, pub)]
    assert f"full 40-step workflows ${min(full):.2f}-{max(full):.2f}" in README
