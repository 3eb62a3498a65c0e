"""MediaPipe FaceLandmarker landmarks reduced to the 131-point set of IP_LAP / SPEAR, the
``mediapipe`` landmark backend (`faces.extractors.MediaPipeExtractor`).

MediaPipe's face mesh has 478 points (468 mesh vertices + 10 iris points; the Tasks model
``face_landmarker.task`` always returns all 478, like the legacy FaceMesh with
``refine_landmarks=True``). IP_LAP (`reference/methods.md`, SPEAR's closest relative with code)
keeps the union of the vertices of its LIPS, LEFT/RIGHT_EYE, LEFT/RIGHT_EYEBROW, FACE_OVAL and NOSE
connection sets, 131 points, in a fixed order (IP_LAP's ``ori_sequence_idx``). Those are IP_LAP's
own connection tables: its face oval stops at the temples (25 of MediaPipe's 36 oval points, without
the 11 forehead points 10, 21, 54, 67, 103, 109, 251, 284, 297, 332, 338) and its nose has 14 points
(MediaPipe 1.2's FACE_LANDMARKS_NOSE has 24); checked once against the connection tables of the
mediapipe 1.2.2 wheel, where the union of the seven sets is 152 points and contains all 131. It splits
them into 74 "pose" points (nose, eyes, brows and the 8 upper face-oval points 162, 127, 234, 93,
389, 356, 454, 323) and 57 "content" points (the other 17 face-oval points along the jaw and the 40
lip points); SPEAR predicts the 57 content points. `MEDIAPIPE_131` is that order (a table of mesh
vertex ids; the group comments say which part each run covers).

talkbench runs the Tasks API in IMAGE mode (each frame on its own, as IP_LAP's
``static_image_mode=True``), one face, and converts the normalised coordinates to pixels (x · W,
y · H). Where several faces are found the first (MediaPipe's most confident) is used.

68-point metrics. No published mapping from the MediaPipe mesh to the iBUG-68 points is used by the
papers talkbench reproduces, and talkbench does not invent one: a protocol whose landmark backend is
mediapipe scores landmark metrics on these 131 points (or the 57 content points), the way SPEAR
and IP_LAP report LD / LVD. The extractor's result therefore has 131 points per frame
(`ExtractorResult.layout == "mediapipe131"`), and code that expects iBUG-68 must check the layout.

The package (``pip install talkbench[mediapipe]``) is imported only inside this backend; it pulls
heavy dependencies (jax, opencv-contrib) and is not installed in talkbench's default environment.
The model file is a download (`talkbench weights download face_landmarker`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from core.errors import MetricUnavailable

WEIGHTS_NAME = "face_landmarker"
MESH_POINTS = 478
INSTALL_HINT = "install it with `pip install talkbench[mediapipe]` (PyPI package mediapipe)"

MEDIAPIPE_131: tuple[int, ...] = (
    # face oval, from the left temple down the jaw to the right temple (25)
    162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397,
    288, 361, 323, 454, 356, 389,
    # left eyebrow (10), right eyebrow (10)
    70, 63, 105, 66, 107, 55, 65, 52, 53, 46,
    336, 296, 334, 293, 300, 276, 283, 282, 295, 285,
    # nose bridge (5), nose base (9)
    168, 6, 197, 195, 5,
    48, 115, 220, 45, 4, 275, 440, 344, 278,
    # left eye (16), right eye (16)
    33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
    362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382,
    # outer lip (20), inner lip (20)
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146,
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95,
)
UPPER_OVAL: tuple[int, ...] = (162, 127, 234, 93, 389, 356, 454, 323)
# Positions (0..130) in MEDIAPIPE_131 of IP_LAP's pose and content points.
CONTENT_57: tuple[int, ...] = tuple(
    i for i, v in enumerate(MEDIAPIPE_131) if (i < 25 and v not in UPPER_OVAL) or i >= 91)
POSE_74: tuple[int, ...] = tuple(i for i in range(len(MEDIAPIPE_131)) if i not in CONTENT_57)


def select_131(mesh: np.ndarray, width: int, height: int) -> np.ndarray:
    """131 x 2 float32 pixel coordinates from a 478 (or 468) x 2+ normalised mesh."""
    mesh = np.asarray(mesh, dtype=np.float64)
    if mesh.ndim != 2 or mesh.shape[0] not in (468, MESH_POINTS) or mesh.shape[1] < 2:
        raise ValueError(f"mesh has shape {mesh.shape}, expected 478 x 2 or 478 x 3 (normalised)")
    pts = mesh[list(MEDIAPIPE_131), :2] * np.array([width, height], dtype=np.float64)
    return pts.astype(np.float32)


def _mediapipe():
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as exc:
        raise MetricUnavailable(f"the mediapipe landmark backend needs the package mediapipe "
                                f"({exc}); {INSTALL_HINT}") from exc
    return mp, BaseOptions, vision


def load_landmarker(path: Optional[Path] = None) -> Any:
    """A FaceLandmarker (IMAGE mode, one face) on the registered model file."""
    from core.weights import resolve

    mp, BaseOptions, vision = _mediapipe()
    path = resolve(WEIGHTS_NAME, path)
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(path)),
        running_mode=vision.RunningMode.IMAGE, num_faces=1)
    try:
        return vision.FaceLandmarker.create_from_options(options)
    except Exception as exc:  # a corrupt or foreign .task file
        raise MetricUnavailable(f"{path} is not a usable face_landmarker.task ({exc}); replace it "
                                f"with `talkbench weights download {WEIGHTS_NAME} --force`") from exc


def detect_mesh(landmarker: Any, frame: np.ndarray) -> Optional[np.ndarray]:
    """478 x 3 normalised landmarks of the first face in one RGB uint8 frame, or None."""
    mp, _, _ = _mediapipe()
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
    result = landmarker.detect(image)
    if not result.face_landmarks:
        return None
    return np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], dtype=np.float64)
