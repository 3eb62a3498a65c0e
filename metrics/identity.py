"""Identity and sharpness of generated frames: CSIM and CPBD (`reference/metrics.md` §7).

CSIM
----
Identity cosine similarity: the cosine between the face-recognition embedding of each predicted
frame and that of the reference identity frame ``ref["frames"][0]`` (the clip's first ground-truth
frame, which is the identity frame methods receive), averaged over the predicted frames; higher is
better, 1 for the identity frame itself.

The embedding is dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``,
128-d), computed as dlib's own ``face_recognition.py`` example does: HOG frontal face detector on the
RGB frame (``upsample`` times, default 1), the 5-point shape predictor
(``shape_predictor_5_face_landmarks.dat``; ``predictor: 68`` takes the 68-point one) in the detected
box, then ``compute_face_descriptor(frame, shape, num_jitters)`` (default 0 jitters, dlib's default
padding 0.25). Where several faces are found the largest box is used. All three model files come
from the PyPI package ``face-recognition-models`` (the package is located, never imported: its
``__init__`` needs ``pkg_resources``). Papers mostly use ArcFace (insightface ``buffalo_l``), whose
weights are not on PyPI: that is the metric ``CSIM-ArcFace`` (metrics/arcface.py, weights through the
registry). Values from different backbones are not comparable, so protocols label this one
"CSIM (dlib)" and the other "CSIM (ArcFace w600k_r50)".

dlib's descriptors are not centred (they share a large common component), so cosines between
different faces are high too: on synthtalk, frames of one speaker against that speaker's identity
frame give 0.98-0.997 and against other speakers' 0.95-0.99. Read differences between rows, not the
absolute level. The descriptor network takes ~0.25 s per frame on a 2-core CPU; ``max_frames``
(default null: all) scores every ceil(T / max_frames)-th frame from frame 0 instead.

A predicted frame in which no face is found is skipped and counted (`CSIM.notes`); a clip where no
predicted frame has a face, or whose reference frame has none, is a `MetricError`.

CPBD
----
Cumulative probability of blur detection (Narvekar & Karam 2011), as the PyPI package ``cpbd``
1.0.7 (``cpbd.compute``) computes it, re-implemented here with vectorised numpy (the package's pure
Python loops take seconds per frame, and it no longer imports with SciPy >= 1.2). On a grayscale
image (each RGB frame is converted with OpenCV's BT.601 ``COLOR_RGB2GRAY``, as the other metrics do,
then taken as float64 0-255):

1. Canny edges with scikit-image's defaults (``skimage.feature.canny(image)``, σ 1, hysteresis
   thresholds 0.1 / 0.2 of the float dtype's range) decide which 64x64 blocks are edge blocks: those
   with more than 0.2 % edge pixels (> 8.192, i.e. at least 9). Blocks are tiled from the top-left
   corner; a remainder narrower than 64 px is ignored.
2. Edges for width measurement: Octave-style Sobel. The image is convolved (``scipy.ndimage.convolve``,
   reflected borders) with the horizontal-derivative kernel [[1, 0, −1], [2, 0, −2], [1, 0, −1]] / 8,
   squared; values at or below 2·sqrt(mean of the squared response) are zeroed; a pixel is an edge
   if its value is strictly larger than both horizontal neighbours or than both vertical neighbours
   (zero outside the image).
3. Edge widths (Marziliano): the gradient angle atan2(gy, gx) in degrees from ``np.gradient``
   (0 where gx = 0, as in the package), rounded to a multiple of 45° (half to even). At edge pixels
   away from the image border whose angle is 0° (intensity rising to the right) the width is
   1 + (number of consecutive rising steps to the left, starting one pixel away) + 1 + (the same to
   the right), each side counted up to 100 steps; at ±180° the same with falling steps. Edges at
   other angles get no width. If every angle is 0 no edge has a width.
4. For each edge block: contrast = int(max − min) of its pixels; just-noticeable width w_JNB = 5 if
   contrast <= 50 else 3; each edge width w gives P_blur = 1 − exp(−(w / w_JNB)^3.6); P_blur is
   rounded to a whole percent (half to even).
5. CPBD = the fraction of all measured edges (over all edge blocks) whose rounded P_blur is at most
   63 %; 0 when there is none.

The clip value is the mean over the predicted frames; higher is sharper (real 256-px talking-head
video ≈ 0.2-0.3). It needs no reference. tests/calibration/test_cpbd_parity.py checks agreement with
the ``cpbd`` package to 1e-6 when that package is installed.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import cv2
import numpy as np
from scipy.ndimage import convolve

from metrics import register
from core.hashing import array_digest, key_of
from core.types import ClipPair
from metrics.base import Metric
from core.errors import MetricError, MetricUnavailable
from faces.extractors import INSTALL_HINT, face_model_path
from metrics.fid import stride_subsample

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- CPBD

CPBD_BLOCK = 64  # block side, pixels
CPBD_EDGE_FRACTION = 0.002  # a block is an edge block above this fraction of Canny edge pixels
CPBD_BETA = 3.6  # slope of the probability of blur detection
CPBD_LOW_CONTRAST = 50  # block contrast at or below this -> w_JNB 5, above -> 3
CPBD_JNB_LOW, CPBD_JNB_HIGH = 5.0, 3.0
CPBD_SHARP_PERCENT = 63  # edges whose P_blur rounds to at most 63 % count as sharp
CPBD_MAX_STEPS = 100  # steps searched on each side of an edge
# Octave's Sobel for vertical edges (the derivative along x), normalised by the sum of |weights|.
_SOBEL_X = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8.0


def sobel_edges(image: np.ndarray) -> np.ndarray:
    """Octave-style Sobel edge map (bool) of a 2-D float image: thresholded, thinned (step 2)."""
    strength = convolve(image, _SOBEL_X, mode="reflect") ** 2
    strength[strength <= 2.0 * np.sqrt(strength.mean())] = 0.0
    padded = np.pad(strength, 1)  # zeros outside the image
    centre = padded[1:-1, 1:-1]
    across = (centre > padded[1:-1, :-2]) & (centre > padded[1:-1, 2:])
    along = (centre > padded[:-2, 1:-1]) & (centre > padded[2:, 1:-1])
    return across | along


def _runs(cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a bool H x N array: lengths of the runs of True ending at (left) and starting at
    (right) each position, along each row."""
    left = np.zeros(cond.shape, dtype=np.int64)
    right = np.zeros(cond.shape, dtype=np.int64)
    n = cond.shape[1]
    run = np.zeros(cond.shape[0], dtype=np.int64)
    for j in range(n):
        run = np.where(cond[:, j], run + 1, 0)
        left[:, j] = run
    run[:] = 0
    for j in range(n - 1, -1, -1):
        run = np.where(cond[:, j], run + 1, 0)
        right[:, j] = run
    return left, right


def edge_widths(edges: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Marziliano edge widths (float H x W, 0 where no width is measured), step 3 of the docstring."""
    h, w = image.shape
    widths = np.zeros((h, w))
    if w < 3 or h < 3:
        return widths
    gy, gx = np.gradient(image)
    angle = np.zeros((h, w))
    nz = gx != 0
    angle[nz] = np.arctan2(gy[nz], gx[nz]) * (180.0 / np.pi)
    angle[~nz & (gy == np.pi / 2)] = 90.0  # the package's special case (gx = 0, gy exactly pi/2)
    if not angle.any():
        return widths
    quantized = 45.0 * np.round(angle / 45.0)
    inner = np.zeros((h, w), dtype=bool)
    inner[1:-1, 1:-1] = edges[1:-1, 1:-1]
    step = np.diff(image, axis=1)  # step[:, j] = image[:, j + 1] - image[:, j]
    rows, cols = np.nonzero(inner)
    for direction, cond in ((0, step > 0), (180, step < 0)):
        pick = np.abs(quantized[rows, cols]) == direction
        r, c = rows[pick], cols[pick]
        if r.size == 0:
            continue
        left, right = _runs(cond)
        # left side: steps j = c-2, c-3, ... ; right side: j = c+1, c+2, ...
        k_left = np.where(c >= 2, left[r, np.maximum(c - 2, 0)], 0)
        k_right = np.where(c + 1 <= w - 2, right[r, np.minimum(c + 1, w - 2)], 0)
        widths[r, c] = (np.minimum(k_left, CPBD_MAX_STEPS) + 1
                        + np.minimum(k_right, CPBD_MAX_STEPS) + 1)
    return widths


def cpbd(image: np.ndarray) -> float:
    """CPBD sharpness of one 2-D grayscale image (0-255 scale), the `cpbd` package's value."""
    from skimage.feature import canny

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"cpbd expects a 2-D grayscale image, got shape {image.shape}")
    canny_edges = canny(image)
    widths = edge_widths(sobel_edges(image), image)
    h, w = image.shape
    sharp = total = 0
    b = CPBD_BLOCK
    for i in range(h // b):
        for j in range(w // b):
            rows, cols = slice(b * i, b * (i + 1)), slice(b * j, b * (j + 1))
            if np.count_nonzero(canny_edges[rows, cols]) <= b * b * CPBD_EDGE_FRACTION:
                continue
            block = widths[rows, cols]
            block = block[block != 0]
            if block.size == 0:
                continue
            pixels = image[rows, cols]
            contrast = int(pixels.max() - pixels.min())
            jnb = CPBD_JNB_LOW if contrast <= CPBD_LOW_CONTRAST else CPBD_JNB_HIGH
            p_blur = 1.0 - np.exp(-np.abs(block / jnb) ** CPBD_BETA)
            sharp += int(np.count_nonzero(np.rint(p_blur * 100.0) <= CPBD_SHARP_PERCENT))
            total += block.size
    return sharp / total if total else 0.0


def gray_frames(frames: np.ndarray) -> np.ndarray:
    """uint8 T x H x W x 3 RGB -> float64 T x H x W luma (OpenCV COLOR_RGB2GRAY, uint8 rounding)."""
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
                    ).astype(np.float64)


def _pred_frames(pair: ClipPair) -> np.ndarray:
    if "frames" not in pair.pred:
        raise MetricError("prediction has no 'frames'")
    frames = np.asarray(pair.pred["frames"])
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise MetricError(f"prediction frames have shape {frames.shape}, expected T x H x W x 3 RGB")
    if frames.dtype != np.uint8:
        raise MetricError(f"prediction frames have dtype {frames.dtype}, expected uint8")
    if frames.shape[0] == 0:
        raise MetricError("the clip has no frames")
    return frames


@register
class CPBD(Metric):
    """Mean over predicted frames of the CPBD sharpness of the grayscale frame; higher is sharper."""

    name = "CPBD"
    higher_is_better = True
    needs = ("frames",)
    level = "clip"
    defaults: dict[str, Any] = {}

    def clip_value(self, pair: ClipPair) -> float:
        frames = _pred_frames(pair)
        h, w = frames.shape[1:3]
        if h < CPBD_BLOCK or w < CPBD_BLOCK:
            raise MetricError(f"frames are {w}x{h}; CPBD works on {CPBD_BLOCK}x{CPBD_BLOCK} blocks")
        return float(np.mean([cpbd(g) for g in gray_frames(frames)]))


# ----------------------------------------------------------------------------- CSIM

FACE_REC_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTORS = {5: "shape_predictor_5_face_landmarks.dat",
                    68: "shape_predictor_68_face_landmarks.dat"}


class DlibFaceEmbedder:
    """dlib's face descriptor of the largest face in an RGB frame (dlib's face_recognition.py)."""

    def __init__(self, predictor: int = 5, upsample: int = 1, num_jitters: int = 0) -> None:
        if predictor not in SHAPE_PREDICTORS:
            raise ValueError(f"predictor must be one of {sorted(SHAPE_PREDICTORS)}, got {predictor!r}")
        try:
            import dlib
        except ImportError as exc:
            raise MetricUnavailable(f"dlib is not importable ({exc}); {INSTALL_HINT}") from exc
        self.upsample = upsample
        self.num_jitters = num_jitters
        self.files = {"shape_predictor": SHAPE_PREDICTORS[predictor], "face_rec": FACE_REC_MODEL}
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(face_model_path(SHAPE_PREDICTORS[predictor])))
        self._rec = dlib.face_recognition_model_v1(str(face_model_path(FACE_REC_MODEL)))

    def embed(self, frame: np.ndarray) -> Optional[np.ndarray]:
        """128-d float64 descriptor of the largest face in `frame` (uint8 H x W x 3 RGB), or None."""
        frame = np.ascontiguousarray(frame)
        rects = self._detector(frame, self.upsample)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = self._shape(frame, rect)
        return np.asarray(self._rec.compute_face_descriptor(frame, shape, self.num_jitters),
                          dtype=np.float64)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@register
class CSIM(Metric):
    """Mean cosine similarity of dlib face embeddings: each predicted frame vs the reference's first."""

    name = "CSIM"
    higher_is_better = True
    needs = ("frames",)
    level = "clip"
    defaults = {"predictor": 5, "upsample": 1, "num_jitters": 0, "max_frames": None}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.embedder = DlibFaceEmbedder(self.params["predictor"], self.params["upsample"],
                                         self.params["num_jitters"])
        self.notes: dict[str, str] = {}  # clip id -> frames skipped for want of a face

    def validate_params(self) -> None:
        p = self.params
        if p["predictor"] not in SHAPE_PREDICTORS or isinstance(p["predictor"], bool):
            raise ValueError(f"metric {self.name}: parameter 'predictor' must be one of "
                             f"{sorted(SHAPE_PREDICTORS)} (points of dlib's shape predictor), "
                             f"got {p['predictor']!r}")
        for key in ("upsample", "num_jitters"):
            v = p[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"metric {self.name}: parameter {key!r} must be an integer >= 0, "
                                 f"got {v!r}")
        m = p["max_frames"]
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"metric {self.name}: parameter 'max_frames' must be a positive "
                             f"integer or null, got {m!r}")

    def identity(self) -> dict:
        ident = {**super().identity(), "models": dict(self.embedder.files)}
        try:
            import dlib
            ident["dlib"] = dlib.__version__
        except ImportError:
            pass
        return ident

    def anchor(self, frame: np.ndarray) -> Optional[np.ndarray]:
        """The embedding of the reference identity frame (None: no face), kept in the scorer's cache
        (`Metric.cache`) under the frame's content: once per clip, not once per row."""
        if self.cache is None:
            return self.embedder.embed(frame)
        key = key_of("csim_anchor", self.identity(), array_digest(frame))
        got = self.cache.get_arrays("csim_anchor", key)
        if got is None:
            emb = self.embedder.embed(frame)
            got = {"embedding": np.zeros(0) if emb is None else emb}
            self.cache.put_arrays("csim_anchor", key, got)
        return got["embedding"] if got["embedding"].size else None

    def clip_value(self, pair: ClipPair) -> float:
        self.notes.pop(pair.clip_id, None)  # one instance scores every method: no stale note
        frames = _pred_frames(pair)
        if "frames" not in pair.ref:
            raise MetricError("reference has no 'frames' (CSIM compares with its first frame)")
        ref = np.asarray(pair.ref["frames"])
        if ref.ndim != 4 or ref.shape[-1] != 3 or ref.shape[0] == 0 or ref.dtype != np.uint8:
            raise MetricError(f"reference frames have shape {ref.shape} and dtype {ref.dtype}, "
                              f"expected uint8 T x H x W x 3 RGB with T >= 1")
        anchor = self.anchor(ref[0])
        if anchor is None:
            raise MetricError("no face found in the reference identity frame (reference frame 0)")
        frames = frames[stride_subsample(len(frames), self.params["max_frames"])]
        sims = []
        for frame in frames:
            emb = self.embedder.embed(frame)
            if emb is not None:
                sims.append(cosine_similarity(emb, anchor))
        skipped = len(frames) - len(sims)
        if not sims:
            raise MetricError(f"no face found in any of the {len(frames)} predicted frame(s)")
        if skipped:
            self.notes[pair.clip_id] = f"{skipped} of {len(frames)} frame(s) without a face skipped"
            log.info("CSIM %s: %s", pair.clip_id, self.notes[pair.clip_id])
        return float(np.mean(sims))
