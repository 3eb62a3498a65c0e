"""Markdown reports, built only from a protocol and its results folder (`bench.results`).

Layout follows the papers: one table with an arrow per metric, the best value in bold and the
second underlined, the paper's reported rows beside ours, then confidence intervals, breakdowns by
speaker and by emotion, the spread across training seeds (rankings within it marked ≈), failures, unavailable metrics, the detector-noise floor, the head-motion
routes with their ground-truth-through-route references and jitter floors (head-motion columns are
ranked only among rows of one route), figures and provenance. Nothing here loads a dataset, a prediction or a metric network: directions, units and
per-clip metadata come from the result files, figures from the arrays the run saved beside them.
Every table is laid out by `tabulate` (`bench.tables`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from bench.figures import make_figures
from bench.protocol import Protocol, load_protocol, reference_columns
from bench.results import (FIGURES_DIR, GROUPS, Results, describe_metric, portable, read_result,
                           read_results, seed_spread, to_frame)
from bench.sanity import report_lines as sanity_lines
from bench.stats import bootstrap_ci
from bench.tables import markdown_table


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


def order_rows(protocol: Protocol, rows: list[dict]) -> list[dict]:
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


def metric_info(protocol: Protocol, results: Results) -> dict[str, dict]:
    """label -> {label, name, higher_is_better, unit, level} of every protocol metric: as the
    results recorded it; from the metric's class only for a label no result holds yet (a paper
    table printed before any run)."""
    stored = results.metric_info()
    out = {}
    for spec in protocol.metrics:
        info = stored.get(spec.label, {})
        if info.get("higher_is_better") is None or info.get("level") is None:
            info = {**describe_metric(spec.name, spec.label, spec.params),
                    **{k: v for k, v in info.items() if v is not None}}
        out[spec.label] = info
    for stat in protocol.fit_statistics:
        out[stat["label"]] = {"label": stat["label"], "name": stat["key"], "higher_is_better": stat["higher_is_better"],
                              "unit": stat["unit"], "level": "fit"}
    return out


def fit_statistic(protocol: Protocol, result: Optional[dict], label: str) -> Optional[float]:
    """The value of fit statistic `label` in a row's fit report (None: no report, or no such key)."""
    for stat in protocol.fit_statistics:
        if stat["label"] == label:
            value = ((result or {}).get("fit_report") or {}).get(stat["key"])
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return None


def fit_statistic_lines(protocol: Protocol, rows: list[dict], info: dict[str, dict]) -> list[str]:
    """Each row's fit statistics (`fit_statistics:`), read from its `_<row>_fit_report.json`."""
    labels = [s["label"] for s in protocol.fit_statistics]
    if not labels:
        return []
    head = ["Method"] + [f"{l}{_arrow(info[l])}" + (f" ({info[l]['unit']})" if info[l].get("unit") else "")
                         for l in labels]
    body = [[r["row"]] + [fmt(fit_statistic(protocol, r, l), 4) if fit_statistic(protocol, r, l) is not None
                          else "—" for l in labels] for r in rows]
    keys = ", ".join(f"{s['label']} = `{s['key']}`" for s in protocol.fit_statistics)
    return ["", "## Fit statistics", "", f"From each row's own fit (`_<row>_fit_report.json`: {keys}); "
            "— where the row has no fit report.", ""] + markdown_table(head, body)


def _arrow(info: dict) -> str:
    return {True: " ↑", False: " ↓"}.get(info.get("higher_is_better"), "")


SPREAD_MARK = " ≈"


def within_spread(rows: list[dict], spread: dict[str, dict[str, dict]]) -> dict[str, list[tuple]]:
    """label -> [(row a, row b, |a - b|, seed range)] for every pair of rows whose values on that
    metric differ by no more than the larger range (max - min over seeds) of the two rows: their
    order could flip with another training seed. A row without a seed record counts as range 0;
    pairs where neither row has one are not compared."""
    out: dict[str, list[tuple]] = {}
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            for label in set(a["metrics"]) & set(b["metrics"]):
                ra, rb = spread.get(a["row"], {}).get(label), spread.get(b["row"], {}).get(label)
                va, vb = a["metrics"][label].get("value"), b["metrics"][label].get("value")
                if (ra is None and rb is None) or va is None or vb is None:
                    continue
                if not (math.isfinite(va) and math.isfinite(vb)):
                    continue
                width = max((r["range"] for r in (ra, rb) if r is not None), default=0.0)
                if abs(va - vb) <= width:
                    out.setdefault(label, []).append((a["row"], b["row"], abs(va - vb), width))
    return out


def _spread_marked(pairs: dict[str, list[tuple]]) -> set[tuple[str, str]]:
    return {(row, label) for label, found in pairs.items() for a, b, *_ in found for row in (a, b)}


def main_table(protocol: Protocol, rows: list[dict], info: dict[str, dict],
               marked: frozenset = frozenset()) -> list[str]:
    labels = [m.label for m in protocol.metrics]
    head = ["Method", "Landmarks"] + [f"{l}{_arrow(info[l])}" for l in labels]
    marks = {l: route_ranks(rows, l, bool(info[l].get("higher_is_better"))) for l in labels}
    body = []
    for row in rows:
        cells = [row["row"], _coverage(row)]
        for label in labels:
            m = row["metrics"].get(label, {})
            if m.get("unavailable"):
                cells.append("unavailable")
            elif m.get("not_applicable"):
                cells.append("n/a")
            else:
                cells.append(_styled(fmt(m.get("value")), marks[label].get(row["row"])) + unpinned_mark(m)
                             + (SPREAD_MARK if (row["row"], label) in marked else ""))
        body.append(cells)
    return markdown_table(head, body)


def _route_of(entry: dict) -> Optional[str]:
    route = entry.get("route")
    return ", ".join(route) if isinstance(route, list) else route


def route_ranks(rows: list[dict], label: str, higher_is_better: bool) -> dict[str, str]:
    """`rank_marks` of one column, head-motion columns ranked only among rows of one pose route
    (values through different routes are not comparable: `bench.motion_routes`)."""
    groups: dict[Optional[str], dict[str, Optional[float]]] = {}
    for r in rows:
        entry = r["metrics"].get(label, {})
        groups.setdefault(_route_of(entry), {})[r["row"]] = entry.get("value")
    marks: dict[str, str] = {}
    for values in groups.values():
        marks.update(rank_marks(values, higher_is_better))
    return marks


def mixed_route_lines(protocol: Protocol, rows: list[dict]) -> list[str]:
    """A line per head-motion column whose rows come through different pose routes ([] if none)."""
    lines = []
    for label in (m.label for m in protocol.metrics):
        by_route: dict[str, list[str]] = {}
        for r in rows:
            route = _route_of(r["metrics"].get(label, {}))
            if route and r["metrics"][label].get("value") is not None:
                by_route.setdefault(route, []).append(r["row"])
        if len(by_route) > 1:
            lines.append(f"{label}: the rows come through different pose routes ("
                         + "; ".join(f"`{k}`: {', '.join(v)}" for k, v in sorted(by_route.items()))
                         + "); best and second are marked within each route only, and values of "
                           "different routes are not comparable (see \"Head motion\").")
    return ["", *lines] if lines else []


def _ci_text(e: Optional[dict]) -> str:
    if not e or e.get("value") is None:
        return "—"
    lo, hi = (e.get("ci") or [None, None])[:2]
    return f"{fmt(e['value'])} [{fmt(lo)}, {fmt(hi)}]"


def motion_floor_lines(floor: Optional[dict]) -> list[str]:
    """The frame routes of the protocol's head-motion metrics on the ground truth and on still heads,
    with and without pose smoothing (`_motion_floor.json`; [] when absent)."""
    if not floor or not floor.get("metrics"):
        return []
    body = []
    for label, entry in floor["metrics"].items():
        for sigma, routes in entry["sigmas"].items():
            for route, got in routes.items():
                body.append([label, sigma, f"`{route}`", _ci_text(got.get("ground_truth")),
                             _ci_text(got.get("still_static")), _ci_text(got.get("still_talking"))])
    det = floor.get("detector", {})
    return ["", f"Through the frame routes, on the {floor.get('clips')} ground-truth test clips "
                f"(`_motion_floor.json`; detector `{det.get('name')}`, mp4: H.264 crf "
                f"{floor.get('mp4', {}).get('crf')} as `talkbench` writes it) and with the pose smoothed "
                "over time by a Gaussian of σ frames (0: off, the protocol's setting unless it says "
                "otherwise): what a method handing in frames or an mp4 is read against. `pnp/predicted` "
                "is the ground truth's exact-landmark value for comparison.", ""] + markdown_table(
        ["Metric", "σ", "Route", "Ground truth [95% CI]", "Floor: static [95% CI]",
         "Floor: talking, head still [95% CI]"], body)


def motion_lines(protocol: Protocol, rows: list[dict], info: dict[str, dict],
                 floor: Optional[dict] = None) -> list[str]:
    """The "Head motion" section: per row and head-motion metric, its pose route, its value, the
    ground truth through the same route and, for frame routes, the jitter floors; then the frame
    routes of the protocol measured on the ground truth and still heads (`motion_floor_lines`)."""
    from metrics.motion import route_label

    body, routes, conventions = [], set(), {}
    for r in rows:
        for label in (m.label for m in protocol.metrics):
            e = r["metrics"].get(label, {})
            if "route" not in e or e.get("value") is None:
                continue
            ref, floors = e.get("route_reference") or {}, e.get("jitter_floor") or {}
            route = _route_of(e)
            routes.update(e["route"] if isinstance(e["route"], list) else [e["route"]])
            conventions[label] = e.get("params", {}).get("convention", "raw")
            smoothing = e.get("params", {}).get("pose_smoothing", 0)
            raw = e.get("raw_value", e.get("value"))
            raw_ci = e.get("raw_ci", e.get("ci", [None, None]))
            cells = [r["row"], label, f"`{route}`" + (f" (smoothed σ={smoothing:g})" if smoothing else ""),
                     f"{fmt(raw)} [{fmt(raw_ci[0])}, {fmt(raw_ci[1])}]",
                     f"{fmt(ref.get('value'))} [{fmt(ref.get('ci', [None])[0])}, {fmt(ref.get('ci', [None, None])[1])}]"
                     if ref else "—"]
            for still in ("static", "talking"):
                f = floors.get(still)
                cells.append(fmt(f.get("value")) if f else ("0 (by construction)" if ref and not floors else "—"))
            cells.append(fmt(e["value"]) if "distance" in e else "—")
            body.append(cells)
    if not body and not (floor or {}).get("metrics"):
        return []
    lines = ["", "## Head motion: pose routes, ground truth through the route, jitter floor", "",
             "A head-motion value measures the pose its route produces, not the head alone: per-frame "
             "detector jitter, an H.264 encoding or Hopenet's own noise read as head motion. Each row "
             "is given with its route, the ground truth through the same route (its reference: the "
             "ground-truth clips fed to the same estimator the same way) and, for routes that read "
             "frames, the jitter floor: the metric of a head that does not move through the same route "
             "(`static`: the first frame repeated; `talking`: the clip re-rendered with its speech, "
             "blinks and expressions but the head pose frozen, where the dataset can re-render). A "
             "value at or below the floor says nothing about head motion; compare rows only with the "
             "reference of their own route.", ""]
    if body:
        lines += markdown_table(["Method", "Metric", "Route", "Raw value [95% CI]", "Ground truth through route",
                                 "Floor: static", "Floor: talking, head still", "|value − GT|"], body)
    lines += motion_floor_lines(floor)
    for entry in (floor or {}).get("metrics", {}).values():
        for routes_at in entry["sigmas"].values():
            routes.update(routes_at)
    lines += ["", "Routes: " + "; ".join(f"`{k}`: {route_label(k)}" for k in sorted(routes)) + "."]
    raw = [l for l, c in conventions.items() if c == "raw"]
    dist = [l for l, c in conventions.items() if c == "distance"]
    if raw:
        lines += ["", f"Convention for {', '.join(raw)}: the raw value, \"higher is better\" as the papers "
                      "print it. Caveat: a jittery or shaking head scores higher than natural motion, and "
                      "a frame route adds its estimator's jitter; read it against the ground truth through "
                      "the same route, not as a ranking."]
    if dist:
        lines += ["", f"Convention for {', '.join(dist)}: |mean − mean of the ground truth through the same "
                      "route| over the clips both have (lower is better; CI by resampling those clips); "
                      "the raw value is shown beside it."]
    return lines


def units_line(protocol: Protocol, info: dict[str, dict]) -> list[str]:
    """One line naming each unit and its metrics (the results record the units)."""
    by_unit: dict[str, list[str]] = {}
    for label in (m.label for m in protocol.metrics):
        if info[label].get("unit"):
            by_unit.setdefault(info[label]["unit"], []).append(label)
    if not by_unit:
        return []
    return ["", "Units: " + "; ".join(f"{unit}: {', '.join(labels)}" for unit, labels in by_unit.items())
            + "; the other metrics are unitless scores."]


def _ci_cell(value, lo, hi, n) -> str:
    return f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}] · N={n}"


def ci_table(protocol: Protocol, rows: list[dict], marked: frozenset = frozenset()) -> list[str]:
    labels = [m.label for m in protocol.metrics]
    body = []
    for row in rows:
        cells = [row["row"]]
        for label in labels:
            m = row["metrics"].get(label, {})
            if m.get("unavailable") or m.get("not_applicable"):
                cells.append("unavailable" if m.get("unavailable") else "n/a")
                continue
            lo, hi = m.get("ci", [None, None])
            cells.append(f"{_ci_cell(m.get('value'), lo, hi, m.get('n', 0))}, failed {m.get('failures', 0)}"
                         + (SPREAD_MARK if (row["row"], label) in marked else ""))
        body.append(cells)
    return markdown_table(["Method"] + labels, body)


def seed_lines(protocol: Protocol, results: Results, rows: list[dict], info: dict[str, dict],
               spread: dict[str, dict[str, dict]], pairs: dict[str, list[tuple]]) -> list[str]:
    """The "Seed variance" section: per learned row and metric, mean ± std [min, max] over the
    training seeds of its `<row>.seeds.json`, and the rankings within that spread."""
    lines = ["", "## Seed variance of the learned methods", ""]
    learned = [r["row"] for r in rows if r["provenance"].get("checkpoint_sha256")]
    missing = [r for r in learned if r not in spread]
    if not spread:
        if not learned:
            return lines + ["No learned method in these results."]
        return lines + [f"Not measured for {', '.join(learned)}: `talkbench run {protocol.id} --seeds 0,1,2` "
                        "trains each learned method once per seed and records every seed's values."]
    labels = [m.label for m in protocol.metrics if any(m.label in spread[r] for r in spread)]
    body = []
    for row in [r["row"] for r in rows if r["row"] in spread] + sorted(set(spread) - {r["row"] for r in rows}):
        seeds = results.seeds[row]["seeds"]
        cells = [row, ",".join(map(str, seeds))]
        for label in labels:
            e = spread[row].get(label)
            cells.append("—" if e is None else f"{fmt(e['mean'])} ± {fmt(e['std'])} [{fmt(e['min'])}, {fmt(e['max'])}]")
        body.append(cells)
    commits = sorted({(results.seeds[r]["provenance"].get("git", {}).get("commit") or "unknown")[:10] for r in spread})
    lines += [f"Each learned method trained, predicted and scored once per seed (`talkbench run {protocol.id} "
              f"--seeds ...`, commit {', '.join(commits)}; this may be another run than the tables above, "
              "whose learned rows show the first seed). Per metric: mean ± sample standard deviation over "
              "seeds [min, max]. The clip-bootstrap CIs above measure the test clips' sampling; this "
              "measures training.", ""]
    lines += markdown_table(["Method", "Seeds"] + [f"{l}{_arrow(info.get(l, {}))}" for l in labels], body)
    for r in rows:  # the main row should be one of the seeds' runs
        record = results.seeds.get(r["row"])
        seed = str(r["provenance"].get("seed"))
        if record is None:
            continue
        differ = [l for l, e in record["metrics"].items()
                  if seed in e["values"] and e["values"][seed] != r["metrics"].get(l, {}).get("value")]
        if seed not in map(str, record["seeds"]):
            lines += ["", f"Note: the **{r['row']}** row above is seed {seed}, not among these seeds."]
        elif differ:
            lines += ["", f"Note: the **{r['row']}** row above (seed {seed}) differs from the seeds run's "
                          f"seed {seed} on {', '.join(differ)}: they were made by different code or data."]
    if missing:
        lines += ["", f"No seed record for {', '.join(missing)}."]
    lines += ["", "≈ in the tables above: the two rows' difference on that metric is within the seed range "
                  "(max − min over seeds) of one of them, so their ranking could change with another "
                  "training seed. Rows with nothing to learn count as range 0."]
    found = [(label, p) for label in [m.label for m in protocol.metrics] for p in pairs.get(label, [])]
    lines += [""] + ([f"- {label}: {a} ≈ {b} (differ by {fmt(d, 4)}, seed range {fmt(w, 4)})"
                      for label, (a, b, d, w) in found] or ["No ranking is within the seed spread."])
    return lines


def breakdown(protocol: Protocol, results: Results, by: str) -> dict[str, dict[str, dict[str, dict]]]:
    """row -> metric label -> group -> {value, ci, n} over the clips of each `by` group.

    Clip-level metrics: the mean of the group's per-clip values (from `to_frame`) with a seeded
    percentile bootstrap CI over those clips. Set-level metrics: the value recomputed on the
    group's clips and its CI, which the scorer stored (they cannot be derived from per-clip values).
    """
    boot = protocol.bootstrap
    frame = to_frame(results)
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for (row, label, group), part in frame.sort_values("clip").groupby(["row", "metric", by], sort=True):
        values = part["value"].to_numpy(dtype=np.float64)
        ci = bootstrap_ci(values, boot["samples"], boot["seed"], boot["confidence"])
        out.setdefault(row, {}).setdefault(label, {})[str(group)] = {
            "value": float(np.mean(values)), "ci": list(ci), "n": len(values)}
    for result in results.methods:
        for label, m in result["metrics"].items():
            for group, entry in m.get("groups", {}).get(by, {}).items():
                out.setdefault(result["row"], {}).setdefault(label, {})[group] = entry
    return out


def breakdown_lines(protocol: Protocol, results: Results, rows: list[dict], info: dict[str, dict]) -> list[str]:
    """The "Breakdowns" section: per method, one table per grouping (speaker, emotion)."""
    if not rows:
        return []
    boot = protocol.bootstrap
    clips = results.clips()
    lines = ["", "## Breakdowns by speaker and by emotion", "",
             f"Per group of test clips: the mean with its 95% percentile bootstrap CI over the group's "
             f"clips ({boot['samples']} resamples, seed {boot['seed']}) and N, the clips with a value. "
             "Set-level metrics (" + (", ".join(l for l in info if info[l].get("level") == "set") or "none")
             + ") are recomputed on the group's clips, their CI from resampling those clips. Metrics "
             "a method has no value for are left out of its tables."]
    for by in GROUPS:
        table = breakdown(protocol, results, by)
        groups = sorted({str(meta.get(by)) for meta in clips.values()})
        lines += ["", f"### By {by}"]
        for row in rows:
            got = table.get(row["row"], {})
            labels = [m.label for m in protocol.metrics if got.get(m.label)]
            if not labels:
                continue
            body = []
            for group in groups:
                cells = [group]
                for label in labels:
                    e = got[label].get(group)
                    cells.append("—" if e is None else _ci_cell(e["value"], *e["ci"], e["n"]))
                body.append(cells)
            lines += ["", f"**{row['row']}**", ""]
            lines += markdown_table([by.capitalize()] + [f"{l}{_arrow(info[l])}" for l in labels], body)
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


def reference_table_data(protocol: Protocol, rows: list[dict], info: dict[str, dict]) -> list[dict]:
    """Each transcribed paper table as data, in the paper's layout: its rows in order, each paper row
    whose `ours` method has a result followed by that talkbench row, talkbench rows no paper row
    names last. Per table: `title`, `caption`, `setting` (the setting column's name or None),
    `columns` [{label, arrow, unit}], `rows` [{method, setting, source ("paper", "talkbench" or
    "talkbench (not run)"), cells {label: (value in the paper's unit or None, text)}, ranked,
    marks {label: "best" | "second"}}] (best / second among the ranked rows of each source) and
    `notes`. Values in a unit the metric does not use (`scale`) are in the paper's unit on both
    sides. The markdown report (`reference_tables`) and the web page (`bench.site`) render it."""
    directions = {label: i.get("higher_is_better") for label, i in info.items()}
    by_row = {r["row"]: r for r in rows}
    tables = []
    for ref in protocol.reference_results:
        cols = reference_columns(ref, protocol)
        scale, unit = ref.get("scale", {}), ref.get("unit", {})
        digits = {c: _decimals(r["values"].get(c) for r in ref["rows"]) for c in cols}
        table: list[dict] = []
        claimed = set()
        for r in ref["rows"]:
            cells = {c: (r["values"].get(c), _printed(r["values"].get(c), digits[c])) for c in cols}
            table.append({"method": r["method"], "setting": r.get("setting") or "", "source": "paper",
                          "cells": cells, "ranked": r.get("ranked", True)})
            ours = r.get("ours")
            if ours and rows:
                claimed.add(ours)
                result = by_row.get(ours)
                tb = {c: _talkbench_cell(result, c, scale.get(c, 1), digits[c], protocol)
                      for c in cols} if result else {c: (None, "—") for c in cols}
                table.append({"method": ours, "setting": "", "source": "talkbench" if result else "talkbench (not run)",
                              "cells": tb, "ranked": result is not None and ours != "ground_truth"})
        for row in rows:
            if row["row"] not in claimed:
                tb = {c: _talkbench_cell(row, c, scale.get(c, 1), digits[c], protocol) for c in cols}
                table.append({"method": row["row"], "setting": "", "source": "talkbench", "cells": tb,
                              "ranked": row["row"] != "ground_truth"})
        for entry in table:
            entry["marks"] = {}
        for source in ("paper", "talkbench"):
            for c in cols:
                values = {i: t["cells"][c][0] for i, t in enumerate(table)
                          if t["source"] == source and t["ranked"] and t["cells"][c][0] is not None}
                for i, mark in rank_marks(values, bool(directions.get(c))).items():
                    table[i]["marks"][c] = mark
        notes = []
        by_factor: dict[tuple, list[str]] = {}
        for c, factor in scale.items():
            by_factor.setdefault((unit.get(c, "the paper's unit"), factor), []).append(c)
        for (name, factor), labels in by_factor.items():
            notes.append(f"{', '.join(labels)}: printed in {name}; talkbench value = paper value × {factor:g}, "
                         "and talkbench rows are shown in the paper's unit.")
        if ref.get("note"):
            notes.append(f"Note: {ref['note']}")
        tables.append({"title": f"Paper: {ref['source']}, {ref['table']}", "table": ref["table"],
                       "caption": ref.get("caption"), "setting": ref.get("setting_column"),
                       "columns": [{"label": c, "arrow": {True: "↑", False: "↓"}.get(directions.get(c), ""),
                                    "unit": unit.get(c)} for c in cols],
                       "rows": table, "notes": notes})
    return tables


def reference_tables(protocol: Protocol, rows: list[dict], info: dict[str, dict]) -> list[str]:
    """The paper tables of `reference_table_data` as markdown (best bold, second underlined)."""
    lines = []
    for t in reference_table_data(protocol, rows, info):
        lines += ["", f"### {t['title']}", ""]
        if t["caption"]:
            lines += [f"> {t['table']}: {t['caption']}", ""]
        setting = t["setting"]
        head = ["Method"] + ([setting] if setting else []) + ["Source"]
        head += [f"{c['label']}{' ' + c['arrow'] if c['arrow'] else ''}" + (f" ({c['unit']})" if c["unit"] else "")
                 for c in t["columns"]]
        body = []
        for r in t["rows"]:
            out = [r["method"]] + ([r["setting"]] if setting else []) + [r["source"]]
            for c in t["columns"]:
                value, text = r["cells"][c["label"]]
                out.append(_styled(text, r["marks"].get(c["label"])) if value is not None else text)
            body.append(out)
        lines += markdown_table(head, body)
        for note in t["notes"]:
            lines += ["", note]
    return lines


def _talkbench_cell(result: Optional[dict], label: str, factor: float, digits: int,
                    protocol: Optional[Protocol] = None) -> tuple[Optional[float], str]:
    """(value in the paper's unit, text) of one talkbench metric (or fit statistic) for a reference table."""
    if protocol is not None and any(s["label"] == label for s in protocol.fit_statistics):
        value = fit_statistic(protocol, result, label)
        return (None, "—") if value is None else (value / factor, fmt(value / factor, digits))
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
            if m.get("set_failure"):
                lines.append(f"- **{row['row']}**, {label}: no set value over the "
                             f"{len(m.get('clips', []))} clip(s) that could be scored: {m['set_failure']}")
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
             "below these cannot be told apart from ground truth.", ""]
    return lines + markdown_table(list(floor["metrics"]), [[fmt(v["value"]) for v in floor["metrics"].values()]])


def encoding_lines(rows: list[dict]) -> list[str]:
    """Under a pinned encoding: per row, how many clips were scored in the pin, which encodings
    were seen, and how many differed or were re-encoded."""
    pinned = [r for r in rows if r.get("encoding")]
    if not pinned:
        return []
    pin = pinned[0]["encoding"]["pin"]
    quality = f"CRF {pin['crf']}" if pin.get("crf") is not None else f"{pin.get('bitrate')} bit/s"
    lines = ["", "### Prediction encoding", "",
             f"The protocol pins {pin['video_codec']} ({quality}, {pin['pix_fmt']}) + {pin['audio_codec']} at "
             f"{pin['sample_rate']} Hz: rows are scored on the frames decoded from their videos; a "
             "video in another encoding is counted here, and re-encoded to the pin only by `talkbench "
             "score --reencode`.", ""]
    body = []
    for r in pinned:
        e = r["encoding"]
        body.append([r["row"], e["clips"], e["as_pinned"], len(e["differing"]), len(e["reencoded"]),
                     "; ".join(f"{k}: {v}" for k, v in e["seen"].items())])
    return lines + markdown_table(["Method", "clips", "in the pin", "differ", "re-encoded", "encodings seen"], body)


def provenance_lines(rows: list[dict]) -> list[str]:
    head = ["Method", "preset", "config", "checkpoint sha256", "seed", "device", "commit", "fit/load s",
            "predict s", "score s"]
    body = []
    for row in rows:
        p, t = row["provenance"], row.get("timings", {})
        ckpt = (p.get("checkpoint_sha256") or "—")[:12]
        git = p.get("git", {})
        commit = (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
        body.append([row["row"], p.get("preset", "—"), p.get("config_hash", "—"), ckpt, p.get("seed", "—"),
                     p.get("device", "—"), commit, fmt(t.get("fit_or_load_s"), 1), fmt(t.get("predict_s"), 1),
                     fmt(t.get("score_s"), 1)])
    lines = markdown_table(head, body)
    evaluators = {name: ev for row in rows for name, ev in row["provenance"].get("evaluators", {}).items()}
    for name, ev in sorted(evaluators.items()):
        lines += ["", f"Evaluator `{name}` ({ev.get('kind')}, made for this protocol): `{ev.get('file')}`, "
                      f"sha256 `{str(ev.get('sha256'))[:16]}`, seed {ev.get('seed')}."]
    if rows:
        pk = rows[0]["provenance"].get("packages", {})
        lines += ["", "Packages: " + ", ".join(f"{k} {v}" for k, v in sorted(pk.items())) + "."]
    return lines


TIMED_STEPS = (("fit_or_load_s", "fit/load s"), ("predict_s", "predict s"), ("load_s", "load s"),
               ("score_s", "score s"))


def run_timing_lines(timings: dict) -> list[str]:
    """The per-stage wall-clock table of one `talkbench run` (`bench.results.run_timings`): the
    corpus, the evaluators, each row summed over its seeds, the detector floor and the total."""
    cmd = timings.get("command", {})
    stages = timings.get("stages", {})
    head = ["Stage", "seeds", *[label for _, label in TIMED_STEPS], "total s"]
    body = [[name, "—", "—", "—", "—", "—", fmt(stages.get(key), 1)]
            for key, name in (("corpus_s", "corpus"), ("evaluators_s", "evaluators"))]
    if "fit_workers_s" in stages:
        body.append(["fit + predict in workers", "—", "—", "—", "—", "—", fmt(stages["fit_workers_s"], 1)])
    in_worker = []
    for row, runs in timings.get("rows", {}).items():
        sums = [sum(r.get(key) or 0.0 for r in runs) for key, _ in TIMED_STEPS]
        name = row + (" \\*" if any(r.get("in_worker") for r in runs) else "")
        in_worker += [row] if any(r.get("in_worker") for r in runs) else []
        body.append([name, len(runs), *[fmt(v, 1) for v in sums], fmt(sum(sums), 1)])
    for key, name in (("detector_floor_s", "detector floor"), ("motion_floor_s", "head-motion floor")):
        if key in stages:
            body.append([name, "—", "—", "—", "—", "—", fmt(stages[key], 1)])
    body.append(["**total**", "", "", "", "", "", fmt(timings.get("total_s"), 1)])
    device = timings.get("provenance", {}).get("device", "?")
    intro = (f"The last `talkbench run` into this folder (rows {', '.join(cmd.get('rows', []))}; seeds "
             f"{cmd.get('seeds')}; device {device}; {cmd.get('workers', 1)} worker process(es)) took "
             f"{fmt(timings.get('total_s'), 0)} s of wall-clock time, by stage (a stage loaded from "
             "the cache costs only the load):")
    lines = [intro, ""] + markdown_table(head, body)
    if in_worker:
        lines += ["", f"\\* fitted and predicted in {cmd.get('workers')} parallel worker processes before "
                  "scoring (the row's fit/load and predict seconds are its worker's, so the rows add up "
                  "to more than the wall-clock time of the stage \"fit + predict in workers\")."]
    return lines


def write_report(protocol: Protocol | str, out: Path, figures: bool = True) -> Path:
    """Write `out/README.md` from the protocol and the result files in `out` (nothing else)."""
    protocol = load_protocol(protocol) if isinstance(protocol, str) else protocol
    out.mkdir(parents=True, exist_ok=True)
    results = read_results(out)
    rows = order_rows(protocol, results.methods)
    info = metric_info(protocol, results)
    figure_files = make_figures([r["row"] for r in rows], out / FIGURES_DIR) if figures and rows else []
    n_clips = rows[0]["clips"] if rows else 0
    spread = seed_spread(results)
    pairs = within_spread(rows, spread)
    marked = frozenset(_spread_marked(pairs))
    lines = [f"# {protocol.title}", "",
             f"Protocol `{protocol.id}` v{protocol.version} (sha256 `{protocol.hash[:16]}`), dataset "
             f"`{protocol.dataset}`, {n_clips} test clips at {protocol.fps:g} fps. Regenerate with "
             f"`talkbench run {protocol.id}`; this file is rebuilt from the JSONs beside it by "
             f"`talkbench report {protocol.id}`.", "",
             "## Results", "", "↓ lower is better, ↑ higher is better; **best**, <u>second</u>. "
             "Landmark metrics of methods that output landmarks use the exact reference landmarks; "
             "methods that output only frames are scored through the protocol's detector on both sides.", ""]
    if rows:
        lines += main_table(protocol, rows, info, marked) + units_line(protocol, info) + unpinned_lines(rows)
        lines += mixed_route_lines(protocol, rows)
        if marked:
            lines += ["", "≈: within the spread across training seeds of another row (see \"Seed variance\")."]
    else:
        lines += ["No results yet: run `talkbench run " + protocol.id + "`."]
    lines += fit_statistic_lines(protocol, rows, info)
    if protocol.reference_results:
        lines += ["", "## Paper-reported results beside talkbench's"] + reference_tables(protocol, rows, info)
    lines += ["", "## Mean, 95% bootstrap CI, clips scored and failures", "",
              f"Percentile bootstrap over clips, {protocol.bootstrap['samples']} resamples, seed "
              f"{protocol.bootstrap['seed']}. N is the clips that contributed a value; for set-level "
              f"metrics the value is computed over those clips and the CI from "
              f"{protocol.bootstrap['set_samples']} resamples of them (the value recomputed each "
              f"time).", ""]
    lines += ci_table(protocol, rows, marked)
    lines += seed_lines(protocol, results, rows, info, spread, pairs)
    lines += breakdown_lines(protocol, results, rows, info)
    lines += ["", "## Detector-noise floor", ""] + floor_lines(results.floor)
    lines += motion_lines(protocol, rows, info, results.motion_floor)
    lines += ["", "## Failures", ""] + failure_lines(rows)
    lines += data_preparation_lines(results.data)
    lines += ["", "## Not applicable (the method does not output what the metric needs)", ""]
    lines += not_applicable_lines(rows)
    lines += ["", "## Unavailable metrics", ""] + unavailable_lines(rows)
    if note_lines(rows):
        lines += ["", "## Notes from the metrics", ""] + note_lines(rows)
    if figure_files:
        lines += ["", "## Figures", ""]
        for path, caption in figure_files:
            lines += [f"![{caption}](figures/{path.name})", "", f"*{caption}*", ""]
    lines += sanity_lines(results.sanity)
    lines += evaluator_lines(out)
    lines += ["", "## Provenance", ""] + provenance_lines(rows) + encoding_lines(rows)
    if results.run_timings:
        lines += ["", "### Run time", ""] + run_timing_lines(results.run_timings)
    path = out / "README.md"
    path.write_text(portable("\n".join(lines).rstrip() + "\n"))  # no machine paths (older results)
    return path


def data_preparation_lines(data: Optional[dict]) -> list[str]:
    """The "Data preparation" section: dataset items that could not be prepared, by reason.

    From `_data_preparation.json` (written by the runner for real datasets); absent for
    synthtalk, which is generated rather than prepared.
    """
    if not data:
        return []
    failed = data.get("failed", {})
    lines = ["", "## Data preparation", "",
             f"Dataset `{data.get('dataset')}` at `{data.get('root')}`: {data.get('ok')} of "
             f"{data.get('items')} items prepared (pipeline `{data.get('pipeline_version')}`; "
             f"manifest `{data.get('manifest')}`).", ""]
    if not failed:
        return lines + ["No item failed."]
    body = []
    for reason, ids in sorted(failed.items()):
        shown = ", ".join(f"`{i}`" for i in ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
        body.append([reason, len(ids), shown])
    lines += markdown_table(["reason", "items", "ids"], body, align=("left", "right", "left"))
    details = data.get("details", {})
    if details:
        lines += ["", "Details:", ""]
        lines += [f"- `{i}`: {details[i]}" for i in sorted(details)[:50]]
    return lines


# ----------------------------------------------------------------------------------- evaluators
UNPINNED = "†"
EXPERT_FILES = "_expert_*.json"  # written by `bench.experts.write_quality` (kind: expert_quality)


def unpinned_mark(entry: dict) -> str:
    """A dagger on a value scored with an evaluator that is not the protocol's pinned file."""
    return f" {UNPINNED}" if entry.get("pinned") is False else ""


def unpinned_lines(rows: list[dict]) -> list[str]:
    """The footnote of the dagger, naming the rows and columns it marks ([] when there are none)."""
    cells = sorted({(r["row"], label) for r in rows for label, m in r["metrics"].items()
                    if m.get("pinned") is False})
    if not cells:
        return []
    labels = sorted({label for _, label in cells})
    names = sorted({row for row, _ in cells})
    return ["", f"{UNPINNED} **Unpinned evaluator**: {', '.join(labels)} of {', '.join(names)} were scored "
                f"with an evaluator whose sha256 is not the one the protocol pins (`--allow-unpinned`); "
                f"they are not comparable with numbers scored with the pinned file."]


def evaluator_lines(out: Path) -> list[str]:
    """The "Evaluators" section: each trained evaluator's own held-out quality ([] if none)."""
    lines = []
    for path in sorted(Path(out).glob(EXPERT_FILES)):
        q = read_result(path)
        if q.get("kind") != "expert_quality":
            continue
        recipe = q.get("recipe", {})
        pinned = {True: "pinned", False: f"UNPINNED {UNPINNED}"}.get(q.get("pinned"), "not pinned")
        ok = "meets" if q.get("meets_target") else "**misses**"
        lines += ["", f"SyncNet expert `{q.get('file')}` (sha256 `{str(q.get('sha256'))[:16]}`, {pinned}; "
                      f"width {recipe.get('width')}, {recipe.get('epochs')} epochs, seed {recipe.get('seed')}, "
                      f"trained on {q.get('train_clips')} train clips), on the {q.get('test_clips')} "
                      f"ground-truth test clips: {100 * q['within_1_frame']:.0f}% with |AV offset| <= 1 frame "
                      f"({ok} the {100 * q['target_within_1_frame']:.0f}% target); LSE-C of ground truth "
                      f"{fmt(q.get('lse_c_ground_truth'))}, of `static` (first frame repeated) "
                      f"{fmt(q.get('lse_c_static'))} (margin {fmt(q.get('margin_over_static'))}), of ground "
                      f"truth with the audio delayed {q.get('shift_frames')} frames "
                      f"{fmt(q.get('lse_c_shifted'))} (margin {fmt(q.get('margin_over_shifted'))}; "
                      f"that delay found within +-1 frame on "
                      f"{100 * q.get('shifted_within_1_frame', float('nan')):.0f}% of the clips)."]
    if not lines:
        return []
    return ["", "## Evaluators", "", "Networks talkbench trains to evaluate, pinned by sha256 in the "
            "protocol (`evaluators:`), and their own quality on held-out ground truth "
            "(`talkbench experts quality`)."] + lines
