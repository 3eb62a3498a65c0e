"""FAN landmark backend: parity with face-alignment's own FaceAlignment pipeline on a
random-initialised 2DFAN-4 saved at test time in the official format, the unavailable paths, and
the registry entry."""

import numpy as np
import pytest
import torch
from skimage import data

from core import weights
from core.errors import MetricUnavailable
from faces.extractors import LANDMARK_BACKENDS, FanExtractor, build_extractor
from faces.fan import build_network, center_scale, load_network

face_alignment = pytest.importorskip("face_alignment")


@pytest.fixture(scope="module")
def fan_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fan") / "2DFAN4-11f355bf06.pth.tar"
    torch.save(build_network().state_dict(), path)  # face-alignment 1.5's format: a state dict
    return path


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


def test_center_scale_by_hand():
    center, scale = center_scale(np.array([100.0, 50.0, 200.0, 150.0]))
    np.testing.assert_allclose(center, [150.0, 100.0 - 100 * 0.12])
    assert scale == pytest.approx(200 / 195)


def test_matches_face_alignment_pipeline(fan_file, astronaut, monkeypatch):
    flip_input = True  # the flip path contains the plain one (one run: FAN-4 is slow on CPU)
    monkeypatch.setenv("TALKBENCH_WEIGHTS_FAN_2D", str(fan_file))
    ours = build_extractor("fan", flip_input=flip_input).detect(astronaut[None])
    assert ours.found.tolist() == [True]
    box = ours.boxes[0]

    # the package's own pipeline, its downloader pointed at the same file
    import face_alignment.api as api
    monkeypatch.setattr(api, "load_file_from_url", lambda url, *a, **k: str(fan_file))
    fa = api.FaceAlignment(api.LandmarksType.TWO_D, device="cpu", face_detector="dlib",
                           flip_input=flip_input, compile=False)
    theirs = fa.get_landmarks_from_image(astronaut, detected_faces=[box.tolist()])[0]
    np.testing.assert_allclose(ours.landmarks[0], theirs, atol=1e-4)
    # and the box is dlib's HOG box (the detector of the dlib extractor)
    import dlib
    rect = max(dlib.get_frontal_face_detector()(astronaut[..., 1], 1), key=lambda r: r.area())
    assert abs(rect.left() - box[0]) <= 2 and abs(rect.bottom() - box[3]) <= 2


def test_no_face_is_a_miss(fan_file, monkeypatch):
    monkeypatch.setenv("TALKBENCH_WEIGHTS_FAN_2D", str(fan_file))
    r = FanExtractor().detect(np.full((2, 96, 96, 3), 128, dtype=np.uint8))
    assert r.failures == 2 and np.isnan(r.landmarks).all()


def test_unavailable_paths(monkeypatch, tmp_path):
    monkeypatch.delenv("TALKBENCH_WEIGHTS_FAN_2D", raising=False)
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable, match="talkbench weights download fan_2d"):
        FanExtractor().detect(np.zeros((1, 64, 64, 3), dtype=np.uint8))
    bad = tmp_path / "x.pth.tar"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(MetricUnavailable, match="layout"):
        load_network(bad)
    with pytest.raises(ValueError, match="flip_input"):
        FanExtractor(flip_input="yes")


def test_registry():
    assert "fan" in LANDMARK_BACKENDS
    spec = weights.get_spec("fan_2d")
    assert spec.url.endswith(spec.filename) and spec.sha256_prefix == "11f355bf06"
