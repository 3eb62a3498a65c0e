"""Landmark extractors: dlib on a real photograph, translation equivariance, misses, registry."""

import importlib.util

import cv2
import numpy as np
import pytest
from skimage import data

from core.errors import MetricUnavailable
from faces.extractors import LANDMARK_BACKENDS, DlibExtractor, ExtractorResult, LandmarkExtractor, build_extractor, dlib_predictor_path


@pytest.fixture(scope="module")
def dlib_extractor():
    # One instance for the module: the predictor (~100 MB) is loaded once, on first detect().
    return DlibExtractor()


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()  # 512 x 512 RGB photograph with one frontal face


@pytest.fixture(scope="module")
def astronaut_result(dlib_extractor, astronaut):
    return dlib_extractor.detect(astronaut[None])


def shift(img, dx, dy):
    """Translate an H x W x 3 image by (dx, dy) pixels, filling with edge values."""
    m = max(abs(dx), abs(dy))
    padded = np.pad(img, ((m, m), (m, m), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    return padded[m - dy:m - dy + h, m - dx:m - dx + w]


def test_shift_helper():
    img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    out = shift(img, 2, -1)
    assert out.shape == img.shape
    np.testing.assert_array_equal(out[0:4, 2:6], img[1:5, 0:4])


def test_astronaut_one_face(astronaut_result):
    r = astronaut_result
    assert r.found.tolist() == [True] and r.failures == 0
    assert r.landmarks.shape == (1, 68, 2) and r.landmarks.dtype == np.float32
    assert r.boxes.shape == (1, 4) and r.boxes.dtype == np.float32
    pts, (x0, y0, x1, y1) = r.landmarks[0], r.boxes[0]
    assert np.isfinite(pts).all() and np.isfinite(r.boxes).all()
    assert 40 < x1 - x0 < 200 and 40 < y1 - y0 < 200  # a face-sized box in a 512 px photo
    # dlib's HOG box is tight: the jaw line and chin may fall a little outside it (on this photo by
    # up to 13% of the box size), so all 68 points are checked against the box grown by 20% per side
    # and the inner points (brows, nose, eyes: 17-47) against the box itself.
    mx, my = 0.2 * (x1 - x0), 0.2 * (y1 - y0)
    assert (pts[:, 0] >= x0 - mx).all() and (pts[:, 0] <= x1 + mx).all()
    assert (pts[:, 1] >= y0 - my).all() and (pts[:, 1] <= y1 + my).all()
    inner = pts[17:48]
    assert (inner[:, 0] >= x0).all() and (inner[:, 0] <= x1).all()
    assert (inner[:, 1] >= y0).all() and (inner[:, 1] <= y1).all()
    # Anatomy in image coordinates (y down): brows above eyes above nose tip above mouth above chin;
    # the subject's right eye (36-41) is on the image's left.
    y = lambda idx: pts[list(idx), 1].mean()  # noqa: E731
    assert y(range(17, 27)) < y(range(36, 48)) < pts[33, 1] < y(range(48, 68)) < pts[8, 1]
    assert pts[36:42, 0].mean() < pts[42:48, 0].mean()


@pytest.mark.parametrize("dx,dy", [(7, -5), (-20, 11)])
def test_translation_moves_points(dlib_extractor, astronaut, astronaut_result, dx, dy):
    moved = dlib_extractor.detect(shift(astronaut, dx, dy)[None])
    assert moved.found.all()
    delta = moved.landmarks[0] - astronaut_result.landmarks[0]
    err = np.linalg.norm(delta - (dx, dy), axis=-1).mean()
    assert err <= 1.5, f"mean point displacement error {err:.2f} px for shift ({dx}, {dy})"


def test_uniform_frame_no_face(dlib_extractor):
    r = dlib_extractor.detect(np.full((1, 256, 256, 3), 128, np.uint8))
    assert r.found.tolist() == [False] and r.failures == 1
    assert np.isnan(r.landmarks).all() and np.isnan(r.boxes).all()


def test_mixed_batch(dlib_extractor, astronaut, astronaut_result):
    grey = np.full_like(astronaut, 128)
    batch = np.stack([grey, astronaut, grey, shift(astronaut, 3, 3)])
    r = dlib_extractor.detect(batch)
    assert r.found.tolist() == [False, True, False, True]
    assert r.failures == 2
    assert np.isnan(r.landmarks[[0, 2]]).all() and np.isfinite(r.landmarks[[1, 3]]).all()
    np.testing.assert_array_equal(r.landmarks[1], astronaut_result.landmarks[0])


def test_largest_face_wins(dlib_extractor, astronaut):
    # Two copies of the face side by side, the right one at half size: the large one is kept.
    face = astronaut[0:256, 128:384]  # 256 x 256 crop around the face
    small = face[::2, ::2]
    canvas = np.full((256, 512, 3), 128, np.uint8)
    canvas[:, :256] = face
    canvas[64:192, 320:448] = small
    r = dlib_extractor.detect(canvas[None])
    assert r.found.all()
    # The detector does see both faces (dlib 20 lists the small one first), so the choice matters.
    rects = dlib_extractor._detector(cv2.cvtColor(canvas, cv2.COLOR_RGB2GRAY), 1)
    assert len(rects) == 2
    x0, _, x1, _ = r.boxes[0]
    assert x1 < 256  # the box is on the large copy
    assert 40 < x1 - x0


def test_input_validation(dlib_extractor, astronaut):
    with pytest.raises(ValueError, match="T x H x W x 3"):
        dlib_extractor.detect(astronaut)  # a single frame must be batched
    with pytest.raises(ValueError, match="uint8"):
        dlib_extractor.detect(astronaut[None].astype(np.float32))
    with pytest.raises(ValueError, match="upsample"):
        DlibExtractor(upsample=-1)


def test_identity_and_registry():
    ident = DlibExtractor(upsample=0).identity()
    assert ident["name"] == "dlib" and ident["upsample"] == 0
    assert ident["predictor"] == "shape_predictor_68_face_landmarks.dat"
    assert ident["predictor_bytes"] > 50_000_000
    assert LANDMARK_BACKENDS["dlib"] is DlibExtractor
    e = build_extractor("dlib", upsample=0)
    assert isinstance(e, DlibExtractor) and isinstance(e, LandmarkExtractor) and e.upsample == 0
    with pytest.raises(KeyError, match="known: \\['dlib', 'fan'"):
        build_extractor("openface")
    assert dlib_predictor_path().name == "shape_predictor_68_face_landmarks.dat"


def test_missing_model_package(monkeypatch):
    real = importlib.util.find_spec

    def fake(name, *a, **k):
        return None if name == "face_recognition_models" else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(MetricUnavailable, match="pip install"):
        DlibExtractor().detect(np.zeros((1, 32, 32, 3), np.uint8))


def test_result_container():
    r = ExtractorResult.empty(3)
    assert r.failures == 3 and np.isnan(r.landmarks).all()
    r.found[1] = True
    assert r.failures == 2
    with pytest.raises(ValueError, match="inconsistent"):
        ExtractorResult(landmarks=np.zeros((2, 68, 2), np.float32), found=np.zeros(3, bool),
                        boxes=np.zeros((3, 4), np.float32))
