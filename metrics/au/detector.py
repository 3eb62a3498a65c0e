"""The geometric AU detector: speech-related AU occurrence from 68 iBUG landmarks.

The five speech-related AUs of the TCSAN protocol (`AU_NAMES`, the column order of every
detector's output) and the landmark-geometry detector behind backend ``geometric`` of AU-F1 /
AU-Acc (`metrics.au.metrics`).

``geometric`` (default; needs ``landmarks``): occurrence from the 68 iBUG landmarks of each side.
Each frame's points are first *frontalised*: a scaled-orthographic camera (2x3 matrix with
orthogonal rows of equal norm, plus a 2D offset) is fitted by least squares to map the rigid points
`ALIGN_POINTS` (jaw ends, nose bridge, eye corners) of the 3D template
`faces.pose.FACE_TEMPLATE_MM` onto the frame, and every point is brought back to template
millimetres assuming the template's depth for it. This removes translation, scale, roll and, to
first order, yaw and pitch. Then, in millimetres (y down):

* AU10: upper-lip arch: ((y61 + y63)/2 − y62) + ((y49 + y53)/2 − y51), how much higher the middle of
  the upper lip is than its sides (the raiser lifts the middle most);
* AU14: mouth-corner tilt |y48 − y54| (a one-sided dimpler pulls one corner; a symmetric dimpler is
  not seen by this cue);
* AU20: lip stretch: (mouth width x54 − x48) / (lip thickness (y57 − y51) − (y66 − y62)), minus the
  clip's median of that ratio (the stretcher widens and thins the lips; the median calibrates
  the speaker's own mouth, like OpenFace's per-video median in its dynamic models);
* AU25: inner-lip gap, mean of y67 − y61, y66 − y62, y65 − y63;
* AU26: chin drop: y8 minus the clip's 5th percentile of y8 (the jaw at rest).

An AU is present where its feature exceeds the fitted threshold in `GEOMETRIC_THRESHOLDS`. The
thresholds were fitted (`bench.au_thresholds`: per AU the cut that maximises F1) against synthtalk's
exact AU labels (`Clip.aus`, defined from the 3D mouth geometry and expression coefficients in
`bench/data/synthtalk/face.py`) on the exact 2D landmarks of the small corpus (seed 0), speakers
spk01-spk08 (3935 frames); `talkbench au-thresholds [--dlib]` refits and prints this report. F1 /
accuracy of the detector against the exact labels:

    AU    threshold   fit: spk01-08,   held out: spk09-12,   held out: dlib's landmarks on
                      exact landmarks  exact landmarks       the rendered frames
    AU10    3.934     0.695 / 0.944    0.831 / 0.955         0.455 / 0.791
    AU14    0.560     1.000 / 1.000    1.000 / 1.000         0.328 / 0.557
    AU20    0.087     0.630 / 0.766    0.600 / 0.748         0.574 / 0.718
    AU25    1.000     1.000 / 0.999    0.999 / 0.999         0.945 / 0.915
    AU26    5.807     0.934 / 0.944    0.911 / 0.929         0.843 / 0.869
    mean              0.852 / 0.931    0.868 / 0.926         0.629 / 0.770
    (3935, 1947 and 1947 frames; label rates AU10 10 %, AU14 13 %, AU20 30 %, AU25 81 %, AU26 44 %)

Scored on exact landmarks (methods that output landmarks) the detector is good except for AU10 and
AU20; through dlib's detector on frames, AU14 (a corner tilt of 1-2 px) is lost in the predictor's
noise and AU10 halves. Comparing generated and ground-truth frames with the same detector still
measures agreement, as the paper's OpenFace protocol does, but read these AUs with that in mind.

The cues are geometric proxies tuned on synthtalk's face model; on real faces they are a cheap,
weights-free stand-in, not a replacement for a trained AU detector. AU10 and AU20 are the weak
ones (their synthtalk labels depend on expression coefficients and a speaker's neutral lip shape,
which 2D points show only partly).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from faces.pose import FACE_TEMPLATE_MM

AU_NAMES: tuple[str, ...] = ("AU10", "AU14", "AU20", "AU25", "AU26")

# Rigid points for the frontalisation (jaw ends, nose bridge, eye corners).
ALIGN_POINTS: tuple[int, ...] = (0, 16, 27, 28, 29, 30, 36, 39, 42, 45)
# Points the geometric features read (besides ALIGN_POINTS).
FEATURE_POINTS: tuple[int, ...] = (8, 48, 49, 51, 53, 54, 57, 61, 62, 63, 65, 66, 67)
CHIN_REST_PERCENTILE = 5.0

# Fitted thresholds (mm, or a ratio for AU20), read by `detect_from_features`. To refit them run
# `talkbench au-thresholds [--size small] [--seed 0] [--dlib]` (bench/au_thresholds.py): it fits
# each cut on synthtalk's exact AU labels, prints the per-AU F1 / accuracy table of the module
# docstring and the new dict to paste here; update both together. The values are part of the AU
# metrics' identity, so cached AU values are recomputed after a change.
GEOMETRIC_THRESHOLDS: dict[str, float] = {
    "AU10": 3.934,  # upper-lip arch, mm
    "AU14": 0.56,  # mouth-corner tilt, mm
    "AU20": 0.087,  # width / lip thickness above the clip median
    "AU25": 1.0,  # inner-lip gap, mm (synthtalk's own definition is gap > 1 mm)
    "AU26": 5.807,  # chin below its rest height, mm (synthtalk's: > 6 mm below neutral)
}


# --------------------------------------------------------------------------------------------
# Geometric detector
# --------------------------------------------------------------------------------------------

def frontalise(landmarks: np.ndarray) -> np.ndarray:
    """T x 68 x 2 pixels -> T x 68 x 2 template millimetres (module docstring). NaN frames stay NaN."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"landmarks have shape {lm.shape}, expected T x 68 x 2")
    tpl = FACE_TEMPLATE_MM
    design = np.c_[tpl[list(ALIGN_POINTS)], np.ones(len(ALIGN_POINTS))]  # P x 4
    out = np.full(lm.shape, np.nan)
    for t in range(lm.shape[0]):
        if not np.isfinite(lm[t]).all():
            continue
        coef, *_ = np.linalg.lstsq(design, lm[t, list(ALIGN_POINTS)], rcond=None)  # 4 x 2
        cam, offset = coef[:3].T, coef[3]  # 2 x 3, (2,)
        u, s, vt = np.linalg.svd(cam, full_matrices=False)
        cam = u @ np.diag([s.mean(), s.mean()]) @ vt  # nearest scaled-orthographic camera
        rhs = lm[t] - offset - np.outer(tpl[:, 2], cam[:, 2])
        try:
            out[t] = np.linalg.solve(cam[:, :2], rhs.T).T
        except np.linalg.LinAlgError:
            continue
    return out


def au_features(landmarks: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """T x 5 geometric AU features (order `AU_NAMES`) of T x 68 x 2 landmarks; NaN where masked.

    Clip-calibrated features (AU20, AU26) use only the frames where `mask` is True.
    """
    lm = np.asarray(landmarks, dtype=np.float64).copy()
    t = lm.shape[0]
    mask = np.ones(t, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    lm[~mask] = np.nan
    a = frontalise(lm)
    x, y = a[..., 0], a[..., 1]
    ok = np.isfinite(a).all(axis=(1, 2))
    feats = np.full((t, len(AU_NAMES)), np.nan)
    if not ok.any():
        return feats
    au10 = ((y[:, 61] + y[:, 63]) / 2 - y[:, 62]) + ((y[:, 49] + y[:, 53]) / 2 - y[:, 51])
    au14 = np.abs(y[:, 48] - y[:, 54])
    thickness = (y[:, 57] - y[:, 51]) - (y[:, 66] - y[:, 62])
    width = x[:, 54] - x[:, 48]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(thickness > 0, width / thickness, np.nan)
    good_ratio = ok & np.isfinite(ratio)
    au20 = ratio - (np.median(ratio[good_ratio]) if good_ratio.any() else np.nan)
    au25 = (y[:, [67, 66, 65]] - y[:, [61, 62, 63]]).mean(axis=1)
    au26 = y[:, 8] - np.percentile(y[ok, 8], CHIN_REST_PERCENTILE)
    feats[:] = np.stack([au10, au14, au20, au25, au26], axis=1)
    feats[~ok] = np.nan
    return feats


def detect_from_features(features: np.ndarray,
                         thresholds: Optional[dict[str, float]] = None) -> np.ndarray:
    """T x 5 occurrence (bool) where each feature exceeds its threshold (NaN -> False)."""
    thr = GEOMETRIC_THRESHOLDS if thresholds is None else thresholds
    cut = np.array([thr[name] for name in AU_NAMES])
    with np.errstate(invalid="ignore"):
        return np.asarray(features) > cut


def detect_geometric(landmarks: np.ndarray, mask: Optional[np.ndarray] = None,
                     thresholds: Optional[dict[str, float]] = None) -> tuple[np.ndarray, np.ndarray]:
    """(occurrence T x 5 bool, usable frames (T,) bool) from T x 68 x 2 landmarks."""
    feats = au_features(landmarks, mask)
    return detect_from_features(feats, thresholds), np.isfinite(feats).all(axis=1)
