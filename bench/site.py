"""`talkbench site`: a static leaderboard web page built from the results folders.

The page needs no server: plain HTML, one small stylesheet and one small script (column sorting),
opened from disk. It is built from the same files as the markdown reports and nothing else: every
protocol (`bench.protocol.list_protocols`) and, where `<results>/<protocol>/` holds result JSONs,
its rows. Per protocol page:

* talkbench's table: one row per method row, each cell the value with its 95% bootstrap CI, the
  clips that contributed (N) and the failed clips; unavailable and not-applicable metrics say so.
  Column headers sort (numerically, missing values last; a second click reverses);
* the paper's tables with talkbench rows beside the paper rows (`bench.report.reference_table_data`,
  the same data the markdown report prints), so a page exists for a protocol with no run yet;
* the figures (the PNGs in the results folder, linked, not copied), provenance (preset, config,
  checkpoint, seed, commit, device, timings), prediction failures, and links to every result JSON.

Links are relative from the page to the results folders, so the folder `results/` (with `site/`
inside it, the default output) can be moved or served as a whole.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Optional

from bench.protocol import Protocol, list_protocols, load_protocol
from bench.report import fmt, metric_info, order_rows, rank_marks, reference_table_data
from bench.results import FIGURES_DIR, Results, read_results

SITE_DIR = "site"
STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:110em;padding:0 1em;color:#222}
.wide{overflow-x:auto}.failed{color:#b00}
table{border-collapse:collapse;margin:.6em 0 1.4em}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th:first-child,td:first-child,td.text{text-align:left}th.sortable{cursor:pointer;background:#f3f3f3}
th.sortable:hover{background:#e6e6ff}th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}tr.paper td{background:#fafafa;color:#555}
.best{font-weight:bold}.second{text-decoration:underline}.ci{color:#777;font-size:80%;display:block;white-space:nowrap}
.muted{color:#888}img{max-width:48%;border:1px solid #ddd;margin:.3em}code{background:#f4f4f4;padding:0 .2em}
"""
SCRIPT = """// Sort a table by the clicked column: numbers by data-value (missing last), text otherwise.
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th.sortable").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th.sortable").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var key = function (row) {
        var cell = row.cells[col];
        var v = cell.getAttribute("data-value");
        return v === null || v === "" ? null : (isNaN(Number(v)) ? v : Number(v));
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null && y === null) { return 0; }
        if (x === null) { return 1; }
        if (y === null) { return -1; }
        var c = x < y ? -1 : (x > y ? 1 : 0);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _value_attr(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value))


def _page(title: str, body: list[str]) -> str:
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      f"<title>{_e(title)}</title>", '<link rel="stylesheet" href="style.css">', "</head>",
                      "<body>", *body, '<script src="site.js"></script>', "</body>", "</html>", ""])


def _link(out: Path, target: Path) -> str:
    return Path(os.path.relpath(target, out)).as_posix()


def results_table(protocol: Protocol, rows: list[dict], info: dict[str, dict]) -> list[str]:
    """talkbench's table: value, CI, N and failures per cell, sortable columns."""
    labels = [m.label for m in protocol.metrics]
    marks = {l: rank_marks({r["row"]: r["metrics"].get(l, {}).get("value") for r in rows},
                           bool(info[l].get("higher_is_better"))) for l in labels}
    head = ['<th class="sortable" data-type="text">Method</th>']
    for label in labels:
        arrow = {True: " ↑", False: " ↓"}.get(info[label].get("higher_is_better"), "")
        unit = f" ({info[label]['unit']})" if info[label].get("unit") else ""
        head.append(f'<th class="sortable">{_e(label + arrow + unit)}</th>')
    out = ['<div class="wide"><table class="sortable" id="results">', "<thead><tr>" + "".join(head) + "</tr></thead>", "<tbody>"]
    for row in rows:
        cells = [f'<td class="text" data-value="{_e(row["row"])}">{_e(row["row"])}</td>']
        for label in labels:
            m = row["metrics"].get(label, {})
            if m.get("unavailable") or m.get("not_applicable"):
                what = "unavailable" if m.get("unavailable") else "n/a"
                reason = m.get("unavailable") or m.get("not_applicable")
                cells.append(f'<td class="muted" data-value="" title="{_e(reason)}">{what}</td>')
                continue
            value = m.get("value")
            lo, hi = (m.get("ci") or [None, None])[:2]
            mark = marks[label].get(row["row"])
            cls = f' class="{mark}"' if mark else ""
            failed = m.get("failures", 0)
            cells.append(f'<td data-value="{_value_attr(value)}"><span{cls}>{fmt(value)}</span>'
                         f'<span class="ci">[{fmt(lo)}, {fmt(hi)}]</span><span class="ci">N={m.get("n", 0)}'
                         + (f' <span class="failed">failed {failed}</span>' if failed else "") + "</span></td>")
        out.append('<tr data-row="' + _e(row["row"]) + '">' + "".join(cells) + "</tr>")
    return out + ["</tbody>", "</table></div>"]


def _column_title(column: dict) -> str:
    arrow = " " + column["arrow"] if column["arrow"] else ""
    unit = f" ({column['unit']})" if column["unit"] else ""
    return column["label"] + arrow + unit


def paper_tables(protocol: Protocol, rows: list[dict], info: dict[str, dict]) -> list[str]:
    out = []
    for i, t in enumerate(reference_table_data(protocol, rows, info)):
        out.append(f"<h3>{_e(t['title'])}</h3>")
        if t["caption"]:
            out.append(f"<p><em>{_e(t['table'])}: {_e(t['caption'])}</em></p>")
        head = ['<th class="sortable">Method</th>'] + (
            [f'<th class="sortable">{_e(t["setting"])}</th>'] if t["setting"] else []) + ['<th class="sortable">Source</th>']
        head += [f'<th class="sortable">{_e(_column_title(c))}</th>' for c in t["columns"]]
        out += [f'<div class="wide"><table class="sortable paper-table" id="paper-{i}">', "<thead><tr>" + "".join(head) + "</tr></thead>",
                "<tbody>"]
        for r in t["rows"]:
            cls = "paper" if r["source"] == "paper" else "talkbench"
            cells = [f'<td class="text" data-value="{_e(r["method"])}">{_e(r["method"])}</td>']
            if t["setting"]:
                cells.append(f'<td class="text" data-value="{_e(r["setting"])}">{_e(r["setting"])}</td>')
            cells.append(f'<td class="text" data-value="{_e(r["source"])}">{_e(r["source"])}</td>')
            for c in t["columns"]:
                value, text = r["cells"][c["label"]]
                mark = r["marks"].get(c["label"])
                inner = f'<span class="{mark}">{_e(text)}</span>' if mark else _e(text)
                cells.append(f'<td data-value="{_value_attr(value)}">{inner}</td>')
            out.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
        out += ["</tbody>", "</table></div>"] + [f"<p>{_e(n)}</p>" for n in t["notes"]]
    return out


def provenance_table(rows: list[dict]) -> list[str]:
    head = ["Method", "preset", "config", "checkpoint sha256", "seed", "device", "commit", "fit/load s",
            "predict s", "score s"]
    out = ['<div class="wide"><table>', "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>",
           "<tbody>"]
    for row in rows:
        p, t = row["provenance"], row.get("timings", {})
        git = p.get("git", {})
        cells = [row["row"], p.get("preset", "—"), p.get("config_hash", "—"),
                 (p.get("checkpoint_sha256") or "—")[:12], p.get("seed", "—"), p.get("device", "—"),
                 (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else ""),
                 fmt(t.get("fit_or_load_s"), 1), fmt(t.get("predict_s"), 1), fmt(t.get("score_s"), 1)]
        out.append("<tr>" + "".join(f'<td class="text">{_e(c)}</td>' for c in cells) + "</tr>")
    return out + ["</tbody>", "</table></div>"]


def failure_list(rows: list[dict]) -> list[str]:
    items = []
    for row in rows:
        for clip, reason in row.get("prediction_failures", {}).items():
            items.append(f"<li><code>{_e(row['row'])}</code> {_e(clip)}: {_e(reason)}</li>")
        for label, m in row["metrics"].items():
            if m.get("failures"):
                items.append(f"<li><code>{_e(row['row'])}</code> {_e(label)}: {m['failures']} clip(s) failed</li>")
    return ["<ul>", *items, "</ul>"] if items else ["<p>None.</p>"]


def protocol_page(protocol: Protocol, folder: Path, out: Path) -> tuple[str, dict]:
    """The HTML of one protocol's page and its index entry."""
    results = read_results(folder) if folder.is_dir() else None
    rows = order_rows(protocol, results.methods) if results else []
    info = metric_info(protocol, results or Results(folder))
    desc = protocol.raw.get("description", "")
    body = ['<p><a href="index.html">All protocols</a></p>', f"<h1>{_e(protocol.title)}</h1>",
            f"<p>Protocol <code>{_e(protocol.id)}</code> v{protocol.version} (sha256 "
            f"<code>{protocol.hash[:16]}</code>), dataset <code>{_e(protocol.dataset)}</code>.</p>"]
    if desc:
        body.append(f"<p>{_e(desc)}</p>")
    body.append("<h2>talkbench results</h2>")
    if rows:
        body += [f"<p>{rows[0]['clips']} test clips. ↓ lower is better, ↑ higher is better; "
                 "<span class=\"best\">best</span>, <span class=\"second\">second</span>. Each cell: "
                 "value, 95% bootstrap CI, clips scored (N) and failed clips. Click a column to sort.</p>"]
        body += results_table(protocol, rows, info)
    else:
        body.append(f"<p>No results yet: run <code>talkbench run {_e(protocol.id)}</code>.</p>")
    if protocol.reference_results:
        body += ["<h2>Paper-reported results beside talkbench's</h2>"] + paper_tables(protocol, rows, info)
    if rows:
        pngs = sorted((folder / FIGURES_DIR).glob("*.png"))
        if pngs:
            body += ["<h2>Figures</h2>"] + [f'<img src="{_e(_link(out, p))}" alt="{_e(p.stem)}">' for p in pngs]
        body += ["<h2>Failures</h2>"] + failure_list(rows)
        body += ["<h2>Provenance</h2>"] + provenance_table(rows)
        files = sorted(folder.glob("*.json"))
        body += ["<h2>Result files</h2>", "<ul>"] + [
            f'<li><a href="{_e(_link(out, f))}">{_e(f.name)}</a></li>' for f in files] + [
            f'<li><a href="{_e(_link(out, folder / "README.md"))}">README.md</a> (the markdown report)</li>'
            if (folder / "README.md").exists() else "", "</ul>"]
    entry = {"id": protocol.id, "title": protocol.title, "rows": len(rows),
             "clips": rows[0]["clips"] if rows else 0, "paper_tables": len(protocol.reference_results)}
    return _page(f"talkbench: {protocol.title}", body), entry


def build_site(results_root: Path, out: Optional[Path] = None, protocols: Optional[list[str]] = None) -> Path:
    """Write the site into `out` (default `<results_root>/site`); return the index path."""
    results_root = Path(results_root)
    out = Path(out) if out else results_root / SITE_DIR
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in protocols or list_protocols():
        protocol = load_protocol(name)
        page, entry = protocol_page(protocol, results_root / protocol.id, out)
        (out / f"{protocol.id}.html").write_text(page)
        entries.append(entry)
    body = ["<h1>talkbench leaderboard</h1>",
            "<p>Every protocol talkbench ships. A protocol with results shows talkbench's rows; every "
            "protocol with a paper table shows the paper's rows beside talkbench's. Built by "
            "<code>talkbench site</code> from the result JSONs.</p>",
            '<table class="sortable" id="protocols">', "<thead><tr>" + "".join(
                f'<th class="sortable">{h}</th>' for h in ("Protocol", "Title", "talkbench rows", "test clips",
                                                           "paper tables")) + "</tr></thead>", "<tbody>"]
    for e in entries:
        body.append("<tr>" + f'<td class="text" data-value="{_e(e["id"])}"><a href="{_e(e["id"])}.html">'
                    f'{_e(e["id"])}</a></td><td class="text" data-value="{_e(e["title"])}">{_e(e["title"])}</td>'
                    + "".join(f'<td data-value="{e[k]}">{e[k]}</td>' for k in ("rows", "clips", "paper_tables"))
                    + "</tr>")
    body += ["</tbody>", "</table>"]
    (out / "index.html").write_text(_page("talkbench leaderboard", body))
    (out / "style.css").write_text(STYLE)
    (out / "site.js").write_text(SCRIPT)
    (out / "site.json").write_text(json.dumps({"protocols": entries}, indent=1) + "\n")
    return out / "index.html"
