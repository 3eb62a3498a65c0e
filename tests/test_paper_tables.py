"""The paper protocols: every transcribed number is checked against the paper text, the reference
tables' schema rejects malformed entries, every paper table renders in its layout with and without
talkbench results, and the CLI lists and shows every protocol.

The paper texts live outside the repository (`<repo>/../shared/papers`, or $TALKBENCH_PAPERS); on a
clone without them
the transcription test skips and says so. Each table is located by its caption and number, each row
by its printed label, and each value must sit at its column's position in that row, so a typo, a
swapped column or a row from the wrong dataset part fails.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.paths import repo_root
from bench.protocol import ProtocolError, list_protocols, load_protocol, parse_protocol, reference_columns
from bench.report import write_report
from bench.results import SCHEMA_VERSION
from bench.runner import select_methods

# TALKBENCH_PAPERS overrides the location (e.g. a git worktree that sits deeper than the checkout).
PAPERS = Path(os.environ.get("TALKBENCH_PAPERS") or repo_root().parent / "shared" / "papers")

# The required set: one protocol per (paper, table, dataset part), plus kfusion_t1_mead_cliprandom,
# the same table under the paper's clip-level split.
REQUIRED = [
    "kfusion_t1_mead", "kfusion_t1_mead_cliprandom", "kfusion_t1_cremad", "kfusion_t2_mead",
    "spear_t1_mead", "spear_t2_mead", "spear_t3_mead",
    "tcsan_t3_grid", "tcsan_t3_tcdtimit", "tcsan_t4_grid", "tcsan_t4_tcdtimit",
    "tcsan_t5_grid", "tcsan_t5_tcdtimit", "tcsan_t6_grid",
    "fd2talk_t1_hdtf", "fd2talk_t1_voxceleb", "fd2talk_t2_hdtf", "fd2talk_t3_hdtf",
    "gnerf_t1_test_a", "gnerf_t1_test_b", "gnerf_t2", "gnerf_t3_test_a",
]

# How each table is laid out in the paper text: the file, anchors that cut the table's dataset part
# out of the block after the caption (`after` / `stop`), how many numbers a data row has (`width`),
# and where this protocol's columns sit among them (`offset`, `stride`: FD2Talk prints
# "HDTF / VoxCeleb" pairs, TCSAN prints GRID then TCD-TIMIT columns, the NeRF Test A then Test B).
LAYOUT = {
    "kfusion_t1_mead": dict(paper="kfusion_dual_domain.txt", width=4, stop="CREMA-D [4]"),
    "kfusion_t1_mead_cliprandom": dict(paper="kfusion_dual_domain.txt", width=4, stop="CREMA-D [4]"),
    "kfusion_t1_cremad": dict(paper="kfusion_dual_domain.txt", width=4, after="CREMA-D [4]"),
    "kfusion_t2_mead": dict(paper="kfusion_dual_domain.txt", width=4),
    "spear_t1_mead": dict(paper="spear_spadenet_hubert.txt", width=2),
    "spear_t2_mead": dict(paper="spear_spadenet_hubert.txt", width=3),
    "spear_t3_mead": dict(paper="spear_spadenet_hubert.txt", width=2),
    "tcsan_t3_grid": dict(paper="tcsan_audio2au.txt", width=8),
    "tcsan_t3_tcdtimit": dict(paper="tcsan_audio2au.txt", width=8, offset=4),
    "tcsan_t4_grid": dict(paper="tcsan_audio2au.txt", width=8),
    "tcsan_t4_tcdtimit": dict(paper="tcsan_audio2au.txt", width=8, offset=4),
    "tcsan_t5_grid": dict(paper="tcsan_audio2au.txt", width=8),
    "tcsan_t5_tcdtimit": dict(paper="tcsan_audio2au.txt", width=8, offset=4),
    "tcsan_t6_grid": dict(paper="tcsan_audio2au.txt", width=14),
    "fd2talk_t1_hdtf": dict(paper="fd2talk.txt", width=14, stride=2),
    "fd2talk_t1_voxceleb": dict(paper="fd2talk.txt", width=14, offset=1, stride=2),
    "fd2talk_t2_hdtf": dict(paper="fd2talk.txt", width=7),
    "fd2talk_t3_hdtf": dict(paper="fd2talk.txt", width=2),
    "gnerf_t1_test_a": dict(paper="gaussian_landmark_nerf.txt", width=10),
    "gnerf_t1_test_b": dict(paper="gaussian_landmark_nerf.txt", width=10, offset=5),
    "gnerf_t2": dict(paper="gaussian_landmark_nerf.txt", width=2),
    "gnerf_t3_test_a": dict(paper="gaussian_landmark_nerf.txt", width=4),
}

# Cells whose decimal point the text extraction of the paper lost (KFusion's "Ours" rows read
# "133", "066", ...): accepted only here, and only if inserting the point gives the value.
OCR_LOST_POINT = {
    ("kfusion_t1_mead", "Ours", "M-LD"): "133",
    ("kfusion_t1_mead_cliprandom", "Ours", "M-LD"): "133",
    ("kfusion_t1_cremad", "Ours", "M-LD"): "237",
    ("kfusion_t1_cremad", "Ours", "M-LVD"): "066",
    ("kfusion_t1_cremad", "Ours", "F-LD"): "123",
    ("kfusion_t1_cremad", "Ours", "F-LVD"): "052",
}
NULL_CELLS = {"—", "-", "N./A."}
TABLE_END = re.compile(r"^\s*(Table \d+:|TABLE [IVX]+\s*$|Fig\. \d|Figure \d)")


def paper_protocols():
    return [p for p in list_protocols() if load_protocol(p).reference_results]


# -- the protocol set ------------------------------------------------------------------------------

def test_required_protocols_exist_and_load():
    missing = [p for p in REQUIRED if p not in list_protocols()]
    assert not missing, f"protocols missing: {missing}"
    for pid in REQUIRED:
        p = load_protocol(pid)
        assert p.id == pid and p.reference_results, pid
        assert p.dataset in ("mead", "cremad", "grid", "tcdtimit", "hdtf", "voxceleb2", "person_specific")
    assert set(paper_protocols()) == set(REQUIRED), "every paper protocol needs a LAYOUT entry here"


@pytest.mark.parametrize("pid", REQUIRED)
def test_ours_rows_are_rows_the_runner_creates(pid):
    """`ours` names a row `talkbench run <id> --ablations` produces, so reports can pair them."""
    p = load_protocol(pid)
    runnable = {s.row for s in select_methods(p, None, None, ablations=True)}
    for ref in p.reference_results:
        for row in ref["rows"]:
            if "ours" in row:
                assert row["ours"] in runnable, f"{pid}: {row['method']} -> {row['ours']} is not run"


def test_ablation_tables_map_every_row_to_a_variant():
    expected = {"kfusion_t2_mead": {"w/o KFusion": "kfusion_no_kfusion", "w/o LSTM": "kfusion_no_lstm",
                                    "w/o Global": "kfusion_no_global", "repl MLP": "kfusion_mlp_head",
                                    "Proposed": "kfusion"},
                "spear_t3_mead": {"HuBERT": "spear_a2l", "MFCC": "spear_a2l_mfcc",
                                  "Wav2Vec Conformer": "spear_a2l_wav2vec2_conformer",
                                  "UniSpeech": "spear_a2l_unispeech"}}
    for pid, mapping in expected.items():
        rows = load_protocol(pid).reference_results[0]["rows"]
        assert {r["method"]: r.get("ours") for r in rows} == mapping


def test_kfusion_cliprandom_is_t1_mead_with_the_papers_clip_level_split():
    t1, clip = load_protocol("kfusion_t1_mead"), load_protocol("kfusion_t1_mead_cliprandom")
    assert clip.split == {"rule": "clip_random", "seed": 0, "fractions": {"train": 0.9, "test": 0.1}}
    same = ("dataset", "preprocessing", "windowing", "metrics", "methods", "landmarks_from", "bootstrap")
    assert all(getattr(clip, key) == getattr(t1, key) for key in same)
    assert [r["rows"] for r in clip.reference_results] == [r["rows"] for r in t1.reference_results]
    assert "clip-level" in t1.raw["description"] and "kfusion_t1_mead_cliprandom" in t1.raw["description"]


def test_kfusion_t2_lists_both_readings_of_repl_mlp():
    p = load_protocol("kfusion_t2_mead")
    assert {"kfusion_mlp_head", "kfusion_mlp_fusion"} <= {m.name for m in p.methods}
    repl = next(r for r in p.reference_results[0]["rows"] if r["method"] == "repl MLP")
    assert repl["ours"] == "kfusion_mlp_head"  # the text's reading; the caption's is a talkbench row


def test_explicit_splits_are_disjoint_and_pinned():
    mead = load_protocol("kfusion_t1_mead").split
    for pid in ("kfusion_t2_mead", "spear_t1_mead", "spear_t2_mead", "spear_t3_mead"):
        assert load_protocol(pid).split == mead, "every MEAD protocol uses the same split"
    assert len(mead["test"]) == 8 and len(mead["train"]) == 32
    grid = load_protocol("tcsan_t3_grid").split
    assert len(grid["train"]) == 27 and len(grid["test"]) == 6 and "s21" not in grid["train"] + grid["test"]
    assert load_protocol("kfusion_t1_cremad").split["test"][0] == "1001"
    assert len(load_protocol("kfusion_t1_cremad").split["test"]) == 91


@pytest.mark.parametrize("pid", REQUIRED)
def test_metric_entries_name_registered_metrics_and_known_parameters(pid):
    """Metric names and parameter names are checked without building the metrics (building needs
    weights, and pose_backend hopenet comes with the Hopenet backend)."""
    from metrics import METRICS

    for m in load_protocol(pid).metrics:
        assert m.name in METRICS, f"{pid}: unknown metric {m.name}"
        unknown = set(m.params) - set(METRICS[m.name].defaults)
        assert not unknown, f"{pid}: {m.name} has no parameter(s) {sorted(unknown)}"


def test_spear_ld_uses_lower_face_points_over_face_width():
    """SPEAR's LD {region: lower_face, normalize: face_width}: a 3 px shift of the 37 lower-face
    points with a 100 px face width is 0.03; moving eyes, brows and nose changes nothing."""
    import numpy as np

    from metrics import build_metric
    from core.types import ClipPair

    rng = np.random.default_rng(0)
    ref = rng.uniform(50, 250, size=(4, 68, 2))
    ref[:, 0], ref[:, 16] = (100.0, 200.0), (200.0, 200.0)
    pred = ref.copy()
    lower = list(range(0, 17)) + list(range(48, 68))
    pred[:, lower] += (3.0, 0.0)
    pred[:, 17:48] += 40.0  # the upper face is not scored by SPEAR's LD
    pred[2:, lower] += (0.0, 4.0)  # a velocity step of 4 px between frames 1 and 2
    pair = ClipPair(clip_id="c", pred={"landmarks": pred}, ref={"landmarks": ref})
    params = {"region": "lower_face", "normalize": "face_width"}
    ld = build_metric("LD", params).clip_value(pair)
    assert ld == pytest.approx((2 * 0.03 + 2 * 0.05) / 4)
    assert build_metric("LVD", params).clip_value(pair) == pytest.approx(0.04 / 3)
    with pytest.raises(ValueError, match="region"):
        build_metric("LD", {"region": "upper_face"})


# -- schema of reference tables --------------------------------------------------------------------

@pytest.fixture
def raw():
    return load_protocol("tcsan_t3_grid").raw  # resolved: its base and split file merged in


@pytest.mark.parametrize("mutate, needle", [
    (lambda r: r["reference_results"][0].update(colour="red"), "reference_results[0].colour"),
    (lambda r: r["reference_results"][0].update(columns=["PSNR", "LSE-C"]), "columns"),
    (lambda r: r["reference_results"][0].update(columns=["PSNR", "PSNR"]), "listed twice"),
    (lambda r: r["reference_results"][0].update(scale={"Avg. Acc.": "percent"}), "scale.Avg. Acc."),
    (lambda r: r["reference_results"][0].update(scale={"Avg. Acc.": 0}), "must be positive"),
    (lambda r: r["reference_results"][0].update(scale={"CPBD": 0.01}), "scale.CPBD"),
    (lambda r: r["reference_results"][0].update(unit={"Avg. Acc.": 100}), "unit.Avg. Acc."),
    (lambda r: r["reference_results"][0].update(rows=[]), "non-empty"),
    (lambda r: r["reference_results"][0]["rows"][0].update(ours=3), "rows[0].ours"),
    (lambda r: r["reference_results"][0]["rows"][0].update(paper_row=["GRU"]), "rows[0].paper_row"),
    (lambda r: r["reference_results"][0]["rows"][0].update(ranked="no"), "rows[0].ranked"),
    (lambda r: r["reference_results"][0]["rows"][0].update(setting="2019"), "no setting_column"),
    (lambda r: r["reference_results"][0]["rows"][0].update(year=2019), "rows[0].year"),
    (lambda r: r["reference_results"][0]["rows"][0]["values"].update(PSNR="29.4"), "expected a number"),
    (lambda r: r["reference_results"][0]["rows"][0]["values"].update(PSNR=True), "expected a number"),
    (lambda r: r["reference_results"][0]["rows"].append(copy.deepcopy(r["reference_results"][0]["rows"][0])),
     "appears twice"),
])
def test_malformed_reference_table_names_the_bad_key(raw, mutate, needle):
    mutate(raw)
    with pytest.raises(ProtocolError) as err:
        parse_protocol(raw)
    assert needle in str(err.value)


def test_setting_must_be_text_as_printed():
    raw = load_protocol("kfusion_t1_mead").raw
    raw["reference_results"][0]["rows"][0]["setting"] = 2019
    with pytest.raises(ProtocolError, match="quote numbers"):
        parse_protocol(raw)


# -- transcription against the paper text ----------------------------------------------------------

def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("-\n", "")).strip()


def _tokens(rest: str, pairs: bool = False) -> list[str]:
    """The cells of a printed row. With `pairs` (FD2Talk's tab-separated "HDTF / VoxCeleb" cells),
    each cell gives two tokens; a lone empty cell ("—") stands for both datasets."""
    rest = rest.replace("<u>", " ").replace("</u>", " ").replace("|", " ").replace("\\", " ")
    if pairs:
        out = []
        for cell in (c.strip() for c in rest.split("\t") if c.strip()):
            parts = [t.strip() for t in cell.split(" / ")]
            out += parts * 2 if len(parts) == 1 and parts[0] in NULL_CELLS else parts
        return out
    return [t for t in rest.split() if t != "/"]


def _number(token: str):
    """float, None for an empty cell, or raise ValueError for text."""
    if token in NULL_CELLS:
        return None
    return float(token.rstrip("%"))


def _is_number(token: str) -> bool:
    try:
        _number(token)
    except ValueError:
        return False
    return True


def _is_data_line(line: str, width: int) -> bool:
    tail = 0
    for t in reversed(_tokens(line)):
        try:
            _number(t)
        except ValueError:
            break
        tail += 1
    return tail >= width


def _table_block(text: str, ref: dict, layout: dict) -> list[str]:
    """The lines of this table's dataset part, found from its caption and number."""
    lines = text.splitlines()
    caption = _normalise(ref["caption"])
    head = caption[:40]
    starts = [i for i, line in enumerate(lines) if head in _normalise(line)]
    assert starts, f"caption {head!r} of {ref['table']} not found"
    start = starts[0]
    number = re.compile(rf"\b{re.escape(ref['table'])}\b", re.I)
    assert number.search(lines[start]) or number.search(lines[start - 1]), \
        f"{ref['table']} is not the number printed at its caption"
    joined = _normalise("\n".join(lines[start:start + 8]))
    assert caption in joined, f"{ref['table']}: caption differs from the paper's:\n{caption}\n{joined}"
    end = start + 1
    while end < len(lines) and end < start + 45 and not TABLE_END.match(lines[end]):
        end += 1
    block = lines[start + 1:end]
    if "after" in layout:
        block = block[next(i for i, l in enumerate(block) if layout["after"] in l) + 1:]
    if "stop" in layout:
        block = block[:next(i for i, l in enumerate(block) if layout["stop"] in l)]
    return block


def _row_cells(block: list[str], label: str, setting, pairs: bool = False) -> tuple[int, list[str]]:
    """(line index, tokens after the label and setting) of the row printed with `label`."""
    for i, line in enumerate(block):
        body = line.strip().lstrip("|").strip()
        if not body.startswith(label):
            continue
        rest = body[len(label):]
        if rest and not (rest[0].isspace() or rest[0] in "|\\"):
            continue  # a longer label that starts with this one
        candidates = [(i, _tokens(rest, pairs))]
        # Rows with several settings print the label once, then lines with an empty label cell.
        j = i + 1
        while j < len(block) and block[j][:1] in ("\t", " ") and block[j].strip():
            candidates.append((j, _tokens(block[j], pairs)))
            j += 1
        for index, tokens in candidates:
            if setting is not None:
                if not tokens or tokens[0] != setting:
                    continue
                tokens = tokens[1:]
            if all(_is_number(t) for t in tokens):  # else a longer label ("Eq. (8a) w/o ...")
                return index, tokens
    raise AssertionError(f"row {label!r} (setting {setting!r}) not found in the table")


@pytest.mark.parametrize("pid", REQUIRED)
def test_transcribed_numbers_match_the_paper_text(pid):
    if not PAPERS.is_dir():
        pytest.skip(f"paper texts not found at {PAPERS} (they ship with the project workspace, "
                    "not with the repository)")
    protocol = load_protocol(pid)
    layout = {"offset": 0, "stride": 1, **LAYOUT[pid]}
    text = (PAPERS / layout["paper"]).read_text()
    for ref in protocol.reference_results:
        block = _table_block(text, ref, layout)
        columns = reference_columns(ref, protocol)
        used_lines = set()
        for row in ref["rows"]:
            label = row.get("paper_row", row["method"])
            index, tokens = _row_cells(block, label, row.get("setting"), layout["stride"] == 2)
            used_lines.add(index)
            assert len(tokens) == layout["width"], \
                f"{pid} {label}: {len(tokens)} cells in the paper row {tokens}, expected {layout['width']}"
            for k, column in enumerate(columns):
                token = tokens[layout["offset"] + k * layout["stride"]]
                value = row["values"].get(column)
                damaged = OCR_LOST_POINT.get((pid, label, column))
                if damaged is not None:
                    assert token == damaged and f"{value:.2f}".replace(".", "") == token, (pid, label, column)
                    continue
                assert _number(token) == value, \
                    f"{pid} {ref['table']} row {label!r} column {column}: paper {token!r}, protocol {value!r}"
        data_lines = {i for i, line in enumerate(block) if _is_data_line(line, layout["width"])}
        assert data_lines <= used_lines, \
            f"{pid}: paper rows not transcribed: {[block[i] for i in sorted(data_lines - used_lines)]}"


def test_transcription_check_catches_a_typo_and_a_swap(tmp_path):
    """The check above is not vacuous: a changed value and two swapped columns both fail."""
    if not PAPERS.is_dir():
        pytest.skip(f"paper texts not found at {PAPERS}")
    text = (PAPERS / "spear_spadenet_hubert.txt").read_text()
    protocol = load_protocol("spear_t3_mead")
    ref = copy.deepcopy(protocol.reference_results[0])
    block = _table_block(text, ref, LAYOUT["spear_t3_mead"])
    _, tokens = _row_cells(block, "MFCC", None)
    assert [_number(t) for t in tokens] == [ref["rows"][1]["values"]["LD"], ref["rows"][1]["values"]["LVD"]]
    swapped = [ref["rows"][1]["values"]["LVD"], ref["rows"][1]["values"]["LD"]]
    assert [_number(t) for t in tokens] != swapped
    typo = copy.deepcopy(protocol.reference_results[0])
    typo["caption"] = typo["caption"].replace("LVD", "LMD")
    with pytest.raises(AssertionError, match="caption"):
        _table_block(text, typo, LAYOUT["spear_t3_mead"])
    with pytest.raises(AssertionError, match="not found"):
        _row_cells(block, "Wav2Vec2 Conformer", None)


# -- reports ---------------------------------------------------------------------------------------

def _paper_table(report: str, ref: dict) -> list[list[str]]:
    """The rows (cells) of one paper table in a rendered report."""
    lines = report.splitlines()
    start = lines.index(f"### Paper: {ref['source']}, {ref['table']}")
    header = next(i for i in range(start, len(lines)) if lines[i].startswith("| Method"))
    out = []
    for line in lines[header:]:
        if not line.startswith("|"):
            break
        out.append([c.strip() for c in line.strip("|").split("|")])
    return out


@pytest.mark.parametrize("pid", REQUIRED)
def test_report_prints_the_paper_table_without_results(pid, tmp_path):
    protocol = load_protocol(pid)
    report = write_report(protocol, tmp_path / pid, figures=False).read_text()
    assert f"No results yet: run `talkbench run {pid}`" in report
    for ref in protocol.reference_results:
        table = _paper_table(report, ref)
        head, body = table[0], table[2:]
        cols = reference_columns(ref, protocol)
        assert [h.split(" ")[0] for h in head[-len(cols):]] == [c.split(" ")[0] for c in cols]
        assert all(("↑" in h) or ("↓" in h) for h in head[-len(cols):]), head
        assert [r[0] for r in body] == [r["method"] for r in ref["rows"]], "paper row order"
        assert {r[len(head) - len(cols) - 1] for r in body} == {"paper"}


def _fake_result(protocol, row: str, value: float) -> dict:
    """A result JSON shaped like results/synthtalk/*.json, every metric = `value` (talkbench units)."""
    metrics = {m.label: {"name": m.name, "value": value, "ci": [value, value], "n": 3, "failures": 0,
                         "failure_reasons": {}, "higher_is_better": None, "not_applicable": None,
                         "unavailable": None, "notes": [], "params": m.params, "per_clip": {}, "version": "1"}
               for m in protocol.metrics}
    return {"schema_version": SCHEMA_VERSION, "kind": "method", "row": row, "clips": 3, "metrics": metrics,
            "landmark_points": [],
            "landmark_source": ["predicted"], "outputs": ["landmarks"], "prediction_failures": {},
            "protocol": protocol.id, "protocol_hash": protocol.hash, "protocol_version": protocol.version,
            "provenance": {"seed": 0, "preset": "tiny", "config_hash": "x", "git": {}, "packages": {}},
            "timings": {}}


def test_report_puts_talkbench_rows_beside_their_paper_rows(tmp_path):
    protocol = load_protocol("kfusion_t2_mead")
    out = tmp_path / "kfusion_t2_mead"
    out.mkdir()
    for i, row in enumerate(["kfusion", "kfusion_no_kfusion", "kfusion_no_lstm", "kfusion_no_global",
                             "kfusion_mlp_head", "static"]):
        (out / f"{row}.json").write_text(json.dumps(_fake_result(protocol, row, 1.0 + i)))
    report = write_report(protocol, out, figures=False).read_text()
    body = _paper_table(report, protocol.reference_results[0])[2:]
    assert [(r[0], r[1]) for r in body] == [
        ("w/o KFusion", "paper"), ("kfusion_no_kfusion", "talkbench"),
        ("w/o LSTM", "paper"), ("kfusion_no_lstm", "talkbench"),
        ("w/o Global", "paper"), ("kfusion_no_global", "talkbench"),
        ("repl MLP", "paper"), ("kfusion_mlp_head", "talkbench"),
        ("Proposed", "paper"), ("kfusion", "talkbench"),
        ("static", "talkbench")]
    # best / second among talkbench rows (lower is better): kfusion 1.0, kfusion_no_kfusion 2.0
    assert body[8][2] == "**1.333**" and body[9][2] == "**1.000**"
    assert body[1][2] == "<u>2.000</u>"


def test_report_converts_percent_columns_and_marks_unrun_rows(tmp_path):
    protocol = load_protocol("tcsan_t3_grid")
    out = tmp_path / "tcsan_t3_grid"
    out.mkdir()
    (out / "static.json").write_text(json.dumps(_fake_result(protocol, "static", 0.8)))
    report = write_report(protocol, out, figures=False).read_text()
    body = _paper_table(report, protocol.reference_results[0])[2:]
    assert body[-1][:2] == ["static", "talkbench"]
    # Avg. Acc. shown in % (the only talkbench row, so it is also the best), Avg. F1 as is
    assert body[-1][-1] == "**80.00**" and body[-1][-2] == "**0.800**"
    assert "printed in %; talkbench value = paper value × 0.01" in report

    protocol = load_protocol("spear_t3_mead")
    out = tmp_path / "spear_t3_mead"
    out.mkdir()
    (out / "spear_a2l.json").write_text(json.dumps(_fake_result(protocol, "spear_a2l", 0.05)))
    body = _paper_table(write_report(protocol, out, figures=False).read_text(), protocol.reference_results[0])[2:]
    assert [r[:2] for r in body[:4]] == [["HuBERT", "paper"], ["spear_a2l", "talkbench"],
                                         ["MFCC", "paper"], ["spear_a2l_mfcc", "talkbench (not run)"]]
    assert body[1][2] == "**0.0500**"  # the paper's 4 decimals


def test_ground_truth_rows_stay_out_of_the_ranking(tmp_path):
    protocol = load_protocol("gnerf_t1_test_a")
    report = write_report(protocol, tmp_path / "g", figures=False).read_text()
    body = _paper_table(report, protocol.reference_results[0])[2:]
    gt = next(r for r in body if r[0] == "Ground Truth")
    assert gt[-1] == "0" and gt[-2] == "7.76"  # LMD 0 and the top SyncNet are not marked best
    ours = next(r for r in body if r[0] == "Ours (300k)")
    assert ours[1] == "300k" and ours[-1] == "**3.34**"


# -- CLI -------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True,
                          cwd=repo_root(), timeout=120)


def test_cli_lists_and_shows_every_protocol():
    listed = _cli("protocols", "list")
    assert listed.returncode == 0, listed.stderr
    ids = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    assert set(REQUIRED) | {"synthtalk"} <= ids
    shown = _cli("protocols", "show", "fd2talk_t1_voxceleb")
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["id"] == "fd2talk_t1_voxceleb" and body["hash"] == load_protocol("fd2talk_t1_voxceleb").hash
    assert body["reference_results"][0]["rows"][0]["values"]["LSE-C"] == 6.29
    bad = _cli("protocols", "show", "no_such_protocol")
    assert bad.returncode == 2 and "known protocols" in bad.stderr
