"""Crop recipes of the preprocessing pipeline: per-frame crop windows, the crop itself, and the
matching transform of landmark coordinates.

A crop window is (x0, y0, w, h) in integer source pixels; it may reach outside the frame, where
the pad value fills in. Every crop is then resized to `resolution` x `resolution`. The recipes
(`preprocessing.crop` in a protocol, parameters in `preprocessing.crop_params`):

* ``none`` — the whole frame, resized to the square resolution. A non-square frame is never
  stretched silently: `stretch_problem` names it (preprocessing fails the item with
  `non_square_stretch`) unless ``crop_params.stretch`` is true; a face recipe or ``center_square``
  keeps the aspect ratio.
* ``center_square`` — KFusion on MEAD 1920x1080: the centred square whose side is the frame's
  shorter side (the height for landscape video), or ``crop_params.size`` pixels.
* ``landmark_box`` — IP_LAP style: the bounding box of the 68 points, each side pushed out by
  ``margin`` (default 0.2) times the box size, made square around its centre (side = the longer
  side), then centre and side averaged over ``smooth`` frames (default 5; a centred moving
  average with the edge values repeated, so the crop does not jitter with the detector).
* ``face_square_static`` — the person-specific NeRF framing (AD-NeRF, RAD-NeRF, ER-NeRF,
  GeneFace / GeneFace++): one square window for the whole video, so the camera stays static as
  the NeRFs assume. Those papers publish no crop procedure: they take a 25 fps head-and-shoulders
  video already cut to a square with the face centred and present in every frame (450 x 450 for
  AD-NeRF's Obama video, 512 x 512 for the others; GeneFace++'s step 0 then only runs
  ``scale=512:512``, which would stretch anything not square). talkbench's recipe: centre = the
  median over the found frames of the 68-point box centre, side = the median box side (the box's
  longer side) pushed out by ``margin`` times itself on each side (default 0.75: 2.5 box sides,
  head, neck and the top of the shoulders); the window is then moved inside the frame (no padding
  while it fits) and shrunk to the frame's shorter side when it is larger. The margin is
  talkbench's choice for that framing, not a number from the papers.
* ``syncnet`` — joonson/syncnet_python ``run_pipeline.py`` (reference/metrics.md §1.3): the face
  box's centre and half-size s = max(w, h) / 2, each median-filtered over 13 frames (zero padded,
  as ``scipy.signal.medfilt``), rows [cy - s, cy + s (1 + 2 cs)], columns [cx - s (1 + cs),
  cx + s (1 + cs)] with cs = ``crop_scale`` (0.4), padding value 110. The box, filter and window
  are this module's `landmark_boxes`, `smooth_boxes` and `crop_window`, so the
  preprocessing crop and the LSE metric's crop are one piece of code. Deviation: run_pipeline
  takes S3FD boxes; we take the protocol landmark backend's face box (dlib's HOG box for dlib),
  and resize to the protocol's `resolution` (224 reproduces the reference exactly).

Missing detections (frames where no face was found) get the box linearly interpolated from the
neighbouring found frames (held at the ends), as `landmark_boxes` does.

Resizing: ``cv2.INTER_AREA`` when shrinking (no aliasing from large source frames) and
``cv2.INTER_LINEAR`` otherwise; the syncnet recipe always uses ``INTER_LINEAR``, as the reference's
``cv2.resize`` default. Coordinates follow OpenCV's pixel-centre convention: a source point p maps
to (p - x0 + 0.5) * resolution / w - 0.5 (likewise for y), exactly what ``cv2.resize`` does to
the pixel grid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import cv2
import numpy as np
from scipy.signal import medfilt

from core.errors import MetricError
from core.registry import Registry

# joonson/syncnet_python run_pipeline.py's face-track crop (reference/metrics.md section 1.3).
CROP_SCALE = 0.4
MEDIAN_KERNEL = 13
PAD_VALUE = 110


# Not a crop parameter but read from crop_params: the longer side (px) of the copy of each source
# frame that the face detector sees for the face-based recipes (run_pipeline's facedet_scale
# plays the same role). dlib's HOG at 1080p costs ~1 s a frame; a face on a 512 px copy of a
# MEAD frame is still ~150 px tall.
DETECT_SIZE = 512


@dataclass(frozen=True)
class CropRecipe:
    """A crop recipe: its parameters with defaults, and its per-frame windows.

    `needs_face` recipes get `windows(params, landmarks, boxes, found, frame_size)` (detections
    on the source frames; `frame_size` (width, height) or None); the others
    `windows(params, width, height, n)`. Both return n x 4 int windows.
    """

    name: str
    defaults: dict[str, Any]
    needs_face: bool
    windows: Callable[..., np.ndarray]


CROP_RECIPES: Registry[CropRecipe] = Registry("crop recipe")


def _whole_frame(params: dict, width: int, height: int, n: int) -> np.ndarray:
    return np.tile(np.array((0, 0, width, height), dtype=np.int64), (n, 1))


def _center_square(params: dict, width: int, height: int, n: int) -> np.ndarray:
    side = int(params.get("size") or min(width, height))
    if side <= 0 or side > min(width, height):
        raise ValueError(f"crop_params.size {side} does not fit a {width}x{height} frame")
    window = ((width - side) // 2, (height - side) // 2, side, side)
    return np.tile(np.array(window, dtype=np.int64), (n, 1))


def _landmark_box(params: dict, landmarks: np.ndarray, boxes: np.ndarray, found: np.ndarray,
                  frame_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    raw = landmark_boxes(landmarks, found)  # centre and s = max(w, h) / 2, gaps interpolated
    margin = float(params["margin"])
    cx, cy = _moving_average(raw.cx, params["smooth"]), _moving_average(raw.cy, params["smooth"])
    side = _moving_average(2 * raw.s * (1 + 2 * margin), params["smooth"])
    x0, y0 = np.round(cx - side / 2), np.round(cy - side / 2)
    side = np.maximum(np.round(side), 1)
    return np.stack([x0, y0, side, side], axis=1).astype(np.int64)


def _syncnet_track(params: dict, landmarks: np.ndarray, boxes: np.ndarray, found: np.ndarray,
                   frame_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    corners = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)  # the box as two points
    smooth = smooth_boxes(landmark_boxes(corners, found), int(params["kernel"]))
    out = np.empty((len(found), 4), dtype=np.int64)
    for t in range(len(found)):
        pad, top, bottom, left, right = crop_window(smooth.cx[t], smooth.cy[t], smooth.s[t],
                                                    float(params["crop_scale"]))
        out[t] = (left - pad, top - pad, max(right - left, 1), max(bottom - top, 1))
    return out


def _face_square_static(params: dict, landmarks: np.ndarray, boxes: np.ndarray, found: np.ndarray,
                        frame_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    lmk = np.asarray(landmarks, dtype=np.float64)
    usable = np.asarray(found, dtype=bool) & np.isfinite(lmk).all(axis=(1, 2))
    if not usable.any():
        raise ValueError("no frame has usable landmarks for the face_square_static crop")
    lo, hi = lmk[usable].min(axis=1), lmk[usable].max(axis=1)
    cx, cy = np.median((lo + hi) / 2, axis=0)
    side = float(np.median((hi - lo).max(axis=1))) * (1 + 2 * float(params["margin"]))
    x0, y0 = cx - side / 2, cy - side / 2
    if frame_size is not None:
        width, height = (int(v) for v in frame_size)
        side = min(side, width, height)
        x0 = min(max(cx - side / 2, 0.0), width - side)
        y0 = min(max(cy - side / 2, 0.0), height - side)
    side = max(int(round(side)), 1)
    x0, y0 = int(round(x0)), int(round(y0))
    if frame_size is not None:  # rounding must not push the window past the frame
        x0, y0 = min(max(x0, 0), width - side), min(max(y0, 0), height - side)
    return np.tile(np.array((x0, y0, side, side), dtype=np.int64), (len(found), 1))


for _recipe in (
    CropRecipe("none", {"stretch": False}, False, _whole_frame),
    CropRecipe("center_square", {"size": None}, False, _center_square),
    CropRecipe("landmark_box", {"margin": 0.2, "smooth": 5, "pad_value": 0}, True, _landmark_box),
    CropRecipe("face_square_static", {"margin": 0.75, "pad_value": 0}, True, _face_square_static),
    CropRecipe("syncnet", {"crop_scale": CROP_SCALE, "kernel": MEDIAN_KERNEL, "pad_value": PAD_VALUE},
               True, _syncnet_track),
):
    CROP_RECIPES.register(_recipe)


def needs_face(recipe: str) -> bool:
    """Whether the recipe crops around a face found on the source frames."""
    return CROP_RECIPES.get(recipe).needs_face


def crop_params(recipe: str, params: Optional[dict]) -> dict[str, Any]:
    """The recipe's parameters with defaults filled in; unknown keys are an error naming them."""
    if recipe not in CROP_RECIPES:
        raise ValueError(f"preprocessing.crop: {CROP_RECIPES.unknown(recipe)}")
    spec = CROP_RECIPES.get(recipe)
    params = dict(params or {})
    allowed = set(spec.defaults) | ({"detect_size"} if spec.needs_face else set())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"preprocessing.crop_params: {unknown} do not apply to crop {recipe!r}; "
                         f"allowed: {sorted(allowed)}")
    out = {**spec.defaults, **params}
    if spec.needs_face:
        out.setdefault("detect_size", DETECT_SIZE)
    return out


# ----------------------------------------------------------------------------- windows

def static_windows(recipe: str, params: dict, width: int, height: int, n: int) -> np.ndarray:
    """n x 4 int windows (x0, y0, w, h) of the recipes that do not look at the face."""
    spec = CROP_RECIPES.get(recipe)
    if spec.needs_face:
        raise ValueError(f"crop {recipe!r} needs face detections")
    return spec.windows(params, width, height, n)


def face_windows(recipe: str, params: dict, landmarks: np.ndarray, boxes: np.ndarray,
                 found: np.ndarray, frame_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """n x 4 int windows of a face recipe: `landmark_box` and `face_square_static` (from the 68
    points) or `syncnet` (from face boxes).

    `landmarks` n x 68 x 2 and `boxes` n x 4 (x0, y0, x1, y1) are in source pixels, NaN where
    `found` is False; `frame_size` (width, height) of the source lets a recipe keep its window
    inside the frame. Raises ValueError when no frame has a face.
    """
    spec = CROP_RECIPES.get(recipe)
    if not spec.needs_face:
        raise ValueError(f"crop {recipe!r} is not a face recipe")
    found = np.asarray(found, dtype=bool)
    if not found.any():
        raise ValueError("no face found in any frame")
    return spec.windows(params, landmarks, boxes, found, frame_size)


def stretch_problem(recipe: str, params: dict, width: int, height: int) -> Optional[str]:
    """Why the recipe would distort a width x height source, or None.

    Only ``none`` resizes the whole frame to a square: on a non-square frame that stretches the
    face (and a detector then misses it), so it is refused unless ``crop_params.stretch`` is true.
    """
    if recipe != "none" or int(width) == int(height) or params.get("stretch"):
        return None
    return (f"a {width}x{height} frame under crop 'none' would be stretched to a square; use a "
            f"face crop (face_square_static, landmark_box) or center_square, or set "
            f"crop_params: {{stretch: true}} to stretch on purpose")


def _moving_average(values: np.ndarray, size: int) -> np.ndarray:
    size = int(size)
    if size <= 1 or len(values) < 2:
        return np.asarray(values, dtype=np.float64)
    half = size // 2
    padded = np.pad(np.asarray(values, dtype=np.float64), (half, half), mode="edge")
    return np.convolve(padded, np.ones(2 * half + 1) / (2 * half + 1), mode="valid")


# ----------------------------------------------------------------------------- applying a window

def crop_frame(frame: np.ndarray, window: np.ndarray, resolution: int, pad_value: int = 0,
               interpolation: Optional[int] = None) -> np.ndarray:
    """Cut `window` (x0, y0, w, h) out of an H x W x 3 frame (padding outside) and resize it."""
    x0, y0, w, h = (int(v) for v in window)
    height, width = frame.shape[:2]
    if (x0, y0, w, h) == (0, 0, width, height):
        region = frame
    else:
        region = np.full((h, w, frame.shape[2]), pad_value, dtype=frame.dtype)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + w, width), min(y0 + h, height)
        if sx1 > sx0 and sy1 > sy0:
            region[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    if interpolation is None:
        interpolation = cv2.INTER_AREA if max(w, h) > resolution else cv2.INTER_LINEAR
    if (w, h) == (resolution, resolution):
        return np.ascontiguousarray(region)
    return cv2.resize(np.ascontiguousarray(region), (resolution, resolution), interpolation=interpolation)


def transform_points(points: np.ndarray, windows: np.ndarray, resolution: int) -> np.ndarray:
    """Map T x K x 2 source-pixel points through per-frame windows T x 4 into the resized crop."""
    pts = np.asarray(points, dtype=np.float64)
    win = np.asarray(windows, dtype=np.float64)
    origin = win[:, None, 0:2]
    scale = resolution / win[:, None, 2:4]
    return ((pts - origin + 0.5) * scale - 0.5).astype(np.float32)


def resize_interpolation(recipe: str) -> Optional[int]:
    """The interpolation a recipe prescribes (None: area when shrinking, else linear)."""
    return cv2.INTER_LINEAR if recipe == "syncnet" else None


# ------------------------------------------------------------------- the SyncNet face-track crop
@dataclass(frozen=True)
class Boxes:
    """Per-frame crop boxes (T each): centre x, centre y, half size s (median-filtered)."""

    cx: np.ndarray
    cy: np.ndarray
    s: np.ndarray


def landmark_boxes(landmarks: np.ndarray, valid: Optional[np.ndarray] = None) -> Boxes:
    """Raw (unfiltered) per-frame boxes from T x K x 2 landmarks: bounding box, s = max(w, h) / 2.

    Frames that are not `valid` or whose landmarks are not finite get boxes linearly interpolated
    from the others (held constant beyond the first / last usable frame).
    """
    lmk = np.asarray(landmarks, dtype=np.float64)
    if lmk.ndim != 3 or lmk.shape[-1] != 2 or lmk.shape[0] == 0:
        raise MetricError(f"reference landmarks have shape {lmk.shape}, expected T x K x 2")
    usable = np.isfinite(lmk).all(axis=(1, 2))
    if valid is not None:
        usable &= np.asarray(valid, dtype=bool)
    if not usable.any():
        raise MetricError("no frame has usable reference landmarks for the syncnet crop")
    lo, hi = np.full((len(lmk), 2), np.nan), np.full((len(lmk), 2), np.nan)
    lo[usable], hi[usable] = lmk[usable].min(axis=1), lmk[usable].max(axis=1)
    cx, cy = (lo[:, 0] + hi[:, 0]) / 2, (lo[:, 1] + hi[:, 1]) / 2
    s = np.maximum(hi[:, 0] - lo[:, 0], hi[:, 1] - lo[:, 1]) / 2
    if not usable.all():
        t, good = np.arange(len(lmk)), np.flatnonzero(usable)
        cx, cy, s = (np.interp(t, good, v[good]) for v in (cx, cy, s))
    return Boxes(cx, cy, s)


def smooth_boxes(boxes: Boxes, kernel: int = MEDIAN_KERNEL) -> Boxes:
    """``scipy.signal.medfilt`` (zero-padded) of s, cx and cy over time, as run_pipeline does."""
    with warnings.catch_warnings():  # clips shorter than the kernel: zero padding is the point
        warnings.filterwarnings("ignore", message=".*kernel_size exceeds volume extent.*")
        return Boxes(*(medfilt(np.asarray(v, dtype=np.float64), kernel_size=kernel)
                       for v in (boxes.cx, boxes.cy, boxes.s)))


def crop_window(cx: float, cy: float, s: float, crop_scale: float = CROP_SCALE
                ) -> tuple[int, int, int, int, int]:
    """(pad, top, bottom, left, right): the padding and the slice of the padded frame.

    pad = int(s (1 + 2 cs)); rows [int(cy + pad - s), int(cy + pad + s (1 + 2 cs))), columns
    [int(cx + pad - s (1 + cs)), int(cx + pad + s (1 + cs))).
    """
    pad = int(s * (1 + 2 * crop_scale))
    my, mx = cy + pad, cx + pad
    return (pad, int(my - s), int(my + s * (1 + 2 * crop_scale)),
            int(mx - s * (1 + crop_scale)), int(mx + s * (1 + crop_scale)))


def crop_face(frame: np.ndarray, cx: float, cy: float, s: float,
              crop_scale: float = CROP_SCALE) -> np.ndarray:
    """The run_pipeline crop of one frame before resizing (H' x W' x C)."""
    pad, top, bottom, left, right = crop_window(cx, cy, s, crop_scale)
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode="constant",
                    constant_values=PAD_VALUE)
    return padded[top:bottom, left:right]
