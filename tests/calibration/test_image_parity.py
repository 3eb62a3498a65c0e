"""Parity of talkbench's PSNR and SSIM with scikit-image (the EAT / ATVGnet evaluation library).

Reference calls: ``skimage.metrics.peak_signal_noise_ratio(ref, pred, data_range=255)`` and
``structural_similarity(ref, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=255, channel_axis=-1)`` (Wang et al.'s settings), per frame, averaged over frames.

Measured (torchmetrics 1.9.0, scikit-image 0.26.0, torch CPU):

* PSNR: agreement to ~1e-7 relative. torchmetrics takes 10 / ln(10) in float32; otherwise the
  computation (float64 MSE) is the same. Tolerance 1e-6 relative.
* SSIM, border="valid" (talkbench's default): the SSIM maps are identical in the interior, and both
  average the same interior (5 px cropped on each side). talkbench computes the local statistics in
  float64 with a separable Gaussian (metrics.image.ssim_valid); agreement with scikit-image is
  ~1e-14. Tolerance 1e-10 relative or 1e-12 absolute (SSIM near 0).
* SSIM, border="full" (torchmetrics' own value): torchmetrics reflect-pads the image by 5 px and
  averages the map over all H x W pixels, skimage averages only the interior. On these cases they
  differ by 0.06% (correlated noise), 0.2% (smooth), 1.8% (photo crops), 17% (independent noise)
  -- a definition difference, not an error; tested below
  against torchmetrics itself.
"""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim
from torchmetrics.image import StructuralSimilarityIndexMeasure

from metrics import build_metric
from core.types import ClipPair
from metrics.image import to_gray

SSIM_REL, SSIM_ABS = 1e-10, 1e-12
PSNR_REL = 1e-6


def _smooth(rng, t, h, w):
    x = gaussian_filter(rng.normal(size=(t, h, w, 3)), (0, 5, 5, 0))
    x = (x - x.min()) / (x.max() - x.min()) * 255
    return x.round().astype(np.uint8)


def _noisy(rng, x, amp):
    return np.clip(x.astype(int) + rng.integers(-amp, amp + 1, x.shape), 0, 255).astype(np.uint8)


def _cases():
    rng = np.random.default_rng(42)
    random_ref = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    random_pred = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    smooth_ref = _smooth(rng, 3, 64, 56)
    smooth_pred = _noisy(rng, smooth_ref, 6)
    photo_ref = np.stack([data.astronaut()[100:260, 150:310], data.astronaut()[0:160, 0:160]])
    photo_pred = _noisy(rng, photo_ref, 20)
    return {
        "random": (random_pred, random_ref),
        "random-correlated": (_noisy(rng, random_ref, 40), random_ref),
        "smooth": (smooth_pred, smooth_ref),
        "photo": (photo_pred, photo_ref),
    }


CASES = _cases()


def _pair(pred, ref):
    return ClipPair(clip_id="parity", pred={"frames": pred}, ref={"frames": ref})


def _sk_ssim_frames(pred, ref, channel_axis=-1):
    return float(np.mean([
        sk_ssim(r, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                data_range=255, channel_axis=channel_axis)
        for p, r in zip(pred, ref)]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_psnr_matches_skimage(case):
    pred, ref = CASES[case]
    expected = float(np.mean([sk_psnr(r, p, data_range=255) for p, r in zip(pred, ref)]))
    got = build_metric("PSNR").clip_value(_pair(pred, ref))
    assert got == pytest.approx(expected, rel=PSNR_REL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_psnr_gray_matches_skimage(case):
    pred, ref = CASES[case]
    gp, gr = to_gray(pred)[..., 0], to_gray(ref)[..., 0]
    expected = float(np.mean([sk_psnr(r, p, data_range=255) for p, r in zip(gp, gr)]))
    got = build_metric("PSNR", {"color": "gray"}).clip_value(_pair(pred, ref))
    assert got == pytest.approx(expected, rel=PSNR_REL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ssim_matches_skimage(case):
    pred, ref = CASES[case]
    expected = _sk_ssim_frames(pred, ref)
    got = build_metric("SSIM").clip_value(_pair(pred, ref))
    assert got == pytest.approx(expected, rel=SSIM_REL, abs=SSIM_ABS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ssim_gray_matches_skimage(case):
    pred, ref = CASES[case]
    expected = _sk_ssim_frames(to_gray(pred)[..., 0], to_gray(ref)[..., 0], channel_axis=None)
    got = build_metric("SSIM", {"color": "gray"}).clip_value(_pair(pred, ref))
    assert got == pytest.approx(expected, rel=SSIM_REL, abs=SSIM_ABS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ssim_full_border_is_torchmetrics(case):
    pred, ref = CASES[case]
    module = StructuralSimilarityIndexMeasure(gaussian_kernel=True, sigma=1.5, kernel_size=11,
                                              data_range=255.0, k1=0.01, k2=0.03)
    to_t = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float()  # noqa: E731
    per_frame = [module(to_t(p[None]), to_t(r[None])).item() for p, r in zip(pred, ref)]
    got = build_metric("SSIM", {"border": "full"}).clip_value(_pair(pred, ref))
    assert got == pytest.approx(float(np.mean(per_frame)), rel=1e-6, abs=1e-7)


def test_full_border_differs_from_skimage_on_noise():
    # The documented reason the default is border="valid": torchmetrics' whole-image mean includes
    # the reflect-padded 5 px band, which on noise moves SSIM by ~20%.
    pred, ref = CASES["random"]
    full = build_metric("SSIM", {"border": "full"}).clip_value(_pair(pred, ref))
    sk = _sk_ssim_frames(pred, ref)
    assert abs(full - sk) > 0.05 * abs(sk)


def test_ssim_scipy_and_torch_paths_agree():
    """The CPU path (scipy filters) and the GPU path (torch convolutions) compute the same thing."""
    from metrics.image import ssim_valid

    rng = np.random.default_rng(5)
    ref = torch.from_numpy(rng.uniform(0, 255, (3, 3, 40, 48)))
    pred = (ref + torch.from_numpy(rng.normal(0, 20, ref.shape))).clamp(0, 255)
    a = ssim_valid(pred, ref, 255.0, backend="scipy")
    b = ssim_valid(pred, ref, 255.0, backend="torch")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
