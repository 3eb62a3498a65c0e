"""PSNR and SSIM: hand-computed values, conventions, and error paths.

Parity with scikit-image lives in tests/calibration/test_image_parity.py.
"""

import math

import numpy as np
import pytest
import torch

from metrics import METRICS, build_metric
from core.types import ClipPair
from core.errors import MetricError
from metrics.image import PSNR, SSIM, to_gray

C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def pair(pred, ref):
    return ClipPair(clip_id="c", pred={"frames": pred}, ref={"frames": ref})


def frames(t=2, h=16, w=16, lo=10, hi=200, seed=0):
    return np.random.default_rng(seed).integers(lo, hi, size=(t, h, w, 3), dtype=np.uint8)


def psnr_db(mse, peak=255.0):
    return 10 * math.log10(peak ** 2 / mse)


# torchmetrics converts dB with 10 / log(10) taken in float32 (relative error ~4e-8), so PSNR
# values agree with the exact formula to ~1e-7 relative, not to float64 precision.
PSNR_REL = 1e-6


def test_contract():
    for name, cls in (("PSNR", PSNR), ("SSIM", SSIM)):
        assert METRICS[name] is cls
        assert cls.level == "clip" and cls.needs == ("frames",) and cls.higher_is_better
    assert build_metric("PSNR").params == {"data_range": 255.0, "color": "rgb", "max_db": 100.0}
    assert build_metric("SSIM").params == {"data_range": 255.0, "color": "rgb", "border": "valid"}


def test_bad_params_named():
    for name in ("PSNR", "SSIM"):
        with pytest.raises(ValueError, match="data_range"):
            build_metric(name, {"data_range": 0})
        with pytest.raises(ValueError, match="data_range"):
            build_metric(name, {"data_range": float("nan")})
        with pytest.raises(ValueError, match="color"):
            build_metric(name, {"color": "bgr"})
    with pytest.raises(ValueError, match="border"):
        build_metric("SSIM", {"border": "same"})
    with pytest.raises(ValueError, match="unknown parameter"):
        build_metric("PSNR", {"border": "valid"})


# ---------------------------------------------------------------- PSNR

def test_psnr_known_mse_mean_of_frames():
    ref = frames(t=2)
    pred = ref.astype(np.int16)
    pred[0] += 5  # MSE 25 on frame 0
    pred[1] -= 10  # MSE 100 on frame 1
    pred = pred.astype(np.uint8)
    got = build_metric("PSNR").clip_value(pair(pred, ref))
    expected = (psnr_db(25) + psnr_db(100)) / 2  # mean of per-frame PSNR ...
    assert got == pytest.approx(expected, rel=PSNR_REL)
    assert got != pytest.approx(psnr_db(62.5), rel=1e-6)  # ... not PSNR of the mean MSE


def test_psnr_single_pixel():
    ref = np.zeros((1, 4, 4, 3), np.uint8)
    pred = ref.copy()
    pred[0, 1, 2, 1] = 255  # one channel value of 48 off by 255: MSE = 255^2 / 48
    got = build_metric("PSNR").clip_value(pair(pred, ref))
    assert got == pytest.approx(10 * math.log10(48), rel=PSNR_REL)


def test_psnr_identical_is_inf():
    ref = frames(t=3)
    uncapped = build_metric("PSNR", {"max_db": None})
    assert uncapped.clip_value(pair(ref.copy(), ref)) == float("inf")
    assert build_metric("PSNR").clip_value(pair(ref.copy(), ref)) == 100.0
    pred = ref.copy()
    pred[0] ^= 1  # one frame differs, two are exact copies: the mean is still +inf
    assert uncapped.clip_value(pair(pred, ref)) == float("inf")
    # capped: (100 + 100 + PSNR of the changed frame) / 3, that frame's MSE = 1 exactly (xor 1)
    expected = (200 + 10 * np.log10(255 ** 2 / 1.0)) / 3
    assert build_metric("PSNR").clip_value(pair(pred, ref)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="max_db"):
        build_metric("PSNR", {"max_db": -3})


def test_psnr_data_range_float_frames():
    ref = np.full((1, 8, 8, 3), 0.5)
    pred = ref + 0.1  # MSE 0.01 on a [0, 1] scale -> 20 dB
    assert build_metric("PSNR", {"data_range": 1.0}).clip_value(pair(pred, ref)) == \
        pytest.approx(20.0)


def test_psnr_gray_bt601():
    ref = np.full((1, 8, 8, 3), 100.0, np.float32)
    pred = ref.copy()
    pred[..., 2] += 100  # blue +100 -> luma +11.4 (0.114 * 100); the rgb MSE is 100^2 / 3
    got = build_metric("PSNR", {"color": "gray"}).clip_value(pair(pred, ref))
    assert got == pytest.approx(psnr_db(11.4 ** 2), rel=1e-5)
    rgb = build_metric("PSNR").clip_value(pair(pred, ref))
    assert rgb == pytest.approx(psnr_db(100 ** 2 / 3), rel=PSNR_REL)


def test_to_gray_matches_bt601_formula():
    x = frames(t=2, h=8, w=8, lo=0, hi=256, seed=3)
    y = to_gray(x)
    assert y.shape == (2, 8, 8, 1) and y.dtype == np.uint8
    expected = x.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(y[..., 0] - expected).max() <= 0.5 + 1e-6  # rounded to the nearest level


# ---------------------------------------------------------------- SSIM

def test_ssim_identical_is_one():
    ref = frames(t=3, h=32, w=24)
    for params, tol in (({}, 1e-12), ({"color": "gray"}, 1e-12), ({"border": "full"}, 1e-6)):
        assert build_metric("SSIM", params).clip_value(pair(ref.copy(), ref)) == \
            pytest.approx(1.0, abs=tol)


def test_ssim_constant_images_by_hand():
    # No variance anywhere: SSIM reduces to the luminance term (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 40.0, 200.0
    pred = np.full((2, 20, 20, 3), a, np.uint8)
    ref = np.full((2, 20, 20, 3), b, np.uint8)
    expected = (2 * a * b + C1) / (a * a + b * b + C1)
    # Tolerance: "valid" is float64 (exact to rounding); "full" is torchmetrics' float32, where
    # sigma_xy = E[xy] - mu_x mu_y cancels at a*b: up to 1.3e-4 relative measured on flat images.
    for border, rel in (("valid", 1e-12), ("full", 3e-4)):
        got = build_metric("SSIM", {"border": border}).clip_value(pair(pred, ref))
        assert got == pytest.approx(expected, rel=rel)
        # C1 matters: ten times C1 would move the value by 2.6e-3 relative.
        assert got != pytest.approx((2 * a * b + C1 * 10) / (a * a + b * b + C1 * 10), rel=1e-3)


def test_ssim_negated_contrast_by_hand():
    # x = 128 + 60c and y = 128 - 60c on a +-1 checkerboard c: anti-correlated structure. The
    # Gaussian-weighted mean of c is near 0 (not exactly), so the hand value is approximate.
    h = w = 32
    checker = ((np.indices((h, w)).sum(axis=0) % 2) * 2 - 1)[None, ..., None]  # +-1
    pred = (128 + 60 * checker).repeat(3, axis=-1).astype(np.uint8)
    ref = (128 - 60 * checker).repeat(3, axis=-1).astype(np.uint8)
    got = build_metric("SSIM").clip_value(pair(pred, ref))
    # Local means ~128 for both, variances ~3600, covariance ~-3600:
    # SSIM ~ (2*128^2 + C1)/(2*128^2 + C1) * (-7200 + C2)/(7200 + C2) ~ -0.984.
    assert got == pytest.approx((-7200 + C2) / (7200 + C2), abs=0.01)


def test_ssim_gray_equals_rgb_of_replicated_luma():
    pred, ref = frames(t=2, h=24, w=24, seed=1), frames(t=2, h=24, w=24, seed=2)
    gray = build_metric("SSIM", {"color": "gray"}).clip_value(pair(pred, ref))
    rep = build_metric("SSIM").clip_value(pair(to_gray(pred).repeat(3, -1),
                                                to_gray(ref).repeat(3, -1)))
    assert gray == pytest.approx(rep, rel=1e-6)
    assert gray != pytest.approx(build_metric("SSIM").clip_value(pair(pred, ref)), rel=1e-3)


def test_ssim_mean_of_frames_and_batching():
    ref = frames(t=5, h=20, w=20, seed=4)
    pred = np.clip(ref.astype(int) + np.random.default_rng(5).integers(-30, 31, ref.shape),
                   0, 255).astype(np.uint8)
    m = build_metric("SSIM")
    whole = m.clip_value(pair(pred, ref))
    per_frame = [m.clip_value(pair(pred[i:i + 1], ref[i:i + 1])) for i in range(5)]
    assert whole == pytest.approx(np.mean(per_frame), rel=1e-6)
    m.batch_size = 2
    assert m.clip_value(pair(pred, ref)) == pytest.approx(whole, rel=1e-6)
    assert 0 < whole < 1


def test_ssim_border_modes_differ_on_noise():
    pred, ref = frames(t=1, h=24, w=24, seed=6), frames(t=1, h=24, w=24, seed=7)
    valid = build_metric("SSIM").clip_value(pair(pred, ref))
    full = build_metric("SSIM", {"border": "full"}).clip_value(pair(pred, ref))
    assert abs(valid - full) > 1e-3  # the reflect-padded border band changes the mean


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    pred, ref = frames(t=4, h=64, w=64, seed=8), frames(t=4, h=64, w=64, seed=9)
    for name in ("PSNR", "SSIM"):
        cpu = build_metric(name)
        gpu = build_metric(name)
        gpu.device = "cuda"
        assert gpu.clip_value(pair(pred, ref)) == pytest.approx(cpu.clip_value(pair(pred, ref)),
                                                                rel=1e-5)


# ---------------------------------------------------------------- error paths

@pytest.mark.parametrize("name", ["PSNR", "SSIM"])
def test_errors(name):
    m = build_metric(name)
    ref = frames(t=3, h=16, w=16)
    with pytest.raises(MetricError, match="prediction has 2 frames, reference 3"):
        m.clip_value(pair(ref[:2], ref))
    with pytest.raises(MetricError, match="16x12 \\(WxH\\), reference 16x16"):
        m.clip_value(pair(ref[:, :12], ref))
    bad = ref.astype(np.float32)
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(MetricError, match="prediction frames contain NaN"):
        m.clip_value(pair(bad, ref))
    with pytest.raises(MetricError, match="reference frames contain NaN"):
        m.clip_value(pair(ref, bad))
    with pytest.raises(MetricError, match="expected T x H x W x 3"):
        m.clip_value(pair(ref[0], ref[0]))
    with pytest.raises(MetricError, match="prediction has no 'frames'"):
        m.clip_value(ClipPair("c", pred={}, ref={"frames": ref}))
    with pytest.raises(MetricError, match="no frames"):
        m.clip_value(pair(ref[:0], ref[:0]))


def test_ssim_too_small():
    ref = frames(t=1, h=10, w=30)
    with pytest.raises(MetricError, match="at least 11x11"):
        build_metric("SSIM").clip_value(pair(ref, ref))
