"""`talkbench calibrate`: talkbench's metrics against their reference packages, on this machine.

Each check runs one metric of talkbench and the reference implementation it claims to reproduce
on the same inputs, with the same weights, and reports the largest absolute and relative
difference against a tolerance:

| metric    | reference                                   | weights      |
|-----------|---------------------------------------------|--------------|
| PSNR/SSIM | scikit-image ``peak_signal_noise_ratio`` / ``structural_similarity`` | none |
| MFCC      | ``python_speech_features.mfcc`` on SyncNet's int16 audio | none      |
| LPIPS     | ``lpips.LPIPS(net="alex", version="0.1")``  | alexnet      |
| FID       | pytorch-fid ``InceptionV3`` + ``get_activations`` + ``calculate_frechet_distance`` | pt_inception |
| SyncNet   | joonson's ``evaluate`` written as loops (below, shared with the tests) | syncnet_v2 |
| CPBD      | the ``cpbd`` package (optional; skipped when absent) | none          |
| FVD       | cd-fvd ``cdfvd("i3d", ckpt_path=...).compute_fvd`` + ``get_i3d_logits`` | i3d_kinetics400 |
| NIQE/BRISQUE/MUSIQ | ``pyiqa.create_metric(name)`` on PNG files, its file from its cache folder | pyiqa_niqe, pyiqa_brisque, pyiqa_musiq_koniq |
| CSIM-ArcFace | insightface ``ArcFaceONNX.get`` + ``face_align.norm_crop`` | arcface_w600k_r50 |

Weights: where the registered file is present (`talkbench weights path NAME`) both sides load the
user's real file and the table shows its sha256; otherwise (or with ``--random-init``) a
random-initialised file in the official format is written to a temporary folder and the table says
"random-init". The reference packages find weights through ``torch.hub``; they are pointed at the
same file through a temporary ``TORCH_HOME`` whose ``hub/checkpoints`` holds a link to it, so no
download happens. The reference functions and random-weight writers here are the ones the parity
tests in ``tests/calibration`` use.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class CheckResult:
    """One row of the calibration table."""

    metric: str
    reference: str  # package and version
    weights: str  # "sha256:<hex>" of the real file, "random-init", or "none"
    inputs: str
    max_abs: float
    max_rel: float
    tolerance: str
    verdict: str  # PASS | FAIL | SKIPPED: reason | ERROR: reason


def package_version(dist: str) -> str:
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{dist} (not installed)"


def differences(ours, theirs) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / max(|b|, tiny)) over matching arrays."""
    a = np.asarray(ours, dtype=np.float64).ravel()
    b = np.asarray(theirs, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"compared arrays differ in size: {a.shape} vs {b.shape}")
    diff = np.abs(a - b)
    rel = diff / np.maximum(np.abs(b), 1e-300)
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0))


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# -------------------------------------------------------------------------------- weights
@contextlib.contextmanager
def environ(**values: Optional[str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def weights_file(name: str, make_random: Callable[[Path], object], folder: Path,
                 random_init: bool) -> tuple[Path, str]:
    """(file, label): the user's registered file and its sha256, or a random-init file."""
    from core import weights
    from core.errors import MetricUnavailable

    if not random_init:
        try:
            path = weights.resolve(name)
            return path, "sha256:" + weights.fingerprint(path)
        except MetricUnavailable:
            pass
    path = folder / weights.get_spec(name).filename
    if not path.exists():
        make_random(path)
    return path, "random-init"


def torch_home_with(folder: Path, path: Path, filename: str) -> Path:
    """A TORCH_HOME whose hub cache holds `path` under `filename` (torch.hub then loads it)."""
    home = folder / "torch_home"
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    link = ckpt / filename
    if not link.exists():
        link.symlink_to(Path(path).resolve())
    return home


# -------------------------------------------------------------------------------- random weights
def random_alexnet(path: Path, seed: int = 0) -> dict:
    """A state_dict with every key, shape and dtype of torchvision's ``alexnet()``: the features
    He-initialised, the classifier (unused by LPIPS) zero."""
    import torch
    import torchvision

    with torch.device("meta"):
        shapes = torchvision.models.alexnet().state_dict()
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, v in shapes.items():
        if key.startswith("features."):
            std = math.sqrt(2.0 / v[0].numel()) if v.ndim > 1 else 0.05
            state[key] = torch.randn(v.shape, generator=g) * std
        else:
            state[key] = torch.zeros(v.shape, dtype=v.dtype)
    torch.save(state, path)
    return state


def save_random_state(net, path: Path, seed: int) -> dict:
    """Write a random state_dict with every key, shape and dtype of `net` (a conv net with batch
    norm): He-scaled weights, BatchNorm statistics and scales drawn so activations neither vanish
    nor explode; returns it."""
    import torch

    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, v in net.state_dict().items():
        if not v.is_floating_point():
            state[key] = v
        elif key.endswith("running_var"):
            state[key] = torch.rand(v.shape, generator=g) * 1.5 + 0.5
        elif key.endswith("running_mean"):
            state[key] = torch.randn(v.shape, generator=g) * 0.1
        elif v.ndim > 1:
            state[key] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / v[0].numel())
        elif ".bn." in key and key.endswith("weight"):
            state[key] = torch.rand(v.shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(v.shape, generator=g) * 0.05
    torch.save(state, path)
    return state


def random_fid_inception(path: Path, seed: int = 0) -> dict:
    """A state_dict in pytorch-fid's format (its FID blocks have torchvision's parameters), with
    BatchNorm statistics and scales drawn so activations neither vanish nor explode."""
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                          init_weights=False)
    return save_random_state(net, path, seed)


def random_i3d(path: Path, seed: int = 0) -> dict:
    """A state_dict with every key, shape and dtype of cd-fvd's ``InceptionI3d(400)``: He-scaled
    convolutions, BatchNorm statistics and scales drawn so activations neither vanish nor explode."""
    from metrics.fvd import i3d_structure

    return save_random_state(i3d_structure(), path, seed)


def random_niqe_params(path: Path, seed: int = 0) -> dict:
    """A NIQE parameter file in the layout of pyiqa's ``niqe_modelparameters.mat``: a synthetic
    pristine Gaussian (``mu_prisparam`` 1 x 36, ``cov_prisparam`` 36 x 36, positive definite)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    b = rng.normal(size=(36, 36))
    params = {"mu_prisparam": rng.uniform(0.2, 2.0, size=(1, 36)),
              "cov_prisparam": b @ b.T / 36 + 0.1 * np.eye(36)}
    scipy.io.savemat(path, params)
    return params


def random_brisque_svm(path: Path, seed: int = 0, n_sv: int = 64) -> tuple:
    """A BRISQUE model in the layout of pyiqa's ``brisque_svm_weights.pth``: a pickled tuple
    (sv_coef [n_sv], sv [n_sv x 36]) of float64 tensors, support vectors in the scaled feature range."""
    import torch

    g = torch.Generator().manual_seed(seed)
    model = (torch.randn(n_sv, generator=g, dtype=torch.float64),
             torch.rand(n_sv, 36, generator=g, dtype=torch.float64) * 2 - 1)
    torch.save(model, path)
    return model


def random_musiq(path: Path, seed: int = 0) -> dict:
    """A state_dict of pyiqa's ``MUSIQ(num_class=1)`` (the KonIQ-10k layout), its default random
    initialisation under a fixed seed."""
    import torch
    from pyiqa.archs.musiq_arch import MUSIQ

    torch.manual_seed(seed)
    state = MUSIQ(pretrained=False).state_dict()
    torch.save(state, path)
    return state


def random_arcface_onnx(path: Path, seed: int = 0) -> None:
    """An ArcFace-shaped ONNX model with random weights: input "input.1" N x 3 x 112 x 112, output
    N x 512 (an 8 x 8 stride-8 convolution to 16 channels, PReLU, a 3136 -> 512 linear layer and
    BatchNorm1d-like affine), the interface of insightface's ``w600k_r50.onnx``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w_conv = (rng.normal(size=(16, 3, 8, 8)) * np.sqrt(2.0 / 192)).astype(np.float32)
    b_conv = (rng.normal(size=16) * 0.05).astype(np.float32)
    slope = np.full((16, 1, 1), 0.25, np.float32)
    w_fc = (rng.normal(size=(512, 16 * 14 * 14)) * np.sqrt(1.0 / 3136)).astype(np.float32)
    b_fc = (rng.normal(size=512) * 0.05).astype(np.float32)
    scale = (rng.uniform(0.5, 1.5, size=512)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w_conv, "conv_w"), (b_conv, "conv_b"), (slope, "prelu_slope"), (w_fc, "fc_w"),
              (b_fc, "fc_b"), (scale, "bn_scale"))]
    nodes = [helper.make_node("Conv", ["input.1", "conv_w", "conv_b"], ["c"], name="Conv_0",
                              kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("PRelu", ["c", "prelu_slope"], ["p"], name="PRelu_1"),
             helper.make_node("Flatten", ["p"], ["f"], name="Flatten_2", axis=1),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], name="Gemm_3", transB=1),
             helper.make_node("Mul", ["g", "bn_scale"], ["683"], name="Mul_4")]
    graph = helper.make_graph(
        nodes, "arcface_random",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def random_syncnet(path: Path, seed: int = 11) -> None:
    """talkbench's SyncNet with random weights and BatchNorm statistics, saved as a state dict."""
    import torch

    from metrics import syncnet as sn

    torch.manual_seed(seed)
    model = sn.SyncNet()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
    torch.save(model.state_dict(), path)


# -------------------------------------------------------------------------------- FID reference
def package_fd(mu1, s1, mu2, s2) -> float:
    """pytorch_fid.fid_score.calculate_frechet_distance, quietly (it passes scipy's deprecated
    `disp` and scipy warns on singular products; both are expected on few frames)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(calculate_frechet_distance(mu1, s1, mu2, s2))


def package_statistics(act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What pytorch_fid.fid_score.calculate_activation_statistics returns for these activations."""
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


def reduced_reference_fid(act1: np.ndarray, act2: np.ndarray) -> float:
    """calculate_frechet_distance on the statistics in an orthonormal basis of their span.

    Both covariances and the mean difference lie in the span of the centred features and the mean
    difference (dimension k < 2N for N features per set); the Fréchet distance is unchanged by an
    isometry onto that span, and k x k is seconds where 2048 x 2048 sqrtm is tens of seconds."""
    mu1, s1 = package_statistics(act1)
    mu2, s2 = package_statistics(act2)
    span = np.vstack([act1 - mu1, act2 - mu2, (mu1 - mu2)[None]])
    _, sv, vt = np.linalg.svd(span, full_matrices=False)
    q = vt[sv > sv.max() * 1e-12].T  # D x k, orthonormal columns
    return package_fd(q.T @ mu1, q.T @ s1 @ q, q.T @ mu2, q.T @ s2 @ q)


def reference_activations(reference, clips, folder: Path) -> np.ndarray:
    """pytorch-fid's get_activations on the frames written as PNG files."""
    from PIL import Image
    from pytorch_fid.fid_score import get_activations

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for c, clip in enumerate(clips):
        for t, frame in enumerate(clip):
            files.append(folder / f"{c:02d}_{t:03d}.png")
            Image.fromarray(frame).save(files[-1])
    return get_activations([str(f) for f in files], reference, batch_size=4, dims=2048,
                           device="cpu", num_workers=0)


# -------------------------------------------------------------------------------- SyncNet reference
# Written from the prose of `reference/metrics.md` §1.2-1.3 (joonson's SyncNetInstance.evaluate /
# calc_pdist and run_pipeline.py's crop_video), one step at a time, independent of the vectorised
# code in metrics.syncnet.features.

def ref_calc_pdist(feat1: np.ndarray, feat2: np.ndarray, vshift: int) -> list[list[float]]:
    """dists[i][k]: distance of video window i to the zero-padded audio at row i + k."""
    win_size = 2 * vshift + 1
    dim = feat2.shape[1]
    padded = [np.zeros(dim)] * vshift + [np.asarray(r, np.float64) for r in feat2] \
        + [np.zeros(dim)] * vshift
    dists = []
    for i in range(len(feat1)):
        row = []
        for k in range(win_size):
            diff = np.asarray(feat1[i], np.float64) - padded[i + k] + 1e-6
            row.append(math.sqrt(sum(float(d) * float(d) for d in diff)))
        dists.append(row)
    return dists


def ref_calc_pdist_torch(feat1, feat2, vshift: int) -> list[list[float]]:
    """The same distances as `ref_calc_pdist`, computed the way ``calc_pdist`` itself does: per
    video window, one float32 ``pairwise_distance`` of the window repeated 2 vshift + 1 times
    against the padded audio rows (``talkbench perf lse`` times the reference with this form; the
    loop form above stays the independent check of the calibration)."""
    import torch
    import torch.nn.functional as F

    feat1, feat2 = torch.as_tensor(feat1), torch.as_tensor(feat2)
    win_size = 2 * vshift + 1
    padded = F.pad(feat2, (0, 0, vshift, vshift))
    return [F.pairwise_distance(feat1[[i], :].repeat(win_size, 1), padded[i:i + win_size, :]).tolist()
            for i in range(len(feat1))]


def ref_scores(dists: list[list[float]], vshift: int) -> tuple[int, float, float]:
    """(offset, conf, minval) from the distance lists."""
    n, win_size = len(dists), 2 * vshift + 1
    mdist = [sum(dists[i][k] for i in range(n)) / n for k in range(win_size)]
    minval = min(mdist)
    minidx = mdist.index(minval)
    median = sorted(mdist)[win_size // 2]  # an odd count: the middle value
    return vshift - minidx, median - minval, minval


def ref_crop_video(frames_bgr: list[np.ndarray], landmarks: np.ndarray, crop_scale: float = 0.4
                   ) -> list[np.ndarray]:
    """run_pipeline.py's crop_video on boxes from landmarks (median-filtered, padded with 110)."""
    import cv2
    import scipy.signal

    dets: dict[str, list] = {"x": [], "y": [], "s": []}
    for pts in landmarks:
        x0, y0 = float(pts[:, 0].min()), float(pts[:, 1].min())
        x1, y1 = float(pts[:, 0].max()), float(pts[:, 1].max())
        dets["s"].append(max(y1 - y0, x1 - x0) / 2)
        dets["y"].append((y0 + y1) / 2)
        dets["x"].append((x0 + x1) / 2)
    for key in dets:
        dets[key] = scipy.signal.medfilt(dets[key], kernel_size=13)
    out = []
    for fidx, image in enumerate(frames_bgr):
        cs = crop_scale
        bs = dets["s"][fidx]
        bsi = int(bs * (1 + 2 * cs))
        frame = np.pad(image, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant",
                       constant_values=(110, 110))
        my = dets["y"][fidx] + bsi
        mx = dets["x"][fidx] + bsi
        face = frame[int(my - bs):int(my + bs * (1 + 2 * cs)),
                     int(mx - bs * (1 + cs)):int(mx + bs * (1 + cs))]
        out.append(cv2.resize(face, (224, 224)))
    return out


def ref_evaluate(model, images: list[np.ndarray], audio_int16: np.ndarray,
                 batch_size: int = 20, vshift: int = 15,
                 pdist: Callable = ref_calc_pdist) -> tuple[int, float, float]:
    """SyncNetInstance.evaluate on 224 x 224 BGR crops and int16 16 kHz audio: (offset, conf, dist).
    `pdist`: `ref_calc_pdist` (loops, the calibration) or `ref_calc_pdist_torch` (timing)."""
    import python_speech_features
    import torch

    model.eval()
    im = np.stack(images, axis=3)
    im = np.expand_dims(im, axis=0)
    im = np.transpose(im, (0, 3, 4, 1, 2))
    imtv = torch.from_numpy(im.astype(float)).float()
    mfcc = list(zip(*python_speech_features.mfcc(audio_int16, 16000)))
    mfcc = np.stack([np.array(row) for row in mfcc])
    cc = np.expand_dims(np.expand_dims(mfcc, axis=0), axis=0)
    cct = torch.from_numpy(cc.astype(float)).float()
    min_length = min(len(images), math.floor(len(audio_int16) / 640))
    lastframe = min_length - 5
    im_feat, cc_feat = [], []
    with torch.no_grad():
        for i in range(0, lastframe, batch_size):
            im_batch = [imtv[:, :, v:v + 5, :, :] for v in range(i, min(lastframe, i + batch_size))]
            im_feat.append(model.forward_lip(torch.cat(im_batch, 0)))
            cc_batch = [cct[:, :, :, v * 4:v * 4 + 20]
                        for v in range(i, min(lastframe, i + batch_size))]
            cc_feat.append(model.forward_aud(torch.cat(cc_batch, 0)))
    vid = torch.cat(im_feat, 0).numpy()
    aud = torch.cat(cc_feat, 0).numpy()
    return ref_scores(pdist(vid, aud, vshift), vshift)


# -------------------------------------------------------------------------------- inputs
def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def fid_frame_sets() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Generated and reference clips (2 clips x 2 frames each side, 48 x 64) that differ in
    distribution: smooth colour fields against textured, brighter ones."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)

    def smooth(t, sigma):
        x = gaussian_filter(rng.normal(size=(t, 48, 64, 3)), (0, sigma, sigma, 0))
        return (x - x.min()) / (x.max() - x.min()) * 255

    pred = [_u8(smooth(2, 5)) for _ in range(2)]
    ref = [_u8(0.7 * smooth(2, 2) + 0.3 * rng.integers(0, 256, (2, 48, 64, 3)) + 20)
           for _ in range(2)]
    return pred, ref


def fvd_video_sets(n: int = 3, frames: int = 16, seed: int = 0
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Generated and reference videos (n each, `frames` x 32 x 40) that differ in distribution:
    smooth drifting colour fields against textured, flickering ones."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)

    def field(sigma_t, sigma_s):
        x = gaussian_filter(rng.normal(size=(frames, 32, 40, 3)), (sigma_t, sigma_s, sigma_s, 0))
        return (x - x.min()) / (x.max() - x.min()) * 255

    pred = [_u8(field(3, 4)) for _ in range(n)]
    ref = [_u8(0.7 * field(0.5, 1.5) + 0.3 * rng.integers(0, 256, (frames, 32, 40, 3)))
           for _ in range(n)]
    return pred, ref


def cdfvd_reference(path: Path, pred: list[np.ndarray], ref: list[np.ndarray]
                    ) -> tuple[float, np.ndarray]:
    """cd-fvd's own FVD of these videos (``cdfvd(model="i3d", ckpt_path=path).compute_fvd``) and
    its features of the generated videos (kept by its ``FeatureStats``, ``compute_feats=True``)."""
    import contextlib
    import io

    from cdfvd import fvd as cf

    with contextlib.redirect_stdout(io.StringIO()):  # cd-fvd prints "Loading i3d model ..."
        evaluator = cf.cdfvd("i3d", ckpt_path=str(path), device="cpu", n_fake="full",
                             compute_feats=True)
    value = float(evaluator.compute_fvd(np.stack(ref), np.stack(pred)))
    return value, evaluator.fake_stats.get_all()


def pyiqa_reference(metric: str, path: Path, frames: np.ndarray, folder: Path) -> np.ndarray:
    """pyiqa's own scores of these frames: ``pyiqa.create_metric(metric)`` with its default file
    (the name in its download URL) taken from a cache folder that holds `path` under that name, and
    each frame read by pyiqa from a PNG file (``imread2tensor``)."""
    import contextlib
    import io

    import pyiqa
    import torch
    from PIL import Image
    from pyiqa.utils import download_util

    from core import weights

    cache = folder / "pyiqa_cache"
    cache.mkdir(parents=True, exist_ok=True)
    filename = weights.get_spec({"niqe": "pyiqa_niqe", "brisque": "pyiqa_brisque",
                                 "musiq": "pyiqa_musiq_koniq"}[metric]).filename
    link = cache / filename
    if not link.exists():
        link.symlink_to(Path(path).resolve())
    old = download_util.DEFAULT_CACHE_DIR
    download_util.DEFAULT_CACHE_DIR = str(cache)  # pyiqa's hub folder, read when it loads a file
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = pyiqa.create_metric(metric, device=torch.device("cpu"))
    finally:
        download_util.DEFAULT_CACHE_DIR = old
    scores = []
    for i, frame in enumerate(frames):
        png = folder / f"{metric}_{i}.png"
        Image.fromarray(frame).save(png)
        with torch.no_grad():
            scores.append(float(model(str(png)).reshape(-1)[0]))
    return np.asarray(scores)


def insightface_embedding(path: Path, frame_rgb: np.ndarray, points: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """insightface's own ArcFace embedding of one face: ``ArcFaceONNX(path).get(bgr_image, face)``
    with ``face.kps`` the five points (its ``norm_crop`` alignment and ``blobFromImages`` input),
    and its aligned crop (``face_align.norm_crop``, RGB)."""
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.utils import face_align

    class Face(dict):
        kps = np.asarray(points, np.float32)

    model = ArcFaceONNX(model_file=str(path))
    model.prepare(-1)
    bgr = np.ascontiguousarray(frame_rgb[..., ::-1])
    embedding = model.get(bgr, Face())
    crop = face_align.norm_crop(bgr, landmark=Face.kps, image_size=112)[..., ::-1]
    return np.asarray(embedding, np.float64), crop


def synthtalk_faces(speakers: tuple[int, ...] = (1, 2), seed: int = 0) -> list[np.ndarray]:
    """One frontal, neutral synthtalk face (256 x 256 uint8 RGB) per speaker: faces dlib detects."""
    from bench.data.synthtalk import corpus, face, render

    frames = []
    for s in speakers:
        identity, look = corpus.speaker_identity(seed, s)
        motion = np.zeros((1, len(face.MOTION_NAMES)))
        lm = face.project(face.deform(identity, motion), np.zeros((1, 6)))
        frames.append(render.render_frames(lm.astype(np.float32), look, face.FRAME_SIZE)[0])
    return frames


def photo_pairs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two 128 x 128 crops of scikit-image's astronaut and chelsea photos, and noisy copies."""
    from skimage import data

    rng = np.random.default_rng(seed)
    ref = np.stack([data.astronaut()[60:188, 170:298], data.chelsea()[60:188, 100:228]])
    return _u8(ref + rng.normal(0, 12, ref.shape)), ref


def speech_like_audio(seconds: float, seed: int = 0, sr: int = 16000) -> np.ndarray:
    """float32 mono: a 150 Hz harmonic tone with syllable-rate (4 Hz) amplitude modulation + noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    return (0.1 * voice * envelope + 0.005 * rng.normal(size=t.size)).astype(np.float32)


# -------------------------------------------------------------------------------- checks
def check_image(folder: Path, random_init: bool) -> list[CheckResult]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from metrics import build_metric
    from core.types import ClipPair

    pred, ref = photo_pairs()
    pair = ClipPair("calibrate", {"frames": pred}, {"frames": ref})
    inputs = f"{len(pred)} photo crops 128x128 + noise σ12"
    ref_psnr = [peak_signal_noise_ratio(r, p, data_range=255) for p, r in zip(pred, ref)]
    ref_ssim = [structural_similarity(r, p, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=255, channel_axis=-1)
                for p, r in zip(pred, ref)]
    rows = []
    for name, expected, rel_tol in (("PSNR", ref_psnr, 1e-6), ("SSIM", ref_ssim, 1e-10)):
        value = build_metric(name).clip_value(pair)
        abs_d, rel_d = differences(value, np.mean(expected))
        rows.append(CheckResult(name, package_version("scikit-image"), "none", inputs, abs_d, rel_d,
                                f"rel {rel_tol:g}", _verdict(rel_d <= rel_tol)))
    return rows


def check_mfcc(folder: Path, random_init: bool) -> list[CheckResult]:
    import python_speech_features

    from metrics import syncnet as sn

    audio = speech_like_audio(1.0)
    audio16 = sn.audio_to_int16(audio)
    expected16 = np.clip(np.round(audio.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    ours = sn.mfcc_features(audio16, 16000)
    theirs = python_speech_features.mfcc(expected16, 16000).T
    abs_d, rel_d = differences(ours, theirs)
    ok = np.array_equal(audio16, expected16) and abs_d <= 1e-4 * np.abs(theirs).max()
    return [CheckResult("MFCC (SyncNet audio)", package_version("python_speech_features"), "none",
                        "1 s speech-like tone, 16 kHz", abs_d, rel_d, "abs 1e-4 x max |ref|",
                        _verdict(bool(ok)))]


def check_lpips(folder: Path, random_init: bool) -> list[CheckResult]:
    import lpips
    import torch

    from metrics import build_metric

    path, label = weights_file("alexnet", random_alexnet, folder, random_init)
    home = torch_home_with(folder, path, "alexnet-owt-7be5be79.pth")
    pred, ref = photo_pairs(1)
    with environ(TORCH_HOME=str(home), TALKBENCH_WEIGHTS_ALEXNET=str(path)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision: lpips' deprecated `pretrained=True`
            reference = lpips.LPIPS(net="alex", version="0.1", verbose=False)
        ours = build_metric("LPIPS")
    with torch.no_grad():
        expected = [reference(lpips.im2tensor(p), lpips.im2tensor(r)).item()
                    for p, r in zip(pred, ref)]
    got = ours.frame_values(pred, ref)
    abs_d, rel_d = differences(got, expected)
    return [CheckResult("LPIPS", package_version("lpips"), label, f"{len(pred)} photo crops + noise",
                        abs_d, rel_d, "rel 1e-5", _verdict(rel_d <= 1e-5))]


def check_fid(folder: Path, random_init: bool) -> list[CheckResult]:
    from metrics import build_metric
    from core.types import ClipPair

    path, label = weights_file("pt_inception", random_fid_inception, folder, random_init)
    home = torch_home_with(folder, path, "pt_inception-2015-12-05-6726825d.pth")
    from pytorch_fid.inception import InceptionV3

    with environ(TORCH_HOME=str(home), TALKBENCH_WEIGHTS_PT_INCEPTION=str(path)):
        reference = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
        ours = build_metric("FID")
    pred, ref = fid_frame_sets()
    act_pred = reference_activations(reference, pred, folder / "fid_pred")
    act_ref = reference_activations(reference, ref, folder / "fid_ref")
    expected = reduced_reference_fid(act_pred, act_ref)
    pairs = [ClipPair(f"c{i}", {"frames": p}, {"frames": r}) for i, (p, r) in enumerate(zip(pred, ref))]
    value = ours.set_value(pairs)
    feats = ours.features(np.concatenate(pred))
    f_abs, _ = differences(feats, act_pred)
    abs_d, rel_d = differences(value, expected)
    ok = rel_d <= 1e-4 and f_abs <= 1e-5 * np.abs(act_pred).max()
    return [CheckResult("FID", package_version("pytorch-fid"), label,
                        "2 x 2 vs 2 x 2 frames 48x64 (features and distance)", abs_d, rel_d,
                        "rel 1e-4 (features abs 1e-5 x max)", _verdict(bool(ok)))]


def check_fvd(folder: Path, random_init: bool) -> list[CheckResult]:
    from core.types import ClipPair
    from metrics import build_metric

    path, label = weights_file("i3d_kinetics400", random_i3d, folder, random_init)
    with environ(TALKBENCH_WEIGHTS_I3D_KINETICS400=str(path)):
        ours = build_metric("FVD")
    pred, ref = fvd_video_sets()
    expected, ref_feats = cdfvd_reference(path, pred, ref)
    parts = [ours.clip_parts(ClipPair(f"c{i}", {"frames": p}, {"frames": r}))
             for i, (p, r) in enumerate(zip(pred, ref))]
    value = ours.set_value_from_parts(parts)
    f_abs, _ = differences(np.concatenate([p for p, _ in parts]), ref_feats)
    abs_d, rel_d = differences(value, expected)
    ok = rel_d <= 1e-4 and f_abs <= 1e-4 * np.abs(ref_feats).max()
    return [CheckResult("FVD", package_version("cd-fvd"), label,
                        f"{len(pred)} vs {len(ref)} videos of 16 frames 32x40 (features and distance)",
                        abs_d, rel_d, "rel 1e-4 (features abs 1e-4 x max)", _verdict(bool(ok)))]


def check_arcface(folder: Path, random_init: bool) -> list[CheckResult]:
    from core.types import ClipPair
    from faces.extractors import DlibExtractor
    from metrics import build_metric
    from metrics.arcface import align_face, five_points

    missing = [m for m in ("onnxruntime", "onnx", "insightface") if importlib.util.find_spec(m) is None]
    if missing:
        return [CheckResult("CSIM-ArcFace", package_version("insightface"), "-", "-", math.nan, math.nan,
                            "rel 1e-5", f"SKIPPED: {', '.join(missing)} not installed (insightface: "
                            f"pip install --no-deps insightface)")]
    path, label = weights_file("arcface_w600k_r50", random_arcface_onnx, folder, random_init)
    with environ(TALKBENCH_WEIGHTS_ARCFACE_W600K_R50=str(path)):
        ours = build_metric("CSIM-ArcFace")
    faces = synthtalk_faces()
    found = DlibExtractor().detect(np.stack(faces))
    if not found.found.all():
        raise RuntimeError("dlib found no face in a synthtalk frame")
    expected, crops_ok = [], True
    for frame, lm in zip(faces, found.landmarks):
        emb, crop = insightface_embedding(path, frame, five_points(lm))
        crops_ok &= bool(np.array_equal(crop, align_face(frame, five_points(lm))))
        expected.append(emb)
    ref_cos = float(np.dot(expected[1], expected[0])
                    / (np.linalg.norm(expected[1]) * np.linalg.norm(expected[0])))
    _, embs = ours.embeddings(np.stack(faces))
    e_abs, _ = differences(embs, np.stack(expected))
    value = ours.clip_value(ClipPair("calibrate", {"frames": np.stack(faces[1:])},
                                     {"frames": np.stack(faces[:1])}))
    abs_d, rel_d = differences(value, ref_cos)
    ok = crops_ok and rel_d <= 1e-5 and e_abs <= 1e-5 * np.abs(expected).max()
    return [CheckResult("CSIM-ArcFace", package_version("insightface"), label,
                        "2 synthtalk faces, 5 points from dlib-68 (crop, embedding, cosine)",
                        abs_d, rel_d, "rel 1e-5 (crops equal, embeddings abs 1e-5 x max)",
                        _verdict(ok))]


IQA_WRITERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "NIQE": ("pyiqa_niqe", random_niqe_params),
    "BRISQUE": ("pyiqa_brisque", random_brisque_svm),
    "MUSIQ": ("pyiqa_musiq_koniq", random_musiq),
}


def check_iqa(folder: Path, random_init: bool) -> list[CheckResult]:
    from core import weights
    from core.types import ClipPair
    from metrics import build_metric

    if importlib.util.find_spec("pyiqa") is None:
        return [CheckResult(name, package_version("pyiqa"), "-", "-", math.nan, math.nan, "rel 1e-5",
                            'SKIPPED: pip install --no-deps "pyiqa>=0.1.16"') for name in IQA_WRITERS]
    pred, _ = photo_pairs(2)
    rows = []
    for name, (weights_name, writer) in IQA_WRITERS.items():
        path, label = weights_file(weights_name, writer, folder, random_init)
        with environ(**{weights.get_spec(weights_name).env_var: str(path)}):
            ours = build_metric(name)
        value = ours.clip_value(ClipPair("calibrate", {"frames": pred}, {}))
        expected = pyiqa_reference(name.lower(), path, pred, folder)
        abs_d, rel_d = differences(value, expected.mean())
        rows.append(CheckResult(name, package_version("pyiqa"), label,
                                f"{len(pred)} photo crops 128x128 + noise (PNG files for pyiqa)",
                                abs_d, rel_d, "rel 1e-5", _verdict(rel_d <= 1e-5)))
    return rows


def check_syncnet(folder: Path, random_init: bool) -> list[CheckResult]:
    import cv2

    from metrics import build_metric
    from metrics import syncnet as sn
    from core.types import ClipPair

    path, label = weights_file("syncnet_v2", random_syncnet, folder, random_init)
    rng = np.random.default_rng(3)
    t = 14  # 9 windows
    from scipy.ndimage import gaussian_filter

    frames = gaussian_filter(rng.normal(size=(t, 96, 96, 3)), (1, 3, 3, 0))
    frames = _u8((frames - frames.min()) / (frames.max() - frames.min()) * 255)
    audio = speech_like_audio(t / 25.0, seed=3)
    bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
    images = [cv2.resize(f, (224, 224)) for f in bgr]
    audio16 = np.clip(np.round(audio.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    offset, conf, minval = ref_evaluate(sn.load_syncnet(path), images, audio16)
    sn.clear_cache()
    params = {"weights_path": str(path), "crop": "full"}
    pair = ClipPair("calibrate", {"frames": frames}, {"frames": frames}, fps=25.0, audio=audio,
                    sample_rate=16000)
    lse_d = build_metric("LSE-D", params).clip_value(pair)
    lse_c = build_metric("LSE-C", params).clip_value(pair)
    av = build_metric("AV-offset", params).clip_value(pair)
    d_abs, d_rel = differences(lse_d, minval)
    c_abs, _ = differences(lse_c, conf)
    ok = d_rel <= 1e-5 and c_abs <= 1e-5 * minval and av == abs(offset)
    return [CheckResult("LSE-D / LSE-C / AV-offset", "joonson evaluate (loop reference, "
                        + package_version("python_speech_features") + ")", label,
                        f"{t} frames 96x96 full-frame crop, speech-like audio",
                        max(d_abs, c_abs), d_rel, "LSE-D rel 1e-5; LSE-C abs 1e-5 x LSE-D",
                        _verdict(bool(ok)))]


def check_cpbd(folder: Path, random_init: bool) -> list[CheckResult]:
    import scipy.ndimage
    from skimage import data

    from metrics.identity import cpbd, gray_frames

    if not hasattr(scipy.ndimage, "imread"):
        scipy.ndimage.imread = None  # cpbd 1.0.7 imports this removed function; never calls it
    try:
        import cpbd as reference
    except ImportError:
        return [CheckResult("CPBD", package_version("cpbd"), "none", "-", math.nan, math.nan, "abs 1e-6",
                            "SKIPPED: pip install cpbd")]
    images = [data.camera().astype(np.float64), gray_frames(data.astronaut()[None, ::2, ::2])[0]]
    ours = [cpbd(img) for img in images]
    theirs = [reference.compute(img) for img in images]
    abs_d, rel_d = differences(ours, theirs)
    return [CheckResult("CPBD", package_version("cpbd"), "none", "camera, astronaut (gray)", abs_d, rel_d,
                        "abs 1e-6", _verdict(abs_d <= 1e-6))]


CHECKS: dict[str, Callable[[Path, bool], list[CheckResult]]] = {
    "image": check_image, "mfcc": check_mfcc, "lpips": check_lpips, "fid": check_fid,
    "syncnet": check_syncnet, "cpbd": check_cpbd, "fvd": check_fvd,
    "iqa": check_iqa, "arcface": check_arcface,
}


def run_checks(names: Optional[list[str]] = None, random_init: bool = False) -> list[CheckResult]:
    """Run the named checks (all by default). A check that raises is reported as ERROR, not hidden."""
    names = list(CHECKS) if not names else names
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise KeyError(f"unknown calibration check(s) {unknown}; known: {list(CHECKS)}")
    rows: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="talkbench-calibrate-") as tmp:
        for name in names:
            log.info("calibrate: %s", name)
            folder = Path(tmp) / name
            folder.mkdir()
            try:
                rows.extend(CHECKS[name](folder, random_init))
            except Exception as exc:  # one broken reference must not hide the other rows
                rows.append(CheckResult(name, "-", "-", "-", math.nan, math.nan, "-",
                                        f"ERROR: {type(exc).__name__}: {exc}"))
    return rows


def format_table(rows: list[CheckResult]) -> str:
    from tabulate import tabulate

    def num(x: float) -> str:
        return "-" if math.isnan(x) else f"{x:.3g}"

    def short(w: str) -> str:
        return w[:7 + 16] + "…" if w.startswith("sha256:") else w

    return tabulate([[r.metric, r.reference, short(r.weights), r.inputs, num(r.max_abs),
                      num(r.max_rel), r.tolerance, r.verdict] for r in rows],
                    headers=["metric", "reference", "weights", "inputs", "max abs diff",
                             "max rel diff", "tolerance", "verdict"], tablefmt="github")


def _cmd_calibrate(args: argparse.Namespace) -> int:
    rows = run_checks(args.only, random_init=args.random_init)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    bad = [r for r in rows if r.verdict.startswith(("FAIL", "ERROR"))]
    if bad:
        print(f"talkbench calibrate: {len(bad)} check(s) failed", file=sys.stderr)
    return 1 if bad else 0


def add_cli(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register `talkbench calibrate [--only NAME ...] [--random-init] [--json FILE]`.

    Exit code 1 when a check fails or errors."""
    parser = subparsers.add_parser(
        "calibrate", help="compare talkbench's metrics with their reference packages on this "
                          "machine's weights")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), help="run only these checks")
    parser.add_argument("--random-init", action="store_true",
                        help="use random-initialised weights even where real files are present")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.set_defaults(func=_cmd_calibrate)
    return parser
