"""``python wanvolume.py plan``: the memory plan for a set on a GPU, its simulation and the cards.

The plan command's own half of the CLI (wanvolume.py parses and dispatches); torch-free at import,
so ``check`` at container start stays fast.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from wan_engine.errors import WanVolumeError
from wan_engine.store import paths

EXIT_OK, EXIT_NOT_READY = 0, 1


def gpu_gb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give the card's memory in GB, "
                                         "e.g. 24") from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"{value:g} GB is not a GPU's memory; use 1 to 4096, e.g. 24")
    return value


def video_size(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    ok = len(parts) == 3 and all(p.strip().isdigit() for p in parts)
    w, h, f = (int(p) for p in parts) if ok else (0, 0, 0)
    if not ok or w % 16 or h % 16 or not (16 <= w <= 4096 and 16 <= h <= 4096) or (f - 1) % 4 or f < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not WIDTHxHEIGHTxFRAMES with sides multiples of 16 (16-4096) and 4k+1 "
            "frames; use e.g. 832x480x81 or 1280x720x81")
    return w, h, f


def cmd_plan(args: argparse.Namespace, models_dir: Path, check_models_dir) -> int:
    """``check_models_dir``: wanvolume.py's check of a --models-dir the user named."""
    from wan_engine.load import plan as memplan
    from wan_engine.load import sizes
    if args.set_name in sizes.REFERENCES:
        counted = sizes.reference(args.set_name)
    else:
        from wan_engine.store import find
        if args.models_dir:
            check_models_dir(models_dir)
            os.environ[paths.ENV_MODELS_DIR] = str(models_dir)
        try:
            counted = sizes.from_model_set(find.get_model_set(args.set_name))
        except WanVolumeError as exc:
            raise WanVolumeError(exc.problem, field="--set", value=args.set_name,
                                 fix=f"name a set on the volume (`python wanvolume.py status`) or a "
                                     f"built-in reference: {', '.join(sizes.REFERENCES)}") from None
    if args.simulate:
        return _simulate(args, counted)
    if args.cards:
        from wan_engine.simulate import cards
        rows = cards.table(counted, *args.size, precision=args.precision)
        print(json.dumps([e.to_dict() for e in rows], indent=1) if args.json
              else cards.text(rows, args.set_name, args.size))
        return EXIT_OK if rows else EXIT_NOT_READY
    cards = [args.gpu_gb] if args.gpu_gb else list(CARDS_GB)
    plans = [(gb, memplan.plan_for(counted, memplan.usable_vram(int(gb * 2**30), int(args.reserve_gb * 2**30)),
                                   *args.size, precision=args.precision)) for gb in cards]
    if args.json:
        doc = plans[0][1].to_dict() if args.gpu_gb else {"set": args.set_name, "plans": [
            {"gpu_gb": gb, **p.to_dict()} for gb, p in plans]}
        print(json.dumps(doc, indent=1))
        return EXIT_OK if all(p.fits for _, p in plans) else EXIT_NOT_READY
    print(_plan_table(args, plans))
    for note in counted.notes:
        print(f"note: {note}")
    return EXIT_OK if all(p.fits for _, p in plans) else EXIT_NOT_READY


CARDS_GB = (12, 16, 24, 32, 48, 80, 141)


def _simulate(args: argparse.Namespace, counted) -> int:
    from wan_engine.simulate import report
    if not args.gpu_gb:
        raise WanVolumeError("--simulate runs one card", field="--gpu-gb", value=None, fix="add --gpu-gb 24")
    fits = report.run_and_print(counted, args.set_name, args.gpu_gb, args.reserve_gb, args.size,
                                args.precision, args.steps, args.cfg, args.json)
    return EXIT_OK if fits else EXIT_NOT_READY


def _plan_table(args: argparse.Namespace, plans: list) -> str:
    from wan_engine.store.progress import table
    gib = lambda b: f"{b / 2**30:.1f}"   # noqa: E731

    def where(p, phase: str) -> str:
        comps = p.phase(phase).components
        return " ".join(f"{'expert2' if n == 'transformer_2' else n.split('_')[0]}:{c.device}"
                        for n, c in comps.items() if c.device != "cpu") or "-"
    rows = [(f"{gb:g}", p.mode + (f" ({p.resident_blocks}/40 blocks)" if p.mode.endswith("block") else "")
             + {"both": ", experts both", "swap": ", experts swap"}.get(p.experts, ""),
             p.offload, "yes" if p.fp8_storage else "no", *(gib(p.phase(n).peak_bytes) for n in
                                                            ("encode", "sample", "decode")),
             where(p, "sample"), "whole" if not p.decode_tile else f"{p.decode_tile}px",
             "yes" if p.fits else "NO") for gb, p in plans]
    w, h, f = args.size
    head = f"memory plan for {args.set_name} at {w}x{h}x{f}, {args.precision} (GiB)"
    text = head + "\n" + table(("GPU GB", "plan", "offload", "fp8", "encode", "sample", "decode",
                                "on GPU while sampling", "decode", "fits"), rows)
    return text + "".join(f"\n{gb:g} GB, Wan2.2:{p.experts_summary().lstrip(',')}" for gb, p in plans if p.experts)


