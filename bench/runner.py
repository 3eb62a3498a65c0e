"""The runner: protocol -> clips -> method (train or load) -> predictions -> metrics -> results.

Everything it makes lands under `$TALKBENCH_HOME/runs/<protocol>/<row>/<config>-seed<seed>/`
(checkpoint, predictions as .npz + .mp4) and in content-addressed caches, so a killed run resumes
where it stopped. Result JSONs go to `results/<protocol>/`, from which the report is built.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from baselines import build_method, method_class
from baselines.base import Method
from core import distributed
from core.errors import CheckpointError
from core.hashing import code_fingerprint, file_sha256, key_of
from core.paths import talkbench_home
from core.types import Clip, ClipPair, MethodInput
from bench.data.clips import clip_hash, prepare_splits
from bench.data.video import Encoding
from bench.pipeline import Session
from bench.predictions import PredictionError, save_prediction, validate
from bench.protocol import MethodSpec, Protocol, load_protocol
from bench.report import write_report
from bench.results import (DETECTOR_FLOOR, RUN_TIMINGS_FILE, SEEDS_SUFFIX, read_result,
                           results_dir, run_timings, seeds_result, write_result)
from bench.scoring import Scorer
from bench.motion_routes import MOTION_FLOOR, motion_floor
from metrics.landmark import LandmarkMetric

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def run(protocol_name: str, methods: Optional[list[str]] = None, device: str = "cpu", seed: int = 0,
        preset: Optional[str] = None, out_root: Optional[Path] = None, progress: bool = True,
        ablations: bool = False, checkpoint: Optional[Path] = None, data_root: Optional[Path] = None,
        workers: int = 1, seeds: Optional[list[int]] = None, allow_unpinned: bool = False) -> Path:
    """Run the protocol's methods (or `methods`), write result JSONs and the report; return the
    results dir. `ablations` adds each method's ablation variants as rows; `checkpoint` loads that
    file instead of training (one method only). A real dataset is read from `data_root` and
    prepared with `workers` processes; its preparation failures go to `DATA_FILE` in the results.

    `seeds` (replaces `seed`): each trainable method is trained, predicted and scored once per seed;
    `<row>.json` holds the first seed's result as usual and `<row>.seeds.json` every seed's metric
    values (`bench.results.seeds_result`), from which the report gives the spread across seeds.
    Rows with nothing to learn run once: their predictions do not depend on the seed."""
    run_start = time.perf_counter()
    protocol = load_protocol(protocol_name)
    specs = select_methods(protocol, methods, preset, ablations)
    if seeds is not None:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"--seeds needs distinct seeds, got {seeds}")
        if checkpoint is not None:
            raise ValueError("--seeds trains once per seed: it does not apply with --checkpoint")
        seed = seeds[0]
    if checkpoint is not None:
        if len(specs) != 1:
            raise ValueError("--checkpoint loads one method's weights: name exactly one with --methods")
        if not Path(checkpoint).is_file():
            raise CheckpointError(f"checkpoint {checkpoint} does not exist")
    session = Session.open(protocol, device, progress, data_root, workers,  # trains experts if missing
                           allow_unpinned=allow_unpinned)
    try:
        command = {"rows": [spec.row for spec in specs], "seeds": seeds if seeds is not None else [seed],
                   "preset": preset, "ablations": ablations, "workers": workers}
        return run_session(session, specs, seed, seeds, out_root, progress, checkpoint, command, run_start,
                           data_root)
    finally:
        session.close()


def run_session(session: Session, specs: list[MethodSpec], seed: int, seeds: Optional[list[int]],
                out_root: Optional[Path], progress: bool, checkpoint: Optional[Path], command: dict,
                run_start: float, data_root: Optional[Path] = None) -> Path:
    """`run` after the session is open: every row, the floors, the timings and the report. Under
    torchrun every rank runs this (each predicts and scores its share of the clips); only rank 0
    writes."""
    protocol = session.protocol
    main = distributed.world().is_main
    splits = session.splits
    out = results_dir(protocol, out_root)
    session.write_common(out)
    env = session.environment()
    # Checkpoints and predictions are only reused for exactly this data: the run folder is keyed by
    # the protocol and the content of every clip (a rebuilt or regenerated corpus gets a new folder).
    data_key = key_of(protocol.hash, {name: [clip_hash(c) for c in clips] for name, clips in splits.items()})[:12]
    row_seeds = {spec.row: seeds if seeds is not None and method_class(spec.name).trainable else [seed]
                 for spec in specs}
    in_workers: dict[tuple[str, int], dict] = {}
    parallel_s: Optional[float] = None
    # under torchrun the ranks train each row together (data-parallel), not rows side by side
    workers = int(command.get("workers") or 1)
    if workers > 1 and checkpoint is None and not distributed.world().distributed:
        start = time.perf_counter()
        in_workers = fit_in_workers(session, specs, row_seeds, data_key, workers, data_root,
                                    previous=last_timings(out))
        parallel_s = time.perf_counter() - start if in_workers else None
    row_timings: dict[str, list[dict]] = {}
    for spec in specs:
        per_seed: dict[int, dict] = {}
        for i, s in enumerate(row_seeds[spec.row]):
            result = run_row(session, spec, s, data_key, env, out if i == 0 else None, checkpoint, progress)
            per_seed[s] = result
            timed = {"seed": s, **result.get("timings", {})}
            if (spec.row, s) in in_workers:  # fitted and predicted in a worker: its seconds, plus the load here
                worker = in_workers[(spec.row, s)]
                timed["fit_or_load_s"] = timed.get("fit_or_load_s", 0.0) + worker["fit_s"]
                timed["predict_s"] = timed.get("predict_s", 0.0) + worker["predict_s"]
                timed["in_worker"] = True
            row_timings.setdefault(spec.row, []).append(timed)
        if len(row_seeds[spec.row]) > 1 and main:
            write_result(out / f"{spec.row}{SEEDS_SUFFIX}", seeds_result(spec.row, per_seed, env))
            log.info("%s: wrote %s", spec.row, out / f"{spec.row}{SEEDS_SUFFIX}")
    stages = dict(session.timings)
    if parallel_s is not None:
        stages["fit_workers_s"] = parallel_s
    if protocol.preprocessing.get("landmark_backend") and splits["test"][0].has_frames:
        start = time.perf_counter()
        floor = detector_floor(protocol, session.scorer(), env)
        if main:
            write_result(out / f"{DETECTOR_FLOOR}.json", floor)
        stages["detector_floor_s"] = time.perf_counter() - start
        start = time.perf_counter()
        floor = motion_floor(protocol, session.scorer(), env)
        if floor["metrics"] and main:
            write_result(out / f"{MOTION_FLOOR}.json", floor)
        stages["motion_floor_s"] = time.perf_counter() - start
    if main:
        write_result(out / RUN_TIMINGS_FILE, run_timings(stages, row_timings, time.perf_counter() - run_start,
                                                         command, env))
        write_report(protocol, out)
    return out


def row_workdir(protocol: Protocol, spec: MethodSpec, method: Method, seed: int, data_key: str,
                checkpoint: Optional[Path] = None) -> Path:
    """The run folder of one row and seed: keyed by the method's config, the seed, the data and the
    method's code (an edited method is retrained, never loaded from the old code's checkpoint,
    whose predictions live in the same folder)."""
    code = code_fingerprint(type(method))[:12]
    workdir = (talkbench_home() / "runs" / protocol.id / spec.row
               / f"{method.config.hash()}-seed{seed}-data{data_key}-code{code}")
    if checkpoint is not None:  # predictions of a given checkpoint are kept apart from trained ones
        workdir = workdir.with_name(workdir.name + f"-ckpt{file_sha256(checkpoint)[:12]}")
    return workdir


def labelled_splits(protocol: Protocol, method: Method, splits: dict[str, list[Clip]]) -> dict[str, list[Clip]]:
    """The splits a method trains on: with AU labels for methods that need them."""
    if not method.needs_au_labels:
        return splits
    return {name: with_au_labels(protocol, clips) for name, clips in splits.items()}


def run_row(session: Session, spec: MethodSpec, seed: int, data_key: str, env: dict,
            out: Optional[Path], checkpoint: Optional[Path] = None, progress: bool = True) -> dict:
    """Train (or load) one row's method with `seed`, predict the test split and score it; with
    `out`, the result is written there as `<row>.json`. Returns the result dict."""
    protocol, splits, device = session.protocol, session.splits, session.device
    method = build_method(spec.name, spec.preset, spec.config)
    workdir = row_workdir(protocol, spec, method, seed, data_key, checkpoint)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    labelled = labelled_splits(protocol, method, splits)
    ckpt_path = train_or_load(method, labelled, workdir, device, seed, checkpoint)
    timings["fit_or_load_s"] = time.perf_counter() - start
    fit_report = method.fit_report(labelled) if out is not None and distributed.world().is_main else None
    if fit_report is not None:
        write_result(out / f"_{spec.row}_fit_report.json", {"kind": "fit_report", "row": spec.row,
                                                            "protocol": protocol.id, **fit_report})
    start = time.perf_counter()
    pred_dir = workdir / "predictions"
    # under torchrun each rank predicts its share into the run folder (a filesystem every rank
    # sees), and every rank then scores from the whole folder
    failures: dict[str, str] = {}
    for part in distributed.gather(predict_all(method, distributed.shard(splits["test"]), pred_dir,
                                               progress, protocol.encode)):
        failures.update(part)
    distributed.barrier()
    timings["predict_s"] = time.perf_counter() - start
    provenance = {
        "seed": seed, "preset": spec.preset, "config": method.config.to_dict(),
        "config_hash": method.config.hash(),
        "checkpoint_sha256": file_sha256(ckpt_path) if ckpt_path else None,
        "predictions": str(pred_dir.relative_to(talkbench_home())), **env,
    }
    result = session.evaluate(spec.row, pred_dir, out=out, provenance=provenance, failures=failures,
                              outputs=sorted(method.outputs), timings=timings)
    if out is not None:
        log.info("%s: wrote %s", spec.row, out / f"{spec.row}.json")
    return result


def fit_in_workers(session: Session, specs: list[MethodSpec], row_seeds: dict[str, list[int]],
                   data_key: str, workers: int, data_root: Optional[Path] = None,
                   previous: Optional[dict] = None) -> dict[tuple[str, int], dict]:
    """Fit and predict the trainable rows that have no checkpoint or predictions yet, `workers` at a
    time in spawned processes, before the rows are scored one by one. Each (row, seed) is the same
    computation as in `run_row` (same run folder, seed and data; each worker process gets
    cores / workers torch threads unless the method sets its own), so `run_row` then finds the
    checkpoint and the predictions and only loads them. Returns (row, seed) -> {"fit_s",
    "predict_s", "failed"} for the jobs that ran; a job that raised is left to `run_row`, which
    raises the same error in the main process.

    Not used under torchrun (a world of several ranks), where the ranks fit each row together
    (`train_or_load`, `baselines.data_parallel`).

    The longest jobs start first: as long as the row took in `previous` (the last run's
    `_run_timings.json`, a hint that changes only the order), else the image generators first."""
    jobs = []
    for spec in specs:
        cls = method_class(spec.name)
        if not cls.trainable:
            continue
        for s in row_seeds[spec.row]:
            method = build_method(spec.name, spec.preset, spec.config)
            workdir = row_workdir(session.protocol, spec, method, s, data_key)
            done = (workdir / "model.ckpt.npz").exists() and all(
                (workdir / "predictions" / f"{c.id}.npz").exists() for c in session.test)
            if not done:
                jobs.append((spec, s, "frames" in cls.outputs))
    if len(jobs) < 2:
        return {}
    took = {row: sum((r.get("fit_or_load_s") or 0.0) + (r.get("predict_s") or 0.0) for r in runs) / len(runs)
            for row, runs in (previous or {}).get("rows", {}).items() if runs}
    jobs.sort(key=lambda job: (job[0].row not in took, -took.get(job[0].row, 0.0), not job[2]))
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    out: dict[tuple[str, int], dict] = {}
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(fit_and_predict, session.protocol, spec, s, data_key, session.device,
                               data_root, threads): (spec.row, s) for spec, s, _ in jobs}
        for future in as_completed(futures):
            row, s = futures[future]
            try:
                out[(row, s)] = future.result()
                log.info("%s seed %d: fitted and predicted in a worker (%.1f s + %.1f s)", row, s,
                         out[(row, s)]["fit_s"], out[(row, s)]["predict_s"])
            except Exception as exc:  # the row runs again in the main process and fails there
                log.warning("%s seed %d: fitting in a worker failed (%s: %s); it runs in the main "
                            "process instead", row, s, type(exc).__name__, exc)
    return out


def last_timings(out: Path) -> Optional[dict]:
    """The `_run_timings.json` of the last run into `out`, if it can be read (a scheduling hint)."""
    try:
        return read_result(out / RUN_TIMINGS_FILE)
    except (OSError, ValueError):  # absent, unreadable or of another schema
        return None


def fit_and_predict(protocol: Protocol, spec: MethodSpec, seed: int, data_key: str, device: str,
                    data_root: Optional[Path], threads: int) -> dict:
    """One worker job of `fit_in_workers`: train (or load) and predict one row and seed into its
    run folder."""
    import torch

    torch.set_num_threads(threads)
    splits, _ = prepare_splits(protocol, False, data_root, 1)
    method = build_method(spec.name, spec.preset, spec.config)
    workdir = row_workdir(protocol, spec, method, seed, data_key)
    start = time.perf_counter()
    train_or_load(method, labelled_splits(protocol, method, splits), workdir, device, seed)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    failures = predict_all(method, splits["test"], workdir / "predictions", False, protocol.encode)
    return {"fit_s": fit_s, "predict_s": time.perf_counter() - start, "failed": len(failures)}


def with_au_labels(protocol: Protocol, clips: list[Clip]) -> list[Clip]:
    """`clips` with AU labels (`aus`, T x 5 in `metrics.au.AU_NAMES` order) for methods that train
    on them. Clips that have them (synthtalk: its exact speech AUs) are kept as they are; the others
    get the detections of the protocol's AU backend (the first AU-F1 / AU-Acc metric's `backend`,
    geometric by default) on their reference: the geometric detector on the clip's landmarks
    (frames whose landmarks were gap-filled count as absent), or the OpenFace CSV
    `csv_dir/ref/<clip id>.csv`. Copies, the session's clips are not changed."""
    from metrics.au import AU_NAMES, detect_geometric, read_openface_csv

    params: dict = {}
    for spec in protocol.metrics:
        if spec.name in ("AU-F1", "AU-Acc"):
            params = dict(spec.params)
            break
    backend = params.get("backend", "geometric")
    out = []
    for clip in clips:
        if clip.aus is not None:
            out.append(clip)
            continue
        if backend == "geometric":
            occurrence, ok = detect_geometric(clip.landmarks, clip.landmarks_found)
        elif backend == "openface-csv" and params.get("csv_dir"):
            path = Path(params["csv_dir"]).expanduser() / "ref" / f"{clip.id}.csv"
            if not path.is_file():
                raise ValueError(f"AU labels for training: no OpenFace CSV {path}")
            occurrence, ok = read_openface_csv(path, clip.num_frames, float(params.get("min_confidence", 0.8)))
        else:
            raise ValueError(f"AU labels for training: backend {backend!r} of protocol {protocol.id} "
                             f"cannot label the train clips (use geometric or openface-csv with csv_dir)")
        out.append(dataclasses.replace(clip, aus=(occurrence & ok[:, None]).astype(np.float32),
                                       au_names=tuple(AU_NAMES)))
    return out


def select_methods(protocol: Protocol, names: Optional[list[str]], preset: Optional[str],
                   ablations: bool = False) -> list[MethodSpec]:
    if names:
        by_name = {m.row: m for m in protocol.methods} | {m.name: m for m in protocol.methods}
        specs = [by_name.get(n, MethodSpec(n)) for n in names]
    else:
        specs = list(protocol.methods)
    if not specs:
        raise ValueError(f"protocol {protocol.id} lists no methods; name some with --methods")
    for spec in specs:
        method_class(spec.name)  # unknown names fail before any work starts
    if ablations:
        present = {s.name for s in specs}
        for spec in list(specs):
            for variant in method_class(spec.name).ablations:
                if variant not in present:
                    specs.append(MethodSpec(variant, spec.preset))
                    present.add(variant)
    if preset:
        specs = [MethodSpec(s.name, preset, s.label, s.config) for s in specs]
    return specs


def train_or_load(method: Method, splits: dict[str, list[Clip]], workdir: Path, device: str,
                  seed: int, checkpoint: Optional[Path] = None) -> Optional[Path]:
    """Fit on the train split, or load `checkpoint` / the one an earlier run left. None if nothing
    to learn. Loading refuses a checkpoint whose config differs from the method's.

    Under torchrun (a world of several ranks) every rank fits together from the same seed (torch
    methods split each batch among the ranks, `baselines.data_parallel`); rank 0 alone gets the
    run folder, so it alone writes the training state, log and checkpoint, and the other ranks
    load that checkpoint after a barrier: every rank ends with the same weights. Rank 0 decides
    whether a cached checkpoint exists. The run folder must be on a filesystem every rank sees."""
    if not method.trainable:
        if checkpoint is not None:
            raise ValueError(f"{method.name} has nothing to learn: --checkpoint does not apply")
        return None
    path = Path(checkpoint) if checkpoint is not None else workdir / "model.ckpt.npz"
    world = distributed.world()
    if distributed.broadcast(path.exists(), world):
        loaded = type(method).load(path, method.config)
        method.set_state(loaded.state())
        return path
    seed_everything(seed)
    method.fit(splits["train"], splits["val"], device=device, seed=seed,
               workdir=workdir if world.is_main else None)
    if world.is_main:
        method.save(path)
    distributed.barrier(world)
    if not world.is_main:
        method.set_state(type(method).load(path, method.config).state())
    return path


def predict_all(method: Method, clips: list[Clip], pred_dir: Path, progress: bool = True,
                encoding: Optional[Encoding] = None) -> dict[str, str]:
    """Predict every test clip not already on disk (videos in `encoding`, the protocol's pin, when
    given); return {clip_id: reason} for those that failed."""
    failures = {}
    for clip in tqdm(clips, desc=f"predict {method.name}", disable=not progress, leave=False):
        if (pred_dir / f"{clip.id}.npz").exists():
            continue
        try:
            pred = method.predict(MethodInput.from_clip(clip, method.inputs))
            save_prediction(pred_dir, validate(pred, clip), clip, encoding)
        except PredictionError as exc:
            failures[clip.id] = str(exc)
        except Exception as exc:  # one clip's crash is that clip's failure, not the run's
            log.exception("%s failed to predict %s", method.name, clip.id)
            failures[clip.id] = f"predict raised {type(exc).__name__}: {exc}"
        finally:
            clip.release_frames()
    return failures


def detector_floor(protocol: Protocol, scorer: Scorer, env: dict) -> dict:
    """The protocol's detector on ground-truth frames against the exact reference landmarks.

    This is the noise floor of every frame-scored landmark number: no method scored through the
    detector can be told apart from ground truth below it. Frames where the detector found no face
    are left out of the values and counted in `missed_frames`.
    """
    detections, failures, missed = {}, {}, 0
    for clip_id, clip in scorer.clips.items():
        lmk, found = scorer.reference_detection(clip)
        clip.release_frames()
        missed += int((~found).sum())
        if found.any():
            detections[clip_id] = (np.nan_to_num(lmk), found)
        else:
            failures[clip_id] = "the detector found no face in any ground-truth frame"
    rows = {}
    for spec, metric, _ in scorer.metrics:
        if not isinstance(metric, LandmarkMetric):  # the floor is about landmark positions
            continue
        values = {}
        for clip_id, (lmk, found) in detections.items():
            clip = scorer.clips[clip_id]
            key = key_of("detector_floor", metric.identity(), clip_hash(clip), scorer.extractor.cache_identity())
            got = scorer.clip_value(metric, key, lambda: ClipPair(
                clip_id, {"landmarks": lmk}, {"landmarks": clip.landmarks}, frame_mask=found, fps=clip.fps))
            if "value" in got:
                values[clip_id] = got["value"]
            else:
                failures[clip_id] = got["error"]
        rows[spec.label] = {"value": float(np.mean(list(values.values()))) if values else None,
                            "n": len(values), "per_clip": values}
    return {
        "kind": "detector_floor",
        "protocol": protocol.id,
        "protocol_hash": protocol.hash,
        "detector": scorer.extractor.identity(),
        "frames": int(sum(scorer.clips[c].num_frames for c in scorer.clips)),
        "missed_frames": missed,
        "failures": failures,
        "metrics": rows,
        "provenance": env,
    }
