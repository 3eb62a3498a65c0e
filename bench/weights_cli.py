"""`talkbench weights list | download NAME | verify [NAME] | path NAME`: the command line of the
weights registry (`core.weights`)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from core.errors import MetricUnavailable
from core.weights import (SPECS, WeightsError, candidate, check_file, download, get_spec, list_specs,
                          resolve, verify, weights_dir)


def _print_progress(received: int, total: Optional[int]) -> None:
    mb = received / 1e6
    text = f"{mb:8.1f} / {total / 1e6:.1f} MB" if total else f"{mb:8.1f} MB"
    print(f"\r  {text}", end="", file=sys.stderr, flush=True)


def _cmd_weights(args: argparse.Namespace) -> int:
    action = args.weights_action
    if action == "list":
        print(f"folder: {weights_dir()}")
        for spec in list_specs():
            chosen, source = candidate(spec, None)
            where = "present" if chosen.is_file() else "missing"
            if source:
                where += f" (via {source})"
            print(f"{spec.name:<13} {spec.filename:<38} {where:<8} used by {', '.join(spec.used_by)}")
            print(f"{'':<13} {spec.url}")
            print(f"{'':<13} licence: {spec.licence}")
        return 0
    if action == "path":
        try:
            print(resolve(args.name))
        except MetricUnavailable as exc:
            print(f"talkbench weights: {exc}", file=sys.stderr)
            return 1
        return 0
    if action == "download":
        try:
            path = download(args.name, force=args.force, url=args.url,
                            progress=None if args.quiet else _print_progress)
        except WeightsError as exc:
            if not args.quiet:
                print(file=sys.stderr)
            print(f"talkbench weights: {exc}", file=sys.stderr)
            return 1
        if not args.quiet:
            print(file=sys.stderr)
        status = check_file(get_spec(args.name), path)
        print(f"{args.name}: {path} ({status.state}: {status.detail})")
        return 0
    if action == "verify":
        names = [args.name] if args.name else [spec.name for spec in list_specs()]
        code = 0
        for name in names:
            status = verify(name)
            print(f"{name:<13} {status.state:<9} {status.path}  {status.detail}")
            if status.state == "corrupt" or (args.name and status.state == "missing"):
                code = 1
        return code
    raise ValueError(f"unknown weights action {action!r}")


def add_cli(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register `talkbench weights list | download NAME | verify [NAME] | path NAME`.

    Exit codes: 0 success; 1 a download failed, a checked file is corrupt, a named file is missing.
    """
    names = sorted(SPECS)
    parser = subparsers.add_parser("weights", help="list, download, verify or locate pretrained "
                                                   "weight files")
    actions = parser.add_subparsers(dest="weights_action", required=True)
    actions.add_parser("list", help="every registered file, where it comes from, if it is here")
    p = actions.add_parser("download", help="fetch a file into the weights folder and check it")
    p.add_argument("name", choices=names)
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--url", help="download from this mirror instead of the registered URL")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p = actions.add_parser("verify", help="check presence, size and sha256 (all files if no NAME)")
    p.add_argument("name", nargs="?", choices=names)
    p = actions.add_parser("path", help="print the path a metric would load")
    p.add_argument("name", choices=names)
    parser.set_defaults(func=_cmd_weights)
    return parser


