"""Parity of talkbench's CPBD with the PyPI package ``cpbd`` 1.0.7 (``cpbd.compute``).

The package is not a talkbench dependency (install it with ``pip install cpbd`` to run these
tests; they are skipped without it). Its ``cpbd/compute.py`` does ``from scipy.ndimage import
imread`` at import time, a function SciPy removed in 1.2; ``compute`` itself never calls it (only the
package's ``__main__`` block does), so the test puts a placeholder there before importing.

Measured (cpbd 1.0.7, scikit-image 0.26, SciPy 1.17): identical values (differences <= 2e-16,
the order of the histogram normalisation) on natural, blurred, noisy, odd-sized and synthtalk
frames; talkbench takes ~50 ms per 256 x 256 frame where the package takes ~0.4 s.
"""

from functools import lru_cache

import numpy as np
import pytest
import scipy.ndimage
from scipy.ndimage import gaussian_filter
from skimage import data

from bench.data.synthtalk import corpus, face, render
from metrics import build_metric
from core.types import ClipPair
from metrics.identity import cpbd, gray_frames

TOL = 1e-6


@pytest.fixture(scope="module")
def reference():
    if not hasattr(scipy.ndimage, "imread"):
        scipy.ndimage.imread = None  # placeholder for the removed function (never called)
    return pytest.importorskip("cpbd", reason="pip install cpbd to run the CPBD parity test")


@lru_cache(maxsize=1)
def _images() -> dict[str, np.ndarray]:
    cam = data.camera().astype(np.float64)
    astro = gray_frames(data.astronaut()[None])[0]
    rng = np.random.default_rng(0)
    identity, look = corpus.speaker_identity(0, 4)
    lm = face.project(identity.shape[None], np.zeros((1, 6)))
    synth = gray_frames(render.render_frames(lm.astype(np.float32), look, 256))[0]
    return {
        "camera": cam,
        "camera_blur1": np.round(gaussian_filter(cam, 1.0)),
        "camera_blur2_float": gaussian_filter(cam, 2.0),
        "astronaut_half": astro[::2, ::2],
        "astronaut_low_contrast": np.round(astro[::2, ::2] * 0.15 + 100),
        "noise": rng.integers(0, 256, (128, 200)).astype(np.float64),
        "odd_size": cam[:197, :131],
        "flat": np.full((128, 128), 77.0),
        "synthtalk": synth,
    }


@pytest.mark.parametrize("name", list(_images()))
def test_cpbd_matches_package(reference, name):
    img = _images()[name]
    assert abs(cpbd(img) - reference.compute(img)) <= TOL


def test_metric_is_mean_of_package_values(reference):
    frames = data.astronaut()[None, ::2, ::2]
    frames = np.concatenate([frames, np.round(gaussian_filter(frames, (0, 1.5, 1.5, 0))).astype(np.uint8)])
    expected = np.mean([reference.compute(g) for g in gray_frames(frames)])
    value = build_metric("CPBD").clip_value(ClipPair("c", {"frames": frames}, {}))
    assert abs(value - expected) <= TOL
