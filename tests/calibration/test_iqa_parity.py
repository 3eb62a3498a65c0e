"""Parity of talkbench's NIQE, BRISQUE and MUSIQ with pyiqa's own ``create_metric`` path.

Reference: ``pyiqa.create_metric(NAME)`` with pyiqa's default options; its parameter / weight file is
taken from pyiqa's download cache folder (pointed at a temporary folder that holds the test's file
under the name in pyiqa's URL, so nothing is downloaded) and each frame is read by pyiqa from a PNG
file. talkbench's metric loads the same file through ``core.weights.resolve`` (the registry's
``pyiqa_*`` entries) and scores the uint8 arrays. The files are written at test time in pyiqa's
layouts: a synthetic NIQE pristine Gaussian (.mat), a random BRISQUE SVM (pickled tensors) and a
random-initialised MUSIQ state dict.

Measured (pyiqa 0.1.16, torch 2.14 CPU, two 128 x 128 photo crops): NIQE and BRISQUE identical,
MUSIQ 3e-8 relative. Tolerance 1e-5 relative. No direction test: with synthetic parameters and
random weights a "worse under noise" check would test nothing about the real models.
"""

import numpy as np
import pytest

from bench.calibrate import IQA_WRITERS, photo_pairs, pyiqa_reference
from core import weights
from core.errors import MetricError, MetricUnavailable
from core.types import ClipPair
from metrics import METRICS, build_metric

pytest.importorskip("pyiqa")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", sorted(IQA_WRITERS))
def test_parity_with_pyiqa(name, tmp_path, monkeypatch):
    weights_name, writer = IQA_WRITERS[name]
    path = tmp_path / weights.get_spec(weights_name).filename
    writer(path)
    monkeypatch.setenv(weights.get_spec(weights_name).env_var, str(path))
    metric = build_metric(name, {"max_frames_per_clip": 2})
    frames, _ = photo_pairs(2)
    value = metric.clip_value(ClipPair("c", {"frames": np.concatenate([frames, frames[:1]])}, {}))
    # max_frames_per_clip=2 of the 3 frames takes frames 0 and 2 (stride 2): frame 0 twice
    expected = pyiqa_reference(name.lower(), path, frames[:1], tmp_path)
    assert value != pytest.approx(float(pyiqa_reference(name.lower(), path, frames[1:], tmp_path)[0]))
    assert np.isfinite(value)
    assert value == pytest.approx(float(expected.mean()), rel=1e-5)
    assert METRICS.get(name).higher_is_better is (name == "MUSIQ")


def test_registry_urls_are_pyiqas():
    from pyiqa.archs import brisque_arch, musiq_arch, niqe_arch

    assert weights.get_spec("pyiqa_niqe").url == niqe_arch.default_model_urls["niqe"]
    assert weights.get_spec("pyiqa_brisque").url == brisque_arch.default_model_urls["url"]
    assert weights.get_spec("pyiqa_musiq_koniq").url == musiq_arch.default_model_urls["koniq10k"]


def test_unavailable_without_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))
    for name, (weights_name, _) in IQA_WRITERS.items():
        monkeypatch.delenv(weights.get_spec(weights_name).env_var, raising=False)
        with pytest.raises(MetricUnavailable, match=f"talkbench weights download {weights_name}"):
            build_metric(name)


def test_bad_input(tmp_path, monkeypatch):
    path = tmp_path / "niqe.mat"
    IQA_WRITERS["NIQE"][1](path)
    monkeypatch.setenv("TALKBENCH_WEIGHTS_PYIQA_NIQE", str(path))
    metric = build_metric("NIQE")
    with pytest.raises(MetricError, match="prediction"):
        metric.clip_value(ClipPair("c", {"frames": np.zeros((0, 8, 8, 3), np.uint8)}, {}))
    with pytest.raises(ValueError, match="max_frames_per_clip"):
        build_metric("NIQE", {"max_frames_per_clip": 0})
