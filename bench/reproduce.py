"""`talkbench reproduce PROTOCOL`: recompute committed results and compare them value by value.

The protocol's rows are rerun (`bench.runner.run`) into a temporary results folder and every
metric value of every committed row is compared with the recomputed one:

* a row with nothing to learn (its result has no `checkpoint_sha256`) must agree exactly (to a
  relative 1e-12, for float noise across platforms);
* a learned row must lie within its committed seed spread: the difference may not exceed the
  range (max - min) over the seeds of its `<row>.seeds.json` (`talkbench run --seeds`). Without a
  seed record it must agree exactly too, and a difference is reported as "no seed spread recorded".

Rows scored from external predictions (`talkbench score`) cannot be recomputed and are listed as
skipped. Every difference is printed, passing or not; the exit status is 0 when all pass.

A clean cache means an empty `$TALKBENCH_HOME`. By default the run uses the user's, so cached
checkpoints, predictions and metric values are reused (which checks the JSONs against the cache
and the code that keys it); `--fresh-home` points `$TALKBENCH_HOME` at an empty temporary folder
for the run, so everything is trained, predicted and scored again. Pretrained weight files are not
a cache (each is pinned by sha256 in `core.weights`): the fresh home links the user's
`$TALKBENCH_HOME/weights` folder, if there is one, so metrics that need them stay available.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from bench.protocol import load_protocol
from bench.results import read_results, results_dir, seed_spread
from bench.tables import markdown_table

RTOL = 1e-12


@dataclass
class Difference:
    row: str
    metric: str
    committed: Optional[float]
    reproduced: Optional[float]
    allowed: float  # the largest difference that passes
    passed: bool
    why: str


@contextmanager
def _home(path: Optional[Path]) -> Iterator[None]:
    """$TALKBENCH_HOME set to `path` inside the block (unchanged when None)."""
    if path is None:
        yield
        return
    old = os.environ.get("TALKBENCH_HOME")
    os.environ["TALKBENCH_HOME"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TALKBENCH_HOME", None)
        else:
            os.environ["TALKBENCH_HOME"] = old


def _value(entry: dict) -> Optional[float]:
    if entry.get("unavailable") or entry.get("not_applicable"):
        return None
    v = entry.get("value")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _state(entry: Optional[dict]) -> str:
    if entry is None:
        return "absent"
    if entry.get("unavailable"):
        return "unavailable"
    if entry.get("not_applicable"):
        return "n/a"
    return "value" if _value(entry) is not None else "no value"


def compare(committed_dir: Path, reproduced_dir: Path, rows: Optional[list[str]] = None) -> list[Difference]:
    """Every metric of every committed row (or `rows`) against the reproduced folder; one
    Difference per metric whose value differs at all or fails (equal values are left out)."""
    committed, reproduced = read_results(committed_dir), read_results(reproduced_dir)
    spread = seed_spread(committed)
    new = {r["row"]: r for r in reproduced.methods}
    out = []
    for old in committed.methods:
        row = old["row"]
        if rows is not None and row not in rows:
            continue
        if old["provenance"].get("source") == "external predictions":
            continue
        got = new.get(row)
        learned = bool(old["provenance"].get("checkpoint_sha256"))
        for label, entry in old["metrics"].items():
            a = _value(entry)
            other = (got or {}).get("metrics", {}).get(label)
            b = _value(other) if other else None
            if got is None:
                out.append(Difference(row, label, a, None, 0.0, False, "row not reproduced"))
                continue
            if _state(entry) != _state(other):
                out.append(Difference(row, label, a, b, 0.0, False,
                                      f"committed {_state(entry)}, reproduced {_state(other)}"))
                continue
            if a is None:
                continue
            diff = abs(a - b)
            exact = diff <= RTOL * max(abs(a), abs(b))
            if learned and label in spread.get(row, {}):
                width = spread[row][label]["range"]
                n = spread[row][label]["n"]
                if not exact or diff > 0:
                    out.append(Difference(row, label, a, b, width, exact or diff <= width,
                                          f"learned: within the range over {n} seeds" if exact or diff <= width
                                          else f"learned: outside the range over {n} seeds"))
            elif diff > 0:
                why = ("no seed spread recorded" if learned else "no training: must be equal")
                out.append(Difference(row, label, a, b, RTOL * max(abs(a), abs(b)), exact,
                                      f"{why}: {'float noise' if exact else f'differs by {diff:.3g}'}"))
    return out


def report_lines(differences: list[Difference]) -> list[str]:
    if not differences:
        return ["No differences: every compared value is identical."]
    body = [[d.row, d.metric, "—" if d.committed is None else repr(d.committed),
             "—" if d.reproduced is None else repr(d.reproduced),
             "—" if d.committed is None or d.reproduced is None else f"{abs(d.committed - d.reproduced):.3g}",
             f"{d.allowed:.3g}", "pass" if d.passed else "FAIL", d.why] for d in differences]
    return markdown_table(["Row", "Metric", "committed", "reproduced", "|diff|", "allowed", "", "why"], body)


def reproduce(protocol_name: str, methods: Optional[list[str]] = None, results: Optional[Path] = None,
              fresh_home: bool = False, device: str = "cpu", progress: bool = True,
              work: Optional[Path] = None) -> tuple[list[Difference], list[str], Path]:
    """Rerun the committed rows of `protocol_name` (from `results`, default the repository's
    results/) into a temporary folder (or `work`) and compare. Returns (differences, skipped rows,
    the reproduced results folder)."""
    from bench.runner import run

    protocol = load_protocol(protocol_name)
    committed_dir = results_dir(protocol, results)
    committed = read_results(committed_dir)
    if not committed.methods:
        raise ValueError(f"{committed_dir} holds no results to reproduce")
    skipped = [r["row"] for r in committed.methods if r["provenance"].get("source") == "external predictions"]
    rows = [r for r in committed.methods if r["row"] not in skipped and (not methods or r["row"] in methods)]
    if methods:
        unknown = sorted(set(methods) - {r["row"] for r in rows})
        if unknown:
            raise ValueError(f"{committed_dir} has no reproducible row {', '.join(unknown)}")
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix=f"talkbench-reproduce-{protocol.id}-"))
    # rows run together when they were made with the same preset and seed
    groups: dict[tuple, list[str]] = {}
    for r in rows:
        groups.setdefault((r["provenance"].get("preset"), r["provenance"].get("seed", 0)), []).append(r["row"])
    home = None
    if fresh_home:
        from core.paths import talkbench_home

        home = work / "home"
        home.mkdir(parents=True, exist_ok=True)
        if (talkbench_home() / "weights").is_dir():
            (home / "weights").symlink_to((talkbench_home() / "weights").resolve(), target_is_directory=True)
    with _home(home):
        for (preset, seed), names in groups.items():
            out = run(protocol.path if protocol.path else protocol_name, methods=names, device=device,
                      seed=int(seed or 0), preset=preset, out_root=work / "results", progress=progress)
    differences = compare(committed_dir, out, [r["row"] for r in rows])
    return differences, skipped, out


def _cmd_reproduce(args: argparse.Namespace) -> int:
    methods = [m for m in args.methods.split(",") if m] if args.methods else None
    differences, skipped, out = reproduce(args.protocol, methods, Path(args.results) if args.results else None,
                                          args.fresh_home, args.device, not args.quiet)
    print("\n".join(report_lines(differences)))
    if skipped:
        print(f"skipped (external predictions, cannot be recomputed): {', '.join(skipped)}")
    failed = [d for d in differences if not d.passed]
    print(f"reproduced results: {out}")
    print(f"{len(failed)} value(s) outside what is allowed" if failed else "reproduced: every value passes")
    return 1 if failed else 0


def add_cli(sub) -> None:
    p = sub.add_parser("reproduce", help="recompute a protocol's committed results and compare every value")
    p.add_argument("protocol")
    p.add_argument("--methods", help="comma-separated rows to reproduce (default: every committed row)")
    p.add_argument("--results", help="results root holding the committed folder (default: the repository's results/)")
    p.add_argument("--fresh-home", action="store_true",
                   help="run with $TALKBENCH_HOME at an empty temporary folder (a clean cache)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_reproduce)
