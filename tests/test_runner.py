"""End to end: run a small synthtalk protocol, score external predictions, survive bad input."""

import json
import shutil

import numpy as np
import pytest
import yaml

from bench.cli import main
from bench.data.synthtalk import corpus
from bench.results import FRAME_COLUMNS, SCHEMA_VERSION, to_frame
from bench.data.clips import load_splits
from bench.protocol import load_protocol
from bench.pipeline import evaluate
from bench.runner import run
from bench.scoring import Scorer
from bench.data.video import write_mp4
from metrics.base import Metric

METHODS = ["ground_truth", "static", "mean_motion", "audio_energy"]


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """The shipped synthtalk protocol on 2 clips per speaker (6 test clips)."""
    tmp = tmp_path_factory.mktemp("mini")
    raw = yaml.safe_load(open(load_protocol("synthtalk").path))
    raw["id"] = "synthtalk-mini"
    raw["dataset"]["options"] = {"size": 2, "seed": 0}
    raw["methods"] = METHODS  # the learned methods are trained and scored in their own tests
    # the SyncNet expert is trained and scored in tests/test_syncnet_expert.py (it would add ~1 min)
    raw["metrics"] = [m for m in raw["metrics"] if "syncnet_expert" not in str(m)]
    path = tmp / "synthtalk-mini.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = run(str(path), out_root=tmp / "results", progress=False)
    return path, out


def result(out, row):
    return json.loads((out / f"{row}.json").read_text())


def test_run_writes_results_and_report(mini):
    path, out = mini
    for row in METHODS:
        r = result(out, row)
        assert r["clips"] == 6 and not r["prediction_failures"]
        assert r["provenance"]["protocol_hash"] if "protocol_hash" in r["provenance"] else r["protocol_hash"]
        assert r["provenance"]["git"]["commit"]
    report = (out / "README.md").read_text()
    assert "| ground_truth |" in report and "M-LD ↓" in report and "PSNR ↑" in report
    assert "Detector-noise floor" in report
    assert (out / "figures" / "landmark_overlay.png").exists()
    assert (out / "figures" / "mouth_opening.png").exists()
    # no pretrained weights in the test home: reported unavailable with the command that fixes it
    for label, weights in (("LPIPS", "alexnet"), ("FID", "pt_inception")):
        m = result(out, "static")["metrics"][label]
        assert m["value"] is None and f"talkbench weights download {weights}" in m["unavailable"]
    assert "talkbench weights download pt_inception" in report
    # static never moves its head: Beat Align scores 0 on every clip, and each clip says why
    beat = result(out, "static")["metrics"]["BeatAlign"]
    assert beat["value"] == 0.0 and len(beat["notes"]) == 6
    assert all("no motion beat" in note for note in beat["notes"])
    assert "no motion beat" in report


def test_ground_truth_is_best_and_audio_beats_static(mini):
    _, out = mini
    gt = result(out, "ground_truth")["metrics"]
    assert gt["M-LD"]["value"] == 0 and gt["F-LVD"]["value"] == 0 and gt["LMD"]["value"] == 0
    assert gt["PSNR"]["value"] == 100.0 and gt["SSIM"]["value"] == 1.0
    for row in METHODS[1:]:
        m = result(out, row)["metrics"]
        assert m["M-LD"]["value"] > 0
        for label in ("PSNR", "SSIM"):
            if m[label]["n"]:
                assert m[label]["value"] < gt[label]["value"]
    assert result(out, "audio_energy")["metrics"]["M-LD"]["value"] < result(out, "static")["metrics"]["M-LD"]["value"]
    # landmark-only methods have no frames: their image metrics are counted failures, not zeros
    ae = result(out, "audio_energy")["metrics"]["PSNR"]
    assert ae["value"] is None and ae["failures"] == 0 and ae["not_applicable"] == "the method outputs no frames"


def test_detector_floor_is_reported(mini):
    _, out = mini
    floor = result(out, "_detector_floor")
    assert floor["missed_frames"] == 0
    assert 0 < floor["metrics"]["F-LD"]["value"] < 4  # dlib on our renders: about 2 px


def test_motion_routes_references_and_floors_are_reported(mini):
    """Issue 16: every head-motion entry names its pose route and carries the ground truth through
    it; the run measures the frame routes on the ground truth and on still heads; the report shows
    them. Diversity is synthtalk's distance to the ground truth through the route."""
    _, out = mini
    for row in METHODS:
        for label in ("Diversity", "BeatAlign"):
            m = result(out, row)["metrics"][label]
            assert m["route"] == "pnp/predicted" and m["route_reference"]["n"] == 6
    gt = result(out, "ground_truth")["metrics"]
    assert gt["Diversity"]["value"] == 0.0 and gt["Diversity"]["higher_is_better"] is False
    assert gt["Diversity"]["raw_value"] == gt["Diversity"]["route_reference"]["value"]
    floor = result(out, "_motion_floor")["metrics"]["Diversity"]["sigmas"]
    routes = floor["0"]
    assert routes["pnp/detected"]["still_static"]["value"] < 1e-9  # dlib on identical frames
    assert routes["pnp/detected+mp4"]["still_static"]["value"] > 1e-3  # H.264 makes them differ
    assert 0 < routes["pnp/detected"]["still_talking"]["value"] < routes["pnp/detected"]["ground_truth"]["value"]
    assert floor["2"]["pnp/detected"]["still_talking"]["value"] < routes["pnp/detected"]["still_talking"]["value"]
    report = (out / "README.md").read_text()
    assert "## Head motion" in report and "`pnp/detected+mp4`" in report and "Floor: talking" in report


def test_results_carry_what_the_report_needs(mini):
    """Each result holds its metrics' label, direction, unit and level and the clips' metadata;
    set-level metrics count the clips that contributed and get a CI from resampling them."""
    _, out = mini
    r = result(out, "static")
    assert r["schema_version"] == SCHEMA_VERSION
    m = r["metrics"]
    assert len(r["test_clips"]) == 6 and set(r["test_clips"]) == set(m["M-LD"]["per_clip"])
    assert all(set(meta) == {"speaker", "emotion", "intensity"} for meta in r["test_clips"].values())
    assert len({meta["speaker"] for meta in r["test_clips"].values()}) == 3
    assert (m["M-LD"]["label"], m["M-LD"]["higher_is_better"], m["M-LD"]["unit"], m["M-LD"]["level"]) == \
        ("M-LD", False, "px", "clip")
    assert m["PSNR"]["unit"] == "dB" and m["PSNR"]["higher_is_better"] is True
    # unavailable here (no weights), yet described
    assert (m["FID"]["higher_is_better"], m["FID"]["level"]) == (False, "set")
    for label in ("AU-F1", "AU-Acc"):
        au = m[label]
        assert au["level"] == "set" and au["n"] == 6 and au["clips"] == sorted(r["test_clips"])
        lo, hi = au["ci"]
        assert lo is not None and lo <= hi and au["value"] is not None and not au["per_clip"]
        by_speaker = au["groups"]["speaker"]
        assert len(by_speaker) == 3 and sum(g["n"] for g in by_speaker.values()) == 6
        assert all(g["value"] is not None for g in by_speaker.values())
    gt = result(out, "ground_truth")["metrics"]["AU-F1"]
    assert gt["value"] == 1.0 and gt["ci"] == [1.0, 1.0]
    frame = to_frame(out)
    assert list(frame.columns) == FRAME_COLUMNS
    mld = frame[(frame["row"] == "static") & (frame["metric"] == "M-LD")]
    assert len(mld) == 6 and mld["value"].mean() == pytest.approx(m["M-LD"]["value"])
    assert set(mld["speaker"]) == {meta["speaker"] for meta in r["test_clips"].values()}


def test_run_times_every_stage(mini):
    """`_run_timings.json`: corpus, evaluators, each row's steps and the total, which bounds their
    sum; the report prints the same table under Provenance."""
    path, out = mini
    t = result(out, "_run_timings")
    assert t["kind"] == "run_timings" and t["command"]["rows"] == METHODS and t["command"]["seeds"] == [0]
    assert set(t["rows"]) == set(METHODS) and all(len(runs) == 1 for runs in t["rows"].values())
    steps = [v for runs in t["rows"].values() for r in runs for k, v in r.items() if k.endswith("_s")]
    assert all(v >= 0 for v in steps) and t["stages"]["corpus_s"] > 0 and t["stages"]["evaluators_s"] >= 0
    assert t["total_s"] >= sum(steps) + sum(t["stages"].values())
    for row in METHODS:  # each row's timings are its result's
        assert t["rows"][row][0]["score_s"] == pytest.approx(result(out, row)["timings"]["score_s"])
    text = (out / "README.md").read_text()
    section = text.split("### Run time", 1)[1]
    assert f"{t['total_s']:.0f} s of wall-clock time" in section
    assert all(f"| {row} " in section for row in METHODS) and "| corpus " in section


def test_report_needs_only_the_protocol_and_the_results(mini, tmp_path, monkeypatch):
    """`talkbench report` on a copied results folder, with an empty TALKBENCH_HOME and no way to
    build or load the dataset: every section is there, figures are redrawn from the saved arrays."""
    path, out = mini
    results = tmp_path / "results"
    copy = results / out.name
    shutil.copytree(out, copy)
    (copy / "README.md").unlink()
    for png in (copy / "figures").glob("*.png"):
        png.unlink()
    assert sorted(p.name for p in (copy / "figures").iterdir()) == sorted(
        ["_reference.npz"] + [f"{row}.npz" for row in METHODS])
    home = tmp_path / "empty-home"
    home.mkdir()
    monkeypatch.setenv("TALKBENCH_HOME", str(home))

    def refuse(*args, **kwargs):
        raise AssertionError("the report touched the dataset")

    import bench.data.clips
    import bench.pipeline

    for module, name in ((corpus, "build"), (corpus, "load_clips"), (bench.data.clips, "prepare_splits"),
                         (bench.pipeline, "prepare_splits")):
        monkeypatch.setattr(module, name, refuse)
    assert main(["report", str(path), "--results", str(results)]) == 0
    assert list(home.iterdir()) == []  # no corpus, no cache, no split file
    text = (copy / "README.md").read_text()
    for section in ("## Results", "## Mean, 95% bootstrap CI", "## Breakdowns by speaker and by emotion",
                    "### By speaker", "### By emotion", "## Detector-noise floor", "## Failures",
                    "## Not applicable", "## Unavailable metrics", "## Figures", "## Provenance"):
        assert section in text, section
    assert (copy / "figures" / "landmark_overlay.png").exists() and (copy / "figures" / "mouth_opening.png").exists()
    assert "M-LD ↓" in text and "PSNR ↑" in text and "dB: PSNR" in text
    ci = text.split("## Mean, 95% bootstrap CI", 1)[1].split("\n## ", 1)[0]
    assert "N=0" not in ci and "[—, —]" not in ci  # set-level metrics too: real N and CI
    au_cells = [line.split("|") for line in ci.splitlines() if line.startswith("| static ")]
    assert len(au_cells) == 1 and "N=6" in au_cells[0][1 + [m.label for m in load_protocol(path).metrics].index("AU-F1") + 1]
    emotions = {meta["emotion"] for meta in result(out, "static")["test_clips"].values()}
    by_emotion = text.split("### By emotion", 1)[1].split("\n## ", 1)[0]
    assert all(f"| {e} " in by_emotion for e in emotions)


def test_report_refuses_results_of_another_schema(mini, tmp_path, capsys):
    path, out = mini
    results = tmp_path / "results"
    shutil.copytree(out, results / out.name)
    old = result(out, "static")
    del old["schema_version"]
    (results / out.name / "static.json").write_text(json.dumps(old))
    assert main(["report", str(path), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "static.json has no schema_version" in err and "rerun `talkbench run synthtalk-mini`" in err


def gt_predictions(out):
    return load_protocol_path_dir(out, "ground_truth")


def load_protocol_path_dir(out, row):
    from core.paths import talkbench_home

    return talkbench_home() / result(out, row)["provenance"]["predictions"]


def test_score_reproduces_the_ground_truth_row(mini, tmp_path):
    path, out = mini
    assert main(["score", str(path), "--predictions", str(gt_predictions(out)), "--name", "gt_again",
                 "--results", str(tmp_path), "--quiet"]) == 0
    again = json.loads((tmp_path / "synthtalk-mini" / "gt_again.json").read_text())["metrics"]
    for label, m in result(out, "ground_truth")["metrics"].items():
        assert again[label]["value"] == m["value"] and again[label]["per_clip"] == m["per_clip"]


def test_bad_predictions_are_counted_failures(mini, tmp_path):
    path, out = mini
    protocol = load_protocol(path)
    clips = load_splits(protocol)["test"]
    bad = tmp_path / "bad"
    shutil.copytree(gt_predictions(out), bad)
    ids = [c.id for c in clips]
    # 0: wrong number of frames
    with np.load(bad / f"{ids[0]}.npz") as d:
        arrays = dict(d)
    np.savez(bad / f"{ids[0]}.npz", landmarks=arrays["landmarks"][:-3], frames=arrays["frames"][:-3])
    # 1: NaN landmarks
    with np.load(bad / f"{ids[1]}.npz") as d:
        arrays = dict(d)
    arrays["landmarks"][5, 10] = np.nan
    np.savez(bad / f"{ids[1]}.npz", **arrays)
    # 2: only an unreadable video
    (bad / f"{ids[2]}.npz").unlink()
    (bad / f"{ids[2]}.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x13" * 500)
    # 3: a video with no face in it (frames only, so landmarks come from the detector)
    (bad / f"{ids[3]}.npz").unlink()
    blank = np.full((clips[3].num_frames, 256, 256, 3), 128, np.uint8)
    write_mp4(bad / f"{ids[3]}.mp4", blank, 25, clips[3].audio, 16000)
    # 4: missing entirely
    (bad / f"{ids[4]}.npz").unlink()
    (bad / f"{ids[4]}.mp4").unlink()
    scorer = Scorer(protocol, clips)
    r = evaluate(protocol, scorer, "bad", bad, progress=False)
    fails = r["prediction_failures"]
    assert "have 72 frames" in fails[ids[0]] or "frames, the reference has" in fails[ids[0]]
    assert "NaN" in fails[ids[1]]
    assert "unreadable" in fails[ids[2]]
    assert "no prediction" in fails[ids[4]]
    mld = r["metrics"]["M-LD"]
    assert ids[3] in mld["failure_reasons"] and "no valid frame" in mld["failure_reasons"][ids[3]].lower()
    assert mld["n"] == 1 and mld["failures"] == 5  # every clip is a value or a counted failure
    assert r["metrics"]["PSNR"]["per_clip"][ids[3]] < 20  # frames of a blank video still get PSNR
    assert r["landmark_source"] == ["detected", "predicted"]


def test_rerun_reuses_every_cached_value(mini, monkeypatch):
    path, out = mini
    before = {row: result(out, row)["metrics"] for row in METHODS}

    def refuse(self, pair):
        raise AssertionError("a cached metric value was recomputed")

    monkeypatch.setattr(Metric, "clip_value", refuse)
    for cls in Metric.__subclasses__():
        monkeypatch.setattr(cls, "clip_value", refuse)
    run(str(path), out_root=out.parent, progress=False)
    for row in METHODS:
        after = result(out, row)["metrics"]
        assert {k: v["per_clip"] for k, v in after.items()} == {k: v["per_clip"] for k, v in before[row].items()}


def test_interrupted_run_predicts_only_what_is_missing(mini):
    path, out = mini
    pred_dir = load_protocol_path_dir(out, "static")
    victim = sorted(pred_dir.glob("*.npz"))[0]
    others = {p.name: p.stat().st_mtime_ns for p in pred_dir.glob("*.npz") if p != victim}
    victim.unlink()
    run(str(path), methods=["static"], out_root=out.parent, progress=False)
    assert victim.exists()
    assert {p.name: p.stat().st_mtime_ns for p in pred_dir.glob("*.npz") if p != victim} == others


def test_cli_reports_a_malformed_protocol(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nversion: 1\n")
    assert main(["run", str(bad)]) == 2
    assert "missing required key 'dataset'" in capsys.readouterr().err


def test_frame_only_predictions_are_scored_through_the_detector(mini, tmp_path):
    """A method that outputs only frames is compared detector-to-detector (the papers' convention):
    the ground-truth frames given as frames alone score exactly 0 on every landmark metric."""
    path, out = mini
    protocol = load_protocol(path)
    clips = load_splits(protocol)["test"][:2]
    frames_only = tmp_path / "frames_only"
    frames_only.mkdir()
    for clip in clips:
        with np.load(gt_predictions(out) / f"{clip.id}.npz") as d:
            np.savez(frames_only / f"{clip.id}.npz", frames=d["frames"])
    scorer = Scorer(protocol, clips)
    r = evaluate(protocol, scorer, "frames_only", frames_only, progress=False)
    assert r["landmark_source"] == ["detected"] and r["outputs"] == ["frames"]
    for label in ("M-LD", "F-LD", "M-LVD", "F-LVD", "LMD"):
        assert r["metrics"][label]["value"] == 0.0 and r["metrics"][label]["n"] == 2
    assert r["metrics"]["PSNR"]["value"] == 100.0


def test_partial_landmarks_make_pose_and_au_metrics_not_applicable(mini, tmp_path):
    """A method predicting only jaw + mouth is scored on those points; head pose (PnP) and the
    geometric AU detector need points it does not predict, so they are n/a, not 6 failures."""
    path, out = mini
    protocol = load_protocol(path)
    clips = load_splits(protocol)["test"]
    points = list(range(17)) + list(range(48, 68))
    partial = tmp_path / "partial"
    partial.mkdir()
    for clip in clips:
        np.savez(partial / f"{clip.id}.npz", landmarks=clip.landmarks[:, points], points=np.array(points))
    r = evaluate(protocol, Scorer(protocol, clips), "partial", partial, progress=False)
    assert r["landmark_points"] == [points]
    assert r["metrics"]["M-LD"]["value"] == 0.0 and r["metrics"]["M-LD"]["n"] == 6
    for label in ("Diversity", "BeatAlign", "AU-F1", "AU-Acc"):
        m = r["metrics"][label]
        assert m["not_applicable"] and m["failures"] == 0 and m["value"] is None
    assert "PnP" in r["metrics"]["Diversity"]["not_applicable"]


def test_ablations_add_the_variant_rows():
    from bench.runner import select_methods

    protocol = load_protocol("synthtalk")
    rows = [s.name for s in select_methods(protocol, ["kfusion", "spear_a2l", "static"], None, ablations=True)]
    assert rows[:3] == ["kfusion", "spear_a2l", "static"]
    assert set(rows[3:]) == {"kfusion_no_kfusion", "kfusion_no_lstm", "kfusion_no_global", "kfusion_mlp_head",
                             "kfusion_mlp_fusion", "spear_a2l_mfcc", "spear_a2l_wav2vec2_conformer",
                             "spear_a2l_unispeech"}
    assert [s.name for s in select_methods(protocol, ["static"], None, ablations=True)] == ["static"]


def test_run_from_a_given_checkpoint(mini, tmp_path, capsys):
    path, out = mini
    ckpt = next((load_protocol_path_dir(out, "mean_motion").parent).glob("model.ckpt.npz"))
    before = result(out, "mean_motion")["metrics"]["M-LD"]["per_clip"]
    run(str(path), methods=["mean_motion"], checkpoint=ckpt, out_root=tmp_path, progress=False)
    again = json.loads((tmp_path / "synthtalk-mini" / "mean_motion.json").read_text())
    assert again["metrics"]["M-LD"]["per_clip"] == before
    assert again["provenance"]["checkpoint_sha256"] == result(out, "mean_motion")["provenance"]["checkpoint_sha256"]
    assert main(["run", str(path), "--methods", "mean_motion", "--checkpoint", str(tmp_path / "nope.npz"),
                 "--results", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", str(path), "--methods", "audio_energy", "--checkpoint", str(ckpt),
                 "--results", str(tmp_path)]) == 2
    assert "for method 'mean_motion'" in capsys.readouterr().err
    assert main(["run", str(path), "--methods", "no_such_method", "--results", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err
