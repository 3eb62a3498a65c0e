"""Parity of talkbench's LPIPS with the lpips package's own pipeline.

Reference: ``lpips.LPIPS(net="alex", version="0.1")`` built the package's default way: lpips asks
torchvision for the ImageNet AlexNet (``alexnet(pretrained=True)``), which torchvision reads through
``torch.hub`` from ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``. The test puts a
random-initialised AlexNet state_dict under that name in a private TORCH_HOME (a cached file is
loaded without any download), so the reference is the unmodified package path: torchvision loads
the file into its AlexNet, lpips cuts the feature modules into its slices, and the v0.1 lin heads
come from the wheel. Inputs go through ``lpips.im2tensor`` (uint8 HxWx3 -> 1x3xHxW in [-1, 1]), one
frame at a time. talkbench's LPIPS reads the same file through ``core.weights.resolve`` and maps
the tensors itself.

Measured (lpips 0.1.4, torch 2.15 CPU): per-frame values agree to 8e-8 .. 9.3e-7 relative on the
cases below (worst: smooth vs blurred, LPIPS 0.0026). The network runs the same float32 operations;
the difference is the input: ``im2tensor`` scales in float64 then casts, talkbench scales uint8 in
float32, and frames are batched differently. Tolerance 1e-5 relative.
"""


import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, shift
from skimage import data

from bench.calibrate import random_alexnet
from metrics import build_metric
from core.types import ClipPair

REL = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import lpips

    root = tmp_path_factory.mktemp("lpips_parity")
    hub = root / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    ckpt = hub / "alexnet-owt-7be5be79.pth"
    state = random_alexnet(ckpt)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("TALKBENCH_HOME", str(root / "home"))
        mp.setenv("TALKBENCH_WEIGHTS_ALEXNET", str(ckpt))
        with pytest.warns(UserWarning):  # torchvision: lpips' deprecated `pretrained=True`
            reference = lpips.LPIPS(net="alex", version="0.1", verbose=False)
        ours = build_metric("LPIPS")
    # the reference really runs on the file's weights (not on a fresh random init)
    assert torch.equal(reference.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(reference.net.slice5[0].weight, state["features.10.weight"])
    return ours, reference


def reference_value(reference, pred, ref):
    import lpips

    with torch.no_grad():
        values = [reference(lpips.im2tensor(p), lpips.im2tensor(r)).item()
                  for p, r in zip(pred, ref)]
    return float(np.mean(values)), values


def _u8(x):
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _smooth(rng, t, h, w, sigma=4):
    x = gaussian_filter(rng.normal(size=(t, h, w, 3)), (0, sigma, sigma, 0))
    return _u8((x - x.min()) / (x.max() - x.min()) * 255)


def _jpeg(frames, quality):
    out = []
    for f in frames:
        ok, buf = cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.append(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED))
    return np.stack(out)


def cases():
    rng = np.random.default_rng(0)
    photo = np.stack([data.astronaut()[40:200, 150:310], data.astronaut()[250:410, 180:340],
                      data.chelsea()[60:220, 100:260]])
    smooth = _smooth(rng, 3, 72, 88)
    yield "random uint8", rng.integers(0, 256, (4, 64, 64, 3), np.uint8), \
        rng.integers(0, 256, (4, 64, 64, 3), np.uint8)
    yield "smooth vs blurred", gaussian_filter(smooth, (0, 2, 2, 0)), smooth
    yield "smooth vs shifted", _u8(shift(smooth.astype(float), (0, 2, -3, 0), mode="nearest")), smooth
    yield "photo vs jpeg q20", _jpeg(photo, 20), photo
    yield "photo vs noisy", _u8(photo + rng.normal(0, 12, photo.shape)), photo
    yield "photo vs brighter", _u8(photo * 1.1 + 10), photo
    yield "minimum size 31x31", _u8(photo[:, :31, :31] * 0.8), photo[:, :31, :31]
    yield "gradient vs flat", np.broadcast_to(
        np.linspace(0, 255, 50)[None, None, :, None], (2, 40, 50, 3)).astype(np.uint8), \
        np.full((2, 40, 50, 3), 128, np.uint8)


@pytest.mark.parametrize("name,pred,ref", list(cases()), ids=[c[0] for c in cases()])
def test_lpips_matches_the_lpips_package(models, name, pred, ref):
    ours, reference = models
    expected, per_frame = reference_value(reference, pred, ref)
    got = ours.frame_values(pred, ref)
    assert got == pytest.approx(per_frame, rel=REL)
    value = ours.clip_value(ClipPair("c", pred={"frames": pred}, ref={"frames": ref}))
    assert value == pytest.approx(expected, rel=REL)
    assert expected > 1e-4  # a non-trivial comparison
