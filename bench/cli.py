"""The `talkbench` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from core import distributed

ALLOW_UNPINNED_HELP = ("score with an evaluator whose sha256 is not the one the protocol pins (a rebuilt "
                       "SyncNet expert); those columns are marked unpinned in the results and report")


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.runner import run

    methods = [m for m in args.methods.split(",") if m] if args.methods else None
    seeds = parse_seeds(args.seeds) if args.seeds else None
    if seeds is not None and args.seed != 0:
        raise ValueError("give either --seed or --seeds (whose first seed is the main row's)")
    out = run(args.protocol, methods=methods, device=args.device, seed=args.seed, seeds=seeds, preset=args.preset,
              out_root=Path(args.results) if args.results else None, progress=not args.quiet,
              ablations=args.ablations, checkpoint=Path(args.checkpoint) if args.checkpoint else None,
              data_root=Path(args.root) if args.root else None, workers=workers_of(args),
              allow_unpinned=args.allow_unpinned)
    if not distributed.world().is_main:
        return 0
    from bench.report import run_timing_lines
    from bench.results import RUN_TIMINGS_FILE, read_result

    print("\n".join(run_timing_lines(read_result(out / RUN_TIMINGS_FILE))))
    print(f"results and report: {out / 'README.md'}")
    return 0


WORKERS_HELP = ("worker processes for data preparation, for fitting + predicting the trainable rows (run) "
                "and for scoring (default: $TALKBENCH_WORKERS, else "
                "this process's cores divided among the ranks of a node under torchrun); results do not "
                "depend on it")


def default_workers() -> int:
    """$TALKBENCH_WORKERS, else this process's CPU cores shared among the torchrun ranks of its node."""
    if os.environ.get("TALKBENCH_WORKERS"):
        return max(1, int(os.environ["TALKBENCH_WORKERS"]))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def workers_of(args: argparse.Namespace) -> int:
    return default_workers() if args.workers is None else max(1, args.workers)


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {text!r}") from None


def _cmd_score(args: argparse.Namespace) -> int:
    from bench.pipeline import Session
    from bench.protocol import load_protocol
    from bench.report import write_report
    from bench.results import portable_path, results_dir

    protocol = load_protocol(args.protocol)
    pred_dir = Path(args.predictions)
    if not pred_dir.is_dir():
        raise SystemExit(f"talkbench score: {pred_dir} is not a folder of predictions")
    session = Session.open(protocol, args.device, not args.quiet, Path(args.root) if args.root else None,
                           workers_of(args), allow_unpinned=args.allow_unpinned)
    out = results_dir(protocol, Path(args.results) if args.results else None)
    session.write_common(out)
    provenance = {"source": "external predictions", "predictions_dir": portable_path(pred_dir),
                  **session.environment()}
    try:
        result = session.evaluate(args.name, pred_dir, out=out, provenance=provenance, reencode=args.reencode)
    finally:
        session.close()
    if not distributed.world().is_main:  # rank 0 writes the report and prints
        return 0
    if args.reencode and protocol.encode is None:
        print(f"note: protocol {protocol.id} pins no encoding (`encode:`); --reencode did nothing")
    enc = result.get("encoding")
    if enc:
        print(f"encoding: {enc['as_pinned']} of {enc['clips']} clips in the pinned encoding, "
              f"{len(enc['differing'])} differ, {len(enc['reencoded'])} re-encoded to the pin")
    write_report(protocol, out)
    for label, m in result["metrics"].items():
        value = "unavailable" if m["unavailable"] else m["value"]
        print(f"{label:>10}: {value}  (N={m['n']}, failed {m['failures']})")
    print(f"result: {out / (args.name + '.json')}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bench.protocol import load_protocol
    from bench.report import write_report
    from bench.results import results_dir

    protocol = load_protocol(args.protocol)
    path = write_report(protocol, results_dir(protocol, Path(args.results) if args.results else None))
    print(path.read_text() if args.print else f"report: {path}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    if args.what in ("check", "prepare"):
        if not args.protocol:
            raise SystemExit(f"talkbench data {args.what}: name a protocol, e.g. "
                             f"`talkbench data {args.what} kfusion_t1_mead --root PATH`")
        if args.what == "check":
            from bench.data.check import cli_check
            return cli_check(args)
        from bench.data.prepare import cli_prepare
        return cli_prepare(args)
    if args.what != "synthtalk":
        raise SystemExit(f"talkbench data: {args.what!r} is not one of synthtalk, check, prepare")
    from bench.data.synthtalk import corpus

    size = int(args.size) if args.size.isdigit() else args.size
    root = corpus.build(size=size, seed=args.seed, progress=not args.quiet)
    print(f"synthtalk corpus: {root}")
    if args.preview:
        from bench.data.synthtalk.preview import write_preview

        sheet, video = write_preview(corpus.load_clips(root), Path(args.out))
        print(f"contact sheet: {sheet}\npreview video: {video}")
    return 0


def _cmd_perf(args: argparse.Namespace) -> int:
    if args.what == "prepare":
        from bench.data.perf import cli_perf_prepare

        args.workers = args.workers or "1,2"
        args.clips = 4 if args.clips is None else args.clips
        return cli_perf_prepare(args)
    from bench.perf import cli_perf

    try:
        args.workers_list = [int(w) for w in str(args.workers or "1,2").split(",") if w.strip()]
    except ValueError:
        raise ValueError(f"--workers: expected comma-separated counts, got {args.workers!r}") from None
    if not args.workers_list or min(args.workers_list) < 1:
        raise ValueError(f"--workers: expected positive counts, got {args.workers!r}")
    args.clips = 2 if args.clips is None else args.clips
    return cli_perf(args)


def _cmd_site(args: argparse.Namespace) -> int:
    from bench.site import build_site
    from core.paths import repo_root

    root = Path(args.results) if args.results else repo_root() / "results"
    index = build_site(root, Path(args.out) if args.out else None)
    print(f"site: {index} (open it in a browser; no server needed)")
    return 0


def _cmd_protocols(args: argparse.Namespace) -> int:
    from bench.protocol import list_protocols, load_protocol

    if args.action == "list":
        for name in list_protocols():
            p = load_protocol(name)
            print(f"{p.id:<24} v{p.version}  {p.title}")
    else:
        p = load_protocol(args.id)
        print(json.dumps({"hash": p.hash, **p.raw}, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkbench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train/load, predict, score and report a protocol's methods")
    p.add_argument("protocol")
    p.add_argument("--methods", help="comma-separated method names (default: the protocol's list)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2: train each learned method once per "
                                   "seed and report the spread (the main row is the first seed)")
    p.add_argument("--preset", help="config preset for every method (tiny or paper)")
    p.add_argument("--ablations", action="store_true", help="add each method's ablation variants as rows")
    p.add_argument("--checkpoint", help="load this checkpoint instead of training (one method)")
    p.add_argument("--results", help="results root (default: the repository's results/)")
    p.add_argument("--root", help="dataset root folder (default: $TALKBENCH_DATA_<DATASET>)")
    p.add_argument("--workers", type=int, default=None, help=WORKERS_HELP)
    p.add_argument("--allow-unpinned", action="store_true", help=ALLOW_UNPINNED_HELP)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("score", help="score a folder of predictions made outside talkbench")
    p.add_argument("protocol")
    p.add_argument("--predictions", required=True, help="folder of <clip_id>.npz and/or <clip_id>.mp4")
    p.add_argument("--name", required=True, help="row name in the results table")
    p.add_argument("--device", default="cpu")
    p.add_argument("--results")
    p.add_argument("--root", help="dataset root folder (default: $TALKBENCH_DATA_<DATASET>)")
    p.add_argument("--workers", type=int, default=None, help=WORKERS_HELP)
    p.add_argument("--allow-unpinned", action="store_true", help=ALLOW_UNPINNED_HELP)
    p.add_argument("--reencode", action="store_true",
                   help="re-encode predictions whose encoding differs from the protocol's `encode:` pin "
                        "before scoring (they are counted either way)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("report", help="rebuild results/<protocol>/README.md from its result files")
    p.add_argument("protocol")
    p.add_argument("--results")
    p.add_argument("--print", action="store_true", help="print the report")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("site", help="build the static leaderboard page (results/site/) from every results folder")
    p.add_argument("--results", help="the folder holding one results folder per protocol (default: results/)")
    p.add_argument("--out", help="output folder (default: <results>/site)")
    p.set_defaults(func=_cmd_site)

    p = sub.add_parser("data", help="build synthtalk, or check / prepare a real dataset for a protocol")
    p.add_argument("what", help="synthtalk (build the embedded corpus), check or prepare")
    p.add_argument("protocol", nargs="?", help="protocol id (check, prepare)")
    p.add_argument("--root", help="dataset root folder (default: $TALKBENCH_DATA_<DATASET>)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (prepare)")
    p.add_argument("--size", default="small", help="small, medium, large, or clips per speaker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preview", action="store_true", help="write a contact sheet PNG and an mp4")
    p.add_argument("--out", default="synthtalk_preview", help="folder for the preview files")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("protocols", help="list or show protocols")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("id", nargs="?")
    p.set_defaults(func=_cmd_protocols)

    p = sub.add_parser("perf", help="benchmarks of the harness itself, and against the reference tools")
    p.add_argument("what", choices=["prepare", "lse", "fid", "landmarks", "score"],
                   help="prepare: the preprocessing pipeline, cold, in frames/s; lse, fid, landmarks: "
                        "talkbench against syncnet_python's evaluate, pytorch-fid, face-alignment on "
                        "the same inputs and weights; score PROTOCOL: the whole scorer in frames/s")
    p.add_argument("protocol", nargs="?", help="score: the protocol whose scorer is timed")
    p.add_argument("--workers", help="prepare: comma-separated worker counts (default 1,2); "
                                     "score: comma-separated worker counts (default 1,2)")
    p.add_argument("--clips", type=int, help="synthtalk clips (default: prepare 4, others 2)")
    p.add_argument("--frames", type=int, help="fid: frames per clip (default 25); landmarks: 50")
    p.add_argument("--crop", default="syncnet", choices=["syncnet", "full"], help="lse: the SyncNet crop")
    p.add_argument("--method", default="static", help="score: the method whose predictions are scored")
    p.add_argument("--repeat", type=int, default=2, help="lse: runs of each side per clip (the fastest is kept)")
    p.add_argument("--random-init", action="store_true",
                   help="lse, fid, landmarks (FAN): random-initialised weights even where real files are present")
    p.add_argument("--write", action="store_true", help="write the table to results/perf/<what>.json")
    p.add_argument("--out", help="write the table to DIR/<what>.json instead")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_perf)

    from bench import au_thresholds, calibrate, experts, reproduce, sanity, weights_cli

    for module in (weights_cli, calibrate, au_thresholds, experts, sanity, reproduce):
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from core.errors import CheckpointError
    from bench.protocol import ProtocolError

    distributed.init()  # under torchrun: join the group (a world of one otherwise)
    try:
        return args.func(args)
    except ProtocolError as exc:
        print(f"talkbench: protocol error: {exc}", file=sys.stderr)
        return 2
    except (CheckpointError, KeyError, ValueError) as exc:  # bad names, files or options
        if args.verbose:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"talkbench: error: {message}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
