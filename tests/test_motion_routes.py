"""Head-motion values through their pose route (issue 16): route recorded, ground truth through the
same route as the reference, jitter floor of a still head, distance convention, pose smoothing."""

import numpy as np
import pytest
import yaml

from bench.data.clips import load_splits
from bench.data.video import write_mp4
from bench.motion_routes import distance
from bench.pipeline import evaluate
from bench.protocol import load_protocol
from bench.report import mixed_route_lines, motion_lines, route_ranks
from bench.results import describe_metric
from bench.scoring import Scorer
from metrics import build_metric
from metrics.motion import pose_diversity, pose_route, route_label, smooth_angles


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """synthtalk at 2 clips per speaker, only the head-motion metrics, one test clip (spk01_001:
    H.264 leaves its repeated first frame not quite still, so the static floor is above 0)."""
    tmp = tmp_path_factory.mktemp("motion")
    raw = yaml.safe_load(open(load_protocol("synthtalk").path))
    raw["id"] = "synthtalk-motion"
    raw["dataset"]["options"] = {"size": 2, "seed": 0}
    pnp = {"pose_backend": "pnp", "image_size": [256, 256]}
    raw["metrics"] = [{"name": "Diversity", "params": {**pnp, "convention": "raw"}},
                      {"name": "BeatAlign", "params": {**pnp, "convention": "raw"}},
                      {"name": "Diversity", "label": "Diversity (distance)", "params": {**pnp, "convention": "distance"}}]
    raw.pop("evaluators", None)
    path = tmp / "synthtalk-motion.yaml"
    path.write_text(yaml.safe_dump(raw))
    protocol = load_protocol(path)
    clips = load_splits(protocol, progress=False)["test"][1:2]  # its static mp4 is not bit-still
    return tmp, protocol, clips


def test_routes_are_named():
    assert pose_route("pnp", "predicted") == "pnp/predicted"
    assert pose_route("pnp", "detected", "mp4") == "pnp/detected+mp4"
    assert pose_route("given", "detected", "mp4") == "given"  # a given pose reads no frames
    assert pose_route("hopenet", "predicted", "mp4") == "hopenet+mp4"
    assert "mp4" in route_label("pnp/detected+mp4") and "detector" in route_label("pnp/detected")


def test_convention_sets_the_direction_and_is_checked():
    assert describe_metric("Diversity", "D", {})["higher_is_better"] is True
    assert describe_metric("Diversity", "D", {"convention": "distance"})["higher_is_better"] is False
    with pytest.raises(ValueError, match="convention"):
        build_metric("Diversity", {"convention": "closest"})
    with pytest.raises(ValueError, match="pose_smoothing"):
        build_metric("BeatAlign", {"pose_smoothing": -1})


def test_smoothing_lowers_jitter_and_keeps_slow_motion():
    rng = np.random.default_rng(0)
    t = np.arange(200)
    slow = np.stack([10 * np.sin(t / 30.0)] * 3, 1)
    noisy = slow + rng.normal(0, 1.0, slow.shape)
    mask = np.ones(len(t), bool)
    mask[50:55] = False  # frames without a pose are interpolated, not pulled towards NaN
    noisy[~mask] = np.nan
    smoothed = smooth_angles(noisy, mask, 2.0)
    assert np.isfinite(smoothed).all()
    jitter = lambda a: np.abs(np.diff(a, axis=0)).mean()  # noqa: E731
    assert jitter(smoothed[mask]) < 0.3 * jitter(noisy[mask])
    assert abs(pose_diversity(smoothed, mask) - pose_diversity(slow, mask)) < 0.05 * pose_diversity(slow, mask)
    assert smooth_angles(noisy, mask, 0.0) is not None and np.array_equal(
        np.isnan(smooth_angles(noisy, mask, 0.0)), np.isnan(noisy))


def test_distance_is_between_means_over_common_clips():
    boot = {"samples": 200, "seed": 0, "confidence": 0.95}
    d = distance({"a": 1.0, "b": 3.0, "c": 9.0}, {"a": 0.5, "b": 0.5}, boot)
    assert d["n"] == 2 and d["value"] == pytest.approx(1.5)
    assert d["ci"][0] <= 1.5 <= d["ci"][1]


def _rows(values):
    return [{"row": r, "metrics": {"Diversity": {"value": v, "route": route, "ci": [v, v],
                                                 "route_reference": {"value": 1.0, "ci": [0.9, 1.1]},
                                                 "params": {"convention": "raw"}}}}
            for r, (v, route) in values.items()]


def test_report_never_ranks_across_routes():
    rows = _rows({"a": (0.5, "pnp/predicted"), "b": (0.4, "pnp/predicted"), "c": (0.9, "pnp/detected+mp4")})
    marks = route_ranks(rows, "Diversity", True)
    assert marks == {"a": "best", "b": "second", "c": "best"}
    protocol = load_protocol("synthtalk")
    text = "\n".join(mixed_route_lines(protocol, rows))
    assert "different pose routes" in text and "pnp/detected+mp4" in text
    assert mixed_route_lines(protocol, rows[:2]) == []
    section = "\n".join(motion_lines(protocol, rows, {}))
    assert "Ground truth through route" in section and "Caveat" in section


def test_ground_truth_mp4s_score_their_route_reference_and_static_sits_at_the_floor(mini):
    """Acceptance (issue 16): a folder holding only the ground-truth mp4s scores exactly the ground
    truth through the same route (detector on the decoded frames + PnP), not the exact-landmark
    value; `static` from its frames (mp4) scores the jitter floor, which is not 0."""
    tmp, protocol, clips = mini
    gt_dir, static_dir = tmp / "gt_mp4", tmp / "static_mp4"
    gt_dir.mkdir()
    static_dir.mkdir()
    for c in clips:
        write_mp4(gt_dir / f"{c.id}.mp4", c.frames, c.fps, c.audio, c.sample_rate)
        write_mp4(static_dir / f"{c.id}.mp4", np.repeat(c.frames[:1], c.num_frames, 0), c.fps, c.audio,
                  c.sample_rate)
    scorer = Scorer(protocol, clips)
    gt = evaluate(protocol, scorer, "gt_mp4", gt_dir, progress=False)
    static = evaluate(protocol, scorer, "static_mp4", static_dir, progress=False)
    exact = evaluate(protocol, scorer, "gt_exact", {c.id: _exact(c) for c in clips},
                     keys={c.id: "exact:" + c.id for c in clips}, progress=False)
    for label in ("Diversity", "BeatAlign"):
        g, s, e = gt["metrics"][label], static["metrics"][label], exact["metrics"][label]
        assert g["route"] == s["route"] == "pnp/detected+mp4" and e["route"] == "pnp/predicted"
        assert g["n"] == len(clips) and g["value"] == g["route_reference"]["value"]
        assert g["per_clip"] == g["route_reference"]["per_clip"]
        assert s["value"] == s["jitter_floor"]["static"]["value"]
        assert "jitter_floor" not in e and e["route_reference"]["value"] == e["value"]
    # detector jitter reads as motion: the frame route is above the exact one; a still head is not 0
    assert gt["metrics"]["Diversity"]["value"] > exact["metrics"]["Diversity"]["value"]
    assert static["metrics"]["Diversity"]["value"] > 1e-3
    assert gt["metrics"]["Diversity"]["jitter_floor"]["talking"]["value"] > static["metrics"]["Diversity"]["value"]
    dist = gt["metrics"]["Diversity (distance)"]
    assert dist["higher_is_better"] is False and dist["value"] == 0.0
    assert dist["raw_value"] == gt["metrics"]["Diversity"]["value"]


def _exact(clip):
    from core.types import Prediction

    return Prediction(clip.id, landmarks=clip.landmarks.copy(), frames=clip.frames)


def test_pose_jitter_leaves_the_route_consistent_comparison_within_its_ci(mini):
    """Sanity (issue 16): per-frame landmark jitter without moving the head raises the raw Diversity
    (what a cross-route comparison would read as motion), but against the ground truth through the
    same jittered route the difference stays within its CI; frozen_pose still reads raw values
    under the distance convention."""
    from bench import sanity

    _, protocol, _ = mini
    clips = load_splits(protocol, progress=False)["test"]
    rows = sanity.run_checks(protocol, clips, sanity.Settings(jitter_sigma=1.0),
                             checks=("pose_jitter", "frozen_pose"))
    by = {(r.check, r.metric): r for r in rows}
    for label in ("Diversity", "Diversity (distance)", "BeatAlign"):
        assert by[("pose_jitter", label)].verdict == "pass", by[("pose_jitter", label)]
    jitter = by[("pose_jitter", "Diversity")]
    assert "contains 0" in jitter.reason and "would read +" in jitter.reason
    assert by[("frozen_pose", "Diversity (distance)")].verdict == "pass"
    assert by[("frozen_pose", "Diversity (distance)")].original > 0.1  # the raw value, not the distance
