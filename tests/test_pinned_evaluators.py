"""Evaluators pinned like weights: the protocol's `evaluators:` key, the pinned file used offline
without training, a checksum mismatch refused, `--allow-unpinned` marking the columns, and the
expert's own quality file and report section."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest

from bench import experts, pipeline, report
from bench.data.synthtalk import corpus
from bench.protocol import ProtocolError, evaluator_file, load_protocol, parse_protocol
from bench.results import read_result
from bench.scoring import Scorer
from core.types import Prediction
from metrics import syncnet as sn

TINY = experts.SyncExpertConfig(width=1 / 16, embedding_dim=16, epochs=1, batch_size=8, negatives=2,
                                max_clips=2)
EXPERT_LABELS = ("LSE-D (expert)", "LSE-C (expert)", "AV-offset (expert)")


@pytest.fixture(scope="module")
def clips():
    root = corpus.build(size=1, seed=0, progress=False)
    return corpus.load_clips(root)[:3]


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.delenv("TALKBENCH_WEIGHTS_SYNCNET_EXPERT", raising=False)
    sn.clear_cache()
    yield
    sn.clear_cache()


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def synthtalk_raw() -> dict:
    return copy.deepcopy(load_protocol("synthtalk").raw)


def pinned_protocol(folder: Path, digest: str, recipe: dict, file: str = "evaluators/expert.pt"):
    raw = synthtalk_raw()
    raw["evaluators"] = {sn.EXPERT_WEIGHTS: {"kind": "syncnet", "sha256": digest, "file": file,
                                            "recipe": recipe}}
    return parse_protocol(raw, path=folder / "p.yaml")


def tiny_recipe() -> dict:
    return {**TINY.to_dict(), "seed": 0}


def write_tiny(protocol, clips, path: Path) -> str:
    model, stats = experts.train(clips[:2], TINY, 0, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    experts.save_pinnable(path, model, protocol, TINY, 0, stats)
    return sha(path)


# ----------------------------------------------------------------------------------- validation
def test_synthtalk_pins_its_expert_and_ships_the_file():
    protocol = load_protocol("synthtalk")
    pin = protocol.evaluators[sn.EXPERT_WEIGHTS]
    path = evaluator_file(protocol, sn.EXPERT_WEIGHTS)
    assert path.is_file(), f"{path} must be committed with the repository"
    assert sha(path) == pin["sha256"]
    assert path.stat().st_size < 5 * 2**20, "an evaluator carried by the repository stays small"
    cfg, seed = experts.recipe_config(pin["recipe"])
    saved = sn.read_expert_config(path)
    assert all(saved[k] == v for k, v in cfg.to_dict().items()) and saved["seed"] == seed
    assert "evaluators" in protocol.raw  # the pin is part of the protocol hash


@pytest.mark.parametrize("change, message", [
    (lambda e: e.update(sha256="abc"), "64 lowercase hex"),
    (lambda e: e.update(file="/abs/x.pt"), "relative"),
    (lambda e: e.update(file="../x.pt"), "relative"),
    (lambda e: e.update(colour="red"), "unknown key"),
    (lambda e: e.update(kind="wav2lip"), "kind"),
    (lambda e: e.update(recipe={"epochs": [1, 2]}), "scalar"),
    (lambda e: e.update(recipe={"seed": "zero"}), "seed"),
    (lambda e: e.pop("sha256"), "sha256"),
])
def test_evaluators_key_is_validated(change, message):
    raw = synthtalk_raw()
    entry = {"sha256": "0" * 64, "file": "evaluators/x.pt", "recipe": {"epochs": 2, "seed": 0}}
    change(entry)
    raw["evaluators"] = {sn.EXPERT_WEIGHTS: entry}
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(raw)


def test_evaluators_must_be_known_and_an_unused_pin_has_no_effect(clips):
    raw = synthtalk_raw()
    entry = {"sha256": "0" * 64, "file": "evaluators/x.pt", "recipe": {}}
    raw["evaluators"] = {"lipnet": entry}
    with pytest.raises(ProtocolError, match="unknown evaluator"):
        parse_protocol(raw)
    raw["evaluators"] = {sn.EXPERT_WEIGHTS: entry}  # a derived protocol that drops the expert metrics
    raw["metrics"] = ["M-LD"]
    assert experts.resolve(parse_protocol(raw), {"train": clips[:2]}, progress=False) == {}


def test_unknown_recipe_field_is_refused():
    with pytest.raises(experts.ExpertError, match="unknown"):
        experts.recipe_config({"epochs": 1, "learning_rate": 3})


# ----------------------------------------------------------------------------------- resolving
def test_pinned_file_is_used_offline_without_training(clips, tmp_path, monkeypatch):
    probe = pinned_protocol(tmp_path, "0" * 64, tiny_recipe())
    digest = write_tiny(probe, clips, tmp_path / "evaluators" / "expert.pt")
    protocol = pinned_protocol(tmp_path, digest, tiny_recipe())

    def no_training(*a, **k):
        raise AssertionError("a pinned file that is present must not be retrained")

    monkeypatch.setattr(experts, "train", no_training)
    evaluators = experts.resolve(protocol, {"train": clips[:2], "test": clips[2:]}, progress=False)
    ev = evaluators[sn.EXPERT_WEIGHTS]
    assert ev["pinned"] is True and ev["sha256"] == digest and ev["path"] == str(tmp_path / "evaluators" / "expert.pt")
    # also with no train split at all (a fresh clone scoring predictions)
    assert experts.resolve(protocol, {"train": [], "test": clips[2:]}, progress=False) == evaluators
    # a copy named by the variable is found when the shipped one is gone
    moved = tmp_path / "elsewhere.pt"
    (tmp_path / "evaluators" / "expert.pt").rename(moved)
    monkeypatch.setenv("TALKBENCH_WEIGHTS_SYNCNET_EXPERT", str(moved))
    assert experts.resolve(protocol, {"train": []}, progress=False)[sn.EXPERT_WEIGHTS]["path"] == str(moved)


def test_missing_pinned_file_is_rebuilt_and_checked(clips, tmp_path, monkeypatch, talkbench_home):
    probe = pinned_protocol(tmp_path, "0" * 64, tiny_recipe())
    digest = write_tiny(probe, clips, tmp_path / "reference.pt")
    protocol = pinned_protocol(tmp_path, digest, tiny_recipe(), file="evaluators/rebuild-me.pt")
    ev = experts.resolve(protocol, {"train": clips[:2]}, progress=False)[sn.EXPERT_WEIGHTS]
    assert ev["pinned"] is True and ev["sha256"] == digest
    assert Path(ev["path"]) == talkbench_home / "experts" / "synthtalk" / "rebuild-me.pt"
    Path(ev["path"]).unlink()


def test_checksum_mismatch_is_refused_unless_allowed(clips, tmp_path):
    wrong = "1" * 64
    protocol = pinned_protocol(tmp_path, wrong, tiny_recipe(), file="evaluators/mismatch.pt")
    splits = {"train": clips[:2], "test": clips[2:]}
    with pytest.raises(experts.PinError, match="--allow-unpinned") as info:
        experts.resolve(protocol, splits, progress=False)
    assert "not the pinned 111111111111" in str(info.value)
    assert isinstance(info.value, ValueError)  # the CLI prints it as an error, no traceback
    # without train clips to rebuild from, the message says where the file belongs
    with pytest.raises(experts.PinError, match="missing"):
        experts.resolve(protocol, {"train": []}, progress=False)

    evaluators = experts.resolve(protocol, splits, progress=False, allow_unpinned=True)
    ev = evaluators[sn.EXPERT_WEIGHTS]
    assert ev["pinned"] is False and ev["sha256"] != wrong and ev["pinned_sha256"] == wrong

    # the result marks the expert columns, and only them; the report daggers them with a footnote
    specs = tuple(s for s in protocol.metrics if s.label in EXPERT_LABELS + ("M-LD",))
    scorer = Scorer(protocol, clips[2:], evaluators=evaluators, metrics=specs)
    clip = clips[2]
    preds = {clip.id: Prediction(clip.id, landmarks=clip.landmarks, frames=clip.frames)}
    result = pipeline.evaluate(protocol, scorer, "gt", preds, keys={clip.id: "k"}, progress=False)
    for label in EXPERT_LABELS:
        assert result["metrics"][label]["pinned"] is False, label
        assert result["metrics"][label]["value"] is not None
    assert "pinned" not in result["metrics"]["M-LD"]
    assert result["provenance"]["evaluators"][sn.EXPERT_WEIGHTS]["pinned"] is False
    table = "\n".join(report.main_table(protocol, [result], report.metric_info(protocol, _results(result))))
    assert table.count(report.UNPINNED) == len(EXPERT_LABELS)
    footnote = "\n".join(report.unpinned_lines([result]))
    assert "Unpinned evaluator" in footnote and "LSE-C (expert)" in footnote and "M-LD" not in footnote


def _results(result: dict):
    from bench.results import Results

    out = Results(Path("."))
    out.methods.append(result)
    return out


# ----------------------------------------------------------------------------------- quality
def test_quality_file_and_report_section(clips, tmp_path):
    probe = pinned_protocol(tmp_path, "0" * 64, tiny_recipe())
    digest = write_tiny(probe, clips, tmp_path / "evaluators" / "expert.pt")
    protocol = pinned_protocol(tmp_path, digest, tiny_recipe())
    splits = {"train": clips[:2], "test": clips[2:]}
    ev = experts.resolve(protocol, splits, progress=False)[sn.EXPERT_WEIGHTS]
    out = tmp_path / "results"
    path = experts.write_quality(protocol, splits, ev, out, progress=False)
    assert path.name == experts.QUALITY_FILE and path.name.startswith("_")
    q = read_result(path)
    assert q["kind"] == "expert_quality" and q["sha256"] == digest and q["test_clips"] == 1
    assert 0 <= q["within_1_frame"] <= 1 and q["recipe"]["seed"] == 0 and q["train_clips"] == 2
    assert q["margin_over_static"] == pytest.approx(q["lse_c_ground_truth"] - q["lse_c_static"])
    assert q["margin_over_shifted"] == pytest.approx(q["lse_c_ground_truth"] - q["lse_c_shifted"])
    from bench.results import read_results

    assert read_results(out).methods == [], "the quality file is not a method row"
    lines = "\n".join(report.evaluator_lines(out))
    assert "## Evaluators" in lines and digest[:16] in lines and "|AV offset| <= 1 frame" in lines


def test_allow_unpinned_is_threaded_from_the_command_line(monkeypatch, clips):
    from bench.cli import build_parser

    seen = []
    monkeypatch.setattr(pipeline, "prepare_splits", lambda *a, **k: ({"train": [], "val": [], "test": clips[2:]}, None))
    monkeypatch.setattr(pipeline, "resolve_evaluators", lambda *a, **k: seen.append(k["allow_unpinned"]) or {})
    for flag in ([], ["--allow-unpinned"]):
        args = build_parser().parse_args(["score", "synthtalk", "--predictions", "x", "--name", "y", *flag])
        pipeline.Session.open("synthtalk", allow_unpinned=args.allow_unpinned)
    assert seen == [False, True]
    for command in (["run", "synthtalk"], ["sanity", "synthtalk"]):
        assert build_parser().parse_args(command + ["--allow-unpinned"]).allow_unpinned
