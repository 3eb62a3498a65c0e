"""No-reference image quality of the generated frames, with the ``pyiqa`` package (IQA-PyTorch).

Convention reproduced: ``pyiqa.create_metric(NAME)`` with pyiqa's default options for ``niqe``,
``brisque`` and ``musiq`` (the KonIQ-10k MUSIQ), called on RGB tensors in [0, 1] -- the scores
papers quote as "NIQE", "BRISQUE" and "MUSIQ" when they cite IQA-PyTorch. The metric is pyiqa's own
code: talkbench builds ``pyiqa.create_metric(NAME, pretrained_model_path=FILE)``, where ``FILE`` is
the parameter or weight file pyiqa would download from its Hugging Face repository
(``chaofengc/IQA-PyTorch-Weights``) into the torch hub cache, found instead through
``core.weights.resolve`` (registered, cached and checked like every other file; without it the metric
is unavailable with the download command). Nothing is fetched, and the installed pyiqa version is part
of the metric's identity, so a pyiqa upgrade recomputes cached values.

* NIQE (lower is better): pyiqa's Python NIQE (``version="original"``, the BasicSR port of Mittal et
  al.'s MATLAB code: Y channel, 96-pixel blocks, two scales), with ``niqe_modelparameters.mat`` (the
  pristine-image Gaussian). Not the ``niqe_matlab`` variant.
* BRISQUE (lower is better): pyiqa's ``version="original"`` (the libsvm RBF model of the LIVE
  release, ``brisque_svm_weights.pth``, gamma 0.05, rho -153.591). Not ``brisque_matlab``.
* MUSIQ (higher is better): the multi-scale transformer trained on KonIQ-10k
  (``musiq_koniq_ckpt-e95806b9.pth``), scales 224 and 384 on the longer side plus the native one.

Departures: a value is one frame's score averaged over the clip's frames (papers average over the
frames or the videos of a test set the same way); frames are the full generated frames as given (no
face crop), uint8 divided by 255. ``max_frames_per_clip`` (default None: every frame) scores at most
that many frames, every ceil(T / max)-th from frame 0, as FID subsamples. The generated frames alone
are scored; the reference is not used. A face-specific TOPIQ (``topiq_nr-face``) is not offered: pyiqa
runs facexlib's RetinaFace alignment and a timm backbone inside it, whose weights it downloads at
construction.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
from typing import Optional

import numpy as np
import torch

from core import weights
from core.errors import MetricError, MetricUnavailable, short_error
from core.types import ClipPair
from metrics import register
from metrics.base import Metric
from metrics.fid import stride_subsample
from metrics.perceptual import check_range

# talkbench metric name -> (pyiqa metric name, weights registry name)
PYIQA_NAMES: dict[str, tuple[str, str]] = {
    "NIQE": ("niqe", "pyiqa_niqe"),
    "BRISQUE": ("brisque", "pyiqa_brisque"),
    "MUSIQ": ("musiq", "pyiqa_musiq_koniq"),
}


def pyiqa_version() -> Optional[str]:
    try:
        return importlib.metadata.version("pyiqa")
    except importlib.metadata.PackageNotFoundError:
        return None


def build_pyiqa(metric: str, path, device: str = "cpu") -> torch.nn.Module:
    """``pyiqa.create_metric(metric)`` with its parameter or weight file read from `path`."""
    try:
        import pyiqa
    except ImportError as exc:
        raise MetricUnavailable(f"the pyiqa package is not installed ({exc}); "
                                f"`pip install --no-deps pyiqa` (see pyproject's iqa extra)") from exc
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pyiqa prints "Loading pretrained model"
            model = pyiqa.create_metric(metric, device=torch.device(device),
                                        pretrained_model_path=str(path))
    except Exception as exc:  # a truncated or foreign file
        raise MetricUnavailable(f"{path} could not be loaded as pyiqa's {metric} file "
                                f"({short_error(exc)}); check it with `talkbench weights verify`") from exc
    return model.eval()


class PyiqaMetric(Metric):
    """Mean over the generated frames of one pyiqa no-reference score."""

    needs = ("frames",)
    level = "clip"
    defaults = {"max_frames_per_clip": None}
    batch_size = 8  # frames per call; pyiqa scores each image independently

    def __init__(self, **params) -> None:
        super().__init__(**params)
        pyiqa_name, weights_name = PYIQA_NAMES[self.name]
        self.weights_path = weights.resolve(weights_name)
        self._model = build_pyiqa(pyiqa_name, self.weights_path)
        self._model_device: Optional[str] = "cpu"

    def validate_params(self) -> None:
        m = self.params["max_frames_per_clip"]
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"metric {self.name}: parameter 'max_frames_per_clip' must be a "
                             f"positive integer or null, got {m!r}")

    def identity(self) -> dict:
        weights_name = PYIQA_NAMES[self.name][1]
        return {**super().identity(), "pyiqa": pyiqa_version(),
                "weights": {weights_name: weights.fingerprint(self.weights_path)}}

    @property
    def model(self) -> torch.nn.Module:
        # rebuilt, not moved: some pyiqa models keep plain tensor attributes (NIQE's pristine
        # statistics) that Module.to would leave behind
        if self._model_device != str(self.device):
            self._model = build_pyiqa(PYIQA_NAMES[self.name][0], self.weights_path, str(self.device))
            self._model_device = str(self.device)
        return self._model

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        """T x H x W x 3 frames (0-255) -> T scores (float64)."""
        out = []
        with torch.no_grad():
            for start in range(0, len(frames), self.batch_size):
                batch = np.ascontiguousarray(frames[start:start + self.batch_size], dtype=np.float32)
                x = torch.from_numpy(batch).permute(0, 3, 1, 2) / 255.0
                out.append(self.model(x.to(self.device)).double().reshape(-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def clip_value(self, pair: ClipPair) -> float:
        if "frames" not in pair.pred:
            raise MetricError(f"clip {pair.clip_id}: prediction has no 'frames'")
        arr = np.asarray(pair.pred["frames"])
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
            raise MetricError(f"clip {pair.clip_id}: prediction frames have shape {arr.shape}, "
                              f"expected T x H x W x 3 RGB with T > 0")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise MetricError(f"clip {pair.clip_id}: prediction frames contain NaN or inf")
        check_range(arr, f"clip {pair.clip_id}: prediction")
        scores = self.frame_scores(arr[stride_subsample(len(arr), self.params["max_frames_per_clip"])])
        if not np.isfinite(scores).all():
            raise MetricError(f"clip {pair.clip_id}: {self.name} is not finite on some frames")
        return float(scores.mean())


@register
class NIQE(PyiqaMetric):
    """NIQE (pyiqa ``niqe``) of the generated frames; lower is better."""

    name = "NIQE"
    higher_is_better = False


@register
class BRISQUE(PyiqaMetric):
    """BRISQUE (pyiqa ``brisque``) of the generated frames; lower is better."""

    name = "BRISQUE"
    higher_is_better = False


@register
class MUSIQ(PyiqaMetric):
    """MUSIQ trained on KonIQ-10k (pyiqa ``musiq``) of the generated frames; higher is better."""

    name = "MUSIQ"
    higher_is_better = True
