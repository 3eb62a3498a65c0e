"""One pipeline from a protocol to scored results, shared by `talkbench run`, `score` and `sanity`.

`Session.open` goes from a protocol to its clips (`bench.data.clips.prepare_splits`), the evaluators
its metrics need (`bench.experts.resolve`: e.g. a SyncNet expert trained on the train split) and
a scorer; `evaluate` turns predictions (a folder, or in memory) into one result dict; `Session.
evaluate` does that with the session's scorer and, given a results folder, writes the result and
the figure data of its row there. The protocol is never modified on the way: what was made for it
(the evaluators) is passed to the scorer and recorded in each result's provenance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from core import distributed
from core.hashing import file_sha256, key_of
from core.types import Clip, Prediction
from bench import figures
from bench.data.clips import prepare_splits
from bench.experts import QUALITY_FILE, write_quality
from bench.experts import resolve as resolve_evaluators
from bench.predictions import (PredictionError, encoding_summary, frames_from_mp4, load_prediction,
                               pinned_frames, prediction_hash, validate)
from bench.protocol import MetricSpec, Protocol, load_protocol
from bench.provenance import environment
from bench.results import DATA_FILE, FIGURES_DIR, clip_table, portable_path, read_result, write_result
from metrics.syncnet import EXPERT_WEIGHTS
from bench.scoring import Scorer


def load_predictions(protocol: Protocol, clips: dict[str, Clip], pred_dir: Path,
                     failures: Optional[dict[str, str]] = None, progress: bool = True, desc: str = "load",
                     reencode: bool = False, encodings: Optional[dict[str, dict]] = None,
                     frame_sources: Optional[dict[str, str]] = None
                     ) -> tuple[dict[str, Prediction], dict[str, str], dict[str, str]]:
    """(predictions, content keys, failures) of a predictions folder for these clips: a clip whose
    file is missing, unreadable or malformed is a failure with the reason. Under a protocol that
    pins an encoding, frames come from the videos (`bench.predictions.pinned_frames`; re-encoded
    to the pin where they differ with `reencode`) and each clip's encoding goes into `encodings`.
    `frame_sources`, when given, gets clip id -> "mp4" for every prediction whose frames came from
    its mp4."""
    failures = dict(failures or {})
    predictions: dict[str, Prediction] = {}
    keys: dict[str, str] = {}
    for clip_id, clip in tqdm(clips.items(), desc=desc, disable=not progress, leave=False):
        if clip_id in failures:
            continue
        try:
            pred = load_prediction(pred_dir, clip, protocol.fps, prefer_video=protocol.encode is not None)
            key = prediction_hash(pred_dir, clip_id)
            from_mp4 = pred.frames is not None and frames_from_mp4(pred_dir, clip_id)
            if protocol.encode is not None:
                record = pinned_frames(pred_dir, clip, pred, protocol.encode, protocol.fps, reencode)
                if record is not None:
                    if encodings is not None:
                        encodings[clip_id] = record
                    video = pred_dir / f"{clip_id}.mp4"
                    key = key_of(key, file_sha256(video) if video.exists() else None, record,
                                 protocol.encode.to_dict())
                    from_mp4 = record["source"] == "mp4" or record["reencoded"]
            predictions[clip_id] = validate(pred, clip)
            keys[clip_id] = key
            if frame_sources is not None and from_mp4:
                frame_sources[clip_id] = "mp4"
        except PredictionError as exc:
            failures[clip_id] = str(exc)
        finally:
            clip.release_frames()
    return predictions, keys, failures


def evaluate(protocol: Protocol, scorer: Scorer, row: str, predictions: Path | dict[str, Prediction],
             keys: Optional[dict[str, str]] = None, provenance: Optional[dict] = None,
             failures: Optional[dict[str, str]] = None, outputs: Optional[list[str]] = None,
             timings: Optional[dict] = None, progress: bool = True, reencode: bool = False,
             encodings: Optional[dict[str, dict]] = None,
             frame_sources: Optional[dict[str, str]] = None) -> dict:
    """Score one row's predictions into a result dict (`bench.results` writes it).

    `predictions`: a folder of `<clip_id>.npz` / `.mp4` (ours or a user's), or clip id ->
    Prediction with `keys` (clip id -> content key, for the metric cache). `failures`: clips whose
    prediction failed upstream (with the reason); `outputs`: the fields the method declares (by
    default, what the predictions hold). Under a pinned encoding, `encodings` (clip -> how its
    frames were encoded, filled by `load_predictions`) becomes the result's `encoding` summary;
    `frame_sources`: clip id -> "mp4" where in-memory frames were decoded from an mp4 (found by the
    loader for a folder).
    """
    start = time.perf_counter()
    encodings = {} if encodings is None else encodings
    frame_sources = dict(frame_sources or {})
    if isinstance(predictions, (str, Path)):
        predictions, keys, failures = load_predictions(protocol, scorer.clips, Path(predictions), failures,
                                                       progress, desc=f"load {row}", reencode=reencode,
                                                       encodings=encodings, frame_sources=frame_sources)
    else:
        failures = dict(failures or {})
        if keys is None or set(keys) != set(predictions):
            raise ValueError("in-memory predictions need a content key per clip")
    # Declared outputs for our methods; for external predictions, what the files hold.
    seen_outputs = outputs or sorted(set().union(*(p.fields() for p in predictions.values())) if predictions else [])
    outcomes = scorer.score(predictions, keys, failures, set(seen_outputs), frame_sources)
    timings = {**(timings or {}), "score_s": time.perf_counter() - start}
    points = sorted({tuple(p.points) for p in predictions.values() if p.landmarks is not None})
    sources = sorted({scorer.landmark_source(p) for p in predictions.values()})
    return {
        "kind": "method",
        "protocol": protocol.id,
        "protocol_version": protocol.version,
        "protocol_hash": protocol.hash,
        "row": row,
        "outputs": seen_outputs,
        "landmark_points": [list(p) for p in points],
        "landmark_source": sources,
        "clips": len(scorer.clips),
        "test_clips": clip_table(scorer.clips.values()),
        "prediction_failures": dict(sorted(failures.items())),
        "metrics": mark_pinning({o.spec.label: scorer.aggregate(o) for o in outcomes}, outcomes,
                                scorer.evaluators),
        "provenance": {**(provenance or {}), "evaluators": evaluator_identities(scorer.evaluators),
                       "scoring": scoring_identity(scorer)},
        "timings": timings,
        "encoding": encoding_summary(protocol.encode, encodings) if protocol.encode is not None else None,
    }


def scoring_identity(scorer: Scorer) -> dict:
    """How the scoring was spread (worker processes, torch.distributed ranks): provenance only,
    since the values do not depend on it."""
    w = distributed.world()
    return {"workers": scorer.workers, "world_size": w.size, "backend": w.backend}


def mark_pinning(metrics: dict[str, dict], outcomes, evaluators: dict[str, dict]) -> dict[str, dict]:
    """Add ``"pinned": True/False`` to the entries of metrics built with an evaluator the protocol
    pins (`bench.experts.resolve_pinned`); False when it was scored with another file
    (``--allow-unpinned``), which the report marks. Entries of other metrics are left as they are."""
    for o in outcomes:
        ev = evaluators.get(o.spec.params.get("weights"))
        if ev is not None and "pinned" in ev and not o.spec.params.get("weights_path"):
            metrics[o.spec.label]["pinned"] = bool(ev["pinned"])
    return metrics


def evaluator_identities(evaluators: dict[str, dict]) -> dict[str, dict]:
    """What a result records of each evaluator: everything but its path on this machine."""
    return {name: {k: v for k, v in ev.items() if k != "path"} for name, ev in sorted(evaluators.items())}


ALLOW_UNPINNED_HELP = ("score with an evaluator whose sha256 is not the one the protocol pins (a rebuilt "
                       "SyncNet expert); those columns are marked unpinned in the results and report")


@dataclass
class Session:
    """A protocol with its clips, its evaluators and a scorer of its test split."""

    protocol: Protocol
    splits: dict[str, list[Clip]]
    data: Optional[dict] = None  # a real dataset's preparation manifest (None for synthtalk)
    device: str = "cpu"
    evaluators: dict[str, dict] = field(default_factory=dict)
    progress: bool = True
    timings: dict[str, float] = field(default_factory=dict)  # seconds: corpus, evaluators
    workers: int = 1  # processes for data preparation and for scoring (`Scorer.clip_results`)
    _scorer: Optional[Scorer] = None

    @classmethod
    def open(cls, protocol: Protocol | str | Path, device: str = "cpu", progress: bool = True,
             data_root: Optional[Path] = None, workers: int = 1,
             allow_unpinned: bool = False) -> "Session":
        """Load the protocol's splits (a real dataset is prepared from `data_root` with `workers`
        processes, which also score the clips) and make the evaluators its metrics need (trained when missing). A pinned
        evaluator with another sha256 is refused unless `allow_unpinned` (its columns are then
        marked ``"pinned": false``)."""
        protocol = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
        start = time.perf_counter()
        splits, data = prepare_splits(protocol, progress, data_root, workers)
        corpus_s = time.perf_counter() - start
        if not splits["test"]:
            raise ValueError(f"protocol {protocol.id}: the test split is empty")
        start = time.perf_counter()
        evaluators = resolve_evaluators(protocol, splits, device=device, progress=progress,
                                        allow_unpinned=allow_unpinned)
        timings = {"corpus_s": corpus_s, "evaluators_s": time.perf_counter() - start}
        return cls(protocol, splits, data, device, evaluators, progress, timings, max(1, int(workers)))

    @property
    def test(self) -> list[Clip]:
        return self.splits["test"]

    def scorer(self, clips: Optional[list[Clip]] = None,
               metrics: Optional[tuple[MetricSpec, ...]] = None) -> Scorer:
        """The scorer of the test split with the protocol's metrics (built once), or a new one
        for other clips or another metric list."""
        if clips is None and metrics is None:
            if self._scorer is None:
                self._scorer = Scorer(self.protocol, self.test, self.device, evaluators=self.evaluators,
                                      workers=self.workers)
            return self._scorer
        return Scorer(self.protocol, self.test if clips is None else clips, self.device,
                      evaluators=self.evaluators, metrics=metrics, workers=self.workers)

    def close(self) -> None:
        """Stop the session scorer's worker processes (started on first use)."""
        if self._scorer is not None:
            self._scorer.close()

    def environment(self) -> dict:
        return environment(self.device)

    def evaluate(self, row: str, predictions: Path | dict[str, Prediction], *,
                 out: Optional[Path] = None, clips: Optional[list[Clip]] = None,
                 metrics: Optional[tuple[MetricSpec, ...]] = None, **kwargs) -> dict:
        """`evaluate` with this session's scorer (or one for `clips` / `metrics`). With `out`, the
        result goes to `out/<row>.json` and the row's figure data to `out/figures/`."""
        scorer = self.scorer(clips, metrics)
        if isinstance(predictions, (str, Path)):  # loaded here to keep the figure clip's prediction
            start = time.perf_counter()
            kwargs["encodings"], kwargs["frame_sources"] = {}, {}
            predictions, kwargs["keys"], kwargs["failures"] = load_predictions(
                self.protocol, scorer.clips, Path(predictions), kwargs.get("failures"), self.progress,
                desc=f"load {row}", reencode=kwargs.pop("reencode", False), encodings=kwargs["encodings"],
                frame_sources=kwargs["frame_sources"])
            kwargs["timings"] = {**(kwargs.get("timings") or {}), "load_s": time.perf_counter() - start}
        result = evaluate(self.protocol, scorer, row, predictions, progress=self.progress, **kwargs)
        if scorer is not self._scorer:
            scorer.close()
        if out is not None and distributed.world().is_main:  # one writer under torchrun
            write_result(out / f"{row}.json", result)
            clip = figures.figure_clip(self.test)
            figures.save_row(out / FIGURES_DIR, row, clip, predictions.get(clip.id))
        return result

    def write_common(self, out: Path) -> None:
        """What every row of the results folder shares: the data manifest and the figure clip."""
        if not distributed.world().is_main:
            return
        out.mkdir(parents=True, exist_ok=True)
        write_data_manifest(out, self.data)
        write_expert_quality(self, out)
        figures.save_reference(out / FIGURES_DIR, figures.figure_clip(self.test))


def write_expert_quality(session: "Session", out: Path) -> None:
    """With a pinned SyncNet expert, its held-out quality beside the results (`bench.experts.
    QUALITY_FILE`), measured again only when the expert or the protocol changed."""
    ev = session.evaluators.get(EXPERT_WEIGHTS)
    if ev is None or "pinned" not in ev:
        return
    path = out / QUALITY_FILE
    if path.is_file():
        try:
            old = read_result(path)
            if old.get("sha256") == ev["sha256"] and old.get("protocol_hash") == session.protocol.hash:
                return
        except ValueError:
            pass
    write_quality(session.protocol, session.splits, ev, out, session.progress)


def write_data_manifest(out: Path, data: Optional[dict]) -> None:
    """Record which dataset items were prepared and which failed (and why) beside the results."""
    if data is None:
        (out / DATA_FILE).unlink(missing_ok=True)
        return
    keep = ("kind", "protocol", "protocol_hash", "dataset", "root", "manifest", "pipeline_version",
            "items", "ok", "failed")
    body = {k: data[k] for k in keep if k in data}
    for key in ("root", "manifest"):  # no machine paths in results (bench.results.portable)
        if body.get(key):
            body[key] = portable_path(body[key])
    body["details"] = {i: e["detail"] for i, e in sorted(data.get("entries", {}).items())
                       if e["status"] != "ok"}
    write_result(out / DATA_FILE, body)
