"""Markdown reports, built only from the result JSONs of one protocol (plus figures).

Layout follows the papers: one table with an arrow per metric, the best value in bold and the
second underlined, the paper's reported rows beside ours, then confidence intervals, failures,
unavailable metrics, the detector-noise floor, figures and provenance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from bench.protocol import Protocol, load_protocol

FLOOR_FILE = "_detector_floor.json"


def load_results(out: Path) -> tuple[list[dict], Optional[dict]]:
    rows, floor = [], None
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("kind") == "detector_floor":
            floor = data
        elif data.get("kind") == "method":
            rows.append(data)
    return rows, floor


def fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def rank_marks(values: dict[str, Optional[float]], higher_is_better: bool) -> dict[str, str]:
    """'best' and 'second' per row (ties share the mark) for one metric column."""
    finite = sorted({v for v in values.values() if v is not None and not math.isnan(v)},
                    reverse=higher_is_better)
    marks = {}
    for row, v in values.items():
        if v is None or math.isnan(v):
            continue
        if finite and v == finite[0]:
            marks[row] = "best"
        elif len(finite) > 1 and v == finite[1]:
            marks[row] = "second"
    return marks


def _styled(text: str, mark: Optional[str]) -> str:
    return f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text


def _order(protocol: Protocol, rows: list[dict]) -> list[dict]:
    listed = [m.row for m in protocol.methods]
    return sorted(rows, key=lambda r: (listed.index(r["row"]) if r["row"] in listed else len(listed), r["row"]))


def _coverage(row: dict) -> str:
    sources = row.get("landmark_source", [])
    if "detected" in sources and "predicted" not in sources:
        return "detected on frames"
    points = row.get("landmark_points") or []
    if not points:
        return "—"
    n = sorted({len(p) for p in points})
    return f"{'/'.join(map(str, n))} pts, predicted"


def main_table(protocol: Protocol, rows: list[dict]) -> list[str]:
    labels = [m.label for m in protocol.metrics]
    directions = {}
    for row in rows:
        for label in labels:
            hib = row["metrics"].get(label, {}).get("higher_is_better")
            if hib is not None:
                directions[label] = hib
    head = ["Method", "Landmarks"] + [f"{l} {'↑' if directions.get(l) else '↓' if l in directions else ''}".strip()
                                      for l in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    marks = {l: rank_marks({r["row"]: r["metrics"].get(l, {}).get("value") for r in rows},
                           directions.get(l, False)) for l in labels}
    for row in rows:
        cells = [row["row"], _coverage(row)]
        for label in labels:
            m = row["metrics"].get(label, {})
            if m.get("unavailable"):
                cells.append("unavailable")
            elif m.get("not_applicable"):
                cells.append("n/a")
            else:
                cells.append(_styled(fmt(m.get("value")), marks[label].get(row["row"])))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ci_table(protocol: Protocol, rows: list[dict]) -> list[str]:
    labels = [m.label for m in protocol.metrics]
    lines = ["| Method | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for row in rows:
        cells = [row["row"]]
        for label in labels:
            m = row["metrics"].get(label, {})
            if m.get("unavailable") or m.get("not_applicable"):
                cells.append("unavailable" if m.get("unavailable") else "n/a")
                continue
            lo, hi = m.get("ci", [None, None])
            cells.append(f"{fmt(m.get('value'))} [{fmt(lo)}, {fmt(hi)}] · N={m.get('n', 0)}, "
                         f"failed {m.get('failures', 0)}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _printed(value, digits: int) -> str:
    """A transcribed paper number with its column's decimals (YAML keeps 3.300 as 3.3); 0 stays 0."""
    if value is None:
        return "—"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _decimals(values) -> int:
    """Decimals the paper uses in a column (talkbench values are shown with as many)."""
    found = [len(repr(float(v)).split(".")[1]) for v in values if isinstance(v, float)]
    return max(found) if found else 3


def _metric_directions(protocol: Protocol) -> dict[str, Optional[bool]]:
    """label -> higher_is_better from the metric classes (None: metric not registered here)."""
    from metrics import METRICS

    return {m.label: (METRICS[m.name].higher_is_better if m.name in METRICS else None) for m in protocol.metrics}


def reference_tables(protocol: Protocol, rows: list[dict]) -> list[str]:
    """Each transcribed paper table in the paper's layout: its rows in order, its columns with arrows,
    best bold / second underlined among the paper's ranked rows. A paper row whose `ours` method has
    a result is followed by that talkbench row; talkbench rows no paper row names come last. Values
    in a unit the metric does not use (`scale`) are shown in the paper's unit on both sides."""
    from bench.protocol import reference_columns

    directions = _metric_directions(protocol)
    by_row = {r["row"]: r for r in rows}
    lines = []
    for ref in protocol.reference_results:
        cols = reference_columns(ref, protocol)
        scale, unit = ref.get("scale", {}), ref.get("unit", {})
        lines += ["", f"### Paper: {ref['source']}, {ref['table']}", ""]
        if ref.get("caption"):
            lines += [f"> {ref['table']}: {ref['caption']}", ""]
        setting = ref.get("setting_column")
        head = ["Method"] + ([setting] if setting else []) + ["Source"]
        for c in cols:
            arrow = {True: " ↑", False: " ↓"}.get(directions.get(c), "")
            head.append(f"{c}{arrow}" + (f" ({unit[c]})" if c in unit else ""))
        digits = {c: _decimals(r["values"].get(c) for r in ref["rows"]) for c in cols}
        # Each entry: (method, setting, source, {label: (value in the paper's unit, text)}, ranked)
        table: list[tuple[str, str, str, dict, bool]] = []
        claimed = set()
        for r in ref["rows"]:
            cells = {c: (r["values"].get(c), _printed(r["values"].get(c), digits[c])) for c in cols}
            table.append((r["method"], r.get("setting") or "", "paper", cells, r.get("ranked", True)))
            ours = r.get("ours")
            if ours and rows:
                claimed.add(ours)
                result = by_row.get(ours)
                tb = {c: _talkbench_cell(result, c, scale.get(c, 1), digits[c])
                      for c in cols} if result else {c: (None, "—") for c in cols}
                source = "talkbench" if result else "talkbench (not run)"
                table.append((f"{ours}", "", source, tb, result is not None and ours != "ground_truth"))
        for row in rows:
            if row["row"] not in claimed:
                tb = {c: _talkbench_cell(row, c, scale.get(c, 1), digits[c])
                      for c in cols}
                table.append((row["row"], "", "talkbench", tb, row["row"] != "ground_truth"))
        marks = {}
        for source in ("paper", "talkbench"):
            for c in cols:
                values = {i: t[3][c][0] for i, t in enumerate(table)
                          if t[2] == source and t[4] and t[3][c][0] is not None}
                marks.update({(i, c): m for i, m in rank_marks(values, bool(directions.get(c))).items()})
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, (method, set_cell, source, cells, _) in enumerate(table):
            out = [method] + ([set_cell] if setting else []) + [source]
            out += [_styled(cells[c][1], marks.get((i, c))) if cells[c][0] is not None else cells[c][1] for c in cols]
            lines.append("| " + " | ".join(out) + " |")
        by_factor: dict[tuple, list[str]] = {}
        for c, factor in scale.items():
            by_factor.setdefault((unit.get(c, "the paper's unit"), factor), []).append(c)
        for (name, factor), labels in by_factor.items():
            lines += ["", f"{', '.join(labels)}: printed in {name}; talkbench value = paper value × {factor:g}, "
                          "and talkbench rows are shown in the paper's unit."]
        if ref.get("note"):
            lines += ["", f"Note: {ref['note']}"]
    return lines


def _talkbench_cell(result: Optional[dict], label: str, factor: float, digits: int) -> tuple[Optional[float], str]:
    """(value in the paper's unit, text) of one talkbench metric for a reference table."""
    m = (result or {}).get("metrics", {}).get(label, {})
    if m.get("unavailable"):
        return None, "unavailable"
    if m.get("not_applicable"):
        return None, "n/a"
    value = m.get("value")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, "—"
    value = value / factor
    return value, fmt(value, digits)


def failure_lines(rows: list[dict]) -> list[str]:
    """Every failed clip, grouped by method, metric and reason so long lists stay readable."""
    lines = []
    for row in rows:
        for clip, reason in row.get("prediction_failures", {}).items():
            lines.append(f"- **{row['row']}**, clip `{clip}`: prediction failed: {reason}")
        for label, m in row["metrics"].items():
            groups: dict[str, list[str]] = {}
            for clip, reason in m.get("failure_reasons", {}).items():
                if clip not in row.get("prediction_failures", {}):
                    groups.setdefault(reason, []).append(clip)
            for reason, clips in groups.items():
                shown = ", ".join(f"`{c}`" for c in clips[:8]) + (f" and {len(clips) - 8} more" if len(clips) > 8 else "")
                lines.append(f"- **{row['row']}**, {label}, {len(clips)} clip(s): {reason} ({shown})")
    return lines or ["None: every clip of every method was scored by every metric that applies to it."]


def not_applicable_lines(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        by_reason: dict[str, list[str]] = {}
        for label, m in row["metrics"].items():
            if m.get("not_applicable"):
                by_reason.setdefault(m["not_applicable"], []).append(label)
        for reason, labels in by_reason.items():
            lines.append(f"- **{row['row']}**: {', '.join(labels)} ({reason})")
    return lines or ["None."]


def note_lines(rows: list[dict]) -> list[str]:
    """Metric notes, per-clip ones ("clip X: ...") grouped by their text."""
    lines = []
    for row in rows:
        for label, m in row["metrics"].items():
            groups: dict[str, list[str]] = {}
            for note in m.get("notes", []):
                clip, sep, text = note.partition(": ") if note.startswith("clip ") else ("", "", note)
                groups.setdefault(text, []).append(clip[len("clip "):] if sep else "")
            for text, clips in groups.items():
                clips = [c for c in clips if c]
                where = (f"{len(clips)} clip(s): " if clips else "")
                lines.append(f"- **{row['row']}**, {label}: {where}{text}")
    return lines


def unavailable_lines(rows: list[dict]) -> list[str]:
    seen = {}
    for row in rows:
        for label, m in row["metrics"].items():
            if m.get("unavailable"):
                seen[label] = m["unavailable"]
    return [f"- **{k}**: {v}" for k, v in seen.items()] or ["None."]


def floor_lines(floor: Optional[dict]) -> list[str]:
    if not floor:
        return ["Not measured (the dataset has no frames or the protocol names no detector)."]
    det = floor["detector"]
    details = ", ".join(f"{k} {v}" for k, v in det.items() if k != "name")
    lines = [f"The protocol's detector (`{det.get('name')}`: {details}) run on the ground-truth frames, "
             f"compared with the dataset's exact landmarks: {floor['frames']} frames, "
             f"{floor['missed_frames']} without a detected face. Frame-scored landmark values "
             "below these cannot be told apart from ground truth.", "",
             "| " + " | ".join(floor["metrics"]) + " |", "|" + "---|" * len(floor["metrics"]),
             "| " + " | ".join(fmt(v["value"]) for v in floor["metrics"].values()) + " |"]
    return lines


def provenance_lines(rows: list[dict]) -> list[str]:
    lines = ["| Method | preset | config | checkpoint sha256 | seed | device | commit | fit/load s | predict s | score s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        p, t = row["provenance"], row.get("timings", {})
        ckpt = (p.get("checkpoint_sha256") or "—")[:12]
        git = p.get("git", {})
        commit = (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
        lines.append(f"| {row['row']} | {p.get('preset', '—')} | {p.get('config_hash', '—')} | {ckpt} | "
                     f"{p.get('seed', '—')} | {p.get('device', '—')} | {commit} | "
                     f"{fmt(t.get('fit_or_load_s'), 1)} | {fmt(t.get('predict_s'), 1)} | {fmt(t.get('score_s'), 1)} |")
    if rows:
        pk = rows[0]["provenance"].get("packages", {})
        lines += ["", "Packages: " + ", ".join(f"{k} {v}" for k, v in sorted(pk.items())) + "."]
    return lines


def write_report(protocol: Protocol | str, out: Path, figures: bool = True) -> Path:
    protocol = load_protocol(protocol) if isinstance(protocol, str) else protocol
    out.mkdir(parents=True, exist_ok=True)
    rows, floor = load_results(out)
    rows = _order(protocol, rows)
    figure_files = []
    if figures and rows:
        from bench.figures import make_figures

        figure_files = make_figures(protocol, rows, out / "figures")
    n_clips = rows[0]["clips"] if rows else 0
    lines = [f"# {protocol.title}", "",
             f"Protocol `{protocol.id}` v{protocol.version} (sha256 `{protocol.hash[:16]}`), dataset "
             f"`{protocol.dataset}`, {n_clips} test clips at {protocol.fps:g} fps. Regenerate with "
             f"`talkbench run {protocol.id}`; this file is rebuilt from the JSONs beside it by "
             f"`talkbench report {protocol.id}`.", "",
             "## Results", "", "↓ lower is better, ↑ higher is better; **best**, <u>second</u>. "
             "Landmark metrics of methods that output landmarks use the exact reference landmarks; "
             "methods that output only frames are scored through the protocol's detector on both sides.", ""]
    lines += main_table(protocol, rows) if rows else ["No results yet: run `talkbench run " + protocol.id + "`."]
    if protocol.reference_results:
        lines += ["", "## Paper-reported results beside talkbench's"] + reference_tables(protocol, rows)
    lines += ["", "## Mean, 95% bootstrap CI, clips scored and failures", "",
              f"Percentile bootstrap over clips, {protocol.bootstrap['samples']} resamples, seed "
              f"{protocol.bootstrap['seed']}.", ""]
    lines += ci_table(protocol, rows)
    lines += ["", "## Detector-noise floor", ""] + floor_lines(floor)
    lines += ["", "## Failures", ""] + failure_lines(rows)
    lines += data_preparation_lines(out)
    lines += ["", "## Not applicable (the method does not output what the metric needs)", ""]
    lines += not_applicable_lines(rows)
    lines += ["", "## Unavailable metrics", ""] + unavailable_lines(rows)
    if note_lines(rows):
        lines += ["", "## Notes from the metrics", ""] + note_lines(rows)
    if figure_files:
        lines += ["", "## Figures", ""]
        for path, caption in figure_files:
            lines += [f"![{caption}](figures/{path.name})", "", f"*{caption}*", ""]
    from bench.sanity import report_lines as sanity_lines  # results/<protocol>/sanity.json, if any

    lines += sanity_lines(out)
    lines += ["", "## Provenance", ""] + provenance_lines(rows)
    path = out / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def data_preparation_lines(out: Path) -> list[str]:
    """The "Data preparation" section: dataset items that could not be prepared, by reason.

    Built from `_data_preparation.json` (written by the runner for real datasets); absent for
    synthtalk, which is generated rather than prepared.
    """
    path = out / "_data_preparation.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    failed = data.get("failed", {})
    lines = ["", "## Data preparation", "",
             f"Dataset `{data.get('dataset')}` at `{data.get('root')}`: {data.get('ok')} of "
             f"{data.get('items')} items prepared (pipeline `{data.get('pipeline_version')}`; "
             f"manifest `{data.get('manifest')}`).", ""]
    if not failed:
        return lines + ["No item failed."]
    lines += ["| reason | items | ids |", "|---|---:|---|"]
    for reason, ids in sorted(failed.items()):
        shown = ", ".join(f"`{i}`" for i in ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
        lines.append(f"| {reason} | {len(ids)} | {shown} |")
    details = data.get("details", {})
    if details:
        lines += ["", "Details:", ""]
        lines += [f"- `{i}`: {details[i]}" for i in sorted(details)[:50]]
    return lines
