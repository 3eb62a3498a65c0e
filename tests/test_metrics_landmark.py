"""Landmark metrics (M-LD, F-LD, M-LVD, F-LVD, LMD): hand-computed cases and every error path."""

import math

import numpy as np
import pytest

from metrics import METRICS, available_metrics, build_metric
from core.types import ClipPair
from core.errors import MetricError
from metrics.landmark import (
    LMD,
    FaceLD,
    FaceLVD,
    MouthLD,
    MouthLVD,
    center_per_frame,
    landmark_distance,
    prepare_landmarks,
    reference_scale,
    velocity_difference,
)

MOUTH = list(range(48, 68))


def make_ref(t=3, seed=0):
    """A reference with distinct points, jaw width 100 (points 0, 16) and eye corners 40 apart."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(50, 250, size=(t, 68, 2))
    ref[:, 0] = (100.0, 200.0)
    ref[:, 16] = (200.0, 200.0)
    ref[:, 36] = (130.0, 150.0)
    ref[:, 45] = (170.0, 150.0)
    return ref  # float64 so hand values are exact; float32 input is tested separately


def pair(pred, ref, points=tuple(range(68)), mask=None):
    return ClipPair(clip_id="c", pred={"landmarks": pred}, ref={"landmarks": ref},
                    points=tuple(points), frame_mask=mask)


def value(name, p, **params):
    return build_metric(name, params).clip_value(p)


# ---------------------------------------------------------------- registry and contract

def test_registered_with_contract():
    names = {"M-LD", "F-LD", "M-LVD", "F-LVD", "LMD"}
    assert names <= set(available_metrics())
    for n in names:
        cls = METRICS[n]
        assert cls.level == "clip" and cls.needs == ("landmarks",)
        assert cls.higher_is_better is False
    assert METRICS["M-LD"] is MouthLD and METRICS["LMD"] is LMD
    assert build_metric("LMD").params == {"region": "mouth", "normalize": "none"}


def test_bad_params_named():
    with pytest.raises(ValueError, match="normalize"):
        build_metric("M-LD", {"normalize": "iod"})
    with pytest.raises(ValueError, match="region"):
        build_metric("LMD", {"region": "eyes"})
    with pytest.raises(ValueError, match="region"):  # only LMD has a region parameter
        build_metric("F-LD", {"region": "mouth"})


# ---------------------------------------------------------------- hand-computed values

def test_constant_offset_on_mouth():
    ref = make_ref()
    pred = ref.copy()
    pred[:, 48:68] += (3.0, 4.0)  # every mouth point moved by 5 px
    p = pair(pred, ref)
    assert value("M-LD", p) == pytest.approx(5.0)
    assert value("F-LD", p) == pytest.approx(5.0 * 20 / 68)  # 20 of 68 points off by 5
    assert value("LMD", p) == pytest.approx(0.0, abs=1e-9)  # translation removed by centring
    # The face-region LMD sees the mouth move relative to the rest of the face.
    assert value("LMD", p, region="face") > 1.0
    assert value("M-LVD", p) == pytest.approx(0.0, abs=1e-9)  # constant offset: no velocity
    assert value("F-LVD", p) == pytest.approx(0.0, abs=1e-9)


def test_constant_offset_whole_face():
    ref = make_ref()
    pred = ref + np.float32((-6.0, 8.0))
    p = pair(pred, ref)
    assert value("F-LD", p) == pytest.approx(10.0)
    assert value("M-LD", p) == pytest.approx(10.0)
    assert value("LMD", p, region="face") == pytest.approx(0.0, abs=1e-9)


def test_lmd_centring_by_hand():
    # Reference mouth on a circle of radius 10 about (100, 100); prediction on a circle of radius 20
    # (same angles) about (40, 70). After centring, each point is 10 px from its reference.
    ang = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    unit = np.stack([np.cos(ang), np.sin(ang)], axis=-1)
    ref = make_ref(t=2)
    pred = ref.copy()
    ref[:, 48:68] = (100.0, 100.0) + 10 * unit
    pred[:, 48:68] = (40.0, 70.0) + 20 * unit
    p = pair(pred, ref)
    assert value("LMD", p) == pytest.approx(10.0)
    # Without centring: |(40,70) + 20u - (100,100) - 10u| averaged over the 20 angles.
    expected = np.linalg.norm((-60.0, -30.0) + 10 * unit, axis=-1).mean()
    assert value("M-LD", p) == pytest.approx(expected)


def test_velocity_by_hand():
    ref = make_ref(t=3)
    ref[:] = ref[0]  # static reference
    pred = ref.copy()
    pred[1:, 48:68] += (3.0, 4.0)  # mouth jumps 5 px between frames 0 and 1, then stays
    p = pair(pred, ref)
    # Steps: (0->1) |v_pred - v_ref| = 5, (1->2) 0  ->  mean 2.5.
    assert value("M-LVD", p) == pytest.approx(2.5)
    assert value("F-LVD", p) == pytest.approx(2.5 * 20 / 68)
    # Positions: frame 0 off by 0, frames 1 and 2 off by 5.
    assert value("M-LD", p) == pytest.approx(10.0 / 3)


def test_velocity_moving_reference():
    # Both move; only the difference of velocities counts.
    t = 4
    ref = np.zeros((t, 68, 2), np.float32)
    ref[:, 0], ref[:, 16] = (0, 0), (100, 0)
    pred = ref.copy()
    for k in range(t):
        ref[k, 48:68] = (10.0 * k, 0.0)  # reference moves +10 x per frame
        pred[k, 48:68] = (10.0 * k, 2.0 * k * k)  # prediction: same x, y velocity 2, 6, 10
    p = pair(pred, ref)
    assert value("M-LVD", p) == pytest.approx((2 + 6 + 10) / 3)


def test_normalisations():
    ref = make_ref(t=2)
    ref[1, 16] = (150.0, 200.0)  # frame 1: jaw width 50
    ref[1, 45] = (150.0, 150.0)  # frame 1: eye corners 20 apart
    pred = ref.copy()
    pred[:, 48:68] += (3.0, 4.0)
    p = pair(pred, ref)
    assert value("M-LD", p, normalize="face_width") == pytest.approx((5 / 100 + 5 / 50) / 2)
    assert value("M-LD", p, normalize="inter_ocular") == pytest.approx((5 / 40 + 5 / 20) / 2)
    # LMD with mouth jittered in y by alternating sign so centring leaves a known residual.
    pred2 = ref.copy()
    pred2[:, 48:68:2, 1] += 2.0
    pred2[:, 49:68:2, 1] -= 2.0
    p2 = pair(pred2, ref)
    assert value("LMD", p2) == pytest.approx(2.0)
    assert value("LMD", p2, normalize="face_width") == pytest.approx((2 / 100 + 2 / 50) / 2)


def test_lvd_normalisation_uses_mean_of_step_frames():
    ref = make_ref(t=2)
    ref[:] = ref[0]
    ref[1, 16] = (400.0, 200.0)  # widths 100 and 300 -> the step is divided by 200
    pred = ref.copy()
    pred[1, 48:68] += (3.0, 4.0)
    p = pair(pred, ref)
    assert value("M-LVD", p, normalize="face_width") == pytest.approx(5 / 200)


def test_point_subset_by_position():
    ref = make_ref(t=2)
    points = (60, 10, 48, 50)  # deliberately not sorted
    offsets = {60: (0.0, 0.0), 10: (30.0, 40.0), 48: (3.0, 4.0), 50: (6.0, 8.0)}
    pred = np.stack([ref[:, i] + offsets[i] for i in points], axis=1)
    p = pair(pred, ref, points=points)
    assert value("M-LD", p) == pytest.approx((0 + 5 + 10) / 3)
    assert value("F-LD", p) == pytest.approx((0 + 50 + 5 + 10) / 4)
    # Normalisers still come from the full reference.
    assert value("F-LD", p, normalize="face_width") == pytest.approx(65 / 4 / 100)
    sel_pred, sel_ref, _, _ = prepare_landmarks(p, "mouth", "none")
    np.testing.assert_allclose(sel_ref, ref[:, [48, 50, 60]])
    np.testing.assert_allclose(sel_pred - sel_ref, np.broadcast_to([[3, 4], [6, 8], [0, 0]],
                                                                   sel_pred.shape))


def test_subset_without_mouth():
    ref = make_ref()
    points = tuple(range(48))
    pred = ref[:, :48] + np.float32(1.0)
    p = pair(pred, ref, points=points)
    for name in ("M-LD", "M-LVD", "LMD"):
        with pytest.raises(MetricError, match="none of the mouth"):
            value(name, p)
    assert value("F-LD", p) == pytest.approx(math.sqrt(2))
    assert value("LMD", p, region="face") == pytest.approx(0.0, abs=1e-9)


def test_frame_mask_excludes_frames():
    ref = make_ref(t=4)
    pred = ref.copy()
    pred[:, 48:68] += (3.0, 4.0)
    pred[2] = np.nan  # a frame where the detector found nothing ...
    pred[3, 48:68] += (30.0, 40.0)
    mask = np.array([True, True, False, True])  # ... is masked out
    p = pair(pred, ref, mask=mask)
    assert value("M-LD", p) == pytest.approx((5 + 5 + 55) / 3)
    # Steps 0->1 (valid, 0), 1->2 and 2->3 (touch frame 2: skipped).
    assert value("M-LVD", p) == pytest.approx(0.0, abs=1e-9)
    mask2 = np.array([True, False, True, True])
    pred2 = ref.copy()
    pred2[3, 48:68] += (3.0, 4.0)
    p2 = pair(pred2, ref, mask=mask2)
    assert value("M-LVD", p2) == pytest.approx(5.0)  # only step 2->3 counts
    assert value("M-LD", p2) == pytest.approx(5.0 / 3)


def test_pure_functions():
    ref = np.zeros((3, 2, 2))
    pred = ref.copy()
    pred[:, 0] = (3, 4)  # point 0 off by 5, point 1 exact -> 2.5 per frame
    pred[2, 1] = (0, 10)  # frame 2: (5 + 10) / 2
    assert landmark_distance(pred, ref) == pytest.approx((2.5 + 2.5 + 7.5) / 3)
    assert landmark_distance(pred, ref, mask=np.array([1, 1, 0], bool)) == pytest.approx(2.5)
    assert landmark_distance(pred, ref, scale=np.array([1.0, 1.0, 5.0])) == pytest.approx(
        (2.5 + 2.5 + 1.5) / 3)
    # Velocities: step 0->1 zero difference; step 1->2 point 1 moves by 10 -> 5 per step.
    assert velocity_difference(pred, ref) == pytest.approx(2.5)
    assert velocity_difference(pred, ref, scale=np.array([1.0, 1.0, 3.0])) == pytest.approx(
        (0 + 5 / 2) / 2)
    c = center_per_frame(np.array([[[0.0, 0.0], [2.0, 4.0]]]))
    np.testing.assert_allclose(c, [[[-1, -2], [1, 2]]])
    with pytest.raises(ValueError, match="same shape"):
        landmark_distance(pred, ref[:, :1])
    with pytest.raises(ValueError, match="mask"):
        landmark_distance(pred, ref, mask=np.ones(2, bool))


def test_reference_scale():
    ref = make_ref(t=2)
    np.testing.assert_allclose(reference_scale(ref, "face_width"), [100, 100])
    np.testing.assert_allclose(reference_scale(ref, "inter_ocular"), [40, 40])
    assert reference_scale(ref, "none") is None
    with pytest.raises(ValueError, match="normalize"):
        reference_scale(ref, "bogus")


# ---------------------------------------------------------------- error paths

ALL = ("M-LD", "F-LD", "M-LVD", "F-LVD", "LMD")


@pytest.mark.parametrize("name", ALL)
def test_frame_count_mismatch(name):
    ref = make_ref(t=5)
    with pytest.raises(MetricError, match="prediction has 4 frames, reference 5"):
        value(name, pair(ref[:4], ref))


@pytest.mark.parametrize("name", ALL)
def test_nan_in_prediction(name):
    ref = make_ref(t=3)
    pred = ref.copy()
    pred[1, 50, 0] = np.nan
    with pytest.raises(MetricError, match="prediction landmarks are NaN/inf"):
        value(name, pair(pred, ref))
    pred[1, 50, 0] = np.inf
    with pytest.raises(MetricError, match="NaN/inf"):
        value(name, pair(pred, ref))


def test_nan_in_reference_on_valid_frame():
    ref = make_ref(t=3)
    pred = ref.copy()
    ref[0, 60] = np.nan
    with pytest.raises(MetricError, match="reference landmarks are NaN/inf"):
        value("M-LD", pair(pred, ref))
    # Masked out, it is fine.
    assert value("M-LD", pair(pred, ref, mask=np.array([False, True, True]))) == 0.0


@pytest.mark.parametrize("name", ALL)
def test_all_frames_masked(name):
    ref = make_ref(t=3)
    with pytest.raises(MetricError, match="no valid frame"):
        value(name, pair(ref.copy(), ref, mask=np.zeros(3, bool)))


def test_lvd_needs_two_consecutive_valid_frames():
    ref = make_ref(t=3)
    with pytest.raises(MetricError, match="no valid velocity step"):
        value("M-LVD", pair(ref.copy(), ref, mask=np.array([True, False, True])))
    with pytest.raises(MetricError, match="no valid velocity step"):
        value("F-LVD", pair(ref[:1].copy(), ref[:1]))
    assert value("M-LD", pair(ref[:1].copy(), ref[:1])) == 0.0


def test_shape_and_field_errors():
    ref = make_ref(t=3)
    with pytest.raises(MetricError, match="prediction has no 'landmarks'"):
        value("M-LD", ClipPair("c", pred={}, ref={"landmarks": ref}))
    with pytest.raises(MetricError, match="reference has no 'landmarks'"):
        value("M-LD", ClipPair("c", pred={"landmarks": ref}, ref={}))
    with pytest.raises(MetricError, match=r"expected T x 20 x 2"):
        value("M-LD", pair(ref, ref, points=MOUTH))  # 68 rows but points lists 20
    with pytest.raises(MetricError, match="reference landmarks have shape"):
        value("M-LD", pair(ref, ref[:, :60]))
    with pytest.raises(MetricError, match="frame_mask has shape"):
        value("M-LD", pair(ref, ref, mask=np.ones(4, bool)))
    with pytest.raises(MetricError, match="frame_mask must be boolean"):
        value("M-LD", pair(ref, ref, mask=np.ones(3)))
    with pytest.raises(MetricError, match="distinct iBUG indices"):
        value("M-LD", pair(ref[:, :2], ref, points=(48, 48)))
    with pytest.raises(MetricError, match="distinct iBUG indices"):
        value("M-LD", pair(ref[:, :1], ref, points=(68,)))


def test_degenerate_normaliser():
    ref = make_ref(t=2)
    ref[1, 16] = ref[1, 0]  # zero jaw width on frame 1
    with pytest.raises(MetricError, match="zero or not finite on frame 1"):
        value("M-LD", pair(ref.copy(), ref), normalize="face_width")
    assert value("M-LD", pair(ref.copy(), ref, mask=np.array([True, False])),
                 normalize="face_width") == 0.0
    assert value("M-LD", pair(ref.copy(), ref), normalize="inter_ocular") == 0.0


def test_float32_input():
    ref = make_ref().astype(np.float32)
    pred = ref.copy()
    pred[:, 48:68] += np.float32((3.0, 4.0))
    p = pair(pred, ref)
    assert value("M-LD", p) == pytest.approx(5.0, abs=1e-4)
    assert value("LMD", p) == pytest.approx(0.0, abs=1e-4)
    assert value("M-LVD", p) == pytest.approx(0.0, abs=1e-4)


def test_identity_includes_params():
    m = build_metric("LMD", {"region": "face", "normalize": "inter_ocular"})
    ident = m.identity()
    assert ident["name"] == "LMD" and ident["params"]["region"] == "face"
    assert isinstance(m, LMD) and isinstance(build_metric("F-LVD"), FaceLVD)
    assert isinstance(build_metric("F-LD"), FaceLD) and isinstance(build_metric("M-LVD"), MouthLVD)
