"""Landmark metrics: landmark distance (LD / LMD) and landmark velocity difference (LVD).

Definitions (see `reference/metrics.md` section 2 and the KFusion paper, "Comparing Methods"):

* ``M-LD`` / ``F-LD`` (KFusion): the Euclidean distance between each predicted and reference point,
  averaged over points and frames. Mouth = iBUG points 48-67, face = all 68. Landmarks are compared
  as they are (no centring), so a global translation of the prediction counts as error.
* ``M-LVD`` / ``F-LVD`` (KFusion): velocity v_t = x_t - x_{t-1} (plain frame difference) of the
  prediction and of the reference; the Euclidean norm of v_pred - v_ref per point, averaged over
  points and over the T-1 velocity steps.
* ``LMD`` (RAD-NeRF / ER-NeRF ``LMDMeter`` convention): each set (prediction and reference) is
  centred on its own mean over the region's points, per frame (translation removed, no scale or
  rotation removed); then the mean per-point L2 distance, averaged over frames. Parameter ``region``
  is "mouth" (default, points 48-67) or "face" (all 68).

Averages are per-point means (the papers' formula), not the per-frame sums found in some released
code (ATVGnet), which are larger by the number of points.

Normalisation (parameter ``normalize``, every metric here):

* "none" (default): pixels of the frames the landmarks were measured on.
* "face_width": each frame's (or velocity step's) mean distance is divided by the reference's jaw
  width ||ref[16] - ref[0]|| in that frame.
* "inter_ocular": divided by the reference's outer-eye-corner distance ||ref[45] - ref[36]||.

The normalised value is a plain ratio (not multiplied by 100 or any other factor). For LVD a step
between frames t-1 and t is divided by the mean of the two frames' normalisers. The normaliser is
always taken from the reference, which holds all 68 points, whatever subset the prediction covers.

Points: a metric compares the points of its region that the prediction covers (region ∩
``pair.points``), picking them by position in ``pair.points`` from the prediction and by iBUG index
from the reference. A prediction that covers none of the region's points cannot be scored.

Frames: ``pair.frame_mask`` (False where a detector found no face) removes frames. For LVD a step
counts only if both of its frames are valid. Non-finite prediction or reference values are errors
on valid frames only (a detector leaves NaN where it found nothing; those frames must be masked).
"""

from __future__ import annotations

from typing import ClassVar, Optional, Sequence

import numpy as np

from core.constants import FACE, JAW, LEFT_EYE_OUTER, MOUTH, RIGHT_EYE_OUTER
from metrics import register
from core.types import ClipPair
from metrics.base import Metric
from core.errors import MetricError

# "lower_face": jaw 0-16 + mouth 48-67, the iBUG-68 counterpart of the lower-face point set SPEAR
# scores its LD on (see baselines/spear_a2l for why these 37 points).
REGIONS: dict[str, tuple[int, ...]] = {"mouth": MOUTH, "face": FACE, "lower_face": JAW + MOUTH}
REGION_LABELS = {"mouth": "mouth points (iBUG 48-67)", "face": "face points (iBUG 0-67)",
                 "lower_face": "lower-face points (iBUG 0-16, 48-67)"}

# Normaliser name -> the two reference points whose distance is the per-frame scale.
NORMALIZERS: dict[str, Optional[tuple[int, int]]] = {
    "none": None,
    "face_width": (JAW[0], JAW[-1]),  # jaw ends, points 0 and 16
    "inter_ocular": (RIGHT_EYE_OUTER, LEFT_EYE_OUTER),  # outer eye corners, points 36 and 45
}


# --------------------------------------------------------------------------------------------
# Pure functions: arrays in, number out. `pred` and `ref` are T x P x 2 over the same points.
# --------------------------------------------------------------------------------------------

def _check_pair(pred: np.ndarray, ref: np.ndarray, mask: Optional[np.ndarray],
                scale: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      Optional[np.ndarray]]:
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if pred.ndim != 3 or pred.shape[-1] != 2 or pred.shape != ref.shape:
        raise ValueError(f"expected two T x P x 2 arrays of the same shape, got {pred.shape} "
                         f"and {ref.shape}")
    t = pred.shape[0]
    mask = np.ones(t, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != (t,):
        raise ValueError(f"mask has shape {mask.shape}, expected ({t},)")
    if scale is not None:
        scale = np.asarray(scale, dtype=np.float64)
        if scale.shape != (t,):
            raise ValueError(f"scale has shape {scale.shape}, expected ({t},)")
    return pred, ref, mask, scale


def center_per_frame(points: np.ndarray) -> np.ndarray:
    """Subtract each frame's mean point: T x P x 2 -> T x P x 2."""
    return points - points.mean(axis=1, keepdims=True)


def landmark_distance(pred: np.ndarray, ref: np.ndarray, center: bool = False,
                      mask: Optional[np.ndarray] = None,
                      scale: Optional[np.ndarray] = None) -> float:
    """Mean per-point Euclidean distance between `pred` and `ref` (T x P x 2), mean over frames.

    `center` centres each set on its own per-frame mean first (LMD). `mask` (T,) keeps frames
    where True. `scale` (T,) divides each frame's mean distance (normalisation).
    """
    pred, ref, mask, scale = _check_pair(pred, ref, mask, scale)
    if not mask.any():
        raise MetricError("no valid frame to compare (every frame is masked out)")
    pred, ref = pred[mask], ref[mask]
    if center:
        pred, ref = center_per_frame(pred), center_per_frame(ref)
    per_frame = np.linalg.norm(pred - ref, axis=-1).mean(axis=1)
    if scale is not None:
        per_frame = per_frame / scale[mask]
    return float(per_frame.mean())


def velocity_difference(pred: np.ndarray, ref: np.ndarray, mask: Optional[np.ndarray] = None,
                        scale: Optional[np.ndarray] = None) -> float:
    """Mean per-point ||v_pred - v_ref|| with v_t = x_t - x_{t-1}, over the valid velocity steps.

    A step (t-1, t) is valid when both frames are valid under `mask`. `scale` (T,) is per frame; a
    step is divided by the mean of its two frames' scales.
    """
    pred, ref, mask, scale = _check_pair(pred, ref, mask, scale)
    steps = mask[1:] & mask[:-1]
    if not steps.any():
        raise MetricError(f"no valid velocity step: needs two consecutive valid frames "
                          f"({pred.shape[0]} frames, {int(mask.sum())} valid)")
    v_pred = np.diff(pred, axis=0)[steps]
    v_ref = np.diff(ref, axis=0)[steps]
    per_step = np.linalg.norm(v_pred - v_ref, axis=-1).mean(axis=1)
    if scale is not None:
        per_step = per_step / (0.5 * (scale[1:] + scale[:-1]))[steps]
    return float(per_step.mean())


def reference_scale(ref68: np.ndarray, normalize: str) -> Optional[np.ndarray]:
    """Per-frame normaliser (T,) from the full reference landmarks (T x 68 x 2); None for "none"."""
    if normalize not in NORMALIZERS:
        raise ValueError(f"normalize must be one of {sorted(NORMALIZERS)}, got {normalize!r}")
    pair = NORMALIZERS[normalize]
    if pair is None:
        return None
    a, b = pair
    return np.linalg.norm(np.asarray(ref68, dtype=np.float64)[:, b] - ref68[:, a], axis=-1)


# --------------------------------------------------------------------------------------------
# ClipPair -> arrays: the validation every landmark metric shares.
# --------------------------------------------------------------------------------------------

def region_positions(region: str, points: Sequence[int]) -> tuple[list[int], list[int]]:
    """The region's iBUG indices the prediction covers, and their positions in `points`."""
    position = {int(p): i for i, p in enumerate(points)}
    indices = [i for i in REGIONS[region] if i in position]
    if not indices:
        raise MetricError(f"the prediction covers none of the {REGION_LABELS[region]}; "
                          f"it covers {len(position)} point(s): {sorted(position)}")
    return indices, [position[i] for i in indices]


def prepare_landmarks(pair: ClipPair, region: str, normalize: str
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Validate a pair and return (pred T x P x 2, ref T x P x 2, mask (T,), scale (T,) or None).

    P is the region's points covered by the prediction, in iBUG order. Raises MetricError with the
    reason when the pair cannot be scored.
    """
    if "landmarks" not in pair.pred:
        raise MetricError("prediction has no 'landmarks'")
    if "landmarks" not in pair.ref:
        raise MetricError("reference has no 'landmarks'")
    pred = np.asarray(pair.pred["landmarks"], dtype=np.float64)
    ref = np.asarray(pair.ref["landmarks"], dtype=np.float64)
    points = tuple(int(p) for p in pair.points)

    if len(set(points)) != len(points) or any(not 0 <= p < 68 for p in points):
        raise MetricError(f"pair.points must be distinct iBUG indices in 0..67, got {points}")
    if pred.ndim != 3 or pred.shape[1:] != (len(points), 2):
        raise MetricError(f"prediction landmarks have shape {pred.shape}, expected "
                          f"T x {len(points)} x 2 (one row per entry of pair.points)")
    if ref.ndim != 3 or ref.shape[1:] != (68, 2):
        raise MetricError(f"reference landmarks have shape {ref.shape}, expected T x 68 x 2")
    t = pred.shape[0]
    if t != ref.shape[0]:
        raise MetricError(f"prediction has {t} frames, reference {ref.shape[0]}")
    if t == 0:
        raise MetricError("the clip has no frames")

    if pair.frame_mask is None:
        mask = np.ones(t, dtype=bool)
    else:
        mask = np.asarray(pair.frame_mask)
        if mask.shape != (t,):
            raise MetricError(f"frame_mask has shape {mask.shape}, expected ({t},)")
        if mask.dtype != bool:
            raise MetricError(f"frame_mask must be boolean, got {mask.dtype}")
    if not mask.any():
        raise MetricError(f"no valid frame: frame_mask is False on all {t} frames")

    indices, positions = region_positions(region, points)
    pred_sel = pred[:, positions]
    ref_sel = ref[:, indices]

    bad = ~np.isfinite(pred_sel[mask]).all(axis=(1, 2))
    if bad.any():
        frames = np.flatnonzero(mask)[bad]
        raise MetricError(f"prediction landmarks are NaN/inf on {bad.sum()} valid frame(s) "
                          f"(first: frame {frames[0]}); mask such frames out with frame_mask")
    bad = ~np.isfinite(ref_sel[mask]).all(axis=(1, 2))
    if bad.any():
        frames = np.flatnonzero(mask)[bad]
        raise MetricError(f"reference landmarks are NaN/inf on {bad.sum()} valid frame(s) "
                          f"(first: frame {frames[0]}); mask such frames out with frame_mask")

    scale = reference_scale(ref, normalize)
    if scale is not None:
        ok = np.isfinite(scale[mask]) & (scale[mask] > 0)
        if not ok.all():
            first = np.flatnonzero(mask)[~ok][0]
            raise MetricError(f"normalize={normalize!r}: the reference's normalising distance is "
                              f"zero or not finite on frame {first}")
    return pred_sel, ref_sel, mask, scale


# --------------------------------------------------------------------------------------------
# Metric classes
# --------------------------------------------------------------------------------------------

class LandmarkMetric(Metric):
    higher_is_better = False
    needs = ("landmarks",)
    level = "clip"
    defaults = {"normalize": "none"}
    region: ClassVar[str] = "face"
    unit = "px"

    @classmethod
    def unit_of(cls, params: dict) -> str:
        normalize = params.get("normalize", "none")
        return cls.unit if normalize == "none" else f"px / {normalize}"

    def validate_params(self) -> None:
        self.check_choice("normalize", NORMALIZERS)

    def _region(self) -> str:
        return self.region

    def clip_value(self, pair: ClipPair) -> float:
        pred, ref, mask, scale = prepare_landmarks(pair, self._region(), self.params["normalize"])
        return self.compute(pred, ref, mask, scale)

    def compute(self, pred: np.ndarray, ref: np.ndarray, mask: np.ndarray,
                scale: Optional[np.ndarray]) -> float:
        raise NotImplementedError


class _LD(LandmarkMetric):
    def compute(self, pred, ref, mask, scale):
        return landmark_distance(pred, ref, center=False, mask=mask, scale=scale)


class _LVD(LandmarkMetric):
    def compute(self, pred, ref, mask, scale):
        return velocity_difference(pred, ref, mask=mask, scale=scale)


@register
class MouthLD(_LD):
    """KFusion M-LD: mean per-point distance over mouth points 48-67, no centring."""
    name = "M-LD"
    region = "mouth"


@register
class FaceLD(_LD):
    """KFusion F-LD: mean per-point distance over all 68 points, no centring."""
    name = "F-LD"
    region = "face"


@register
class MouthLVD(_LVD):
    """KFusion M-LVD: mean per-point velocity difference over mouth points 48-67."""
    name = "M-LVD"
    region = "mouth"


@register
class FaceLVD(_LVD):
    """KFusion F-LVD: mean per-point velocity difference over all 68 points."""
    name = "F-LVD"
    region = "face"


class RegionParam:
    """Mixin for metrics whose point set is the parameter ``region`` (one of `REGIONS`)."""

    def validate_params(self) -> None:
        super().validate_params()
        self.check_choice("region", REGIONS)

    def _region(self) -> str:
        return self.params["region"]


@register
class LMD(RegionParam, LandmarkMetric):
    """RAD-NeRF / ER-NeRF LMD: per-frame mean-centred sets, mean per-point L2, mean over frames."""
    name = "LMD"
    defaults = {"region": "mouth", "normalize": "none"}

    def compute(self, pred, ref, mask, scale):
        return landmark_distance(pred, ref, center=True, mask=mask, scale=scale)


@register
class LD(RegionParam, _LD):
    """Landmark distance over a chosen region (parameter ``region``: mouth, face or lower_face),
    no centring. SPEAR's LD is ``{region: lower_face, normalize: face_width}``: per-point distance
    divided by the reference face width, averaged over points and frames (SPEAR Eq. 9)."""
    name = "LD"
    defaults = {"region": "face", "normalize": "none"}


@register
class LVD(RegionParam, _LVD):
    """Landmark velocity difference over a chosen region (``region``: mouth, face or lower_face),
    the Euclidean norm of the velocity difference per point as in KFusion's LVD."""
    name = "LVD"
    defaults = {"region": "face", "normalize": "none"}
