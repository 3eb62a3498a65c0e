"""A weak-perspective head camera fitted from training data: 3D head-coordinate landmarks <-> pixels.

The Gaussian-landmark NeRF predicts landmarks in 3D head coordinates (pose not applied); the
benchmark scores 2D pixel landmarks. `bench.data.synthtalk.face.project` is not usable here: it
hard-codes synthtalk's camera (pivot, focal scale, image origin), so a method calling it would
only work on synthtalk and would read the generator's constants instead of learning them.

This module instead fits, by least squares on the training clips (3D landmarks, pose, 2D
landmarks), a generic weak-perspective camera with a rotation pivot:

    cam = R(yaw, pitch, roll) (X - pivot) + pivot + t          (t = pose[3:6])
    x   = origin + s0 / (1 + kappa * t_z) * cam[:2]

with seven parameters (origin 2, s0, kappa, pivot 3). R follows talkbench's pose convention
(degrees; x right, y down, z towards the camera; R = Rz(roll) Ry(yaw) Rx(pitch), positive yaw turns
the nose to the image right, positive pitch tips the chin down, positive roll turns the face
clockwise). synthtalk's renderer is this model exactly, so the fit reproduces its projection to
floating-point precision; on a tracked real dataset it is the best camera of this family.

At prediction time only the identity frame's 2D landmarks are known; `lift` inverts the camera for
that frame, taking each point's missing head-coordinate depth from a template (the training mean).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


def rotation_matrices(yaw, pitch, roll) -> np.ndarray:
    """`... x 3 x 3` rotations Rz(roll) Ry(yaw) Rx(pitch), angles in degrees (talkbench's convention)."""
    y, p, r = (np.radians(np.asarray(a, dtype=np.float64)) for a in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    one, zero = np.ones_like(y), np.zeros_like(y)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, sp], -1),
                   np.stack([zero, -sp, cp], -1)], -2)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1),
                   np.stack([-sy, zero, cy], -1)], -2)
    rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1),
                   np.stack([zero, zero, one], -1)], -2)
    return rz @ ry @ rx


@dataclass
class HeadCamera:
    origin: np.ndarray  # (2,) pixels
    scale: float  # pixels per head unit at t_z = 0
    kappa: float  # 1 / distance: scale(t_z) = scale / (1 + kappa t_z)
    pivot: np.ndarray  # (3,) head units

    @classmethod
    def from_array(cls, a) -> "HeadCamera":
        a = np.asarray(a, dtype=np.float64)
        return cls(a[0:2].copy(), float(a[2]), float(a[3]), a[4:7].copy())

    def to_array(self) -> np.ndarray:
        return np.concatenate([self.origin, [self.scale, self.kappa], self.pivot]).astype(np.float64)

    def _frame_scale(self, pose: np.ndarray) -> np.ndarray:
        return self.scale / (1.0 + self.kappa * pose[..., 5])

    def project(self, points: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Head-coordinate points `T x N x 3` with pose `T x 6` -> pixels `T x N x 2`."""
        pose = np.asarray(pose, dtype=np.float64)
        rot = rotation_matrices(pose[:, 0], pose[:, 1], pose[:, 2])
        cam = np.einsum("tij,tnj->tni", rot, np.asarray(points, np.float64) - self.pivot) + self.pivot
        cam = cam + pose[:, None, 3:6]
        return self.origin + self._frame_scale(pose)[:, None, None] * cam[..., :2]

    def lift(self, pixels: np.ndarray, pose: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Pixels `N x 2` of one frame with pose `(6,)` -> head points `N x 3` whose head z is `depth`.

        Exact inverse of `project` for x, y: projecting the result with the same pose gives `pixels`.
        """
        pose = np.asarray(pose, dtype=np.float64)
        rot = rotation_matrices(pose[0], pose[1], pose[2])
        u = np.zeros((len(pixels), 3))
        u[:, :2] = (np.asarray(pixels, np.float64) - self.origin) / self._frame_scale(pose) - self.pivot[:2] - pose[3:5]
        # head z = (R^T u)_z + pivot_z = R[0,2] u_x + R[1,2] u_y + R[2,2] u_z + pivot_z
        u[:, 2] = (np.asarray(depth, np.float64) - self.pivot[2] - rot[0, 2] * u[:, 0] - rot[1, 2] * u[:, 1]) / rot[2, 2]
        return u @ rot + self.pivot  # R^T u, row-wise


def fit_camera(points3d: list[np.ndarray], poses: list[np.ndarray], pixels: list[np.ndarray],
               max_frames: int = 1500, seed: int = 0) -> tuple[HeadCamera, float]:
    """Least-squares camera from clips' `T x N x 3` head points, `T x 6` poses and `T x N x 2` pixels.

    Uses at most `max_frames` frames (an even, seeded subsample). Returns (camera, RMS residual in px).
    """
    from scipy.optimize import least_squares

    x3 = np.concatenate([np.asarray(p, np.float64) for p in points3d])
    po = np.concatenate([np.asarray(p, np.float64) for p in poses])
    x2 = np.concatenate([np.asarray(p, np.float64) for p in pixels])
    if len(x3) > max_frames:
        keep = np.sort(np.random.default_rng(seed).choice(len(x3), max_frames, replace=False))
        x3, po, x2 = x3[keep], po[keep], x2[keep]
    rot = rotation_matrices(po[:, 0], po[:, 1], po[:, 2])
    # Start: pivot 0, kappa 0 -> x = origin + s * (R X + t)_xy, linear in (origin, s).
    cam0 = (np.einsum("tij,tnj->tni", rot, x3) + po[:, None, 3:6])[..., :2]
    design = np.zeros((cam0.size, 3))
    design[:, 0] = cam0.reshape(-1)
    design[0::2, 1] = 1.0
    design[1::2, 2] = 1.0
    sol, *_ = np.linalg.lstsq(design, x2.reshape(-1), rcond=None)
    start = np.array([sol[1], sol[2], sol[0], 0.0, 0.0, 0.0, 0.0])

    def residual(a):
        return (HeadCamera.from_array(a).project(x3, po) - x2).reshape(-1)

    fit = least_squares(residual, start, method="lm", x_scale="jac")
    camera = HeadCamera.from_array(fit.x)
    rms = float(np.sqrt(np.mean(residual(fit.x) ** 2)))
    log.info("head camera: origin %s, scale %.4g, kappa %.3g, pivot %s, RMS %.4f px",
             np.round(camera.origin, 2), camera.scale, camera.kappa, np.round(camera.pivot, 2), rms)
    return camera, rms
