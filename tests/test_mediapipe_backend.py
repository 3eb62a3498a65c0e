"""mediapipe landmark backend, offline: the 131-point index tables, the mesh -> pixel selection by
hand, the layout of its results, and the unavailable path. The FaceLandmarker itself is not run
here (the package is an optional extra, not installed in the test environment, and its model is a
download)."""

import importlib.util

import numpy as np
import pytest

from core import weights
from core.errors import MetricUnavailable
from faces.extractors import LANDMARK_BACKENDS, LAYOUTS, ExtractorResult, build_extractor
from faces.mediapipe_mesh import CONTENT_57, MEDIAPIPE_131, POSE_74, UPPER_OVAL, select_131


def test_index_tables():
    assert len(MEDIAPIPE_131) == len(set(MEDIAPIPE_131)) == 131
    assert all(0 <= v < 468 for v in MEDIAPIPE_131)  # mesh vertices, no iris points
    assert len(CONTENT_57) == 57 and len(POSE_74) == 74
    assert sorted(CONTENT_57 + POSE_74) == list(range(131))
    # content = the 17 lower oval points + the 40 lip points (positions 91..130)
    assert CONTENT_57[-40:] == tuple(range(91, 131))
    lower_oval = [MEDIAPIPE_131[i] for i in CONTENT_57[:17]]
    assert 152 in lower_oval and not set(lower_oval) & set(UPPER_OVAL)  # chin in, temples out
    assert {MEDIAPIPE_131[i] for i in POSE_74} >= set(UPPER_OVAL)
    assert MEDIAPIPE_131[91] == 61 and MEDIAPIPE_131[101] == 291  # mouth corners open the lips


def test_select_131_by_hand():
    mesh = np.zeros((478, 3))
    mesh[:, 0] = np.arange(478) / 1000.0  # x encodes the vertex id
    mesh[:, 1] = 0.5
    pts = select_131(mesh, width=1000, height=200)
    assert pts.shape == (131, 2) and pts.dtype == np.float32
    np.testing.assert_allclose(pts[:, 0], MEDIAPIPE_131, atol=1e-3)
    np.testing.assert_allclose(pts[:, 1], 100.0)
    with pytest.raises(ValueError, match="478"):
        select_131(np.zeros((68, 2)), 10, 10)


def test_result_layout():
    r = ExtractorResult.empty(3, "mediapipe131")
    assert r.landmarks.shape == (3, 131, 2) and r.layout == "mediapipe131" and LAYOUTS["ibug68"] == 68
    with pytest.raises(ValueError, match="inconsistent"):
        ExtractorResult(np.zeros((1, 68, 2)), np.ones(1, bool), np.zeros((1, 4)), "mediapipe131")
    with pytest.raises(ValueError, match="layout"):
        ExtractorResult(np.zeros((1, 68, 2)), np.ones(1, bool), np.zeros((1, 4)), "dlib5")


def test_registry_and_unavailable_path():
    assert "mediapipe" in LANDMARK_BACKENDS
    spec = weights.get_spec("face_landmarker")
    assert spec.filename == "face_landmarker.task" and spec.url.endswith(spec.filename)
    extractor = build_extractor("mediapipe")
    assert extractor.identity()["layout"] == "mediapipe131"
    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("mediapipe is installed here; the missing-package path cannot be shown")
    with pytest.raises(MetricUnavailable, match=r"pip install talkbench\[mediapipe\]"):
        extractor.detect(np.zeros((1, 32, 32, 3), dtype=np.uint8))
