"""`talkbench perf lse|fid|landmarks|score`: talkbench's costly stages against the reference tools,
timed side by side in one process, on the same inputs and the same weights (issue 17 §1).

Each sub-command builds a few synthtalk clips, runs talkbench's path and the reference's path on
them and prints one table: stage, talkbench value, reference value, |diff|, tolerance, talkbench s,
reference s and the ratio (reference s / talkbench s: above 1, talkbench is faster). Weights are
the user's registered files when present, otherwise random-initialised files written in each
tool's own checkpoint format (`bench.calibrate.weights_file`), so the two sides always load the
same bytes. ``--write`` writes the table as ``results/perf/<what>.json`` (``--out DIR`` elsewhere)
with the machine (CPU model, cores, GPU), the package versions, the inputs, values and times.

* ``lse``: LSE-D / LSE-C of talkbench's metric (`metrics.syncnet`, ``frame_path`` direct and
  jpeg_roundtrip) against `reference_lse`, a re-expression of syncnet_python's ``evaluate`` for
  timing (its docstring lists the steps it reproduces). The round-trip path must agree with the
  reference within the calibration tolerance (LSE-D rel 1e-5); the direct path is shown beside it
  and differs by what the JPEG round trip does. Model loading is timed as its own row.
* ``fid``: FID Inception features (and the distance) of talkbench's `metrics.fid.FID` on frames in
  memory against pytorch-fid's own path -- the frames written as PNG files, read back by its
  ``ImagePathDataset`` / ``DataLoader`` (batch 50, its default worker count) into its
  ``InceptionV3``. The distance's reference is pytorch-fid's ``calculate_frechet_distance`` on the
  statistics in the span of the features (`bench.calibrate.reduced_reference_fid`; the full
  2048 x 2048 square root takes tens of seconds on two cores), so that row compares values only.
* ``landmarks``: talkbench's landmark extraction (dlib; FAN when face-alignment and the ``fan_2d``
  weights are installed) in frames/s, against face-alignment's per-frame ``get_landmarks`` loop on
  the same weights when face-alignment is installed (otherwise the row says how to install it).
* ``score PROTOCOL``: frames per second of the whole scorer (`bench.pipeline.evaluate` with a
  fresh, empty cache) with each worker count of ``--workers`` (default 1,2): first the
  ``ground_truth`` row (the pool's start included), then one method's predictions (``--method``,
  default ``static``) as a further row; ratios against the first count.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench.calibrate import (environ, package_version, random_fid_inception, random_syncnet,
                             reduced_reference_fid, ref_calc_pdist_torch, ref_crop_video,
                             ref_evaluate, torch_home_with, weights_file)

WHATS = ("lse", "fid", "landmarks", "score")
LSE_D_REL_TOL = 1e-5  # the calibration's tolerances (bench/calibrate.py, check_syncnet / check_fid)
LSE_C_ABS_TOL = 1e-5  # x LSE-D
FID_FEATURE_TOL = 1e-5  # x max |reference feature|
FID_REL_TOL = 1e-4
LANDMARK_TOL_PX = 0.5
PERF_PACKAGES = ("pytorch-fid", "python_speech_features", "face-alignment")


@dataclass
class Row:
    """One line of a perf table."""

    stage: str
    talkbench: Optional[float] = None
    reference: Optional[float] = None
    tolerance: Optional[float] = None  # on |diff|; None: the two are not expected to agree
    talkbench_s: Optional[float] = None
    reference_s: Optional[float] = None
    note: str = ""
    unit: str = ""  # "frames/s": a throughput, not a value the two sides must share

    @property
    def diff(self) -> Optional[float]:
        if self.talkbench is None or self.reference is None or self.unit == "frames/s":
            return None
        return abs(float(self.talkbench) - float(self.reference))

    @property
    def ratio(self) -> Optional[float]:
        if not self.talkbench_s or self.reference_s is None:
            return None
        return self.reference_s / self.talkbench_s

    @property
    def agrees(self) -> Optional[bool]:
        if self.tolerance is None or self.diff is None:
            return None
        return bool(self.diff <= self.tolerance)

    def as_dict(self) -> dict:
        return {**asdict(self), "diff": self.diff, "ratio": self.ratio, "agrees": self.agrees}


@dataclass
class Report:
    what: str
    rows: list[Row]
    inputs: dict
    weights: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def disagreements(self) -> list[Row]:
        return [r for r in self.rows if r.agrees is False]


# ----------------------------------------------------------------------------------- machine
def machine() -> dict:
    """CPU model (from /proc/cpuinfo where there is one), logical cores, and the GPU if torch sees one."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out: dict[str, Any] = {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version(), "gpu": None}
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return out


def versions() -> dict:
    from bench.provenance import package_versions

    return {**package_versions(), **{p: package_version(p).split(" ", 1)[1] for p in PERF_PACKAGES}}


# ----------------------------------------------------------------------------------- inputs
def synthtalk_clips(n: int) -> list:
    """The first `n` clips of the small synthtalk corpus (built when missing)."""
    from bench.data.synthtalk import corpus

    if n < 1:
        raise ValueError(f"--clips: expected at least 1, got {n}")
    return corpus.load_clips()[:n]


def write_lossless(path: Path, frames_rgb: np.ndarray, fps: float, audio: np.ndarray,
                   sample_rate: int) -> Path:
    """A video whose decoded frames and audio are exactly `frames_rgb` (PNG in QuickTime .mov, rgb24) and
    `audio` (float PCM): the input both sides read, so any difference is theirs, not a codec's."""
    import av

    with av.open(str(path), mode="w", format="mov") as container:
        vs = container.add_stream("png", rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height, vs.pix_fmt = frames_rgb.shape[2], frames_rgb.shape[1], "rgb24"
        aus = container.add_stream("pcm_f32le", rate=sample_rate)
        aus.layout = "mono"
        for t, frame in enumerate(frames_rgb):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = t
            for p in vs.encode(vf):
                container.mux(p)
        for p in vs.encode():
            container.mux(p)
        af = av.AudioFrame.from_ndarray(np.asarray(audio, np.float32)[None], format="flt", layout="mono")
        af.sample_rate, af.pts = sample_rate, 0
        for p in aus.encode(af):
            container.mux(p)
        for p in aus.encode():
            container.mux(p)
    return path


# ----------------------------------------------------------------------------------- LSE reference
def reference_lse(model, videofile: Path, workdir: Path, landmarks: Optional[np.ndarray] = None,
                  batch_size: int = 20, vshift: int = 15) -> tuple[int, float, float]:
    """syncnet_python's ``evaluate`` on a video, for timing: (offset, conf, min dist).

    Reproduced, step by step: (crop ``syncnet`` only: ``run_pipeline.py``'s ``crop_video`` on the
    decoded frames with boxes from `landmarks` -- `bench.calibrate.ref_crop_video` -- written as a
    video of 224 x 224 crops, which ``evaluate`` is then handed); ``ffmpeg -y -i VIDEO -threads 1
    -f image2 %06d.jpg`` (libavcodec's mjpeg encoder through PyAV at the CLI's settings,
    `metrics.syncnet.jpeg`, one file per frame); ``ffmpeg -y -i VIDEO -async 1 -ac 1 -vn -acodec
    pcm_s16le -ar 16000 audio.wav`` (swresample to s16 mono 16 kHz, written and read back with
    scipy.io.wavfile); ``glob`` + sort + ``cv2.imread`` of every JPEG; the whole frame resized to 224
    x 224 when no crop was made (Wav2Lip's copy of ``evaluate``); then ``evaluate``'s tensor layout,
    ``python_speech_features.mfcc``, batches of `batch_size` windows, and ``calc_pdist`` in its own
    per-window torch form over +-`vshift` offsets (`bench.calibrate.ref_evaluate` with
    `ref_calc_pdist_torch`). Not reproduced: the ffmpeg processes' start-up, S3FD detection and
    tracking, the XVID encoding of the crop video (a lossless video here), the mpeg4 re-encode.
    """
    import av
    import cv2
    from scipy.io import wavfile

    from metrics.syncnet import encode_jpegs

    workdir.mkdir(parents=True, exist_ok=True)
    if landmarks is not None:  # run_pipeline's crop stage writes the crop video evaluate reads
        with av.open(str(videofile)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate)
            bgr = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        with av.open(str(videofile)) as container:
            audio = _decode_audio(container, "flt")
        crops = ref_crop_video(bgr, landmarks)
        videofile = write_lossless(workdir / "crop.mov", np.stack(crops)[..., ::-1], fps,
                                   audio.astype(np.float32), 16000)
    frames_dir = workdir / "frames"
    shutil.rmtree(frames_dir, ignore_errors=True)
    frames_dir.mkdir()
    with av.open(str(videofile)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        for t, data in enumerate(encode_jpegs(container.decode(stream), fps)):
            (frames_dir / f"{t + 1:06d}.jpg").write_bytes(data)
    with av.open(str(videofile)) as container:
        wavfile.write(str(workdir / "audio.wav"), 16000, _decode_audio(container, "s16"))
    sample_rate, audio16 = wavfile.read(str(workdir / "audio.wav"))
    images = [cv2.imread(f) for f in sorted(glob.glob(str(frames_dir / "*.jpg")))]
    if landmarks is None:
        images = [cv2.resize(im, (224, 224)) for im in images]
    return ref_evaluate(model, images, audio16, batch_size, vshift, pdist=ref_calc_pdist_torch)


def _decode_audio(container, fmt: str) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format=fmt, layout="mono", rate=16000)
    chunks = []
    for frame in container.decode(container.streams.audio[0]):
        chunks += [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
    chunks += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
    return np.concatenate(chunks)


def perf_lse(clips: list, folder: Path, random_init: bool = False, crop: str = "syncnet",
             repeat: int = 2) -> Report:
    from core.types import ClipPair
    from bench.data.video import read_video
    from metrics import build_metric
    from metrics import syncnet as sn

    path, label = weights_file("syncnet_v2", random_syncnet, folder, random_init)
    start = time.perf_counter()
    ref_model = sn.load_syncnet(path)
    ref_load = time.perf_counter() - start
    params = {"weights_path": str(path), "crop": crop}
    start = time.perf_counter()
    metrics = {fp: (build_metric("LSE-D", {**params, "frame_path": fp}),
                    build_metric("LSE-C", {**params, "frame_path": fp})) for fp in sn.FRAME_PATHS}
    tb_load = time.perf_counter() - start
    rows = [Row("load SyncNet", talkbench_s=tb_load, reference_s=ref_load,
                note="talkbench: both LSE metrics of both frame paths (one shared network)")]
    # warm-up, untimed: torch's first convolutions on this machine (thread pool, kernels) are slow
    warm = clips[0]
    n_warm = min(warm.num_frames, 12)
    metrics["direct"][0].clip_value(ClipPair(
        "warm-up", {"frames": warm.frames[:n_warm]}, {"landmarks": warm.landmarks[:n_warm]}, fps=warm.fps,
        audio=warm.audio[:n_warm * 640], sample_rate=warm.sample_rate))
    frames_total = 0
    for clip in clips:
        video = write_lossless(folder / f"{clip.id}.mov", clip.frames, clip.fps, clip.audio,
                               clip.sample_rate)
        frames_total += clip.num_frames
        got: dict[str, tuple[float, float, float]] = {}
        ref_s = math.inf
        for _ in range(repeat):  # the sides in turn; each keeps its fastest run
            for fp, (lsed, lsec) in metrics.items():
                sn.clear_cache()
                start = time.perf_counter()
                data = read_video(video)
                pair = ClipPair(clip.id, {"frames": data.frames},
                                {"landmarks": clip.landmarks, "frames": data.frames},
                                fps=data.fps, audio=data.audio, sample_rate=data.sample_rate)
                d, c = lsed.clip_value(pair), lsec.clip_value(pair)
                seconds = time.perf_counter() - start
                got[fp] = (d, c, min(seconds, got.get(fp, (0, 0, math.inf))[2]))
            start = time.perf_counter()
            _, conf, dist = reference_lse(ref_model, video, folder / "ref" / clip.id,
                                          clip.landmarks if crop == "syncnet" else None)
            ref_s = min(ref_s, time.perf_counter() - start)
        d, c, s = got["jpeg_roundtrip"]
        rows.append(Row(f"{clip.id} LSE-D (jpeg_roundtrip)", d, dist, LSE_D_REL_TOL * abs(dist), s, ref_s))
        rows.append(Row(f"{clip.id} LSE-C (jpeg_roundtrip)", c, conf, LSE_C_ABS_TOL * abs(dist)))
        d, c, s = got["direct"]
        rows.append(Row(f"{clip.id} LSE-D (direct)", d, dist, None, s, ref_s,
                        note="no JPEG round trip: differs from the reference by design"))
        rows.append(Row(f"{clip.id} LSE-C (direct)", c, conf, None))
    return Report("lse", rows, {"clips": [c.id for c in clips], "frames": frames_total, "crop": crop,
                                "video": "lossless (PNG rgb24 + float PCM in .mov)"},
                  {"syncnet_v2": label},
                  [f"jpeg encoder: {sn.encoder_versions()}",
                   f"times per clip: the fastest of {repeat} runs of each side, decoding the input "
                   "video included"])


# ----------------------------------------------------------------------------------- FID
def perf_fid(clips: list, folder: Path, random_init: bool = False, frames_per_clip: int = 25) -> Report:
    import torch
    from PIL import Image
    from pytorch_fid.fid_score import get_activations
    from pytorch_fid.inception import InceptionV3

    from metrics import build_metric
    from metrics.fid import frechet_distance_features

    path, label = weights_file("pt_inception", random_fid_inception, folder, random_init)
    home = torch_home_with(folder, path, "pt_inception-2015-12-05-6726825d.pth")
    with environ(TORCH_HOME=str(home), TALKBENCH_WEIGHTS_PT_INCEPTION=str(path)):
        start = time.perf_counter()
        reference = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
        ref_load = time.perf_counter() - start
        start = time.perf_counter()
        ours = build_metric("FID")
        ours.model  # noqa: B018 -- load the network now, so the row times it
        tb_load = time.perf_counter() - start
    rng = np.random.default_rng(0)
    real = np.concatenate([c.frames[:frames_per_clip] for c in clips])
    fake = np.clip(real.astype(np.int16) + rng.normal(0, 12, real.shape).round(), 0, 255).astype(np.uint8)
    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)

    def reference_features(frames: np.ndarray, name: str) -> np.ndarray:
        out = folder / name
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for t, frame in enumerate(frames):
            files.append(str(out / f"{t:06d}.png"))
            Image.fromarray(frame).save(files[-1])
        return get_activations(files, reference, batch_size=50, dims=2048, device="cpu",
                               num_workers=workers)

    rows = [Row("load Inception", talkbench_s=tb_load, reference_s=ref_load)]
    feats = {}
    for name, frames in (("real", real), ("generated", fake)):
        start = time.perf_counter()
        with torch.no_grad():
            mine = ours.features(frames)
        tb_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs = reference_features(frames, name)
        ref_s = time.perf_counter() - start
        feats[name] = (mine, theirs)
        diff = float(np.abs(mine - theirs).max())
        rows.append(Row(f"features {name} ({len(frames)} frames): max |diff|", diff, 0.0,
                        FID_FEATURE_TOL * float(np.abs(theirs).max()), tb_s, ref_s,
                        note=f"reference: PNG files, DataLoader with {workers} workers, batch 50"))
    start = time.perf_counter()
    value = frechet_distance_features(feats["generated"][0], feats["real"][0])
    tb_s = time.perf_counter() - start
    expected = reduced_reference_fid(feats["generated"][1], feats["real"][1])
    rows.append(Row("FID (distance)", value, expected, FID_REL_TOL * abs(expected), tb_s, None,
                    note="reference distance in the features' span; not timed against"))
    return Report("fid", rows, {"clips": [c.id for c in clips], "frames_per_side": len(real),
                                "generated": "ground truth + Gaussian noise sigma 12"},
                  {"pt_inception": label})


# ----------------------------------------------------------------------------------- landmarks
FACE_ALIGNMENT_MISSING = ("face-alignment not installed: pip install 'talkbench[fan]' "
                          "(face-alignment>=1.5; see pyproject.toml for its opencv clash)")


def perf_landmarks(clips: list, folder: Path, frames_per_clip: int = 50, random_init: bool = False
                   ) -> Report:
    from core import weights
    from faces.extractors import build_extractor

    frames = np.concatenate([c.frames[:frames_per_clip] for c in clips])
    truth = np.concatenate([c.landmarks[:frames_per_clip] for c in clips])
    rows: list[Row] = []
    notes: list[str] = []
    n = len(frames)

    def fps(seconds: float) -> float:
        return n / seconds if seconds > 0 else math.nan

    dlib = build_extractor("dlib")
    dlib.detect(frames[:1])  # load the models outside the timing
    start = time.perf_counter()
    res = dlib.detect(frames)
    s = time.perf_counter() - start
    err = float(np.nanmean(np.linalg.norm(res.landmarks - truth, axis=-1)))
    rows.append(Row(f"dlib frames/s ({n} frames, {res.failures} without a face)", fps(s), None, None, s, None,
                    unit="frames/s",
                    note=f"mean distance to synthtalk's exact landmarks {err:.2f} px; no reference "
                         "tool runs dlib's predictor differently"))
    inputs = {"clips": [c.id for c in clips], "frames": n}
    try:
        import face_alignment.api as fa_api
    except ImportError:
        rows.append(Row("FAN / face-alignment get_landmarks", note=FACE_ALIGNMENT_MISSING))
        return Report("landmarks", rows, inputs, {}, notes)
    import torch

    from faces.fan import build_network

    spec = weights.get_spec("fan_2d")
    path, label = weights_file("fan_2d", lambda p: torch.save(build_network().state_dict(), p),
                               folder, random_init)
    with environ(TALKBENCH_WEIGHTS_FAN_2D=str(path)):
        fan = build_extractor("fan")
        fan.detect(frames[:1])
        start = time.perf_counter()
        mine = fan.detect(frames)
        tb_s = time.perf_counter() - start
    # face-alignment fetches its file through torch.hub's cache: point it at the same bytes
    home = torch_home_with(folder, path, spec.url.rsplit("/", 1)[-1])
    with environ(TORCH_HOME=str(home)):
        fa = fa_api.FaceAlignment(fa_api.LandmarksType.TWO_D, device="cpu", face_detector="dlib",
                                  flip_input=False, compile=False)
    start = time.perf_counter()
    theirs = [fa.get_landmarks(frame, detected_faces=[box.tolist()]) if found else None
              for frame, box, found in zip(frames, mine.boxes, mine.found)]
    ref_s = time.perf_counter() - start
    diffs = [float(np.abs(m - t[0]).max()) for m, t in zip(mine.landmarks, theirs) if t]
    rows.append(Row(f"FAN frames/s ({n} frames, {mine.failures} without a face)", fps(tb_s), fps(ref_s),
                    None, tb_s, ref_s, unit="frames/s", note="reference: get_landmarks per frame in talkbench's dlib "
                    "boxes (compile=False, flip_input=False as talkbench's default)"))
    rows.append(Row("FAN landmarks: max |diff| px", max(diffs) if diffs else None, 0.0, LANDMARK_TOL_PX))
    return Report("landmarks", rows, inputs, {"fan_2d": label}, notes)


# ----------------------------------------------------------------------------------- score
def perf_score(protocol_name: str, method: str, clips: int, workers: list[int], folder: Path) -> Report:
    """Frames/s of the whole scorer on `method`'s predictions of the first `clips` test clips, with
    each worker count in `workers`, each with a cold cache of its own. The scorer first scores the
    `ground_truth` row (starting its worker pool and computing the ground-truth side), then
    `method`: the second is what every further row of a `talkbench run` costs, the first includes
    the pool's start (imports and models in every worker). Ratios are against the first count."""
    from baselines import build_method
    from core.cache import Cache
    from bench.pipeline import Session, evaluate
    from bench.runner import predict_all
    from bench.scoring import Scorer

    session = Session.open(protocol_name, progress=False)
    test = session.test[:clips]
    frames = sum(c.num_frames for c in test)
    preds = {}
    for row in ("ground_truth", method):
        preds[row] = folder / "predictions" / row
        preds[row].mkdir(parents=True, exist_ok=True)
        failures = predict_all(build_method(row), test, preds[row], progress=False)
        if failures:
            raise ValueError(f"perf score: {row} failed to predict {sorted(failures)}")
    times: dict[int, dict[str, float]] = {}
    unavailable: list[str] = []
    for count in workers:
        scorer = Scorer(session.protocol, test, session.device, cache=Cache(folder / f"cache-{count}"),
                        evaluators=session.evaluators, workers=count)
        try:
            times[count] = {}
            for row in ("ground_truth", method):
                start = time.perf_counter()
                result = evaluate(session.protocol, scorer, row, preds[row], progress=False)
                times[count][row] = time.perf_counter() - start
        finally:
            scorer.close()
        unavailable = [k for k, m in result["metrics"].items() if m["unavailable"]]
    base = workers[0]
    rows = []
    for count in workers:
        for row, what in (("ground_truth", "first row, pool start included"), (method, "a further row")):
            rows.append(Row(f"score {row} on {protocol_name}, workers={count}: frames/s ({what})",
                            frames / times[count][row], frames / times[base][row], None,
                            times[count][row], times[base][row], unit="frames/s",
                            note=f"{len(test)} clips, {frames} frames, cold cache; ratio against workers={base}"))
    notes = [f"unavailable here (not timed): {', '.join(unavailable)}"] if unavailable else []
    return Report("score", rows, {"protocol": protocol_name, "method": method, "clips": [c.id for c in test],
                                  "frames": frames, "workers": workers}, {}, notes)


# ----------------------------------------------------------------------------------- output
def format_table(report: Report) -> str:
    from tabulate import tabulate

    def num(x: Optional[float]) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"

    def tol(r: Row) -> str:
        if r.tolerance is None:
            return "-"
        return f"{r.tolerance:.3g} ({'ok' if r.agrees else 'FAIL'})" if r.diff is not None else f"{r.tolerance:.3g}"

    table = tabulate([[r.stage, num(r.talkbench), num(r.reference), num(r.diff), tol(r),
                       num(r.talkbench_s), num(r.reference_s),
                       "-" if r.ratio is None else f"{r.ratio:.2f}x"] for r in report.rows],
                     headers=["stage", "talkbench", "reference", "|diff|", "tolerance", "talkbench s",
                              "reference s", "ratio (ref/tb)"], tablefmt="github")
    extra = [f"- {r.stage}: {r.note}" for r in report.rows if r.note] + [f"- {n}" for n in report.notes]
    return table + ("\n" + "\n".join(extra) if extra else "")


def report_json(report: Report) -> dict:
    return {"kind": "perf", "what": report.what, "machine": machine(), "packages": versions(),
            "inputs": report.inputs, "weights": report.weights, "notes": report.notes,
            "rows": [r.as_dict() for r in report.rows]}


def run(what: str, args: argparse.Namespace) -> Report:
    if getattr(args, "repeat", 1) < 1:
        raise ValueError(f"--repeat: expected at least 1, got {args.repeat}")
    if what not in WHATS:
        raise ValueError(f"talkbench perf: unknown stage {what!r}; known: prepare, {', '.join(WHATS)}")
    with tempfile.TemporaryDirectory(prefix=f"talkbench-perf-{what}-") as tmp:
        folder = Path(tmp)
        if what == "score":
            if not args.protocol:
                raise ValueError("talkbench perf score: name a protocol, e.g. `talkbench perf score synthtalk`")
            return perf_score(args.protocol, args.method, args.clips, args.workers_list, folder)
        clips = synthtalk_clips(args.clips)
        if what == "lse":
            return perf_lse(clips, folder, args.random_init, args.crop, args.repeat)
        if what == "fid":
            return perf_fid(clips, folder, args.random_init, args.frames or 25)
        return perf_landmarks(clips, folder, args.frames or 50, args.random_init)


def cli_perf(args: argparse.Namespace) -> int:
    """`talkbench perf lse|fid|landmarks|score`: print the table; write JSON with --write / --out.
    Exit 1 when a value that must agree does not."""
    report = run(args.what, args)
    print(format_table(report))
    out_dir = Path(args.out) if args.out else None
    if args.write and out_dir is None:
        from core.paths import repo_root

        out_dir = repo_root() / "results" / "perf"
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{report.what}.json"
        path.write_text(json.dumps(report_json(report), indent=2, default=str) + "\n")
        print(f"written: {path}")
    if report.disagreements:
        print(f"talkbench perf {args.what}: {len(report.disagreements)} value(s) outside tolerance")
        return 1
    return 0
