"""The README's cost table from run reports: measured rows from the .json reports Video Combine
writes beside each video, estimated rows (bench/costs.py) where no report exists yet.

    .venv/bin/python bench/report_costs.py /workspace/ComfyUI/output      # folders searched recursively
    .venv/bin/python bench/report_costs.py out/ --price-per-hour 3.59      # re-price measured seconds

Every row says where it comes from: "measured" (mean of N reports: wall seconds of the whole
prompt, load included when the prompt loaded the set) or "estimated" (DiT FLOPs only).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import costs  # noqa: E402

REQUIRED = ("seconds", "phases", "device", "settings", "price_per_hour", "cost_usd")


def read_reports(folders: list[Path]) -> list[dict]:
    """Every run report under ``folders`` (files that are not reports are skipped)."""
    out = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and all(k in data for k in REQUIRED):
                out.append(data)
    return out


def gpu_label(device: dict) -> str:
    """The table's GPU name for a report's device ("H100", "RTX 4090", or the name as reported)."""
    name = device.get("name", "?")
    if device.get("type") != "cuda":
        return f"CPU ({name})"
    for known in costs.PRICES:
        if known.split()[-1] in name:
            return known
    return name


def workflow_label(settings: dict) -> tuple[str, str]:
    """(fast/full or "N steps", resolution) as the README's table names them."""
    kind = "fast" if settings.get("schedule") == "distill_4step" else \
        "full" if settings.get("steps") == 40 else f"{settings.get('steps')} steps"
    video = settings.get("video", {})
    w, h = video.get("width", settings.get("width")), video.get("height", settings.get("height"))
    res = {480: "480p", 720: "720p"}.get(min(w or 0, h or 0), f"{w}x{h}")
    return kind, res


def measured_rows(reports: list[dict], price: float | None = None) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in reports:
        groups[(gpu_label(r["device"]), *workflow_label(r["settings"]))].append(r)
    rows = []
    for (gpu, kind, res), group in sorted(groups.items()):
        secs = statistics.mean(r["seconds"] for r in group)
        if price is not None:
            usd, per_hour = secs * price / 3600, {price}
        else:
            priced = [r["cost_usd"] for r in group if r["cost_usd"] is not None]
            usd = statistics.mean(priced) if priced else None
            per_hour = {r["price_per_hour"] for r in group if r["price_per_hour"] is not None}
        sample = statistics.mean(sum(p["seconds"] for p in r["phases"] if p["name"] == "sample")
                                 for r in group)
        rows.append(dict(source=f"measured ({len(group)} run{'s' if len(group) > 1 else ''})", gpu=gpu,
                         workflow=kind, res=res, seconds=secs, sample_s=sample, usd=usd,
                         per_hour=", ".join(f"${p:g}" for p in sorted(per_hour)) or "-"))
    return rows


def estimated_rows(skip: set[tuple[str, str, str]]) -> list[dict]:
    return [dict(source="estimated (DiT FLOPs)", gpu=r["gpu"], workflow=r["workflow"], res=r["res"],
                 seconds=r["est_s"], sample_s=r["est_s"], usd=r["est_usd"],
                 per_hour=f"${costs.PRICES[r['gpu']]:g}")
            for r in costs.rows() if (r["gpu"], r["workflow"], r["res"]) not in skip]


def table(rows: list[dict]) -> str:
    def money(v):
        return "-" if v is None else f"${v:.4f}" if v < 0.01 else f"${v:.3f}"

    lines = ["| GPU | workflow | res | seconds / video | of which sampling | price | cost / video | rows from |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['gpu']} | {r['workflow']} | {r['res']} | {r['seconds']:.1f} s | "
                     f"{r['sample_s']:.1f} s | {r['per_hour']}/h | {money(r['usd'])} | {r['source']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path, help="folders holding run reports (*.json)")
    parser.add_argument("--price-per-hour", type=float, default=None,
                        help="re-price measured seconds at this USD/hour (default: each report's own cost)")
    parser.add_argument("--no-estimates", action="store_true", help="measured rows only")
    args = parser.parse_args(argv)
    reports = read_reports(args.folders)
    rows = measured_rows(reports, args.price_per_hour)
    if not args.no_estimates:
        rows += estimated_rows({(r["gpu"], r["workflow"], r["res"]) for r in rows})
    print(f"{len(reports)} run report(s) read from {', '.join(map(str, args.folders)) or '(no folder)'}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
