"""CSIM-ArcFace: identity cosine similarity with insightface's ArcFace, beside the dlib CSIM.

Model, named exactly: insightface's ``buffalo_l`` recognition network ``w600k_r50.onnx`` (ArcFace
loss, ResNet-50 / IR-50 backbone, trained on WebFace600K, 512-d embedding), the model
``insightface.app.FaceAnalysis(name="buffalo_l")`` uses and LivePortrait / SadTalker-style
evaluations mean by "ArcFace CSIM". It is found through ``core.weights.resolve("arcface_w600k_r50")``
(the member of the ``buffalo_l.zip`` release that ``talkbench weights download arcface_w600k_r50``
extracts); without it the metric is unavailable. It runs with onnxruntime alone (CPU, or CUDA when the
runner asks for it and onnxruntime offers it); the insightface package is not needed.

Convention reproduced, per face (insightface's ``ArcFaceONNX.get``): the 5-point similarity
transform of ``face_align.norm_crop`` -- the least-squares (Umeyama) similarity that maps the face's
five points (eye centres, nose tip, mouth corners, image-left first) onto insightface's 112 x 112
ArcFace template, estimated with scikit-image's ``SimilarityTransform`` -- applied with
``cv2.warpAffine`` (bilinear, black border); then ``cv2.dnn.blobFromImages``'s normalisation:
RGB, (x - 127.5) / 127.5, NCHW float32; the network's 512-d output. CSIM is the cosine similarity
of the embeddings of each generated frame and of the identity frame (``ref["frames"][0]``, as for
the dlib CSIM), averaged over the scored frames; higher is better.

Departure: insightface finds the five points with its SCRFD detector (``det_10g.onnx``); here they
come from talkbench's dlib 68-point landmarks (``faces.extractors.DlibExtractor``: HOG detector,
largest face) of the same frame, as iBUG eye centres (mean of 36-41 and 42-47), nose tip (30) and
mouth corners (48, 54) -- the usual 68-to-5 reduction. Points from another detector shift the crop
by a few pixels, which moves the similarity slightly; values are comparable with insightface's own
pipeline only approximately, and never with the dlib CSIM (another network and embedding space).
A frame without a detected face is skipped and counted (``notes``), as in the dlib CSIM.
``max_frames`` (default null: all) scores every ceil(T / max_frames)-th frame from frame 0.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from core import weights
from core.errors import MetricError, MetricUnavailable, short_error
from core.types import ClipPair
from faces.extractors import DlibExtractor
from metrics import register
from metrics.base import Metric
from metrics.fid import stride_subsample

log = logging.getLogger(__name__)

ARCFACE_SIZE = 112
# insightface's 112 x 112 ArcFace template of the five points (face_align.arcface_dst), image-left
# eye, image-right eye, nose tip, image-left and image-right mouth corner; published constants.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
INPUT_MEAN, INPUT_STD = 127.5, 127.5


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """iBUG-68 landmarks (68 x 2) -> insightface's five points (5 x 2, float32)."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return np.stack([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[30], lm[48], lm[54]]
                    ).astype(np.float32)


def alignment_matrix(points: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """2 x 3 similarity transform mapping the five points onto the ArcFace template (size 112k)."""
    from skimage.transform import SimilarityTransform

    if size % ARCFACE_SIZE:
        raise ValueError(f"the ArcFace crop size must be a multiple of {ARCFACE_SIZE}, got {size}")
    dst = ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)
    tform = SimilarityTransform.from_estimate(np.asarray(points, np.float32), dst)
    if not tform:
        raise MetricError("the five face points are degenerate (no similarity transform)")
    return tform.params[:2, :]


def align_face(frame: np.ndarray, points: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The size x size ArcFace crop of `frame` (H x W x 3 uint8) for these five points."""
    return cv2.warpAffine(np.ascontiguousarray(frame), alignment_matrix(points, size), (size, size),
                          borderValue=0.0)


def arcface_blob(crops: np.ndarray) -> np.ndarray:
    """N x 112 x 112 x 3 RGB uint8 crops -> N x 3 x 112 x 112 float32, (x - 127.5) / 127.5."""
    x = (np.asarray(crops, dtype=np.float32) - np.float32(INPUT_MEAN)) * np.float32(1.0 / INPUT_STD)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class ArcFaceEmbedder:
    """onnxruntime session of an ArcFace ONNX file: aligned crops -> embeddings."""

    def __init__(self, path, device: str = "cpu") -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise MetricUnavailable(f"onnxruntime is not installed ({exc}); "
                                    f"`pip install onnxruntime` (pyproject's arcface extra)") from exc
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                                        providers=providers)
        except Exception as exc:  # a truncated or foreign file
            raise MetricUnavailable(f"{path} is not a loadable ONNX model ({short_error(exc)}); "
                                    f"replace it with `talkbench weights download "
                                    f"arcface_w600k_r50 --force`") from exc
        inp = self.session.get_inputs()[0]
        if list(inp.shape[1:]) != [3, ARCFACE_SIZE, ARCFACE_SIZE] or len(self.session.get_outputs()) != 1:
            raise MetricUnavailable(f"{path} does not look like an ArcFace model (input {inp.shape}, "
                                    f"{len(self.session.get_outputs())} outputs; expected "
                                    f"N x 3 x 112 x 112 and one embedding)")
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """N aligned 112 x 112 RGB crops -> N x D embeddings (float64), one crop per run (some
        ArcFace exports have a fixed batch of 1)."""
        out = [self.session.run([self.output_name], {self.input_name: arcface_blob(c[None])})[0]
               for c in crops]
        return np.concatenate(out).astype(np.float64).reshape(len(crops), -1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@register
class CSIMArcFace(Metric):
    """Mean cosine similarity of ArcFace (insightface buffalo_l w600k_r50) embeddings: each
    generated frame vs the reference's first frame."""

    name = "CSIM-ArcFace"
    higher_is_better = True
    needs = ("frames",)
    level = "clip"
    defaults = {"max_frames": None, "upsample": 1}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.weights_path = weights.resolve("arcface_w600k_r50")
        self._embedder = ArcFaceEmbedder(self.weights_path)
        self._embedder_device = "cpu"
        self.detector = DlibExtractor(upsample=self.params["upsample"])
        self.notes: dict[str, str] = {}

    def validate_params(self) -> None:
        m = self.params["max_frames"]
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"metric {self.name}: parameter 'max_frames' must be a positive "
                             f"integer or null, got {m!r}")
        u = self.params["upsample"]
        if isinstance(u, bool) or not isinstance(u, int) or u < 0:
            raise ValueError(f"metric {self.name}: parameter 'upsample' must be an integer >= 0, "
                             f"got {u!r}")

    def identity(self) -> dict:
        return {**super().identity(), "landmarks": self.detector.identity(),
                "weights": {"arcface_w600k_r50": weights.fingerprint(self.weights_path)}}

    @property
    def embedder(self) -> ArcFaceEmbedder:
        if self._embedder_device != str(self.device):
            self._embedder = ArcFaceEmbedder(self.weights_path, str(self.device))
            self._embedder_device = str(self.device)
        return self._embedder

    def embeddings(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found: T bool, embeddings of the frames with a face: F x 512)."""
        found = self.detector.detect(frames)
        crops = [align_face(frames[i], five_points(found.landmarks[i]))
                 for i in np.flatnonzero(found.found)]
        if not crops:
            return found.found, np.zeros((0, 0))
        return found.found, self.embedder.embed_crops(np.stack(crops))

    def clip_value(self, pair: ClipPair) -> float:
        self.notes.pop(pair.clip_id, None)
        for side, fields in (("prediction", pair.pred), ("reference", pair.ref)):
            if "frames" not in fields:
                raise MetricError(f"{side} has no 'frames'")
            arr = np.asarray(fields["frames"])
            if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0 or arr.dtype != np.uint8:
                raise MetricError(f"{side} frames have shape {arr.shape} and dtype {arr.dtype}, "
                                  f"expected uint8 T x H x W x 3 RGB with T >= 1")
        frames = np.asarray(pair.pred["frames"])
        frames = frames[stride_subsample(len(frames), self.params["max_frames"])]
        ref_found, anchor = self.embeddings(np.asarray(pair.ref["frames"])[:1])
        if not ref_found[0]:
            raise MetricError("no face found in the reference identity frame (reference frame 0)")
        found, embs = self.embeddings(frames)
        if not found.any():
            raise MetricError(f"no face found in any of the {len(frames)} predicted frame(s)")
        skipped = int((~found).sum())
        if skipped:
            self.notes[pair.clip_id] = f"{skipped} of {len(frames)} frame(s) without a face skipped"
            log.info("CSIM-ArcFace %s: %s", pair.clip_id, self.notes[pair.clip_id])
        return float(np.mean([cosine(e, anchor[0]) for e in embs]))

