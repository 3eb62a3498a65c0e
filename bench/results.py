"""Result files: the one module that writes and reads them.

A protocol's results folder (`results/<protocol>/` by default) holds

* `<row>.json`, one per method row (`kind: method`): aggregates, per-clip values, failures and
  provenance, plus everything the report needs to print them — each metric's label, name,
  direction (`higher_is_better`), unit and level (clip or set), and the test clips' speaker,
  emotion and intensity (`test_clips`);
* `<row>.seeds.json` (`kind: seeds`), for a learned row run with `talkbench run --seeds 0,1,2`:
  the row's metric values for every seed (`seeds_result`; `<row>.json` holds the first seed's full
  result), which `seed_spread` summarises and the report's "Seed variance" section prints. It may
  come from another run than `<row>.json`: it records its own provenance;
* `_run_timings.json` (`kind: run_timings`): the wall-clock time of each stage of the last
  `talkbench run` that wrote into the folder (corpus, evaluators, each row's fit / predict / score,
  the detector floor, the total) with the rows and seeds it ran (`run_timings`);
* `_detector_floor.json` (`kind: detector_floor`), `_motion_floor.json` (`kind: motion_floor`: the
  head-motion metrics of the ground truth and of still heads through the frame routes,
  `bench.motion_routes`), `_data_preparation.json` (`kind:
  data_preparation`, real datasets only), `sanity.json` (`kind: sanity`) and, for a protocol that
  pins an evaluator, `_expert_<kind>.json` (`kind: expert_quality`, written by `bench.experts`,
  read there by the report's "Evaluators" section); other kinds are not method rows;
* `figures/`: the small arrays the report's figures are drawn from (`bench.figures`), saved by the
  run while it had the clips, and the PNGs drawn from them.

No machine paths: `write_result` passes every string through `portable`, which rewrites an
absolute path under `$TALKBENCH_HOME` to `$TALKBENCH_HOME/...`, under the repository to a path
relative to it and under the user's home to `~/...` (the report applies it to its text too), so a
committed results folder names files, sha256s and relative paths, never this machine's layout.

Every file carries `schema_version`. A file without it, or with another version, was written by
another talkbench: `read_result` refuses it and says to rerun, rather than guessing at its layout.
`to_frame` turns a folder into a tidy pandas DataFrame (one row per method row x clip x metric).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from core.io import write_json
from core.paths import repo_root, talkbench_home

SCHEMA_VERSION = 2
DETECTOR_FLOOR = "_detector_floor"  # file stem of the detector-noise floor
DATA_FILE = "_data_preparation.json"
SANITY_FILE = "sanity.json"
RUN_TIMINGS_FILE = "_run_timings.json"
SEEDS_SUFFIX = ".seeds.json"  # <row>.seeds.json: a learned row's metric values per training seed
FIGURES_DIR = "figures"
GROUPS = ("speaker", "emotion")  # the breakdowns every result supports
FRAME_COLUMNS = ["row", "clip", "metric", "value", "speaker", "emotion", "intensity"]


class ResultSchemaError(ValueError):
    """A result file this talkbench cannot read (no or another schema version)."""


def results_dir(protocol, root: Optional[Path] = None) -> Path:
    """`<root>/<protocol id>`; root defaults to the repository's `results/`."""
    return (Path(root) if root else repo_root() / "results") / protocol.id


def _prefixes() -> list[tuple[str, str]]:
    """(absolute prefix, portable replacement), longest prefix first; each folder both as given and
    resolved (symlinks, e.g. /tmp -> /private/tmp)."""
    pairs: dict[str, str] = {}
    for folder, name in ((Path.home(), "~"), (repo_root(), "."), (talkbench_home(), "$TALKBENCH_HOME")):
        for variant in {os.path.abspath(folder), str(Path(folder).resolve())}:
            if variant.strip("/"):  # never rewrite "/" itself
                pairs[variant.rstrip("/")] = name
    return sorted(pairs.items(), key=lambda p: -len(p[0]))


def portable(value: Any, prefixes: Optional[list[tuple[str, str]]] = None) -> Any:
    """`value` (a string, or lists / dicts of them, keys included) with every absolute path under
    $TALKBENCH_HOME written `$TALKBENCH_HOME/...`, under the repository relative to it (`results/x`,
    the repository itself `.`) and under the home folder `~/...`. Other values pass unchanged."""
    prefixes = _prefixes() if prefixes is None else prefixes
    if isinstance(value, str):
        for prefix, name in prefixes:
            if prefix not in value:
                continue
            pattern = re.escape(prefix) + r"(?:(/)|(?![\w.-]))"
            if name == ".":  # repo-relative: `<repo>/x` -> `x`, `<repo>` -> `.`
                value = re.sub(pattern, lambda m: "" if m.group(1) else ".", value)
            else:
                value = re.sub(pattern, lambda m: name + (m.group(1) or ""), value)
        return value
    if isinstance(value, dict):
        return {portable(k, prefixes): portable(v, prefixes) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, prefixes) for v in value]
    return value


def portable_path(path: Path | str) -> str:
    """One path as `portable` writes it; a path outside $TALKBENCH_HOME, the repository and the home
    folder (a dataset root, a folder of external predictions) is reduced to `.../<its name>`."""
    text = portable(os.path.abspath(path))
    return f".../{Path(text).name}" if os.path.isabs(text) else text


def write_result(path: Path, result: dict) -> Path:
    """Write one result file, stamped with the schema version, its paths made `portable`."""
    write_json(Path(path), portable({**result, "schema_version": SCHEMA_VERSION}))
    return Path(path)


def read_result(path: Path) -> dict:
    """One result file; ResultSchemaError if it was written under another schema."""
    data = json.loads(Path(path).read_text())
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        what = "no schema_version" if version is None else f"schema_version {version}"
        protocol = data.get("protocol", "<protocol>")
        raise ResultSchemaError(
            f"{path} has {what}; this talkbench reads schema_version {SCHEMA_VERSION}. It was "
            f"written by another talkbench version: rerun `talkbench run {protocol}` (or `talkbench "
            f"score` for external predictions) to rewrite it")
    return data


@dataclass
class Results:
    """Everything in one results folder."""

    folder: Path
    methods: list[dict] = field(default_factory=list)
    floor: Optional[dict] = None
    motion_floor: Optional[dict] = None  # `kind: motion_floor` (`bench.motion_routes`)
    sanity: Optional[dict] = None
    data: Optional[dict] = None
    seeds: dict[str, dict] = field(default_factory=dict)  # row -> its `kind: seeds` file
    run_timings: Optional[dict] = None  # the `kind: run_timings` file of the last run

    def clips(self) -> dict[str, dict]:
        """clip id -> {speaker, emotion, intensity} over every method result."""
        out: dict[str, dict] = {}
        for result in self.methods:
            out.update(result.get("test_clips", {}))
        return dict(sorted(out.items()))

    def metric_info(self) -> dict[str, dict]:
        """label -> {label, name, higher_is_better, unit, level} as the results recorded it."""
        out: dict[str, dict] = {}
        for result in self.methods:
            for label, entry in result["metrics"].items():
                info = out.setdefault(label, {"label": label})
                for key in ("name", "higher_is_better", "unit", "level"):
                    if entry.get(key) is not None and info.get(key) is None:
                        info[key] = entry[key]
        return out


def read_results(folder: Path) -> Results:
    """Every result file of a results folder (an empty Results if it has none)."""
    folder = Path(folder)
    out = Results(folder)
    reports: dict[str, dict] = {}
    for path in sorted(folder.glob("*.json")):
        data = read_result(path)
        kind = data.get("kind")
        if kind == "method":
            out.methods.append(data)
        elif kind == "detector_floor":
            out.floor = data
        elif kind == "motion_floor":
            out.motion_floor = data
        elif kind == "sanity":
            out.sanity = data
        elif kind == "data_preparation":
            out.data = data
        elif kind == "seeds":
            out.seeds[data["row"]] = data
        elif kind == "run_timings":
            out.run_timings = data
        elif kind == "fit_report":
            reports[data["row"]] = data
    for result in out.methods:  # a row's fit report (`Method.fit_report`) travels with its result
        if result.get("row") in reports:
            result["fit_report"] = reports[result["row"]]
    return out


def run_timings(stages: dict[str, float], rows: dict[str, list[dict]], total_s: float,
                command: dict, provenance: dict) -> dict:
    """The `kind: run_timings` file: seconds per stage of one `talkbench run` (`stages`: corpus,
    evaluators, detector floor), each row's fit/load, predict, load and score seconds per seed
    (`rows`: row -> one `timings` dict per seed run), the total, and the command's arguments."""
    return {"kind": "run_timings", "stages": stages, "rows": rows,
            "total_s": total_s, "command": command, "provenance": provenance}


def seeds_result(row: str, per_seed: dict[int, dict], provenance: dict) -> dict:
    """The `kind: seeds` file of one row: for each metric, its value (None if it had none) under
    every seed, from the row's result dict per seed; each seed's checkpoint sha256 and config."""
    first = next(iter(per_seed.values()))
    metrics = {}
    for label, entry in first["metrics"].items():
        metrics[label] = {"higher_is_better": entry.get("higher_is_better"),
                          "values": {str(s): r["metrics"].get(label, {}).get("value")
                                     for s, r in per_seed.items()}}
    return {
        "kind": "seeds",
        "protocol": first["protocol"],
        "protocol_hash": first["protocol_hash"],
        "row": row,
        "seeds": [int(s) for s in per_seed],
        "metrics": metrics,
        "runs": {str(s): {k: r["provenance"].get(k) for k in ("config_hash", "checkpoint_sha256", "preset")}
                 for s, r in per_seed.items()},
        "provenance": provenance,
    }


def seed_spread(results: "Results") -> dict[str, dict[str, dict]]:
    """row -> metric label -> {mean, std, min, max, range, n, values} over the seeds a `kind: seeds`
    file recorded (std: sample standard deviation, 0 for one seed; metrics without a value under
    some seed use the seeds that have one, and are left out if none has)."""
    import math

    out: dict[str, dict[str, dict]] = {}
    for row, data in sorted(results.seeds.items()):
        for label, entry in data["metrics"].items():
            values = [float(v) for v in entry["values"].values()
                      if v is not None and math.isfinite(float(v))]
            if not values:
                continue
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            out.setdefault(row, {})[label] = {
                "mean": mean, "std": std, "min": min(values), "max": max(values),
                "range": max(values) - min(values), "n": len(values), "values": entry["values"]}
    return out


def clip_table(clips) -> dict[str, dict]:
    """The per-clip metadata every result stores: clip id -> speaker, emotion, intensity."""
    return {c.id: {"speaker": c.speaker, "emotion": c.emotion, "intensity": int(c.intensity)}
            for c in sorted(clips, key=lambda c: c.id)}


def describe_metric(name: str, label: str, params: dict[str, Any]) -> dict:
    """{label, name, higher_is_better, unit, level} of a protocol metric, from its class.

    The scorer stamps this into every result (it is known even when the metric cannot be built
    here, e.g. weights missing); a report reads it back from the results and calls this only for a
    protocol's metrics that no result holds yet.
    """
    from metrics import METRICS

    cls = METRICS[name] if name in METRICS else None
    return {"label": label, "name": name,
            "higher_is_better": (cls.higher_is_better_of(params) if hasattr(cls, "higher_is_better_of")
                                 else getattr(cls, "higher_is_better", None)),
            "unit": cls.unit_of(params) if cls else None,
            "level": getattr(cls, "level", None)}


def to_frame(source: Path | Results) -> pd.DataFrame:
    """Per-clip values of every method row as a tidy DataFrame.

    Columns: row, clip, metric (the protocol's label), value, speaker, emotion, intensity. Only
    clips that got a value appear (failures are in the results, not here); set-level metrics have
    no per-clip value and appear in their results' `groups` instead.
    """
    results = source if isinstance(source, Results) else read_results(Path(source))
    records = []
    for result in results.methods:
        meta = result.get("test_clips", {})
        for label, entry in result["metrics"].items():
            for clip, value in entry.get("per_clip", {}).items():
                m = meta.get(clip, {})
                records.append((result["row"], clip, label, value, m.get("speaker"), m.get("emotion"),
                                m.get("intensity")))
    return pd.DataFrame.from_records(records, columns=FRAME_COLUMNS)
