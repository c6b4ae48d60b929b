"""The benchmarks run: gpu_bench.py's CPU smoke mode, and the cost arithmetic of bench/costs.py."""
from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
import costs  # noqa: E402


def test_cost_arithmetic():
    assert costs.flop_per_eval("720p") == pytest.approx(6.8e15)
    assert costs.flop_per_eval("480p") < costs.flop_per_eval("720p") / 3
    assert costs.usd(3600, "H200") == pytest.approx(3.59)
    row = next(r for r in costs.rows() if (r["gpu"], r["workflow"], r["res"]) == ("H200", "fast", "480p"))
    assert row["evals"] == 4 and row["pub_s"] == 14 and row["pub_usd"] == pytest.approx(14 * 3.59 / 3600)
    full = next(r for r in costs.rows() if (r["gpu"], r["workflow"], r["res"]) == ("H200", "full", "480p"))
    assert full["evals"] == 80 and full["est_s"] == pytest.approx(20 * row["est_s"])
    measured = costs.rows({("H200", "480p"): 2.5})
    assert next(r for r in measured if r["workflow"] == "fast" and r["gpu"] == "H200"
                and r["res"] == "480p")["meas_s"] == pytest.approx(10.0)
    assert "estimated" in costs.table() and "$0.01" in costs.table()


def test_gpu_bench_cpu_smoke():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_bench.py"), "--device", "cpu", "--tiny",
                          "--budget", "300"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "480p attention native" in out.stdout and "offload block: needs CUDA" in out.stdout


def test_gpu_check_plan_cpu_smoke():
    """bench/gpu_check.py --plan runs each cap's plan end to end (tiny set on the CPU)."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--plan",
                          "--tiny"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if '"check": "plan"' in line]
    assert len(rows) == 3 and all('"finite": true' in r for r in rows) and out.stdout.strip().endswith("OK")
