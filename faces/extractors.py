"""Landmark extractors: frames in, iBUG-68 landmarks out (the input of the landmark metrics).

An extractor takes uint8 T x H x W x 3 RGB frames and returns an `ExtractorResult`: float32
T x 68 x 2 landmarks in pixel coordinates (x, y) with NaN where no face was found, the per-frame
`found` mask (use it as `ClipPair.frame_mask`, combined with the reference's), and the face boxes.

`DlibExtractor` follows the reference implementations (ATVGnet, RAD-NeRF/ER-NeRF `LMDMeter`, EAT's
`test_lmd.py`, `reference/metrics.md` §2): dlib's HOG `get_frontal_face_detector` on the grayscale
frame (upsample 1 by default; EAT uses 0), then `shape_predictor_68_face_landmarks.dat` on the same
grayscale frame inside the detected box. Where several faces are found the largest box is used (the
references take the first or last detection; the largest is the talking head in a face-centred
crop and does not depend on detector order). The predictor file comes from the PyPI package
`face-recognition-models`; it is located without importing that package (its `__init__` needs
`pkg_resources`, which is absent from modern environments).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from core.errors import MetricUnavailable
from core.hashing import code_fingerprint
from core.registry import Registry

NUM_POINTS = 68
DLIB_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
INSTALL_HINT = "install it with `pip install dlib-bin face-recognition-models` (both on PyPI)"


# Point layouts an extractor can return: iBUG-68 (dlib, fan) or MediaPipe's 131-point IP_LAP set
# (mediapipe; `faces.mediapipe_mesh`), with their point counts.
LAYOUTS: dict[str, int] = {"ibug68": NUM_POINTS, "mediapipe131": 131}


# Landmark backends by name (the protocol's `preprocessing.landmark_backend`).
LANDMARK_BACKENDS: Registry[type["LandmarkExtractor"]] = Registry("landmark backend")


@dataclass
class ExtractorResult:
    """Per-frame detections. `landmarks` T x P x 2 float32 (x, y), NaN where `found` is False;
    `found` (T,) bool; `boxes` T x 4 float32 (x0, y0, x1, y1), NaN where none (dlib's
    rectangles: x1, y1 are the inclusive right and bottom pixel). P is 68 for the iBUG layout
    (every extractor but mediapipe) and 131 for ``layout == "mediapipe131"``."""

    landmarks: np.ndarray
    found: np.ndarray
    boxes: np.ndarray
    layout: str = "ibug68"

    def __post_init__(self) -> None:
        t = self.found.shape[0]
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown landmark layout {self.layout!r}; known: {sorted(LAYOUTS)}")
        if self.landmarks.shape != (t, LAYOUTS[self.layout], 2) or self.boxes.shape != (t, 4):
            raise ValueError(f"inconsistent shapes: landmarks {self.landmarks.shape}, found "
                             f"{self.found.shape}, boxes {self.boxes.shape}")

    @property
    def failures(self) -> int:
        """Number of frames where no face was found."""
        return int((~self.found).sum())

    @classmethod
    def empty(cls, t: int, layout: str = "ibug68") -> "ExtractorResult":
        """A result for `t` frames with no face found anywhere (to be filled in)."""
        return cls(landmarks=np.full((t, LAYOUTS[layout], 2), np.nan, dtype=np.float32),
                   found=np.zeros(t, dtype=bool),
                   boxes=np.full((t, 4), np.nan, dtype=np.float32), layout=layout)


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate uint8 T x H x W x 3 RGB frames (a single H x W x 3 frame is not accepted)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames have shape {frames.shape}, expected T x H x W x 3 RGB")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames have dtype {frames.dtype}, expected uint8")
    return frames


class LandmarkExtractor:
    """Base class: subclasses set `name` and implement `detect`."""

    name: str = ""

    def detect(self, frames: np.ndarray) -> ExtractorResult:
        raise NotImplementedError

    def identity(self) -> dict:
        """What cached landmarks depend on besides the frames (subclasses add their models)."""
        return {"name": self.name}

    def cache_identity(self) -> dict:
        """`identity` plus the fingerprint of this extractor's code: the key of cached landmarks."""
        return {**self.identity(), "code": code_fingerprint(type(self), packages=("core", "faces"))}


def face_model_path(filename: str) -> Path:
    """Path of a dlib model file shipped by `face-recognition-models` (located, not imported:
    the package's __init__ needs pkg_resources, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable(f"{filename} comes with the package face-recognition-models; "
                                f"{INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise MetricUnavailable(f"{path} is missing; reinstall face-recognition-models "
                                f"(`pip install --force-reinstall face-recognition-models`)")
    return path


def dlib_predictor_path() -> Path:
    """Path of the 68-point predictor shipped by the `face-recognition-models` package."""
    return face_model_path(DLIB_PREDICTOR_FILE)


@LANDMARK_BACKENDS.register
class DlibExtractor(LandmarkExtractor):
    """dlib HOG detector + 68-point shape predictor on grayscale frames; largest face per frame."""

    name = "dlib"

    def __init__(self, upsample: int = 1) -> None:
        if isinstance(upsample, bool) or not isinstance(upsample, int) or upsample < 0:
            raise ValueError(f"upsample must be a non-negative integer, got {upsample!r}")
        self.upsample = upsample
        self._detector: Any = None
        self._predictor: Any = None

    def _load(self) -> None:
        if self._predictor is not None:
            return
        try:
            import dlib
        except ImportError as exc:
            raise MetricUnavailable(f"dlib is not importable ({exc}); {INSTALL_HINT}") from exc
        path = dlib_predictor_path()
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))

    def identity(self) -> dict:
        ident: dict[str, Any] = {"name": self.name, "upsample": self.upsample,
                                 "predictor": DLIB_PREDICTOR_FILE}
        try:
            import dlib
            ident["dlib"] = dlib.__version__
            ident["predictor_bytes"] = dlib_predictor_path().stat().st_size
        except (ImportError, MetricUnavailable):
            pass
        return ident

    def detect(self, frames: np.ndarray) -> ExtractorResult:
        frames = check_frames(frames)
        self._load()
        result = ExtractorResult.empty(frames.shape[0])
        for i, frame in enumerate(frames):
            found = self._detect_one(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY))
            if found is None:
                continue
            box, points = found
            result.found[i] = True
            result.boxes[i] = box
            result.landmarks[i] = points
        return result

    def _detect_one(self, gray: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
        rects = self._detector(gray, self.upsample)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = self._predictor(gray, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32)
        return box, points


@LANDMARK_BACKENDS.register
class FanExtractor(LandmarkExtractor):
    """face-alignment's 2DFAN-4 inside dlib's HOG face box (`faces.fan` documents the choices).

    Weights: `talkbench weights download fan_2d` (never downloaded at run time)."""

    name = "fan"

    def __init__(self, upsample: int = 1, flip_input: bool = False, device: str = "cpu") -> None:
        if not isinstance(flip_input, bool):
            raise ValueError(f"flip_input must be true or false, got {flip_input!r}")
        self.boxes = DlibExtractor(upsample)  # its HOG detector gives the face box
        self.flip_input = flip_input
        self.device = device
        self._net: Any = None

    def identity(self) -> dict:
        return _with_model_versions({"name": self.name, "upsample": self.boxes.upsample,
                                     "flip_input": self.flip_input, "detector": "dlib-hog"},
                                    "face_alignment", "face-alignment", "fan_2d")

    def detect(self, frames: np.ndarray) -> ExtractorResult:
        from faces import fan

        frames = check_frames(frames)
        if self._net is None:
            self._net = fan.load_network(device=self.device)
        self.boxes._load()
        result = ExtractorResult.empty(frames.shape[0])
        for i, frame in enumerate(frames):
            gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
            rects = self.boxes._detector(gray, self.boxes.upsample)
            if len(rects) == 0:
                continue
            rect = max(rects, key=lambda r: r.width() * r.height())
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32)
            result.found[i] = True
            result.boxes[i] = box
            result.landmarks[i] = fan.landmarks_in_box(self._net, frame, box, self.flip_input,
                                                       self.device)
        return result


def _with_model_versions(ident: dict[str, Any], key: str, package: str, weights_name: str) -> dict:
    """`ident` plus the package version (under `key`) and the weights' fingerprint, where present:
    cached detections change when either does. Never raises; detect() reports what is missing."""
    try:
        from importlib.metadata import version

        from core.hashing import fingerprint
        from core.weights import resolve
        ident[key] = version(package)
        ident["weights_sha256"] = fingerprint(resolve(weights_name))
    except Exception:
        pass
    return ident


@LANDMARK_BACKENDS.register
class MediaPipeExtractor(LandmarkExtractor):
    """MediaPipe FaceLandmarker (Tasks API), 478-point mesh reduced to IP_LAP's 131 points
    (`faces.mediapipe_mesh`). Returns ``layout == "mediapipe131"``: 131 points, not iBUG-68.

    Package: `pip install talkbench[mediapipe]`; model: `talkbench weights download face_landmarker`."""

    name = "mediapipe"
    layout = "mediapipe131"

    def __init__(self) -> None:
        self._landmarker: Any = None

    def identity(self) -> dict:
        return _with_model_versions({"name": self.name, "layout": self.layout},
                                    "mediapipe", "mediapipe", "face_landmarker")

    def detect(self, frames: np.ndarray) -> ExtractorResult:
        from faces import mediapipe_mesh as mm

        frames = check_frames(frames)
        if self._landmarker is None:
            self._landmarker = mm.load_landmarker()
        h, w = frames.shape[1:3]
        result = ExtractorResult.empty(frames.shape[0], self.layout)
        for i, frame in enumerate(frames):
            mesh = mm.detect_mesh(self._landmarker, frame)
            if mesh is None:
                continue
            pts = mm.select_131(mesh, w, h)
            result.found[i] = True
            result.landmarks[i] = pts
            result.boxes[i] = [*pts.min(axis=0), *pts.max(axis=0)]  # IP_LAP's box, no margin
        return result


def build_extractor(name: str, **params: Any) -> LandmarkExtractor:
    """An extractor by registry name, e.g. `build_extractor("dlib", upsample=0)`."""
    return LANDMARK_BACKENDS.get(name)(**params)
