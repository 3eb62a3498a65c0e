"""Hopenet pose backend: bin decoding and crop by hand, preprocessing against torchvision's
transforms, the official state-dict layout, the real loading path with a random-initialised
snapshot written at test time, and the unavailable path."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torchvision import transforms
from torchvision.models import resnet50

from metrics import build_metric
from core.types import ClipPair
from core.errors import MetricError, MetricUnavailable
from faces.hopenet import HopenetEstimator, bins_to_degrees, build_model, crop_box, hopenet_to_talkbench, load_model, preprocess


def test_bins_to_degrees_by_hand():
    one_hot = np.full((3, 66), -1e4)
    one_hot[0, 0] = one_hot[1, 33] = one_hot[2, 65] = 0.0
    np.testing.assert_allclose(bins_to_degrees(one_hot), [-99.0, 0.0, 96.0])
    # uniform: expectation of 0..65 is 32.5 -> 32.5 * 3 - 99 = -1.5
    assert bins_to_degrees(np.zeros(66)) == pytest.approx(-1.5)
    # two equal bins 10 and 12 -> bin 11 -> -66
    two = np.full(66, -1e4)
    two[[10, 12]] = 3.0
    assert bins_to_degrees(two) == pytest.approx(-66.0)
    with pytest.raises(ValueError, match="66 bins"):
        bins_to_degrees(np.zeros(65))


def test_crop_box_by_hand():
    pts = np.array([[100.0, 100.0], [140.0, 160.0], [120.0, 130.0]])
    # w 40, h 60: x +-20, y -45 / +15
    assert crop_box(pts, 320, 240) == (80, 55, 160, 175)
    # clipped to the frame
    assert crop_box(pts, 150, 170) == (80, 55, 150, 170)
    assert crop_box(pts - 90, 320, 240) == (0, 0, 70, 85)
    with pytest.raises(ValueError, match="finite"):
        crop_box(np.array([[np.nan, 1.0], [2.0, 3.0]]), 10, 10)


def test_preprocess_matches_torchvision_transforms():
    img = data.astronaut()
    box = (150, 40, 260, 230)  # taller than wide: 110 x 190
    ours = preprocess(img, box)
    reference = transforms.Compose([
        transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    theirs = reference(Image.fromarray(img[40:230, 150:260])).numpy()
    assert ours.shape == theirs.shape == (3, 224, 224)
    # torchvision resizes PIL images with antialiasing on the same bilinear filter
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_angle_convention():
    out = hopenet_to_talkbench(np.array([[10.0, -5.0, 3.0]]))
    np.testing.assert_array_equal(out, [[-10.0, 5.0, 3.0]])


def test_model_has_the_official_keys():
    keys = set(build_model().state_dict())
    trunk = {k for k in resnet50(weights=None).state_dict() if not k.startswith("fc.")}
    heads = {f"fc_{h}.{p}" for h in ("yaw", "pitch", "roll", "finetune") for p in ("weight", "bias")}
    assert keys == trunk | heads
    sd = build_model().state_dict()
    assert sd["fc_yaw.weight"].shape == (66, 2048) and sd["fc_finetune.weight"].shape == (3, 2051)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A random-initialised Hopenet saved as the official file is (torch.save of the state dict)."""
    torch.manual_seed(0)
    model = build_model()
    path = tmp_path_factory.mktemp("hopenet") / "hopenet_robust_alpha1.pkl"
    torch.save(model.state_dict(), path)
    return path, model.eval()


def test_missing_weights_unavailable(monkeypatch, tmp_path):
    monkeypatch.delenv("TALKBENCH_WEIGHTS_HOPENET", raising=False)
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable, match="talkbench weights download hopenet"):
        load_model()


def test_metric_unavailable_without_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("TALKBENCH_WEIGHTS_HOPENET", raising=False)
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable, match="talkbench weights download hopenet"):
        build_metric("BeatAlign", {"pose_backend": "hopenet"})


def test_identity_names_the_weights(snapshot, monkeypatch):
    from core.hashing import file_sha256
    monkeypatch.setenv("TALKBENCH_WEIGHTS_HOPENET", str(snapshot[0]))
    ident = build_metric("Diversity", {"pose_backend": "hopenet"}).identity()
    assert ident["weights"] == {"hopenet": file_sha256(snapshot[0])}
    assert "weights" not in build_metric("Diversity").identity()


def test_wrong_layout_unavailable(tmp_path):
    path = tmp_path / "hopenet_robust_alpha1.pkl"
    torch.save(resnet50(weights=None).state_dict(), path)
    with pytest.raises(MetricUnavailable, match="layout"):
        load_model(path)
    path.write_bytes(b"<html>Google Drive virus scan warning</html>")
    with pytest.raises(MetricUnavailable, match="not a readable"):
        load_model(path)


def test_diversity_through_the_real_loading_path(snapshot, monkeypatch):
    path, model = snapshot
    monkeypatch.setenv("TALKBENCH_WEIGHTS_HOPENET", str(path))
    img = data.astronaut()
    # three frames: the photo, then shifted by 12 and 24 pixels (the crop moves with the face)
    frames = np.stack([np.roll(img, (0, 12 * k), axis=(0, 1)) for k in range(3)])
    metric = build_metric("Diversity", {"pose_backend": "hopenet"})
    assert metric.needs == ("frames",)
    pair = ClipPair("c", {"frames": frames}, {})
    angles, ok = metric.backend.angles(pair)
    assert ok.all() and angles.shape == (3, 3) and np.isfinite(angles).all()

    # the same numbers by hand: dlib landmarks -> crop -> the random network -> decode -> flip signs
    from faces.extractors import DlibExtractor
    found = DlibExtractor().detect(frames)
    with torch.no_grad():
        for i in range(3):
            x = torch.from_numpy(preprocess(frames[i], crop_box(found.landmarks[i], 512, 512)))
            yaw, pitch, roll = model(x[None])
            raw = bins_to_degrees(torch.cat([yaw, pitch, roll]).numpy())
            np.testing.assert_allclose(angles[i], [-raw[0], -raw[1], raw[2]], atol=1e-4)
    value = metric.clip_value(pair)
    assert value == pytest.approx(float(angles.std(axis=0).mean()), abs=1e-6)


def test_diversity_and_beat_align_share_one_network_pass(snapshot, monkeypatch):
    path, _ = snapshot
    monkeypatch.setenv("TALKBENCH_WEIGHTS_HOPENET", str(path))
    frames = np.repeat(data.astronaut()[None], 2, axis=0)
    pts = np.tile(np.array([[200.0, 120.0], [300.0, 260.0]]), (2, 34, 1)).reshape(2, 68, 2)
    calls = []
    original = HopenetEstimator.raw_logits
    monkeypatch.setattr(HopenetEstimator, "raw_logits",
                        lambda self, x: calls.append(len(x)) or original(self, x))
    first = HopenetEstimator(weights=path).angles(frames, pts)
    second = HopenetEstimator(weights=path).angles(frames, pts)
    assert calls == [2]  # the second estimator (the other metric) reuses the first pass
    np.testing.assert_array_equal(first[0], second[0])
    HopenetEstimator(weights=path).angles(frames, pts + 1.0)
    assert calls == [2, 2]  # other inputs: a new pass


def test_detected_landmarks_and_mask_are_reused(snapshot, monkeypatch):
    path, _ = snapshot
    frames = np.repeat(data.astronaut()[None], 2, axis=0)
    pts = np.tile(np.array([[200.0, 120.0], [300.0, 260.0]]), (2, 34, 1)).reshape(2, 68, 2)
    est = HopenetEstimator(weights=path)
    angles, ok = est.angles(frames, pts, np.array([True, False]))
    assert ok.tolist() == [True, False] and np.isnan(angles[1]).all()
    monkeypatch.setenv("TALKBENCH_WEIGHTS_HOPENET", str(path))
    metric = build_metric("Diversity", {"pose_backend": "hopenet"})
    pair = ClipPair("c", {"frames": frames, "landmarks": pts}, {}, frame_mask=np.array([True, False]),
                    meta={"landmark_source": "detected"})
    with pytest.raises(MetricError, match="at least 2 frames"):
        metric.clip_value(pair)  # one usable frame: the mask was honoured
    with pytest.raises(MetricError, match="frames"):
        metric.clip_value(ClipPair("c", {"landmarks": pts}, {}))
