#!/usr/bin/env python3
"""Fill and check the RunPod network volume that holds the Wan2.1 I2V models.

Runs from the pack's folder without ComfyUI: ``python wanvolume.py preload|verify|check|status|adopt|plan``.
Thin on purpose: argument parsing here, the work in wan_engine//
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wan_engine.store import paths, profiles  # noqa: E402  (light imports only: check must be fast)
from wan_engine.errors import WanVolumeError  # noqa: E402
import wanvolume_plan  # noqa: E402  (the plan command; torch-free at import)

EXIT_OK, EXIT_NOT_READY, EXIT_USAGE, EXIT_HUB, EXIT_VOLUME, EXIT_BUSY = 0, 1, 2, 3, 4, 5
EXIT_UNVERIFIED = 6
EXIT_CODES = f"""exit codes:
  {EXIT_OK}  success; the volume (or profile) is ready; verify: every set's hashes matched
  {EXIT_NOT_READY}  not ready: check/status found missing/bad files, verify found a mismatch, nothing
     is pre-loaded, adopt found nothing to adopt, or plan: the set does not fit a card asked about
  {EXIT_USAGE}  usage error (unknown profile, bad arguments)
  {EXIT_HUB}  the Hub refused (unknown or gated repo: set HF_TOKEN) or a file failed after retries
  {EXIT_VOLUME}  volume problem: not enough free space, read-only or not writable
  {EXIT_BUSY}  another preload holds the volume lock (--no-wait)
  {EXIT_UNVERIFIED}  verify: no mismatch, but a set has no recorded hash (filled by hand): not verified

models dir default: {' > '.join(str(p) for p in paths.candidate_models_dirs())} (first existing)
profiles: {', '.join(profiles.PROFILES)}"""

log = logging.getLogger("wanvolume")


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="wanvolume.py", description=__doc__, epilog=EXIT_CODES,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="cmd", required=True)
    fmt = argparse.RawDescriptionHelpFormatter
    pre = sub.add_parser("preload", help="download a profile or repo onto the volume",
                         epilog=EXIT_CODES, formatter_class=fmt)
    what = pre.add_mutually_exclusive_group(required=True)
    what.add_argument("--profile", choices=list(profiles.PROFILES), help="a ready set")
    what.add_argument("--repo", help="OWNER/NAME; lands in <models-dir>/NAME")
    pre.add_argument("--revision", default="main", help="branch, tag or commit (with --repo)")
    pre.add_argument("--hf-cache", type=Path, metavar="DIR",
                     help="fill a Hugging Face cache (huggingface_hub's own layout, as "
                          "from_pretrained and RunPod's cached models use) instead of the models dir; "
                          "e.g. /runpod-volume/huggingface-cache/hub or $HF_HOME/hub")
    pre.add_argument("--include", nargs="+", default=["*"], metavar="GLOB",
                     help="only files matching these globs (with --repo)")
    pre.add_argument("--no-wait", action="store_true",
                     help="exit 5 instead of waiting when another preload holds the volume")
    pre.add_argument("--read-timeout", type=float, default=60.0,
                     help="seconds without a byte before a stalled download is retried")
    pre.add_argument("--retry-backoff", type=float, default=1.0, help="first retry delay, seconds")
    pre.add_argument("--workers", type=_positive_int, default=4, metavar="N",
                     help="files downloaded at once (default 4; 1 = one after the other). The Hub "
                          "serves each connection at a limited rate, so parallel files fill the "
                          "volume faster; each still resumes, retries and is hashed on its own")
    ver = sub.add_parser("verify", help="re-hash every pre-loaded file",
                         epilog=EXIT_CODES, formatter_class=fmt)
    ver.add_argument("--workers", type=_positive_int, default=None,
                     help="parallel hashers (default: CPUs, max 8)")
    ver.add_argument("--set", dest="sets", nargs="+", help="only these pre-loaded sets")
    chk = sub.add_parser("check", help="fast start-up check: sizes and headers",
                         epilog=EXIT_CODES, formatter_class=fmt)
    chk.add_argument("--profile", choices=list(profiles.PROFILES))
    st = sub.add_parser("status", help="what is on the volume", epilog=EXIT_CODES, formatter_class=fmt)
    st.add_argument("--json", action="store_true", help="print the JSON document")
    ado = sub.add_parser("adopt", help="record an hf download --local-dir folder in the manifest "
                                       "(hashes each file against the Hub's record; no download)",
                         epilog=EXIT_CODES, formatter_class=fmt)
    ado.add_argument("folders", nargs="*", metavar="NAME|PATH",
                     help="folder(s) written by `hf download ... --local-dir`: a name "
                          "under --models-dir or a path (default: every such folder there)")
    pl = sub.add_parser("plan", help="the memory plan for a set on a GPU (before renting one)",
                        epilog=EXIT_CODES, formatter_class=fmt)
    pl.add_argument("--set", dest="set_name", required=True, metavar="NAME",
                    help="a model set on the volume, or a built-in reference: "
                         "wan2.1-i2v-14b-720p, wan2.1-i2v-14b-480p (real 14B shapes, no files)")
    pl.add_argument("--gpu-gb", type=wanvolume_plan.gpu_gb, default=None, metavar="N",
                    help="the card's memory in GB (default: a table for 12, 16, 24, 32, 48, 80 and 141)")
    pl.add_argument("--size", type=wanvolume_plan.video_size, default=(1280, 720, 81), metavar="WxHxF",
                    help="video width x height x frames (default 1280x720x81)")
    pl.add_argument("--precision", choices=["bf16", "fp16"], default="bf16")
    pl.add_argument("--reserve-gb", type=float, default=0.4, metavar="N",
                    help="ComfyUI's --reserve-vram (default 0.4)")
    pl.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    pl.add_argument("--simulate", action="store_true",
                    help="run the pack's pipeline at full size on a simulated card of --gpu-gb (fake "
                         "tensors, no GPU, < 2 GB RAM, minutes) and print each phase's measured peak")
    pl.add_argument("--cards", action="store_true",
                    help="the cards people rent that fit --size, cheapest video first: ESTIMATED seconds "
                         "and cost per video (fast: 4 steps cfg 1; quality: 40 steps cfg 5)")
    pl.add_argument("--steps", type=_positive_int, default=1, help="with --simulate: steps to run (default 1)")
    pl.add_argument("--cfg", type=float, default=5.0,
                    help="with --simulate: guidance; above 1 each step runs cond and uncond (default 5)")
    for p in (pre, ver, chk, st, ado, pl):
        p.add_argument("--models-dir", type=Path, default=None,
                       help=f"default: {paths.primary_models_dir()}")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bars, warnings only")
    return top


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; use 1 or more") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1; use 1 or more")
    return value


def check_models_dir(models_dir: Path) -> None:
    """Name a models dir that is not there or not a folder (instead of "nothing pre-loaded")."""
    if models_dir.is_dir():
        return
    what = "is a file, not a folder" if models_dir.exists() else "does not exist"
    raise WanVolumeError(f"the models dir {what}", field="--models-dir", value=str(models_dir),
                         fix="pass the folder that holds your model sets (e.g. /workspace/models), "
                             "or create it and fill it with `python wanvolume.py preload --profile "
                             f"{profiles.RECOMMENDED[0]} --models-dir {models_dir}`")


def cmd_preload(args: argparse.Namespace, models_dir: Path) -> int:
    from wan_engine.store.fetch import RetryPolicy
    from wan_engine.store.preload import preload
    if args.profile:
        name, sources = args.profile, profiles.get_profile(args.profile).sources
    else:
        if args.repo.count("/") != 1:
            raise WanVolumeError("expected OWNER/NAME", field="--repo", value=args.repo,
                                 fix="e.g. --repo Wan-AI/Wan2.1-I2V-14B-720P")
        name = args.repo.split("/")[1]
        sources = (profiles.repo_source(args.repo, args.revision, tuple(args.include)),)
    if args.hf_cache is not None:
        return _preload_hf_cache(args, sources)
    policy = RetryPolicy(read_timeout_s=args.read_timeout, backoff_s=args.retry_backoff)
    report = preload(name, sources, models_dir, wait=not args.no_wait, policy=policy,
                     show_progress=not args.quiet, workers=args.workers)
    print(report.summary())
    print(f"{name}: ready in {models_dir}")
    return EXIT_OK


def _preload_hf_cache(args: argparse.Namespace, sources) -> int:
    from wan_engine.store import hf_cache, hf_fill
    cache = args.hf_cache.expanduser().absolute()
    report = hf_fill.fill(sources, cache, args.workers, show_progress=not args.quiet)
    print(report.summary())
    if cache not in [p.absolute() for p in hf_cache.candidate_roots()]:
        print(f"note: ComfyUI finds this cache when it is {hf_cache.RUNPOD_CACHE}, $HF_HUB_CACHE, "
              f"$HF_HOME/hub or ~/.cache/huggingface/hub, or with {hf_cache.ENV_CACHES}={cache}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, models_dir: Path) -> int:
    from wan_engine.store.verify import verify
    check_models_dir(models_dir)
    report = verify(models_dir, args.sets, args.workers, show_progress=not args.quiet)
    for rel, why in sorted(report.bad.items()):
        print(f"MISMATCH {models_dir / rel}: {why}")
    for s in report.broken:
        print(f"BROKEN MANIFEST {s.name}: {'; '.join(s.problems)}\n  fix: {s.command}")
    if report.not_recorded:
        print(f"note: could not remember the results on the volume ({report.not_recorded}); "
              "a read-only volume is verified all the same, and hashed again next time")
    for s in report.unhashed:
        state = "header check OK" if s.ready else "; ".join(s.problems)
        print(f"NOT HASHED {s.name}: no published hash to compare with; {state}")
        if not s.ready:
            print(f"  fix: fetch it again with hashes recorded: {s.command}")
    if not report.sets and not report.bad and not report.broken:
        if not report.unhashed:
            print(f"nothing to verify in {models_dir}: no pre-loaded set, no hf download "
                  "download and no model set; fetch one with: "
                  f"{profiles.preload_command(profiles.RECOMMENDED[0], models_dir)}")
            return EXIT_NOT_READY
        return _unverified(report)
    rate = report.bytes / report.seconds / 2**20 if report.seconds else 0
    print(f"verified {report.files} files, {report.bytes / 2**30:.2f} GiB in {report.seconds:.1f}s "
          f"({rate:.0f} MiB/s): {'OK' if report.ok else f'{len(report.bad)} bad'}")
    if report.bad:
        print(f"fix: run the preload (or hf download) again to re-fetch them "
              f"({', '.join(report.sets) or 'see above'})")
    return _unverified(report) if report.ok else EXIT_NOT_READY


def _unverified(report) -> int:
    """Sets with no hash to compare are not verified: say so (exit 6), or 1 when a header is bad."""
    if not report.unhashed:
        return EXIT_OK
    if not all(s.ready for s in report.unhashed):
        return EXIT_NOT_READY
    print(f"NOT VERIFIED: {len(report.unhashed)} set(s) have no recorded hash (filled by hand; their "
          f"headers are sound). Fix: fetch with hashes recorded, `{report.unhashed[0].command}` (files "
          "already in its folder whose hash matches are kept); a folder from `hf download "
          "--local-dir` is recorded with `python wanvolume.py adopt NAME`")
    return EXIT_UNVERIFIED


def cmd_adopt(args: argparse.Namespace, models_dir: Path) -> int:
    from wan_engine.store import adopt, hf_local
    folders = [_adopt_folder(f, models_dir) for f in args.folders]
    if not folders:
        check_models_dir(models_dir)
        folders = sorted(p for p in models_dir.iterdir() if hf_local.is_local_dir(p))
    if not folders:
        print(f"no hf download --local-dir folder in {models_dir} (they hold "
              f".cache/huggingface/download/); nothing to adopt")
        return EXIT_NOT_READY
    from tqdm import tqdm
    ok = True
    for folder in folders:
        total = sum(r.path.stat().st_size for r in hf_local.records_in(folder))
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, mininterval=0.5,
                  desc=f"adopt {folder.name}", disable=args.quiet) as bar:
            report = adopt.adopt(folder, bar.update)
        for rel, why in sorted(report.bad.items()):
            print(f"MISMATCH {folder.parent / rel}: {why}")
        if report.unfinished:
            print(f"UNFINISHED {folder}: hf download left {len(report.unfinished)} partial "
                  "download(s); run the same hf download command again")
        if report.not_recorded:
            print(f"NOT RECORDED {folder}: the files were hashed but could not be remembered "
                  f"({report.not_recorded}). Fix: the volume is read-only here; run adopt where "
                  "it is attached read-write")
        print(f"{folder}: adopted {len(report.adopted)} file(s), {len(report.kept)} already "
              f"recorded, {len(report.bad)} bad, as manifest {report.name} "
              f"({report.bytes / 2**30:.2f} GiB hashed in {report.seconds:.1f}s)")
        ok = ok and report.ok and not report.not_recorded
    return EXIT_OK if ok else EXIT_NOT_READY


def _adopt_folder(given: str, models_dir: Path) -> Path:
    from wan_engine.store import hf_local
    path = Path(given).expanduser()
    folder = path if path.is_dir() else models_dir / given
    if not hf_local.is_local_dir(folder):
        raise WanVolumeError("not a folder written by `hf download --local-dir` "
                             "(no .cache/huggingface/download inside)", field="folder",
                             value=str(folder),
                             fix="name a folder filled by hf download, or fetch the set with "
                                 "`python wanvolume.py preload --profile ...` (records hashes)")
    return folder.absolute()


def cmd_check(args: argparse.Namespace, models_dir: Path) -> int:
    from wan_engine.store.check import check
    check_models_dir(models_dir)
    report = check(models_dir, args.profile)
    print(report.message())
    return EXIT_OK if report.ok else EXIT_NOT_READY


def cmd_plan(args: argparse.Namespace, models_dir: Path) -> int:
    return wanvolume_plan.cmd_plan(args, models_dir, check_models_dir)


def cmd_status(args: argparse.Namespace, models_dir: Path) -> int:
    from wan_engine.store.status import volume_status
    if args.models_dir:
        check_models_dir(models_dir)  # LoRA and set scanners follow the loader's order: put this dir first
        os.environ[paths.ENV_MODELS_DIR] = str(models_dir)
    doc = volume_status(models_dir)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(_status_text(doc))
    return EXIT_OK if doc["ready"] else EXIT_NOT_READY


def _yes_no(value: bool | None) -> str:
    """verified: True/False after `verify`, None when never verified (no manifest or not run)."""
    return {True: "yes", False: "NO", None: "-"}[value]


def _choices_text(doc: dict) -> list[str]:
    """Which files a ComfyUI-files set pairs its DiT with, and the rule when several fit."""
    from wan_engine.store.scan.comfy_files import RULE
    out = []
    for s in doc["model_sets"]:
        if s["layout"] == "comfy" and s.get("components"):
            lines = [f"{s['name']} uses:"] + [f"  {k}: {v}" for k, v in s["components"].items()]
            lines += [f"  ({len(v) - 1} other {k} file(s) fit: {', '.join(v[1:])})"
                      for k, v in s.get("alternatives", {}).items()]
            out.append("\n".join(lines))
    if any(s.get("alternatives") for s in doc["model_sets"]):
        out.append(f"when several files fit, the choice is: {RULE}")
    return out


def _status_text(doc: dict) -> str:
    from wan_engine.store.progress import human_bytes, table
    out = [f"models dir: {doc['models_dir']}{'' if doc['exists'] else ' (absent)'}"]
    out.append(table(("model set", "layout", "complete", "hashes", "size", "missing"),
                     [(s["name"], s["layout"], _yes_no(s["complete"]), s["integrity"],
                       human_bytes(s["size_bytes"]), ", ".join(s["missing"]))
                      for s in doc["model_sets"]]))
    out += [f"BAD {path}: {why}" for s in doc["model_sets"] for path, why in s["bad_files"].items()]
    out += _choices_text(doc)
    out.append(table(("LoRA", "size"), [(lf["name"], human_bytes(lf["size_bytes"]))
                                        for lf in doc["loras"]]))
    out += [f"DAMAGED {kind} {item['name']}: {item['damaged']['message']}\n  fix: {item['damaged']['fix']}"
            for kind, items in (("model set", doc["model_sets"]), ("LoRA", doc["loras"]))
            for item in items if item.get("damaged")]
    out.append(table(("pre-loaded", "ready", "verified", "files", "size"),
                     [(p["name"], _yes_no(p["ready"]), _yes_no(p["verified"]), p["files"],
                       human_bytes(p["size_bytes"])) for p in doc["preloaded"]]))
    from wan_engine.store.hf_status import cache_text
    out += cache_text(doc["hf_cache"], _yes_no)
    from wan_engine.store.comfy_dirs import comfyui_text
    out += comfyui_text(doc["comfyui"], _yes_no)
    out.append("ready" if doc["ready"] else f"NOT ready; fetch with: {doc['command']}")
    return "\n\n".join(out)


def _exit_code(exc: WanVolumeError) -> int:
    from wan_engine.store.lock import VolumeBusy
    from wan_engine.store.preload import NotEnoughSpace, VolumeNotWritable
    if isinstance(exc, VolumeBusy):
        return EXIT_BUSY
    if isinstance(exc, (NotEnoughSpace, VolumeNotWritable)):
        return EXIT_VOLUME
    if type(exc).__name__ in ("HubError", "FetchFailed"):
        return EXIT_HUB
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in ("httpx", "httpx2"):   # huggingface_hub 1.x / 2.x: one INFO line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    models_dir = (args.models_dir or paths.primary_models_dir()).expanduser().absolute()
    handler = {"preload": cmd_preload, "verify": cmd_verify, "check": cmd_check,
               "status": cmd_status, "adopt": cmd_adopt, "plan": cmd_plan}[args.cmd]
    try:
        return handler(args, models_dir)
    except WanVolumeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as exc:     # the volume: permissions, I/O errors, a vanished mount
        fix = ("the volume is mounted read-only here: attach it read-write to write to it (a "
               "Serverless endpoint can mount it read-only); `check` and `verify` work read-only"
               if exc.errno == errno.EROFS else "check that the volume is attached and readable, "
               "then run the same command again")
        print(f"error: {exc.strerror or exc} ({exc.filename or models_dir}). Fix: {fix}",
              file=sys.stderr)
        return EXIT_VOLUME
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the details in the debug log
        log.debug("unexpected error", exc_info=True)
        print(f"error: unexpected {type(exc).__name__}: {exc}. Fix: run again with "
              "WAN_VOLUME_DEBUG=1 for the traceback and report it", file=sys.stderr)
        if os.environ.get("WAN_VOLUME_DEBUG") == "1":
            raise
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
