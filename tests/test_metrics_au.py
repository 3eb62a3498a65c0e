"""AU-F1 / AU-Acc (TCSAN protocol): geometric detector, scores, OpenFace CSVs (the threshold
fitting is tested in tests/test_au_thresholds.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.synthtalk import corpus, face
from metrics import available_metrics, build_metric
from metrics.au import (AU_NAMES, AUScore, au_features, au_scores, detect_geometric, frontalise,
                        read_openface_csv)
from core.types import ClipPair
from core.errors import MetricError, MetricUnavailable
from faces.pose import FACE_TEMPLATE_MM

BASE = face.Identity(shape=face.base_shape())


def _track(jaw: np.ndarray, pose: np.ndarray | None = None, identity=BASE, **motion_values):
    """(2D landmarks T x 68 x 2, 3D shape, exact AU labels) of a face opening its jaw."""
    t = len(jaw)
    motion = np.zeros((t, len(face.MOTION_NAMES)))
    motion[:, 0] = jaw
    for name, value in motion_values.items():
        motion[:, face.MOTION_NAMES.index(name)] = value
    shape = face.deform(identity, motion)
    pose = np.zeros((t, 6)) if pose is None else pose
    return face.project(shape, pose), shape, face.action_units(identity, motion, shape)


def _pair(pred_lm, ref_lm, clip_id="c", **kw) -> ClipPair:
    return ClipPair(clip_id, {"landmarks": pred_lm}, {"landmarks": ref_lm}, **kw)


def test_registered_with_contract():
    assert {"AU-F1", "AU-Acc"} <= set(available_metrics())
    for name in ("AU-F1", "AU-Acc"):
        m = build_metric(name)
        assert m.level == "set" and m.higher_is_better and m.needs == ("landmarks",)
        assert "thresholds" in m.identity()


# ----------------------------------------------------------------------------- geometry

def test_frontalise_undoes_scaled_orthographic_pose():
    pose = np.array([[0, 0, 0, 0, 0, 0], [12, -8, 15, 6, -4, 40], [-20, 10, -5, -8, 3, -60.0]])
    lm = face.project(np.repeat(FACE_TEMPLATE_MM[None], 3, axis=0), pose)
    np.testing.assert_allclose(frontalise(lm), np.repeat(FACE_TEMPLATE_MM[None, :, :2], 3, 0),
                               atol=1e-9)
    lm[1, 5] = np.nan
    assert np.isnan(frontalise(lm)[1]).all() and np.isfinite(frontalise(lm)[[0, 2]]).all()


def test_features_are_millimetres_of_the_face():
    """Roll, translation and scale removed: the lip gap and chin drop come out in millimetres."""
    jaw = np.array([0.0, 0.0, 0.1, 0.3, 0.6, 0.2, 0.0, 0.0, 0.05, 0.0])
    pose = np.zeros((10, 6))
    pose[:, 2] = np.linspace(-10, 10, 10)  # roll
    pose[:, 3:] = np.c_[np.linspace(-5, 5, 10), np.linspace(3, -3, 10), np.linspace(-50, 50, 10)]
    lm, shape, _ = _track(jaw, pose)
    feats = au_features(lm)
    np.testing.assert_allclose(feats[:, 3], face.lip_gap(shape), atol=1e-9)  # AU25
    chin = shape[:, 8, 1]
    np.testing.assert_allclose(feats[:, 4], chin - np.percentile(chin, 5), atol=1e-9)  # AU26
    np.testing.assert_allclose(feats[:, 1], 0.0, atol=1e-9)  # a symmetric mouth has no tilt
    np.testing.assert_allclose(feats[:, 0], 2.2, atol=1e-9)  # base upper-lip arch: 68.5 - 66.3


def test_features_honour_mask():
    lm, _, _ = _track(np.array([0.0, 0.6, 0.0, 0.6]))
    mask = np.array([True, True, False, True])
    feats = au_features(lm, mask)
    assert np.isnan(feats[2]).all() and np.isfinite(feats[[0, 1, 3]]).all()
    occ, ok = detect_geometric(lm, mask)
    assert ok.tolist() == mask.tolist()
    assert occ[:, AU_NAMES.index("AU25")].tolist() == [False, True, False, True]
    assert occ[:, AU_NAMES.index("AU26")].tolist() == [False, True, False, True]


def test_detector_follows_exact_labels_on_clear_cases():
    # lips apart (AU25) without a jaw drop, a jaw drop (AU26), a raised upper lip (AU10), a
    # one-sided dimpler (AU14, synthtalk's contempt) and a lip stretch (AU20)
    lm, _, exact = _track(np.array([0, 0.15, 0.6, 0, 0, 0, 0, 0, 0, 0.0]))
    occ, _ = detect_geometric(lm)
    np.testing.assert_array_equal(occ, exact.astype(bool))
    assert occ[1].tolist() == [False, False, False, True, False]
    assert occ[2].tolist() == [False, False, False, True, True]
    lm, _, exact = _track(np.zeros(4), upper_lip_raise=np.array([0, 0.9, 0, 0.9]))
    assert detect_geometric(lm)[0][:, 0].tolist() == exact[:, 0].astype(bool).tolist() == \
        [False, True, False, True]
    lm, _, exact = _track(np.zeros(4), dimpler_right=np.array([0, 0.8, 0, 0.8]),
                          smile_right=np.array([0, 0.35, 0, 0.35]))
    assert detect_geometric(lm)[0][:, 1].tolist() == exact[:, 1].astype(bool).tolist()
    lm, _, exact = _track(np.zeros(6), lip_stretch=np.array([0, 0, 0.9, 0, 0.9, 0]))
    assert detect_geometric(lm)[0][:, 2].tolist() == exact[:, 2].astype(bool).tolist() == \
        [False, False, True, False, True, False]


# ----------------------------------------------------------------------------- scores and fitting

def test_au_scores_by_hand():
    pred = np.zeros((8, 5), bool)
    labels = np.zeros((8, 5), bool)
    pred[[3, 4, 5, 6], 3] = True
    labels[[2, 3, 4], 3] = True
    s = au_scores(pred, labels)["AU25"]
    assert (s.tp, s.fp, s.fn, s.tn) == (2, 2, 1, 3)
    assert s.f1 == pytest.approx(4 / 7) and s.accuracy == pytest.approx(5 / 8)
    assert np.isnan(au_scores(pred, labels)["AU10"].f1)  # never shown: 0/0
    assert au_scores(pred, labels)["AU10"].accuracy == 1.0
    assert AUScore(0, 0, 0, 0).as_dict()["n"] == 0
    with pytest.raises(ValueError):
        au_scores(pred[:, :4], labels[:, :4])


# ----------------------------------------------------------------------------- metrics, geometric

def test_au_metrics_by_hand():
    jaw_ref = np.array([0, 0, 0.15, 0.15, 0.15, 0, 0, 0])  # lips part on frames 2-4 ...
    jaw_pred = np.array([0, 0, 0, 0.15, 0.15, 0.15, 0.15, 0])  # ... predicted on 3-6
    ref, _, _ = _track(jaw_ref)
    pred, _, _ = _track(jaw_pred)
    pairs = [_pair(pred, ref)]
    f1 = build_metric("AU-F1")
    # AU25: TP 2, FP 2, FN 1, TN 3; the other AUs never occur: no F1, left out of the average
    assert f1.set_value(pairs) == pytest.approx(4 / 7)
    assert any("AU10, AU14, AU20, AU26" in n for n in f1.last_notes)
    assert f1.last_detail["AU25"]["tp"] == 2 and f1.last_detail["AU25"]["n"] == 8
    assert build_metric("AU-F1", {"au": "AU25"}).set_value(pairs) == pytest.approx(4 / 7)
    with pytest.raises(MetricError, match="AU26 is undefined"):
        build_metric("AU-F1", {"au": "AU26"}).set_value(pairs)
    acc = build_metric("AU-Acc")
    assert acc.set_value(pairs) == pytest.approx((4 + 5 / 8) / 5)
    assert build_metric("AU-Acc", {"au": "AU25"}).set_value(pairs) == pytest.approx(5 / 8)
    assert build_metric("AU-Acc", {"au": "AU10"}).set_value(pairs) == 1.0
    # frames pooled over clips: a second, perfect clip adds 8 TN/TP frames
    pairs.append(_pair(ref, ref, "d"))
    assert build_metric("AU-F1", {"au": "AU25"}).set_value(pairs) == pytest.approx(10 / 13)


def test_frame_mask_and_subsets():
    ref, _, _ = _track(np.array([0, 0, 0.15, 0.15, 0.15, 0, 0, 0]))
    pred, _, _ = _track(np.array([0, 0, 0, 0.15, 0.15, 0.15, 0.15, 0]))
    mask = np.array([True, True, True, True, True, False, False, True])
    m = build_metric("AU-F1", {"au": "AU25"})
    # frames 5 and 6 (the false positives) are masked: TP 2, FN 1 -> F1 4/5
    assert m.set_value([_pair(pred, ref, frame_mask=mask)]) == pytest.approx(4 / 5)
    assert m.last_detail["AU25"]["n"] == 6
    # a prediction that covers the mouth but not the rigid points is skipped, with the reason
    points = tuple(range(48, 68))
    sub = _pair(pred[:, 48:], ref, "sub", points=points)
    assert m.set_value([_pair(pred, ref), sub]) == pytest.approx(4 / 7)
    assert any("sub: the geometric AU detector needs iBUG points" in n for n in m.last_notes)
    with pytest.raises(MetricError, match="no usable frame"):
        m.set_value([sub])
    with pytest.raises(MetricError, match="no clips"):
        m.set_value([])
    # a subset holding every point the detector reads is fine
    points = tuple(sorted(set(range(27, 68)) | {0, 8, 16}))
    ok = _pair(pred[:, list(points)], ref, points=points)
    assert m.set_value([ok]) == pytest.approx(4 / 7)


@pytest.fixture(scope="module")
def tiny_clips(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TALKBENCH_HOME", str(home))
        return corpus.load_clips(corpus.build(size=1, seed=0, progress=False))


def test_exact_labels_and_self_agreement(tiny_clips):
    pairs = [ClipPair(c.id, {"landmarks": c.landmarks}, {"landmarks": c.landmarks, "aus": c.aus})
             for c in tiny_clips]
    # the same landmarks on both sides: perfect agreement on every AU that occurs
    assert build_metric("AU-F1").set_value(pairs) == 1.0
    assert build_metric("AU-Acc").set_value(pairs) == 1.0
    # against synthtalk's exact labels: the detector's own accuracy (module docstring table)
    # (12 clips, no disgusted or contempt one: AU14 never occurs, AU10 only from visemes, where
    # the upper-lip arch cue gives false alarms on thick-lipped speakers -- the weak AU)
    exact = build_metric("AU-F1", {"labels": "exact"})
    assert exact.set_value(pairs) > 0.6
    f1 = {name: exact.last_detail[name]["f1"] for name in AU_NAMES}
    assert f1["AU25"] > 0.98 and f1["AU26"] > 0.85 and f1["AU20"] > 0.6
    assert np.isnan(f1["AU14"]) and any("AU14" in n for n in exact.last_notes)
    assert build_metric("AU-Acc", {"labels": "exact"}).set_value(pairs) > 0.85
    no_aus = [ClipPair("x", {"landmarks": tiny_clips[0].landmarks},
                       {"landmarks": tiny_clips[0].landmarks})]
    with pytest.raises(MetricError, match="labels: exact needs"):
        exact.set_value(no_aus)


def test_geometric_errors():
    ref, _, _ = _track(np.zeros(4))
    m = build_metric("AU-F1")
    with pytest.raises(MetricError, match="prediction has no 'landmarks'"):
        m.set_value([ClipPair("c", {"frames": np.zeros((4, 8, 8, 3))}, {"landmarks": ref})])
    with pytest.raises(MetricError, match="5 frames, reference 4"):
        m.set_value([_pair(np.concatenate([ref, ref[:1]]), ref)])
    with pytest.raises(MetricError, match="boolean"):
        m.set_value([_pair(ref, ref, frame_mask=np.ones(4))])
    with pytest.raises(MetricError, match="shape"):
        m.set_value([_pair(ref[:, :60], ref)])


@pytest.mark.parametrize("params, match", [
    ({"backend": "pyfeat"}, "backend"), ({"au": "AU12"}, "'au'"), ({"labels": "gt"}, "labels"),
    ({"min_confidence": 2}, "min_confidence"), ({"backend": "openface-csv"}, "csv_dir"),
    ({"csv_dir": "/tmp"}, "openface-csv only"), ({"thresholds": {}}, "unknown parameter"),
])
def test_bad_params_named(params, match):
    for name in ("AU-F1", "AU-Acc"):
        with pytest.raises(ValueError, match=match):
            build_metric(name, params)


# ----------------------------------------------------------------------------- OpenFace CSVs

def _openface_csv(path, rows):
    """rows: (frame, face_id, confidence, success, {AU: presence}); OpenFace's ', ' header."""
    header = ["frame", "face_id", "timestamp", "confidence", "success"]
    header += [f"AU{n:02d}_r" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)]
    header += [f"AU{n:02d}_c" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 28,
                                        45)]
    lines = [", ".join(header)]
    for frame, face_id, conf, success, aus in rows:
        values = {h: 0.0 for h in header}
        values.update(frame=frame, face_id=face_id, timestamp=(frame - 1) / 25, confidence=conf,
                      success=success)
        for au, on in aus.items():
            values[f"{au}_c"] = float(on)
            values[f"{au}_r"] = 2.5 * on
        lines.append(", ".join(str(values[h]) for h in header))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def openface_dir(tmp_path):
    # reference: AU25 on frames 2-4 (1-based), AU26 on frame 3; all rows confident
    ref = [(f, 0, 0.98, 1, {"AU25": f in (2, 3, 4), "AU26": f == 3}) for f in range(1, 7)]
    _openface_csv(tmp_path / "ref" / "c1.csv", ref)
    pred = [
        (1, 0, 0.97, 1, {}),
        (2, 0, 0.95, 1, {"AU25": 1}),
        (3, 0, 0.20, 1, {"AU25": 1}),  # low confidence: frame 3 unusable
        (4, 0, 0.90, 1, {"AU25": 0}),
        (4, 1, 0.96, 1, {"AU25": 1}),  # a second face on frame 4, more confident: kept
        (5, 0, 0.99, 0, {"AU25": 1}),  # success 0: frame 5 unusable
        (6, 0, 0.93, 1, {"AU25": 1, "AU10": 1}),
        (7, 0, 0.99, 1, {"AU25": 1}),  # beyond the clip's 6 frames: ignored
    ]
    _openface_csv(tmp_path / "pred" / "c1.csv", pred)
    return tmp_path


def _of_pair(clip_id="c1", t=6):
    return ClipPair(clip_id, {"frames": np.zeros((t, 8, 8, 3), np.uint8)},
                    {"landmarks": np.zeros((t, 68, 2)), "frames": np.zeros((t, 8, 8, 3), np.uint8)})


def test_read_openface_csv(openface_dir):
    occ, ok = read_openface_csv(openface_dir / "pred" / "c1.csv", 6, 0.8)
    assert ok.tolist() == [True, True, False, True, False, True]
    assert occ[:, AU_NAMES.index("AU25")].tolist() == [False, True, False, True, False, True]
    assert occ[:, AU_NAMES.index("AU10")].tolist() == [False] * 5 + [True]
    occ, ok = read_openface_csv(openface_dir / "pred" / "c1.csv", 6, 0.1)
    assert ok[2] and not ok[4]  # a lower bar takes frame 3; success 0 never counts


def test_openface_backend_by_hand(openface_dir):
    params = {"backend": "openface-csv", "csv_dir": str(openface_dir)}
    f1 = build_metric("AU-F1", {**params, "au": "AU25"})
    assert f1.needs == ("frames",)
    # usable frames 1, 2, 4, 6: labels AU25 0 1 1 0, prediction 0 1 1 1 -> TP 2, FP 1
    assert f1.set_value([_of_pair()]) == pytest.approx(4 / 5)
    assert f1.last_detail["AU25"]["n"] == 4
    acc = build_metric("AU-Acc", params)
    # AU10: one FP in 4 frames; AU14, AU20, AU26 all agree (AU26's frame 3 is unusable)
    assert acc.set_value([_of_pair()]) == pytest.approx((3 / 4 + 1 + 1 + 3 / 4 + 1) / 5)
    # AU10 F1 = 0 (FP only); AU14 / AU20 / AU26 undefined -> mean of AU10 and AU25
    assert build_metric("AU-F1", params).set_value([_of_pair()]) == pytest.approx((0 + 4 / 5) / 2)
    # a clip without CSVs is skipped and named
    m = build_metric("AU-F1", {**params, "au": "AU25"})
    assert m.set_value([_of_pair(), _of_pair("c2")]) == pytest.approx(4 / 5)
    assert any("c2: no OpenFace CSV for the prediction" in n for n in m.last_notes)


def test_openface_errors(openface_dir, tmp_path_factory):
    with pytest.raises(MetricUnavailable, match="does not exist"):
        build_metric("AU-F1", {"backend": "openface-csv",
                               "csv_dir": str(tmp_path_factory.mktemp("empty"))})
    bad = openface_dir / "ref" / "c3.csv"
    bad.write_text("frame, confidence, success, AU25_c\n1, 0.9, 1, 1\n")
    (openface_dir / "pred" / "c3.csv").write_text(bad.read_text())
    m = build_metric("AU-F1", {"backend": "openface-csv", "csv_dir": str(openface_dir)})
    with pytest.raises(MetricError, match=r"lacks the column\(s\) \['AU10_c'"):
        m.set_value([_of_pair("c3")])
    (openface_dir / "pred" / "c4.csv").write_text("")
    (openface_dir / "ref" / "c4.csv").write_text("")
    with pytest.raises(MetricError, match="empty"):
        m.set_value([_of_pair("c4")])
    _openface_csv(openface_dir / "pred" / "c5.csv", [(1, 0, 0.9, 1, {})])
    text = (openface_dir / "pred" / "c5.csv").read_text().replace("0.9", "high")
    (openface_dir / "pred" / "c5.csv").write_text(text)
    _openface_csv(openface_dir / "ref" / "c5.csv", [(1, 0, 0.9, 1, {})])
    with pytest.raises(MetricError, match="line 2: unreadable row"):
        m.set_value([_of_pair("c5")])
