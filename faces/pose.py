"""Head pose from faces: the angle convention and the pose backends (PnP on landmarks, a
method's own pose, Hopenet on frames), used by preprocessing and by the head-motion metrics.

Head pose
---------
Angles are yaw, pitch, roll in degrees in talkbench's convention (the one of `Clip.pose` and of
synthtalk, `bench/data/synthtalk/face.py`): head coordinates x to the image right, y down, z towards
the camera; the head's rotation is ``R = Rz(roll) · Ry(yaw) · Rx(pitch)`` with

    Rx(pitch) = [[1, 0, 0], [0, cos p, sin p], [0, -sin p, cos p]]
    Ry(yaw)   = [[cos y, 0, sin y], [0, 1, 0], [-sin y, 0, cos y]]
    Rz(roll)  = [[cos r, -sin r, 0], [sin r, cos r, 0], [0, 0, 1]]

so positive yaw turns the nose to the image right, positive pitch tips the chin down (a nod) and
positive roll turns the face clockwise in the image. `euler_from_rotation` inverts this for
|yaw| < 90°. Backends (`POSE_BACKENDS`, chosen by the metrics' ``pose_backend`` parameter):

* ``pnp``: OpenCV ``solvePnP`` of the predicted 2D landmarks against `FACE_TEMPLATE_MM`, a 3D
  68-point template in millimetres, per frame (EPnP start, then iterative Levenberg-Marquardt
  refinement). The camera is a pinhole with focal length = frame width in pixels (``pnp_focal``,
  default 1, is the multiple of the width), principal point at the frame centre, no distortion (the
  usual choice when the camera is unknown). The frame size comes from the prediction's frames, else
  the reference's, else the parameter ``image_size`` [w, h]. A wrong camera scales the recovered
  angles: on synthtalk, whose projection is weak-perspective (an infinitely long lens), the per-clip
  std of the angles comes out at 0.87 of the true one with ``pnp_focal: 1``, 0.94 with 4 and 0.99
  with 30 (24 clips, exact landmarks), plus a constant pitch offset of ~4° at 1 (the face sits above
  the frame centre). Face crops cut from wider frames have long effective lenses (4x the crop width
  is typical); compare values only under one setting.
  By default only the points that stay put on a talking face are used (``pnp_points: rigid``, see
  `RIGID_POINTS`: jaw ends 0 and 16, nose 27-35, eye corners 36, 39, 42, 45); jaw, lips, lids and
  brows move with speech, blinks and expressions and would turn mouth opening into pitch.
  ``pnp_points: all`` uses every point the prediction covers. Frames masked out by
  `ClipPair.frame_mask`, and frames where the solver fails or puts the face behind the camera, are
  left out. Needs the prediction's ``landmarks``.
* ``given``: the first three columns of the prediction's ``pose`` (for methods that output head
  pose, and for the ground-truth row, whose pose is exact). Needs the prediction's ``pose``.

* ``hopenet``: the Hopenet network (FD2Talk's and SadTalker's choice) on the prediction's frames,
  face box from the 68 landmarks detected on those frames (`faces.hopenet`; weights
  ``hopenet_robust_alpha1.pkl`` via `talkbench weights download hopenet`). Its Euler angles are
  mapped to the convention above. Its "feature embedding" in the papers is unspecified; talkbench
  takes the std of its Euler angles (`reference/metrics.md` §3.2). Needs the prediction's ``frames``.

The template `FACE_TEMPLATE_MM` is synthtalk's neutral face, ``face.base_shape(jaw_squareness=2.4)``:
an average adult face built from facial proportions (jaw as a superellipse, brows, nose, eyes and
lips placed at textbook proportions, nudged by a few millimetres towards where dlib's 68-point
predictor puts its points), in head coordinates, frozen here to 0.01 mm so that a change to the
generator cannot move metric values (`tests/test_metrics_motion.py` checks it still matches).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional, Sequence

import cv2
import numpy as np

from core.errors import MetricError
from core.registry import Registry
from core.types import ClipPair


# synthtalk's face.base_shape(jaw_squareness=2.4), millimetres, head coordinates (x right, y down,
# z towards the camera, origin between the eyes on the eye line). iBUG-68 order.
FACE_TEMPLATE_MM = np.array([
    (-68.00, 1.00, -70.00), (-67.62, 19.49, -69.48), (-65.98, 37.92, -67.26),  # 0-2
    (-62.54, 56.08, -62.68), (-56.70, 73.62, -55.21), (-47.74, 89.76, -44.47),  # 3-5
    (-34.89, 102.97, -30.79), (-18.33, 110.97, -16.68), (0.00, 113.00, -8.00),  # 6-8
    (18.33, 110.97, -16.68), (34.89, 102.97, -30.79), (47.74, 89.76, -44.47),  # 9-11
    (56.70, 73.62, -55.21), (62.54, 56.08, -62.68), (65.98, 37.92, -67.26),  # 12-14
    (67.62, 19.49, -69.48), (68.00, 1.00, -70.00), (-55.00, -18.50, -16.00),  # 15-17
    (-45.50, -27.00, -8.00), (-33.00, -29.50, -3.00), (-21.00, -27.00, 0.00),  # 18-20
    (-9.50, -20.50, 1.00), (9.50, -20.50, 1.00), (21.00, -27.00, 0.00),  # 21-23
    (33.00, -29.50, -3.00), (45.50, -27.00, -8.00), (55.00, -18.50, -16.00),  # 24-26
    (0.00, -1.00, -2.00), (0.00, 11.00, 7.00), (0.00, 23.00, 15.00),  # 27-29
    (0.00, 35.00, 24.00), (-14.00, 48.00, 4.00), (-7.00, 50.00, 9.00),  # 30-32
    (0.00, 51.00, 12.00), (7.00, 50.00, 9.00), (14.00, 48.00, 4.00),  # 33-35
    (-43.00, 0.50, -16.00), (-36.00, -4.50, -9.00), (-26.00, -4.50, -8.00),  # 36-38
    (-18.00, 3.50, -10.00), (-26.50, 6.00, -8.00), (-36.00, 5.50, -9.00),  # 39-41
    (18.00, 3.50, -10.00), (26.00, -4.50, -8.00), (36.00, -4.50, -9.00),  # 42-44
    (43.00, 0.50, -16.00), (36.00, 5.50, -9.00), (26.50, 6.00, -8.00),  # 45-47
    (-25.00, 76.00, -6.00), (-16.00, 68.50, 4.00), (-7.00, 65.30, 9.00),  # 48-50
    (0.00, 66.30, 10.00), (7.00, 65.30, 9.00), (16.00, 68.50, 4.00),  # 51-53
    (25.00, 76.00, -6.00), (16.00, 81.50, 4.00), (8.00, 85.00, 8.00),  # 54-56
    (0.00, 85.50, 9.00), (-8.00, 85.00, 8.00), (-16.00, 81.50, 4.00),  # 57-59
    (-21.00, 75.60, -3.00), (-9.00, 73.60, 5.00), (0.00, 73.60, 6.00),  # 60-62
    (9.00, 73.60, 5.00), (21.00, 75.60, -3.00), (9.00, 73.60, 5.00),  # 63-65
    (0.00, 73.60, 6.00), (-9.00, 73.60, 5.00),  # 66-67
], dtype=np.float64)

# Points that do not move with speech, blinks or expressions (jaw ends at ear level, nose, eye
# corners): the default point set of the pnp backend.
RIGID_POINTS: tuple[int, ...] = (0, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
PNP_POINT_SETS: dict[str, tuple[int, ...]] = {"rigid": RIGID_POINTS, "all": tuple(range(68))}
MIN_PNP_POINTS = 6

# Head coordinates (z towards the camera) <-> OpenCV camera/object coordinates (z away from it).
_FLIP_Z = np.diag([1.0, 1.0, -1.0])


# --------------------------------------------------------------------------------------------
# Euler angles
# --------------------------------------------------------------------------------------------

def rotation_from_euler(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """... x 3 x 3 rotation matrices Rz(roll) Ry(yaw) Rx(pitch) (module docstring), degrees in."""
    y, p, r = (np.radians(np.asarray(a, dtype=np.float64)) for a in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    one, zero = np.ones_like(y), np.zeros_like(y)
    rx = np.stack([np.stack([one, zero, zero], -1),
                   np.stack([zero, cp, sp], -1),
                   np.stack([zero, -sp, cp], -1)], -2)
    ry = np.stack([np.stack([cy, zero, sy], -1),
                   np.stack([zero, one, zero], -1),
                   np.stack([-sy, zero, cy], -1)], -2)
    rz = np.stack([np.stack([cr, -sr, zero], -1),
                   np.stack([sr, cr, zero], -1),
                   np.stack([zero, zero, one], -1)], -2)
    return rz @ ry @ rx


def euler_from_rotation(rot: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees of ... x 3 x 3 rotations: the inverse of `rotation_from_euler`.

    Writing the matrix out, R[2,0] = −sin(yaw), R[2,1] = −cos(yaw)·sin(pitch),
    R[2,2] = cos(yaw)·cos(pitch), R[1,0] = sin(roll)·cos(yaw), R[0,0] = cos(roll)·cos(yaw).
    """
    rot = np.asarray(rot, dtype=np.float64)
    cos_yaw = np.hypot(rot[..., 0, 0], rot[..., 1, 0])
    yaw = np.arctan2(-rot[..., 2, 0], cos_yaw)
    pitch = np.arctan2(-rot[..., 2, 1], rot[..., 2, 2])
    roll = np.arctan2(rot[..., 1, 0], rot[..., 0, 0])
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1))


# --------------------------------------------------------------------------------------------
# Pose backends
# --------------------------------------------------------------------------------------------

def camera_matrix(width: float, height: float, focal: float = 1.0) -> np.ndarray:
    """Pinhole intrinsics: focal length = `focal` x width (pixels), principal point at the centre."""
    f = focal * width
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def solve_head_pose(landmarks: np.ndarray, indices: Sequence[int], image_size: tuple[float, float],
                    mask: Optional[np.ndarray] = None, focal: float = 1.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame head pose from 2D landmarks by PnP against `FACE_TEMPLATE_MM`.

    `landmarks` T x P x 2 pixels are the iBUG points `indices` (P >= 6); `image_size` is (w, h);
    the focal length is `focal` x w pixels.
    Returns (angles T x 3 degrees: yaw, pitch, roll; translation T x 3 mm of the template origin in
    head-style camera coordinates, z towards the viewer, so tz < 0; ok (T,) bool). Frames where
    `mask` is False, with non-finite points, or where the solver fails are NaN and not ok.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    idx = [int(i) for i in indices]
    if pts.ndim != 3 or pts.shape[1:] != (len(idx), 2):
        raise ValueError(f"landmarks have shape {pts.shape}, expected T x {len(idx)} x 2")
    if len(idx) < MIN_PNP_POINTS:
        raise ValueError(f"PnP needs at least {MIN_PNP_POINTS} points, got {len(idx)}")
    t = pts.shape[0]
    mask = np.ones(t, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    obj = FACE_TEMPLATE_MM[idx] @ _FLIP_Z  # OpenCV object coordinates (z away from the camera)
    k = camera_matrix(image_size[0], image_size[1], focal)
    angles = np.full((t, 3), np.nan)
    trans = np.full((t, 3), np.nan)
    ok = np.zeros(t, dtype=bool)
    for i in range(t):
        if not mask[i] or not np.isfinite(pts[i]).all():
            continue
        img = np.ascontiguousarray(pts[i]).reshape(-1, 1, 2)
        try:
            good, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_EPNP)
            if good:
                good, rvec, tvec = cv2.solvePnP(obj, img, k, None, rvec, tvec,
                                                useExtrinsicGuess=True,
                                                flags=cv2.SOLVEPNP_ITERATIVE)
        except cv2.error:
            continue
        if not good or not (np.isfinite(rvec).all() and np.isfinite(tvec).all()) or tvec[2, 0] <= 0:
            continue
        rot_cv, _ = cv2.Rodrigues(rvec)
        angles[i] = euler_from_rotation(_FLIP_Z @ rot_cv @ _FLIP_Z)
        trans[i] = _FLIP_Z @ tvec[:, 0]
        ok[i] = True
    return angles, trans, ok


def _frame_mask(pair: ClipPair, t: int) -> np.ndarray:
    if pair.frame_mask is None:
        return np.ones(t, dtype=bool)
    mask = np.asarray(pair.frame_mask)
    if mask.shape != (t,):
        raise MetricError(f"frame_mask has shape {mask.shape}, expected ({t},)")
    if mask.dtype != bool:
        raise MetricError(f"frame_mask must be boolean, got {mask.dtype}")
    return mask


class PoseBackend:
    """Per-frame head rotation of a prediction: `angles(pair)` -> (T x 3 degrees, usable (T,)).

    `preprocessing`: whether the data pipeline can estimate a clip's pose with it (from detected
    landmarks or frames); `given` reads a prediction's own pose and cannot."""

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]
    preprocessing: ClassVar[bool] = True

    def angles(self, pair: ClipPair) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


# Pose backends by name (a motion metric's `pose_backend`, the protocol's preprocessing one).
POSE_BACKENDS: Registry[type[PoseBackend]] = Registry("pose backend")


@POSE_BACKENDS.register
class GivenPose(PoseBackend):
    """The prediction's own `pose` (T x >=3: yaw, pitch, roll in degrees first)."""

    name = "given"
    needs = ("pose",)
    preprocessing = False

    def angles(self, pair: ClipPair) -> tuple[np.ndarray, np.ndarray]:
        if "pose" not in pair.pred:
            raise MetricError("pose_backend 'given' needs the prediction's 'pose'; this method "
                              "outputs none (use pose_backend: pnp to estimate it from landmarks)")
        pose = np.asarray(pair.pred["pose"], dtype=np.float64)
        if pose.ndim != 2 or pose.shape[1] < 3:
            raise MetricError(f"prediction pose has shape {pose.shape}, expected T x 6 "
                              f"(yaw, pitch, roll, tx, ty, tz)")
        angles = pose[:, :3]
        return angles, np.isfinite(angles).all(axis=1)


@POSE_BACKENDS.register
class PnPPose(PoseBackend):
    """solvePnP of the prediction's landmarks against `FACE_TEMPLATE_MM` (module docstring)."""

    name = "pnp"
    needs = ("landmarks",)

    def __init__(self, points: str = "rigid", image_size: Optional[Sequence[float]] = None,
                 focal: float = 1.0) -> None:
        if points not in PNP_POINT_SETS:
            raise ValueError(f"pnp point set must be one of {sorted(PNP_POINT_SETS)}, got {points!r}")
        if not positive_number(focal):
            raise ValueError(f"pnp focal length must be a positive multiple of the frame width, "
                             f"got {focal!r}")
        self.points = points
        self.focal = float(focal)
        self.image_size = None if image_size is None else (float(image_size[0]), float(image_size[1]))

    def frame_size(self, pair: ClipPair) -> tuple[float, float]:
        for side, fields in (("prediction", pair.pred), ("reference", pair.ref)):
            frames = fields.get("frames")
            if frames is not None and np.ndim(frames) == 4:
                h, w = np.shape(frames)[1:3]
                return float(w), float(h)
        if self.image_size is not None:
            return self.image_size
        raise MetricError("pose_backend 'pnp' needs the frame size for its camera and this clip "
                          "has no frames; set the metric parameter image_size: [width, height]")

    def angles(self, pair: ClipPair) -> tuple[np.ndarray, np.ndarray]:
        if "landmarks" not in pair.pred:
            raise MetricError("pose_backend 'pnp' needs the prediction's 'landmarks'")
        lmk = np.asarray(pair.pred["landmarks"], dtype=np.float64)
        points = tuple(int(p) for p in pair.points)
        if lmk.ndim != 3 or lmk.shape[1:] != (len(points), 2):
            raise MetricError(f"prediction landmarks have shape {lmk.shape}, expected "
                              f"T x {len(points)} x 2 (one row per entry of pair.points)")
        position = {p: i for i, p in enumerate(points)}
        wanted = [p for p in PNP_POINT_SETS[self.points] if p in position]
        if len(wanted) < MIN_PNP_POINTS:
            raise MetricError(f"pose_backend 'pnp' needs at least {MIN_PNP_POINTS} of the "
                              f"{self.points} points {list(PNP_POINT_SETS[self.points])}; the "
                              f"prediction covers {len(wanted)}")
        t = lmk.shape[0]
        mask = _frame_mask(pair, t)
        angles, _, ok = solve_head_pose(lmk[:, [position[p] for p in wanted]], wanted,
                                        self.frame_size(pair), mask, self.focal)
        return angles, ok


@POSE_BACKENDS.register
class HopenetPose(PoseBackend):
    """Hopenet on the prediction's frames (`faces.hopenet`); the metric's device is honoured."""

    name = "hopenet"
    needs = ("frames",)

    def __init__(self) -> None:
        from faces.hopenet import HopenetEstimator

        self.estimator = HopenetEstimator()
        self.device = "cpu"

    def angles(self, pair: ClipPair) -> tuple[np.ndarray, np.ndarray]:
        from faces.hopenet import frames_landmarks

        frames, landmarks, usable = frames_landmarks(pair)
        self.estimator.device = self.device
        return self.estimator.angles(frames, landmarks, usable)


def build_pose_backend(name: str, points: str = "rigid",
                       image_size: Optional[Sequence[float]] = None, focal: float = 1.0
                       ) -> PoseBackend:
    """A pose backend by name; `points`, `image_size` and `focal` configure pnp only."""
    cls = POSE_BACKENDS.get(name)
    return cls(points, image_size, focal) if cls is PnPPose else cls()


def positive_number(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value > 0)
