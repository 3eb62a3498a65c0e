"""Frame-level FID between the generated and the reference frames of a test set (`metrics.md` §5).

Features: pytorch-fid's Inception (the TensorFlow 2015-12-05 network ported to PyTorch), "pool3",
2048-d. The network is pytorch-fid's own ``fid_inception_v3`` structure -- torchvision's
Inception-v3 with 1008 classes and no aux head, whose Mixed_5b-5d (InceptionA), Mixed_6b-6e
(InceptionC), Mixed_7b and Mixed_7c blocks are replaced by pytorch-fid's ``FIDInceptionA``,
``FIDInceptionC``, ``FIDInceptionE_1`` and ``FIDInceptionE_2`` (TF-style average pools that ignore
padding, and a max pool in the last block). ``pytorch_fid.inception.fid_inception_v3()`` and
``InceptionV3(use_fid_inception=True)`` always fetch the weights from GitHub, so this module builds
the same structure from torchvision's builder and the package's block classes (each block swapped for
its FID version with the channel counts read off the block it replaces) and loads
``pt_inception-2015-12-05-6726825d.pth`` from ``core.weights.resolve("pt_inception")`` with a strict
``load_state_dict``. Nothing is downloaded or monkeypatched. The forward pass is pytorch-fid's
``InceptionV3([3], resize_input=True, normalize_input=True)``: bilinear resize to 299x299
(``align_corners=False``), 2x - 1, the convolutional stem and max pools, Mixed_5b ... Mixed_7c, global
average pool.

Inputs: uint8 RGB frames (or floats on the 0-255 scale) divided by 255 -- what pytorch-fid's
``ToTensor`` gives for an RGB image file. Features of every generated frame of every clip are pooled
into one set and compared with the pooled features of every reference frame: one value for the test
set (``level = "set"``). ``max_frames_per_clip`` (default None: all frames) keeps at most that many
frames per clip, taken with a fixed stride ceil(T / max) from frame 0, for the generated and the
reference frames alike.

Statistics and distance: means and unbiased covariances (``np.cov(rowvar=False)``) in float64;
FID = ||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2). pytorch-fid's
``calculate_frechet_distance`` takes the trace term from ``scipy.linalg.sqrtm(S1 S2)`` (adding 1e-6 I
when the result is not finite, raising when its diagonal has an imaginary part > 1e-3). Here the
same quantity is computed without a non-symmetric matrix square root, by one of two exact routes
(``frechet_distance_features``):

* more than 2048 frames on a side ("covariance"): Tr sqrt(S1 S2) is the sum of the square roots of
  the eigenvalues of the symmetric PSD matrix sqrt(S1) S2 sqrt(S1), which has the eigenvalues of
  S1 S2 (``frechet_distance``). Real, non-negative (rounding below zero is clipped), no fallback.
* up to 2048 frames per side ("gram"): the same trace from the singular values of the N1 x N2
  product of the centred feature matrices, exact for rank-deficient covariances and without any
  2048 x 2048 decomposition.

Measured agreement with ``calculate_frechet_distance``: ~1e-12 relative on full-rank covariances;
1e-8 to 4e-7 on rank-deficient ones (up to 2048-d), where sqrtm itself is only that accurate: for two
identical sets of 4 to 6 frames its 2048-d value is -1.4e-6 to -1.6e-6 x Tr S instead of 0 (the gram
route: 0 to 2e-16). Time for 2048-d on a 2-core CPU: sqrtm 20-45 s; the eigen route 3-12 s; the gram
route with a few hundred frames well under a second. See tests/test_metrics_perceptual.py and
tests/calibration/test_fid_parity.py.

Small sets: with fewer than 2048 frames per side the covariance is rank-deficient and FID is biased
upward (roughly as 1/N). The value is still computed; the frame counts and a warning are logged and
put in ``last_notes`` for the report.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core import weights
from core.hashing import array_digest, key_of
from metrics import register
from core.types import ClipPair
from metrics.base import Metric
from core.errors import MetricError, MetricUnavailable, short_error
from metrics.perceptual import check_range, load_checkpoint

log = logging.getLogger(__name__)

FEATURE_DIM = 2048
INPUT_SIZE = 299


# -- the network -----------------------------------------------------------------------------------
def fid_inception_structure() -> nn.Module:
    """pytorch-fid's ``fid_inception_v3()`` network, untrained (its weights are loaded separately)."""
    import torchvision
    from torchvision.models.inception import InceptionA, InceptionC, InceptionE

    try:
        from pytorch_fid import inception as pf
    except ImportError as exc:
        raise MetricUnavailable(f"the pytorch-fid package is not installed ({exc}); "
                                f"`pip install pytorch-fid`") from exc

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                          init_weights=False)
    for name, block in list(net.named_children()):
        if type(block) is InceptionA:
            new = pf.FIDInceptionA(block.branch1x1.conv.in_channels,
                                   pool_features=block.branch_pool.conv.out_channels)
        elif type(block) is InceptionC:
            new = pf.FIDInceptionC(block.branch1x1.conv.in_channels,
                                   channels_7x7=block.branch7x7_1.conv.out_channels)
        elif type(block) is InceptionE:
            # the first E block keeps TF's padding-free average pool, the last one max-pools
            cls = pf.FIDInceptionE_2 if name == "Mixed_7c" else pf.FIDInceptionE_1
            new = cls(block.branch1x1.conv.in_channels)
        else:
            continue
        setattr(net, name, new)
    return net


class FIDInceptionFeatures(nn.Module):
    """pool3 features of pytorch-fid's ``InceptionV3([3])``: N x 3 x H x W in [0, 1] -> N x 2048."""

    def __init__(self, inception: nn.Module) -> None:
        super().__init__()
        i = inception
        self.layers = nn.Sequential(
            i.Conv2d_1a_3x3, i.Conv2d_2a_3x3, i.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            i.Mixed_5b, i.Mixed_5c, i.Mixed_5d, i.Mixed_6a, i.Mixed_6b, i.Mixed_6c, i.Mixed_6d,
            i.Mixed_6e, i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        return self.layers(x).flatten(1)


def build_fid_inception(path: Path) -> FIDInceptionFeatures:
    """The FID feature extractor with pytorch-fid's weights read from `path`."""
    state = load_checkpoint(path, "pytorch-fid's FID Inception state_dict")
    net = fid_inception_structure()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MetricUnavailable(f"{path} is not pytorch-fid's FID Inception state_dict "
                                f"({short_error(exc)})") from exc
    return weights.frozen(FIDInceptionFeatures(net))


# -- statistics and distance -----------------------------------------------------------------------
def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of N x D features, N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr sqrt(S1 S2) for covariance matrices, from the eigenvalues of sqrt(S1) S2 sqrt(S1)."""
    root = _sqrt_psd(np.asarray(sigma1, dtype=np.float64))
    inner = root @ np.asarray(sigma2, dtype=np.float64) @ root
    ev = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (see the module docstring)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"shapes do not match: mu {mu1.shape}, {mu2.shape}; "
                         f"sigma {sigma1.shape}, {sigma2.shape}")
    for arr in (mu1, mu2, sigma1, sigma2):
        if not np.isfinite(arr).all():
            raise ValueError("statistics contain NaN or inf")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
                 - 2.0 * trace_sqrt_product(sigma1, sigma2))


def frechet_distance_features(f1: np.ndarray, f2: np.ndarray, method: str = "auto") -> float:
    """FID between two feature sets (N1 x D and N2 x D, each N >= 2), in float64.

    method "covariance": ``frechet_distance`` of the means and unbiased covariances.
    method "gram": the same quantity without forming D x D matrices. With centred features A1, A2,
    S1 S2 = A1' (A1 A2' A2) / c, c = (N1 - 1)(N2 - 1), so the non-zero eigenvalues of S1 S2 are
    those of M M' / c with M = A1 A2' (N1 x N2): Tr sqrt(S1 S2) = (sum of M's singular values)
    / sqrt(c), and Tr Si = ||Ai||_F^2 / (Ni - 1). This is exact for any N, costs O(N1 N2 D), and is
    free of the rounding that eigenvalues which should be 0 otherwise add (each contributes its square
    root, ~1e-8 scale, 2048 of them). "auto" takes "gram" when both sets have at most D features
    (rank-deficient covariances), else "covariance".
    """
    f1 = np.asarray(f1, dtype=np.float64)
    f2 = np.asarray(f2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sets must be N x D with the same D, got {f1.shape}, {f2.shape}")
    (n1, d), n2 = f1.shape, f2.shape[0]
    if min(n1, n2) < 2:
        raise ValueError(f"need at least 2 features per set, got {n1} and {n2}")
    if method == "auto":
        method = "gram" if max(n1, n2) <= d else "covariance"
    if method == "covariance":
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    if method != "gram":
        raise ValueError(f"method must be 'auto', 'gram' or 'covariance', got {method!r}")
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a1, a2 = f1 - mu1, f2 - mu2
    singular = np.linalg.svd(a1 @ a2.T, compute_uv=False)
    tr_covmean = singular.sum() / math.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + np.sum(a1 * a1) / (n1 - 1) + np.sum(a2 * a2) / (n2 - 1)
                 - 2.0 * tr_covmean)


def stride_subsample(n: int, max_frames: Optional[int]) -> np.ndarray:
    """Indices of at most `max_frames` of `n` frames, every ceil(n / max_frames)-th from 0."""
    if max_frames is None or n <= max_frames:
        return np.arange(n)
    return np.arange(0, n, math.ceil(n / max_frames))


# -- the metric ------------------------------------------------------------------------------------
@register
class FID(Metric):
    """Fréchet Inception Distance between all generated and all reference frames of the test set."""

    name = "FID"
    higher_is_better = False
    needs = ("frames",)
    level = "set"
    defaults = {"max_frames_per_clip": None}
    batch_size = 50  # pytorch-fid's default; frames per forward pass, does not change the value

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.weights_path = weights.resolve("pt_inception")
        self._model = build_fid_inception(self.weights_path)
        self.last_notes: list[str] = []
        self.last_counts: dict[str, int] = {}

    def validate_params(self) -> None:
        m = self.params["max_frames_per_clip"]
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"metric {self.name}: parameter 'max_frames_per_clip' must be a "
                             f"positive integer or null, got {m!r}")

    def identity(self) -> dict:
        return {**super().identity(),
                "weights": {"pt_inception": weights.fingerprint(self.weights_path)}}

    @property
    def model(self) -> FIDInceptionFeatures:
        return self.on_device(self._model)

    def features(self, frames: np.ndarray) -> np.ndarray:
        """T x H x W x 3 frames (0-255 scale) -> T x 2048 float64 pool3 features."""
        model, out = self.model, []
        with torch.no_grad():
            for start in range(0, frames.shape[0], self.batch_size):
                batch = np.ascontiguousarray(frames[start:start + self.batch_size])
                x = torch.from_numpy(batch).to(device=self.device, dtype=torch.float32)
                x = x.permute(0, 3, 1, 2) / 255.0
                out.append(model(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))

    def cached_features(self, frames: np.ndarray) -> np.ndarray:
        """`features`, kept in the scorer's cache (`Metric.cache`) under the frames' content: the
        ground truth's features are computed once per clip, not once per row, and a rescored
        prediction's once."""
        if self.cache is None:
            return self.features(frames)
        key = key_of("fid_features", self.identity(), self.device, self.batch_size, array_digest(frames))
        got = self.cache.get_arrays("fid_features", key)
        if got is None:
            got = {"features": self.features(frames)}
            self.cache.put_arrays("fid_features", key, got)
        return got["features"]

    def _frames(self, pair: ClipPair, side: str, check: bool = False) -> np.ndarray:
        """The clip's frames on one side, validated (if `check`) and subsampled."""
        fields = pair.pred if side == "prediction" else pair.ref
        if "frames" not in fields:
            raise MetricError(f"clip {pair.clip_id}: {side} has no 'frames'")
        arr = np.asarray(fields["frames"])
        if check:
            if arr.ndim != 4 or arr.shape[-1] != 3:
                raise MetricError(f"clip {pair.clip_id}: {side} frames have shape {arr.shape}, "
                                  f"expected T x H x W x 3 RGB")
            if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
                raise MetricError(f"clip {pair.clip_id}: {side} frames have dtype {arr.dtype}")
            if arr.shape[0] == 0:
                raise MetricError(f"clip {pair.clip_id}: {side} has no frames")
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                raise MetricError(f"clip {pair.clip_id}: {side} frames contain NaN or inf")
            check_range(arr, f"clip {pair.clip_id}: {side}")
        return arr[stride_subsample(arr.shape[0], self.params["max_frames_per_clip"])]

    def clip_parts(self, pair: ClipPair) -> tuple[np.ndarray, np.ndarray]:
        """The clip's (generated, reference) pool3 features of its (subsampled) frames."""
        for side in ("prediction", "reference"):
            self._frames(pair, side, check=True)
        pred = self.cached_features(self._frames(pair, "prediction"))
        ref = self.cached_features(self._frames(pair, "reference"))
        if not (np.isfinite(pred).all() and np.isfinite(ref).all()):
            raise MetricError(f"clip {pair.clip_id}: Inception features contain NaN or inf")
        return pred, ref

    def set_value(self, pairs: Sequence[ClipPair]) -> float:
        self.last_notes, self.last_counts = [], {}
        if not pairs:
            raise MetricError("no clips to compare")
        # validate and count every clip before the (slow) feature pass
        counts = {"prediction": 0, "reference": 0}
        for pair in pairs:
            for side in counts:
                counts[side] += len(self._frames(pair, side, check=True))
        if min(counts.values()) < 2:
            raise MetricError(f"FID needs at least 2 frames per side, got {counts['prediction']} "
                              f"generated and {counts['reference']} reference frames")
        return self.set_value_from_parts([self.clip_parts(pair) for pair in pairs])

    def set_value_from_parts(self, parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
        self.last_notes, self.last_counts = [], {}
        if not parts:
            raise MetricError("no clips to compare")
        n_pred, n_ref = sum(len(p) for p, _ in parts), sum(len(r) for _, r in parts)
        self.last_counts = {"clips": len(parts), "pred_frames": n_pred, "ref_frames": n_ref}
        if min(n_pred, n_ref) < 2:
            raise MetricError(f"FID needs at least 2 frames per side, got {n_pred} generated and "
                              f"{n_ref} reference frames")
        pred = np.concatenate([p for p, _ in parts])
        ref = np.concatenate([r for _, r in parts])
        value = frechet_distance_features(pred, ref)
        self.last_notes.append(f"FID over {n_pred} generated and {n_ref} reference frames "
                               f"from {len(parts)} clips")
        if min(n_pred, n_ref) < FEATURE_DIM:
            msg = (f"fewer than {FEATURE_DIM} frames per side ({n_pred} generated, {n_ref} "
                   f"reference): the covariance is rank-deficient and FID is biased upward; "
                   f"compare only values computed with the same frame counts")
            self.last_notes.append(msg)
            log.warning("FID: %s", msg)
        return value

    def resampled_set_values(self, parts: Sequence[tuple[np.ndarray, np.ndarray]],
                             indices: np.ndarray) -> np.ndarray:
        """FID of bootstrap resamples of clips, from the clips' features without copying them.

        A resample repeats clips, so its feature sets repeat rows: with w_i the multiplicity of
        row i, the gram method's quantities (`frechet_distance_features`) become weighted sums
        over the distinct rows, and the singular values of A1 A2' with repeated rows are those of
        W1^(1/2) A1 A2' W2^(1/2) over the distinct rows. The cross products F1 F2' of all rows are
        computed once. Equal to `set_value_from_parts` of the resample up to rounding; used when
        every set has at most FEATURE_DIM frames (the gram method), else the default loop.
        """
        pred = [np.asarray(p, np.float64) for p, _ in parts]
        ref = [np.asarray(r, np.float64) for _, r in parts]
        f1, f2 = np.concatenate(pred), np.concatenate(ref)
        if max(len(f1), len(f2)) > FEATURE_DIM:
            return super().resampled_set_values(parts, indices)
        owner1 = np.repeat(np.arange(len(parts)), [len(p) for p in pred])
        owner2 = np.repeat(np.arange(len(parts)), [len(r) for r in ref])
        cross = f1 @ f2.T
        sq1, sq2 = np.einsum("ij,ij->i", f1, f1), np.einsum("ij,ij->i", f2, f2)
        out = np.full(len(indices), np.nan)
        for k, row in enumerate(indices):
            mult = np.bincount(row, minlength=len(parts)).astype(np.float64)
            w1, w2 = mult[owner1], mult[owner2]
            s1, s2 = w1 > 0, w2 > 0
            w1, w2 = w1[s1], w2[s2]
            n1, n2 = w1.sum(), w2.sum()
            if min(n1, n2) < 2:
                continue
            g1, g2 = f1[s1], f2[s2]
            mu1, mu2 = w1 @ g1 / n1, w2 @ g2 / n2
            centred = (cross[np.ix_(s1, s2)] - (g1 @ mu2)[:, None] - (g2 @ mu1)[None, :] + mu1 @ mu2)
            centred *= np.sqrt(w1)[:, None] * np.sqrt(w2)[None, :]
            tr_covmean = np.linalg.svd(centred, compute_uv=False).sum() / math.sqrt((n1 - 1) * (n2 - 1))
            tr1 = (w1 @ sq1[s1] - n1 * mu1 @ mu1) / (n1 - 1)
            tr2 = (w2 @ sq2[s2] - n2 * mu2 @ mu2) / (n2 - 1)
            diff = mu1 - mu2
            out[k] = diff @ diff + tr1 + tr2 - 2.0 * tr_covmean
        return out
