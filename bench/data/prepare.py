"""The preprocessing pipeline: a dataset's RawItems -> cached, protocol-conformant Clips.

For each RawItem (`bench/data/raw.py`):

1. decode the video resampled to the protocol's fps and the audio at 16 kHz mono over the item's
   [start, end) (`bench/data/decode.py`);
2. crop every frame by the protocol's recipe and resize it to `resolution` (`faces/crops.py`;
   the face recipes first run the landmark backend on a downscaled copy of the *source* frames,
   aspect ratio kept, and crop around what it finds). A non-square source is never stretched
   silently: crop `none` on it fails the item (`non_square_stretch`) unless
   `crop_params: {stretch: true}`;
3. store the frames as a near-lossless H.264 mp4 (`bench/data/store.py`);
4. run the protocol's landmark backend on the stored frames (as decoded from that file), keeping
   a per-frame found mask, and estimate head pose (`pnp`: solvePnP of the landmarks; `none`
   skips it; other backends by name from `faces.pose.POSE_BACKENDS`);
5. write arrays (landmarks with NaN where no face, found mask, pose, audio, crop windows) to an
   npz beside the mp4.

Failures are manifest entries with a reason code and a message naming the file, never crashes and
never silent drops: `missing_video`, `missing_audio`, `unreadable`, `truncated`, `no_audio`,
`non_square_stretch` (crop `none` on a non-square frame without `stretch: true`),
`no_face` (no face in any stored frame, or none in the source frames a face crop needs),
`face_missing_frames` (see below), `av_duration_mismatch` (audio and video lengths differ by more
than `AV_TOLERANCE_S`), `silent_audio` (RMS below `SILENCE_RMS`), `too_short` (fewer frames than
the protocol's window, or too few for the time split to leave a train and a test part; under
split rule `time` a windowed part shorter than one window is kept whole and noted in the entry's
`notes` instead), `error` (anything unexpected, with the exception).

Frames without a face: a frame where the landmark backend finds no face is kept, masked (False in
the found mask, NaN landmarks in the cache) and counted in the manifest entry
(`missing_face_frames`; per split part `missing_face_by_part` under split rule `time`). A Clip's
landmarks and pose are gap-filled over those frames for the methods that need every frame
(`load_clip`), and metrics leave them out. Whether an item has too many is decided per protocol
(`apply_protocol_rules`, after the cache), with one limit, `MAX_MISSING_FRACTION` (25%):
  * split rule `time` (one long person-specific video cut into train and test by time): only the
    *test* part counts; the item fails `face_missing_frames` when more than 25% of the test
    part's frames have no face. Missing faces in the train part never reject the video (it is
    often the person's only one); they are masked, gap-filled and counted;
  * every other split: more than 25% of the item's frames (each item is a short clip scored
    whole or in windows).
The manifest states the rule it applied (`face_rule`).

Cache: `$TALKBENCH_HOME/prepared/<key[:2]>/<key>/` holds `frames.mp4`, `arrays.npz` and
`info.json`. The key is the sha256 of the raw files' bytes (video and audio), the segment, every
preprocessing parameter (crop parameters with their defaults filled in, the landmark extractor's
identity, the pose backend), the storage settings and `PIPELINE_VERSION`, so changing any of
them can never return an old clip. An entry is built in `prepared/.tmp/<key>-<pid>-<n>/` and
renamed into place, so a killed prepare leaves at most a temp folder (removed by the next prepare
once its process is gone) and resumes from the entries that are complete. Deterministic failures
(a corrupt file, no face) are cached too, so they are not recomputed; missing files are not.

Work is spread over `workers` spawned processes (each builds its own landmark extractor); every
item is computed independently, so 1 and N workers give the same files.

A manifest (JSON) per protocol and dataset root lists every item: status ok/failed, reason,
detail, cache key, frames, seconds. `cli_prepare` prints its summary and path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any, Optional

import numpy as np

from core import cache as cache_mod
from core import distributed
from core import hashing
from core.hashing import code_fingerprint, key_of
from core.io import write_json
from core.types import Clip
from faces import crops
from faces.extractors import build_extractor
from faces.pose import POSE_BACKENDS
from bench.data.decode import MediaError, iter_frames, probe_video, read_audio
from bench.data.raw import RawItem
from bench.data.store import CRF, PRESET, Mp4Writer, iter_stored, read_stored
from core.paths import talkbench_home

log = logging.getLogger(__name__)

PIPELINE_VERSION = "prepare-1"
MAX_MISSING_FRACTION = 0.25  # more frames without a face than this (in the test part, for split
# rule time) and the item is unusable: see the module docstring
AV_TOLERANCE_S = 0.2  # audio and video lengths may differ by this much (container padding, AAC)
SILENCE_RMS = 1e-4  # -80 dBFS: a recording this quiet has no speech to drive anything
DETECT_CHUNK = 32  # frames per landmark-extractor call (bounds memory on long videos)


class PrepareFailure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ----------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings:
    """The protocol's preprocessing, with defaults filled in (everything a prepared clip depends on)."""

    fps: float
    sample_rate: int
    resolution: int
    crop: str
    crop_params: dict[str, Any]
    landmark_backend: str
    landmark_params: dict[str, Any]
    pose_backend: str
    extractor_identity: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_preprocessing(cls, pre: dict) -> "Settings":
        if int(pre["resolution"]) % 2:
            raise ValueError(f"preprocessing.resolution must be even (H.264 yuv420p), got {pre['resolution']}")
        pose = pre.get("pose_backend", "pnp")
        if pose != "none" and pose not in POSE_BACKENDS:  # a protocol is checked on load; a bare dict here
            raise ValueError(f"preprocessing.pose_backend: {POSE_BACKENDS.unknown(pose)}")
        extractor = build_extractor(pre.get("landmark_backend", "dlib"), **dict(pre.get("landmark_params") or {}))
        return cls(fps=float(pre["fps"]), sample_rate=int(pre.get("sample_rate", 16000)),
                   resolution=int(pre["resolution"]), crop=pre.get("crop", "none"),
                   crop_params=crops.crop_params(pre.get("crop", "none"), pre.get("crop_params")),
                   landmark_backend=pre.get("landmark_backend", "dlib"),
                   landmark_params=dict(pre.get("landmark_params") or {}), pose_backend=pose,
                   extractor_identity=extractor.identity())

    def identity(self) -> dict[str, Any]:
        return {"version": PIPELINE_VERSION, "fps": self.fps, "sample_rate": self.sample_rate,
                "resolution": self.resolution, "crop": self.crop, "crop_params": self.crop_params,
                "landmarks": self.extractor_identity, "landmark_params": self.landmark_params,
                "pose_backend": self.pose_backend, "store": {"codec": "libx264", "crf": CRF, "preset": PRESET}}


# ----------------------------------------------------------------------------- cache paths and keys

def prepared_root() -> Path:
    return talkbench_home() / "prepared"


def file_sha256(path: Path, root: Path) -> str:
    """sha256 of a file's bytes, remembered by (path, size, mtime) so a cache hit does not reread it."""
    stat = path.stat()
    memo = cache_mod.Cache(root / "filehash")
    memo_key = key_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    known = memo.get_json("sha256", memo_key)
    if known:
        return known
    digest = hashing.file_sha256(path)
    memo.put_json("sha256", memo_key, digest)
    return digest


def cache_key(item: RawItem, settings: Settings, root: Path) -> str:
    audio = file_sha256(Path(item.audio), root) if item.audio is not None else None
    return key_of("prepared-clip", file_sha256(Path(item.video), root), audio,
                  item.start, item.end, settings.identity(), pipeline_code())


def pipeline_code() -> str:
    """Fingerprint of the preprocessing code (this module and the data, face and core modules it
    uses): a prepared clip made by other code is never returned."""
    return code_fingerprint(__name__, packages=("core", "faces", "bench.data"))


def entry_dir(root: Path, key: str) -> Path:
    return root / key[:2] / key


def read_entry(path: Path) -> Optional[dict]:
    """The info of a complete cache entry, or None (absent, or an entry missing a file)."""
    try:
        info = json.loads((path / "info.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if info.get("status") == "ok" and not ((path / "arrays.npz").is_file() and (path / "frames.mp4").is_file()):
        return None
    return info


def clean_stale_temp(root: Path) -> int:
    """Remove temp folders left by prepare processes that are no longer running."""
    removed = 0
    tmp_root = root / ".tmp"
    for path in tmp_root.glob("*") if tmp_root.is_dir() else ():
        try:
            pid = int(path.name.split("-")[1])
        except (IndexError, ValueError):
            pid = -1
        if pid > 0 and pid != os.getpid() and _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- one item

_EXTRACTORS: dict[str, Any] = {}  # per process: each worker builds its own
_TEMP_COUNTER = count()


def _extractor(settings: Settings):
    name = json.dumps([settings.landmark_backend, settings.landmark_params], sort_keys=True)
    if name not in _EXTRACTORS:
        _EXTRACTORS[name] = build_extractor(settings.landmark_backend, **settings.landmark_params)
    return _EXTRACTORS[name]


def preflight(settings: Settings) -> None:
    """Load the landmark and pose models once before any item runs, so a missing package or
    weights file is one clear error naming the fix, not the same failure on every item."""
    from core.errors import MetricUnavailable

    try:
        # A blank frame has no face: the detector runs and the landmark model is loaded.
        _extractor(settings).detect(np.zeros((1, 64, 64, 3), np.uint8))
    except MetricUnavailable as exc:
        raise ValueError(f"preprocessing.landmark_backend {settings.landmark_backend!r} is "
                         f"unavailable: {exc}") from None
    if settings.pose_backend == "hopenet":
        from faces.hopenet import load_model

        try:
            load_model()
        except MetricUnavailable as exc:
            raise ValueError(f"preprocessing.pose_backend 'hopenet' is unavailable: {exc}") from None


def prepare_item(item: RawItem, settings: Settings, root: Path) -> dict:
    """Prepare one item (or find it in the cache); return its manifest entry. Never raises."""
    entry: dict[str, Any] = {"status": "failed", "reason": None, "detail": None, "key": None,
                             "frames": 0, "seconds": 0.0}
    try:
        if item.video is None or not Path(item.video).is_file():
            raise PrepareFailure("missing_video", f"{item.video}: video file missing")
        if item.audio is not None and not Path(item.audio).is_file():
            raise PrepareFailure("missing_audio", f"{item.audio}: audio file missing")
        key = cache_key(item, settings, root)
        entry["key"] = key
        final = entry_dir(root, key)
        info = read_entry(final)
        if info is None:
            info = _build_entry(item, settings, root, key)
        entry.update({k: info[k] for k in ("status", "reason", "detail", "frames", "seconds")})
        entry["missing_face_frames"] = info.get("missing_face_frames", 0)
    except PrepareFailure as exc:
        entry.update(reason=exc.reason, detail=exc.detail)
    except Exception as exc:  # one item's bug is that item's failure, not the whole prepare's
        log.exception("preparing %s failed", item.id)
        entry.update(reason="error", detail=f"{item.video}: {type(exc).__name__}: {exc}")
    return entry


def _build_entry(item: RawItem, settings: Settings, root: Path, key: str) -> dict:
    tmp = root / ".tmp" / f"{key[:16]}-{os.getpid()}-{next(_TEMP_COUNTER)}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            info = _process(item, settings, tmp)
        except (PrepareFailure, MediaError) as exc:  # deterministic: remembered in the cache
            for name in ("frames.mp4", "arrays.npz"):
                (tmp / name).unlink(missing_ok=True)
            info = {"status": "failed", "reason": exc.reason, "detail": str(exc), "frames": 0,
                    "seconds": 0.0}
        info.update(key=key, version=PIPELINE_VERSION, settings=settings.identity())
        (tmp / "info.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        final = entry_dir(root, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and read_entry(final) is None:  # an incomplete entry (old or foreign)
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same entry first: keep theirs
            if read_entry(final) is None:
                raise
        return info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _process(item: RawItem, settings: Settings, out: Path) -> dict:
    video = Path(item.video)
    info = probe_video(video)
    stretched = crops.stretch_problem(settings.crop, settings.crop_params, info.width, info.height)
    if stretched:
        raise PrepareFailure("non_square_stretch", f"{video}: {stretched}")
    start = float(item.start or 0.0)
    want = None if item.end is None else float(item.end) - start
    if want is not None and want <= 0:
        raise PrepareFailure("too_short", f"{video}: empty segment [{item.start}, {item.end})")
    # Audio first: it is cheap and a missing track or silence fails the item before any video work.
    audio_path = Path(item.audio) if item.audio is not None else video
    origin = info.start_time if item.audio is None else 0.0
    audio = read_audio(audio_path, settings.sample_rate, start, want, origin)
    if audio.size and float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < SILENCE_RMS:
        raise PrepareFailure("silent_audio", f"{audio_path}: silent audio (RMS below {SILENCE_RMS})")
    # Face recipes decode the video twice (streaming): the crop windows are smoothed over time, so
    # every frame's detection is needed before the first crop, and holding a long source video in
    # memory instead is not an option at 1080p.
    frames = partial(iter_frames, video, settings.fps, item.start, item.end, info)

    windows = None
    if crops.needs_face(settings.crop):
        windows = _face_windows(frames(), settings, info, video)
    else:  # one window for every frame
        static = crops.static_windows(settings.crop, settings.crop_params, info.width, info.height, 1)[0]
    mp4 = out / "frames.mp4"
    n = 0
    interpolation = crops.resize_interpolation(settings.crop)
    pad_value = int(settings.crop_params.get("pad_value", 0))
    with Mp4Writer(mp4, settings.fps, settings.resolution) as writer:
        for frame in frames():
            if windows is None:
                window = static
            else:
                if n >= len(windows):
                    raise PrepareFailure("unreadable", f"{video}: decodes differently on a second read")
                window = windows[n]
            writer.write(crops.crop_frame(frame, window, settings.resolution, pad_value, interpolation))
            n += 1
    if n == 0:
        raise PrepareFailure("too_short", f"{video}: no frame in the segment")
    if windows is None:
        windows = crops.static_windows(settings.crop, settings.crop_params, info.width, info.height, n)
    seconds = n / settings.fps

    # Durations: the audio must cover the video (and, for a whole file, not run far past it).
    have = audio.size / settings.sample_rate
    if have < seconds - AV_TOLERANCE_S or (item.end is None and have > seconds + AV_TOLERANCE_S):
        raise PrepareFailure("av_duration_mismatch",
                             f"{audio_path}: audio lasts {have:.2f} s, video {video.name} {seconds:.2f} s "
                             f"(tolerance {AV_TOLERANCE_S} s)")
    samples = int(round(n * settings.sample_rate / settings.fps))
    audio = np.pad(audio[:samples], (0, max(0, samples - audio.size)))

    landmarks, found, boxes = _detect(iter_stored(mp4), settings)
    if len(found) != n:
        raise PrepareFailure("unreadable", f"{mp4}: stored {n} frames, read back {len(found)}")
    missing = int((~found).sum())
    if missing == n:
        raise PrepareFailure("no_face", f"{video}: no face found in any of the {n} frames")
    # Too many missing faces is the protocol's call (apply_protocol_rules): the cache keeps the mask.
    pose = _pose(settings, landmarks, found, mp4)
    arrays = {"landmarks": landmarks, "found": found, "boxes": boxes, "audio": audio.astype(np.float32),
              "windows": windows.astype(np.int64)}
    if pose is not None:
        arrays["pose"] = pose
    np.savez(out / "arrays.npz", **arrays)
    return {"status": "ok", "reason": None, "detail": None, "frames": n, "seconds": seconds,
            "missing_face_frames": missing,
            "source": {"width": info.width, "height": info.height, "fps": info.fps}}


def _detect(frames, settings: Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Landmarks, found mask and boxes of a stream of frames, in chunks."""
    extractor = _extractor(settings)
    parts, chunk = [], []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == DETECT_CHUNK:
            parts.append(extractor.detect(np.stack(chunk)))
            chunk = []
    if chunk:
        parts.append(extractor.detect(np.stack(chunk)))
    if not parts:
        return np.zeros((0, 68, 2), np.float32), np.zeros(0, bool), np.zeros((0, 4), np.float32)
    return (np.concatenate([p.landmarks for p in parts]), np.concatenate([p.found for p in parts]),
            np.concatenate([p.boxes for p in parts]))


def _face_windows(frames, settings: Settings, info, video: Path) -> np.ndarray:
    """Crop windows of a face recipe, from the landmark backend on downscaled source frames."""
    import cv2

    scale = min(1.0, float(settings.crop_params["detect_size"]) / max(info.width, info.height))
    size = (max(1, int(round(info.width * scale))), max(1, int(round(info.height * scale))))

    def small(stream):
        for frame in stream:
            yield frame if scale == 1.0 else cv2.resize(frame, size, interpolation=cv2.INTER_AREA)

    landmarks, found, boxes = _detect(small(frames), settings)
    if not found.any():
        raise PrepareFailure("no_face", f"{video}: no face found in any source frame for the "
                                        f"{settings.crop} crop")
    # Back to source pixels (pixel-centre convention, as crops.transform_points).
    sx, sy = info.width / size[0], info.height / size[1]
    landmarks = (landmarks + 0.5) * np.array([sx, sy], np.float32) - 0.5
    boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
    return crops.face_windows(settings.crop, settings.crop_params, landmarks, boxes, found,
                              (info.width, info.height))


def _pose(settings: Settings, landmarks: np.ndarray, found: np.ndarray, mp4: Path) -> Optional[np.ndarray]:
    """T x 6 head pose (yaw, pitch, roll in degrees, tx, ty, tz in mm), NaN where not estimated."""
    if settings.pose_backend == "none":
        return None
    from faces.pose import PNP_POINT_SETS, build_pose_backend, solve_head_pose

    size = (float(settings.resolution), float(settings.resolution))
    if settings.pose_backend == "pnp":
        idx = list(PNP_POINT_SETS["rigid"])
        angles, trans, _ = solve_head_pose(landmarks[:, idx], idx, size, found)
        return np.concatenate([angles, trans], axis=1).astype(np.float32)
    from core.types import ClipPair

    backend = build_pose_backend(settings.pose_backend)
    frames = read_stored(mp4, len(found))
    pair = ClipPair("prepare", {"frames": frames, "landmarks": landmarks}, {}, frame_mask=found,
                    fps=settings.fps)
    angles, ok = backend.angles(pair)
    out = np.full((len(found), 6), np.nan, np.float32)
    out[:, :3] = np.where(ok[:, None], angles, np.nan)
    return out


# ----------------------------------------------------------------------------- many items

def _work(job: tuple[RawItem, Settings, str]) -> dict:
    item, settings, root = job
    return prepare_item(item, settings, Path(root))


def prepare_items(items: list[RawItem], settings: Settings, workers: int = 1, progress: bool = True,
                  root: Optional[Path] = None) -> dict[str, dict]:
    """Manifest entries of `items` (by id, in their order), preparing what the cache lacks."""
    from tqdm import tqdm

    root = Path(root) if root is not None else prepared_root()
    root.mkdir(parents=True, exist_ok=True)
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"dataset items have duplicate ids: {dup[:5]}")
    w = distributed.world()
    if w.is_main:
        clean_stale_temp(root)
    distributed.barrier(w)
    # under torchrun each rank prepares its share (into a prepared root every rank sees)
    jobs = distributed.shard([(item, settings, str(root)) for item in items], w)
    bar = tqdm(total=len(jobs), desc="prepare", unit="clip", disable=not progress)
    entries: dict[str, dict] = {}
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                entries[job[0].id] = _work(job)
                bar.update()
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")  # no forked torch/dlib state
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                for job, entry in zip(jobs, pool.map(_work, jobs)):
                    entries[job[0].id] = entry
                    bar.update()
    finally:
        bar.close()
    if w.distributed:
        gathered: dict[str, dict] = {}
        for part in distributed.gather(entries, w):
            gathered.update(part)
        entries = {i: gathered[i] for i in ids}
    return entries


def load_clip(item: RawItem, entry: dict, root: Optional[Path] = None, fps: float = 25.0,
              sample_rate: int = 16000) -> Clip:
    """A prepared item as a Clip; frames load lazily from the stored mp4.

    The Clip's landmarks (and pose) are gap-filled: frames where no face was found take the
    landmarks linearly interpolated from the nearest found frames (held at the ends), so methods
    get a value on every frame; those frames are False in `Clip.landmarks_found`, so metrics leave
    them out (the cache keeps NaN there), and they are counted in the manifest.
    """
    root = Path(root) if root is not None else prepared_root()
    path = entry_dir(root, entry["key"])
    with np.load(path / "arrays.npz") as data:
        arrays = {k: data[k] for k in data.files}
    found = arrays["found"].astype(bool)
    n = int(found.size)
    meta = {**item.meta, "dataset_item": item.id, "source_video": str(item.video),
            "prepared_key": entry["key"]}
    pose = _fill_gaps(arrays["pose"], np.isfinite(arrays["pose"]).all(axis=1)) if "pose" in arrays else None
    return Clip(id=item.id, speaker=item.speaker, audio=arrays["audio"],
                landmarks=_fill_gaps(arrays["landmarks"], found), landmarks_found=found, fps=fps,
                sample_rate=sample_rate, emotion=item.emotion, intensity=item.intensity, text=item.text, pose=pose, meta=meta,
                frames_loader=partial(read_stored, path / "frames.mp4", n))


def _fill_gaps(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if good.all() or not good.any():
        return values
    t, known = np.arange(len(values)), np.flatnonzero(good)
    flat = values.reshape(len(values), -1).copy()
    for j in range(flat.shape[1]):
        flat[:, j] = np.interp(t, known, flat[known, j])
    return flat.reshape(values.shape)


# ----------------------------------------------------------------------------- a protocol's dataset

@dataclass
class PreparedDataset:
    clips: list[Clip]
    manifest: dict
    manifest_path: Path
    speakers: list[str]  # every speaker discovered, including those whose items all failed


def manifest_path(protocol, data_root: Path) -> Path:
    tag = key_of(protocol.hash, str(Path(data_root).resolve()))[:12]
    return prepared_root() / "manifests" / f"{protocol.id}-{tag}.json"


def window_frames(protocol) -> int:
    """Frames the protocol's windowing needs in a clip (1 for whole clips)."""
    if protocol.windowing["mode"] != "fixed":
        return 1
    return int(round(protocol.windowing["seconds"] * protocol.fps))


def face_rule(protocol) -> str:
    """The missing-face rule `apply_protocol_rules` applies, in words (for the manifest)."""
    if protocol.split["rule"] == "time":
        return (f"an item fails face_missing_frames when no face is found in more than "
                f"{MAX_MISSING_FRACTION:.0%} of the frames of its test part (split rule time); frames "
                f"without a face elsewhere (the train part) are masked, gap-filled and counted, never "
                f"a reason to reject the video")
    return (f"an item fails face_missing_frames when no face is found in more than "
            f"{MAX_MISSING_FRACTION:.0%} of its frames; fewer are masked, gap-filled and counted")


def apply_protocol_rules(protocol, entries: dict[str, dict], root: Optional[Path] = None) -> None:
    """Judge, in place, the prepared entries against the protocol: too many frames without a face
    fails `face_missing_frames` (`face_rule`); too few frames fails `too_short`. Under split rule
    `time` the entry also gets its missing faces and windows per part (`missing_face_by_part`,
    `windows_by_part`), and a windowed part shorter than one window is kept whole and noted
    (`notes`) rather than dropping the person's only video."""
    from bench.protocol import ProtocolError, time_split_bounds

    root = Path(root) if root is not None else prepared_root()
    need = window_frames(protocol)
    fixed = protocol.windowing["mode"] == "fixed"
    windowed = protocol.windowing["parts"] if fixed else []
    hop = max(1, int(round(protocol.windowing["hop"] * protocol.fps))) if fixed else 1
    limit = f"(limit {MAX_MISSING_FRACTION:.0%})"
    for item_id, entry in entries.items():
        if entry["status"] != "ok":
            continue
        n = int(entry["frames"])
        with np.load(entry_dir(root, entry["key"]) / "arrays.npz") as data:
            missing = ~data["found"].astype(bool)
        if protocol.split["rule"] != "time":
            if missing.sum() > MAX_MISSING_FRACTION * n:
                entry.update(status="failed", reason="face_missing_frames",
                             detail=f"no face found in {int(missing.sum())} of its {n} frames {limit}")
            elif n < need:
                entry.update(status="failed", reason="too_short",
                             detail=f"{n} frames, the protocol's window needs {need}")
            continue
        try:
            bounds = time_split_bounds(n, protocol.fps, protocol.split, f"item {item_id}")
        except ProtocolError as exc:
            entry.update(status="failed", reason="too_short", detail=str(exc))
            continue
        parts = {name: (a, b) for name, (a, b) in bounds.items() if b > a}
        entry["missing_face_by_part"] = {name: int(missing[a:b].sum()) for name, (a, b) in parts.items()}
        counts = {name: len(range(0, b - a - need + 1, hop)) for name, (a, b) in parts.items()
                  if name in windowed}
        if counts:
            entry["windows_by_part"] = counts
        notes = [f"{name} part: {parts[name][1] - parts[name][0]} frames, shorter than one "
                 f"{need}-frame window: kept as one whole clip" for name, k in counts.items() if k == 0]
        if notes:
            entry["notes"] = notes
        a, b = bounds["test"]
        if entry["missing_face_by_part"]["test"] > MAX_MISSING_FRACTION * (b - a):
            entry.update(status="failed", reason="face_missing_frames",
                         detail=f"no face found in {entry['missing_face_by_part']['test']} of the "
                                f"{b - a} frames of its test part (from {a / protocol.fps:.2f} s) {limit}")


def prepare_protocol(protocol, root: Optional[str | Path] = None, workers: int = 1,
                     progress: bool = True) -> PreparedDataset:
    """Discover the protocol's dataset under `root`, prepare every item, write the manifest."""
    from bench.data.raw import dataset_root, source

    data_root = dataset_root(protocol.dataset, root)
    items = source(protocol.dataset)(data_root, dict(protocol.dataset_options))
    settings = Settings.from_preprocessing(protocol.preprocessing)
    preflight(settings)
    entries = prepare_items(items, settings, workers, progress)
    apply_protocol_rules(protocol, entries)
    manifest = build_manifest(protocol, data_root, settings, entries)
    path = manifest_path(protocol, data_root)
    if distributed.world().is_main:  # every rank holds the same manifest; one writes it
        write_json(path, manifest)
    by_id = {item.id: item for item in items}
    clips = [load_clip(by_id[i], e, fps=settings.fps, sample_rate=settings.sample_rate)
             for i, e in entries.items() if e["status"] == "ok"]
    return PreparedDataset(clips, manifest, path, sorted({item.speaker for item in items}))


def build_manifest(protocol, data_root: Path, settings: Settings, entries: dict[str, dict]) -> dict:
    failed: dict[str, list[str]] = {}
    for item_id, entry in entries.items():
        if entry["status"] != "ok":
            failed.setdefault(entry["reason"], []).append(item_id)
    return {
        "kind": "data_preparation", "protocol": protocol.id, "protocol_hash": protocol.hash,
        "dataset": protocol.dataset, "root": str(Path(data_root).resolve()),
        "pipeline_version": PIPELINE_VERSION, "settings": settings.identity(),
        "face_rule": face_rule(protocol),
        "items": len(entries), "ok": sum(e["status"] == "ok" for e in entries.values()),
        "failed": {reason: sorted(ids) for reason, ids in sorted(failed.items())},
        "entries": entries,
    }


def summary_lines(manifest: dict) -> list[str]:
    lines = [f"{manifest['ok']} of {manifest['items']} items prepared"]
    for reason, ids in manifest["failed"].items():
        shown = ", ".join(ids[:5]) + (f", ... ({len(ids) - 5} more)" if len(ids) > 5 else "")
        lines.append(f"failed ({reason}): {len(ids)}  [{shown}]")
    return lines


def cli_prepare(args) -> int:
    from bench.protocol import load_protocol

    protocol = load_protocol(args.protocol)
    if protocol.dataset == "synthtalk":
        print("synthtalk needs no preparation: its clips are generated at the protocol's settings "
              "(`talkbench data synthtalk`)")
        return 0
    prepared = prepare_protocol(protocol, args.root, max(1, int(args.workers or 1)),
                                progress=not getattr(args, "quiet", False))
    for line in summary_lines(prepared.manifest):
        print(line)
    print(f"manifest: {prepared.manifest_path}")
    return 0 if prepared.manifest["ok"] else 1
