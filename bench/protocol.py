"""Protocol files: load, validate, hash, and expand their splits.

A protocol (YAML in `protocols/`) fixes everything a number depends on: dataset and adapter
options, preprocessing, the split, clip windowing, the metric list with parameters, the compared
methods and the paper's reference results. It is validated on load — every error names the bad
key — and hashed (sha256 of its canonical JSON form) so each result records exactly which protocol
produced it.

A protocol file states only what differs from its base:

- `extends: <id or file>` names the base: a `.yaml`/`.yml` path relative to the file's folder, or
  an id looked up in that folder, then in `protocols/`. Bases whose name starts with `_`
  (`protocols/_tcsan.yaml`) hold what a paper's tables share and are not runnable protocols
  themselves (`list_protocols` leaves them out). A base may extend another base; a cycle is an
  error naming the chain.
- Merge rule: the file's keys win over its base's; mappings are merged key by key, at any depth
  (`preprocessing: {fps: 30}` changes only the frame rate), except `dataset`, `split` and
  `windowing`, which are replaced whole because their other keys depend on one choice
  (`dataset.name`, `split.rule`, `windowing.mode`); lists (metrics, methods, reference_results,
  speaker lists) are replaced whole. A file cannot remove a key its base sets.
- `split: {rule: explicit, file: splits/mead.yaml}` takes the train/val/test speaker lists from a
  split file (a mapping of split name to list, relative to the folder of the file that names it).

`fit_statistics:` (optional) names numbers a paper table reports about training itself (a loss after
a fixed number of epochs, seconds per iteration): each entry `{key, label, higher_is_better, unit}`
reads `key` from a row's fit report (`Method.fit_report`, written by the runner as
`_<row>_fit_report.json`); its label may be a column of `reference_results` like a metric label.

`encode:` (optional) pins how predicted videos are encoded (`bench.data.video.Encoding`: codecs,
pixel format, CRF or bit rate, audio rate): `talkbench run` writes its videos so and scores the
frames decoded from them, `talkbench score` records each file's encoding, counts the ones that
differ and, with `--reencode`, re-encodes those to the pin before scoring.

`extends` and `split.file` are resolved before validation and hashing: `Protocol.raw` and
`Protocol.hash` are those of the fully resolved protocol, which hashes the same as the same content
written out in one file, and changes when a base or a split file it uses changes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from baselines.base import METHODS
from bench.data.raw import DATASETS
from bench.data.video import Encoding
from core.paths import talkbench_home
from core.registry import Registry
from faces.crops import CROP_RECIPES
from faces.extractors import LANDMARK_BACKENDS
from faces.pose import POSE_BACKENDS
from metrics.base import METRICS

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "protocols"
SPLITS = ("train", "val", "test")
NORMALISATIONS = ("none", "face_width", "inter_ocular")


class ProtocolError(ValueError):
    """A malformed protocol; the message names the offending key."""


@dataclass(frozen=True)
class MetricSpec:
    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    preset: str = "tiny"
    label: Optional[str] = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def row(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Protocol:
    id: str
    version: int
    title: str
    dataset: str
    dataset_options: dict[str, Any]
    preprocessing: dict[str, Any]
    split: dict[str, Any]
    windowing: dict[str, Any]
    metrics: tuple[MetricSpec, ...]
    methods: tuple[MethodSpec, ...]
    landmarks_from: str
    bootstrap: dict[str, Any]
    reference_results: tuple[dict[str, Any], ...]
    raw: dict[str, Any]
    path: Optional[Path] = None
    evaluators: dict[str, dict[str, Any]] = field(default_factory=dict)  # pinned, see _parse_evaluators
    encode: Optional[Encoding] = None  # `encode:`, the pinned encoding of predicted videos
    fit_statistics: tuple[dict[str, Any], ...] = ()  # `fit_statistics:`, see the module docstring

    @property
    def hash(self) -> str:
        return protocol_hash(self.raw)

    @property
    def fps(self) -> float:
        return float(self.preprocessing["fps"])


# -- loading ---------------------------------------------------------------------------------------

BASE_PREFIX = "_"  # protocols/_<name>.yaml: a base that protocols extend, not a protocol to run
REPLACED_WHOLE = ("dataset", "split", "windowing")  # merged as one value, not key by key


def protocol_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = PROTOCOL_DIR / f"{name_or_path}.yaml"
    if candidate.exists() and not str(name_or_path).startswith(BASE_PREFIX):
        return candidate
    if candidate.exists():
        raise ProtocolError(f"{name_or_path!r} is a base that protocols extend, not a protocol to run; "
                            f"known protocols: {list_protocols()}")
    raise ProtocolError(f"no protocol {name_or_path!r}; known protocols: {list_protocols()}")


def list_protocols() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml") if not p.stem.startswith(BASE_PREFIX))


def load_protocol(name_or_path: str | Path) -> Protocol:
    path = protocol_path(name_or_path)
    bases: list[Path] = []
    raw = _resolve(path, (), bases)
    try:
        return parse_protocol(raw, path)
    except ProtocolError as exc:
        extends = f" (extends {' -> '.join(_shown(b) for b in bases)})" if bases else ""
        raise ProtocolError(f"{path.name}{extends}: {exc}") from None


def resolve_protocol_file(path: str | Path) -> dict[str, Any]:
    """The protocol in `path` as one mapping: its bases merged under it (`extends`, recursively)
    and split files inlined (`split.file`). This is what is validated and hashed."""
    return _resolve(Path(path), (), [])


def _resolve(path: Path, chain: tuple[Path, ...], bases: list[Path]) -> dict[str, Any]:
    """`chain`: the files that extend this one (cycle check); `bases` collects the bases read."""
    here = path.resolve()
    if here in chain:
        names = " -> ".join(_shown(p) for p in (*chain, here))
        raise ProtocolError(f"extends: cycle {names}")
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ProtocolError(f"{_shown(path)}: the protocol must be a mapping of keys to values")
    if isinstance(raw.get("split"), dict) and "file" in raw["split"]:
        raw["split"] = _inline_split_file(raw["split"], path)
    if "extends" not in raw:
        return raw
    base_path = _base_path(raw.pop("extends"), path)
    bases.append(base_path)
    return merge_protocols(_resolve(base_path, (*chain, here), bases), raw)


def merge_protocols(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` over `base` by the merge rule of the module docstring; neither is changed."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if key in REPLACED_WHOLE:
            out[key] = copy.deepcopy(value)
        else:
            out[key] = _merged(out.get(key), value)
    order = [k for k in _TOP_KEYS if k in out] + [k for k in out if k not in _TOP_KEYS]
    return {k: out[k] for k in order}


def _merged(base: Any, value: Any) -> Any:
    if not (isinstance(base, dict) and isinstance(value, dict)):
        return copy.deepcopy(value)
    out = copy.deepcopy(base)
    for key, v in value.items():
        out[key] = _merged(out.get(key), v)
    return out


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProtocolError(f"{path}: not valid YAML: {exc}") from exc


def _shown(path: Path) -> str:
    """A path as errors show it: relative to protocols/ when it is in there."""
    try:
        return str(path.resolve().relative_to(PROTOCOL_DIR.resolve()))
    except ValueError:
        return str(path)


def _base_path(ref: Any, path: Path) -> Path:
    if not isinstance(ref, str) or not ref:
        raise ProtocolError(f"{_shown(path)}: extends: expected a protocol id or a .yaml path, got {ref!r}")
    if ref.endswith((".yaml", ".yml")):
        candidates = [path.parent / ref]
    else:
        candidates = [path.parent / f"{ref}.yaml", PROTOCOL_DIR / f"{ref}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ProtocolError(f"{_shown(path)}: extends: no base {ref!r} (looked for {looked})")


def _inline_split_file(split: dict, path: Path) -> dict:
    """`{rule: explicit, file: F}` -> `{rule: explicit, train: [...], val: [...], test: [...]}`."""
    where = f"{_shown(path)}: split.file"
    ref = split["file"]
    if split.get("rule") != "explicit":
        raise ProtocolError(f"{where}: only rule 'explicit' takes a split file (rule is {split.get('rule')!r})")
    if not isinstance(ref, str) or not ref:
        raise ProtocolError(f"{where}: expected a path relative to {path.parent}, got {ref!r}")
    extra = sorted(set(split) - {"rule", "file"})
    if extra:
        raise ProtocolError(f"{where}: the speaker lists come from {ref}; remove split.{', split.'.join(extra)}")
    file = path.parent / ref
    if not file.is_file():
        raise ProtocolError(f"{where}: no split file {file}")
    lists = _read_yaml(file)
    if not isinstance(lists, dict):
        raise ProtocolError(f"{_shown(file)}: a split file is a mapping of {', '.join(SPLITS)} to speaker lists")
    for key in lists:
        if key not in SPLITS:
            raise ProtocolError(f"{_shown(file)}: unknown key {key!r}; a split file holds {', '.join(SPLITS)}")
    return {"rule": "explicit", **{name: lists[name] for name in SPLITS if name in lists}}


def protocol_hash(raw: dict[str, Any]) -> str:
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


_TOP_KEYS = {
    "id": True, "version": True, "title": False, "description": False, "dataset": True,
    "preprocessing": True, "split": True, "windowing": False, "metrics": True, "methods": False,
    "landmarks_from": False, "bootstrap": False, "reference_results": False, "evaluators": False,
    "encode": False, "fit_statistics": False,
}


def parse_protocol(raw: Any, path: Optional[Path] = None) -> Protocol:
    if not isinstance(raw, dict):
        raise ProtocolError("the protocol must be a mapping of keys to values")
    split = raw.get("split")
    if "extends" in raw or isinstance(split, dict) and "file" in split:
        raise ProtocolError("extends / split.file: resolved from a file, by load_protocol or "
                            "resolve_protocol_file; parse_protocol takes the resolved mapping")
    for key in raw:
        if key not in _TOP_KEYS:
            raise ProtocolError(f"unknown key {key!r}; allowed: {sorted(_TOP_KEYS)}")
    for key, required in _TOP_KEYS.items():
        if required and key not in raw:
            raise ProtocolError(f"missing required key {key!r}")
    pid = _typed(raw, "id", str)
    version = _typed(raw, "version", int)
    dataset = _typed(raw, "dataset", dict)
    dataset_name = _typed(dataset, "name", str, "dataset.name")
    _check_name(DATASETS, dataset_name, "dataset.name")
    options = dataset.get("options", {})
    if not isinstance(options, dict):
        raise ProtocolError("dataset.options must be a mapping")
    pre = _parse_preprocessing(_typed(raw, "preprocessing", dict))
    split = _parse_split(_typed(raw, "split", dict))
    windowing = _parse_windowing(raw.get("windowing", {"mode": "whole"}))
    metrics = tuple(_parse_metric(m, i) for i, m in enumerate(_typed(raw, "metrics", list)))
    labels = [m.label for m in metrics]
    if len(set(labels)) != len(labels):
        raise ProtocolError(f"metrics: duplicate labels {sorted({l for l in labels if labels.count(l) > 1})}")
    methods = tuple(_parse_method(m, i) for i, m in enumerate(raw.get("methods", []) or []))
    landmarks_from = raw.get("landmarks_from", "auto")
    if landmarks_from not in ("auto", "predicted", "detected"):
        raise ProtocolError(f"landmarks_from: {landmarks_from!r} is not one of auto, predicted, detected")
    # set_samples: resamples of a set-level metric (FID, AU-F1), whose value is recomputed per
    # resample (FID over more than 2048 frames costs seconds each on a CPU), per group too.
    boot = {"samples": 1000, "set_samples": 200, "seed": 0, "confidence": 0.95,
            **(raw.get("bootstrap") or {})}
    for key in boot:
        if key not in ("samples", "set_samples", "seed", "confidence"):
            raise ProtocolError(f"bootstrap.{key}: unknown key")
    for key in ("samples", "set_samples"):
        if isinstance(boot[key], bool) or not isinstance(boot[key], int) or boot[key] < 1:
            raise ProtocolError(f"bootstrap.{key}: expected a positive whole number, got {boot[key]!r}")
    refs = raw.get("reference_results", []) or []
    if not isinstance(refs, list):
        raise ProtocolError("reference_results must be a list")
    fit_stats = _parse_fit_statistics(raw.get("fit_statistics", []), set(labels))
    for i, ref in enumerate(refs):
        _check_reference(ref, i, set(labels) | {f["label"] for f in fit_stats})
    evaluators = _parse_evaluators(raw.get("evaluators", {}))
    encode = None
    if raw.get("encode") is not None:
        if not isinstance(raw["encode"], dict):
            raise ProtocolError("encode: expected a mapping (video_codec, pix_fmt, crf or bitrate, "
                                "audio_codec, sample_rate)")
        try:
            encode = Encoding.from_dict(raw["encode"])
        except (TypeError, ValueError) as exc:
            raise ProtocolError(str(exc)) from None
    return Protocol(
        id=pid, version=version, title=str(raw.get("title", pid)), dataset=dataset_name,
        dataset_options=options, preprocessing=pre, split=split, windowing=windowing,
        metrics=metrics, methods=methods, landmarks_from=landmarks_from, bootstrap=boot,
        reference_results=tuple(refs), raw=raw, path=path, evaluators=evaluators, encode=encode,
        fit_statistics=fit_stats,
    )


def _parse_fit_statistics(value: Any, metric_labels: set[str]) -> tuple[dict[str, Any], ...]:
    """`fit_statistics:` entries {key, label (default key), higher_is_better, unit (optional)}."""
    if not isinstance(value, list):
        raise ProtocolError("fit_statistics: expected a list of {key, label, higher_is_better, unit}")
    out, seen = [], set()
    for i, entry in enumerate(value):
        where = f"fit_statistics[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ProtocolError(f"{where}: expected a mapping with a text key")
        for k in entry:
            if k not in ("key", "label", "higher_is_better", "unit"):
                raise ProtocolError(f"{where}.{k}: unknown key; allowed: higher_is_better, key, label, unit")
        label = entry.get("label", entry["key"])
        if not isinstance(label, str):
            raise ProtocolError(f"{where}.label: expected text")
        if label in metric_labels or label in seen:
            raise ProtocolError(f"{where}.label: {label!r} is already a metric or fit statistic label")
        if not isinstance(entry.get("higher_is_better"), bool):
            raise ProtocolError(f"{where}.higher_is_better: expected true or false")
        if "unit" in entry and not isinstance(entry["unit"], str):
            raise ProtocolError(f"{where}.unit: expected text")
        seen.add(label)
        out.append({"key": entry["key"], "label": label, "higher_is_better": entry["higher_is_better"],
                    "unit": entry.get("unit")})
    return tuple(out)


# Evaluators a protocol may pin: weights name -> kind (the networks talkbench trains to evaluate).
EVALUATOR_KINDS = {"syncnet_expert": "syncnet"}
_EVALUATOR_KEYS = {"kind", "sha256", "file", "recipe"}


def _parse_evaluators(value: Any) -> dict[str, dict[str, Any]]:
    """`evaluators:` pins the networks talkbench trains to evaluate, like weights.

    ``{syncnet_expert: {sha256: <64 hex>, file: evaluators/<name>.pt, recipe: {epochs: 2, ...,
    seed: 0}}}``: the file (relative to the protocol's folder, else `protocols/`) is the one scoring
    uses, checked against `sha256`; `recipe` is how `talkbench experts train` rebuilt it (config
    fields and seed; `bench.experts` checks the field names). A pin no metric uses
    (``weights: <name>``) is allowed -- a protocol derived by dropping the metrics keeps it -- and
    has no effect.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("evaluators must be a mapping of weights name to {sha256, file, recipe}")
    out = {}
    for name, entry in value.items():
        where = f"evaluators.{name}"
        if name not in EVALUATOR_KINDS:
            raise ProtocolError(f"{where}: unknown evaluator; known: {sorted(EVALUATOR_KINDS)}")
        if not isinstance(entry, dict):
            raise ProtocolError(f"{where}: expected a mapping with sha256, file and recipe")
        for key in entry:
            if key not in _EVALUATOR_KEYS:
                raise ProtocolError(f"{where}.{key}: unknown key; allowed: {sorted(_EVALUATOR_KEYS)}")
        kind = entry.get("kind", EVALUATOR_KINDS[name])
        if kind != EVALUATOR_KINDS[name]:
            raise ProtocolError(f"{where}.kind: {kind!r}, expected {EVALUATOR_KINDS[name]!r}")
        sha = _typed(entry, "sha256", str, f"{where}.sha256")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ProtocolError(f"{where}.sha256: expected 64 lowercase hex digits, got {sha!r}")
        file = _typed(entry, "file", str, f"{where}.file")
        if Path(file).is_absolute() or ".." in Path(file).parts or not file:
            raise ProtocolError(f"{where}.file: a path relative to the protocol's folder, got {file!r}")
        recipe = _typed(entry, "recipe", dict, f"{where}.recipe")
        for key, v in recipe.items():
            if not isinstance(key, str) or not (v is None or isinstance(v, (int, float, str))):
                raise ProtocolError(f"{where}.recipe.{key}: expected a scalar, got {v!r}")
        seed = recipe.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ProtocolError(f"{where}.recipe.seed: expected a whole number, got {seed!r}")
        out[name] = {"kind": kind, "sha256": sha, "file": file, "recipe": dict(recipe)}
    return out


def evaluator_file(protocol: Protocol, name: str) -> Path:
    """Where the protocol's pinned evaluator `name` lives: its `file` relative to the protocol
    file's folder if there, else relative to `protocols/` (where talkbench's own are shipped)."""
    rel = protocol.evaluators[name]["file"]
    if protocol.path is not None and (Path(protocol.path).parent / rel).is_file():
        return Path(protocol.path).parent / rel
    return PROTOCOL_DIR / rel


def _typed(mapping: dict, key: str, kind: type, where: Optional[str] = None) -> Any:
    where = where or key
    if key not in mapping:
        raise ProtocolError(f"missing required key {where!r}")
    value = mapping[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise ProtocolError(f"{where}: expected {expected}, got {type(value).__name__} {value!r}")
    return value


def _check_name(registry: Registry, name: Any, where: str) -> None:
    """ProtocolError unless `name` is registered (the registries are the one list of names)."""
    if name not in registry:
        raise ProtocolError(f"{where}: {registry.unknown(name)}")


def _parse_preprocessing(pre: dict) -> dict:
    allowed = {"fps", "sample_rate", "resolution", "crop", "crop_params", "landmark_backend",
               "landmark_params", "pose_backend"}
    for key in pre:
        if key not in allowed:
            raise ProtocolError(f"preprocessing.{key}: unknown key; allowed: {sorted(allowed)}")
    out = {"sample_rate": 16000, "crop": "none", "crop_params": {}, "landmark_backend": "dlib",
           "landmark_params": {}, "pose_backend": "pnp", **pre}
    for key in ("fps", "sample_rate", "resolution"):
        value = _typed(out, key, (int, float) if key == "fps" else int, f"preprocessing.{key}")
        if value <= 0:
            raise ProtocolError(f"preprocessing.{key}: must be positive, got {value}")
    _check_name(CROP_RECIPES, out["crop"], "preprocessing.crop")
    _check_name(LANDMARK_BACKENDS, out["landmark_backend"], "preprocessing.landmark_backend")
    if out["pose_backend"] != "none":  # none: the clips get no estimated pose
        _check_name(POSE_BACKENDS, out["pose_backend"], "preprocessing.pose_backend")
        if not POSE_BACKENDS.get(out["pose_backend"]).preprocessing:
            raise ProtocolError(f"preprocessing.pose_backend: {out['pose_backend']!r} reads a "
                                f"prediction's own pose and cannot estimate a clip's")
    for key in ("crop_params", "landmark_params"):
        if not isinstance(out[key], dict):
            raise ProtocolError(f"preprocessing.{key}: expected a mapping")
    return out


SPLIT_RULES = ("explicit", "speaker_disjoint", "time", "clip_random")


def _parse_split(split: dict) -> dict:
    if "rule" not in split:
        raise ProtocolError(f"split.rule: missing ({', '.join(SPLIT_RULES)})")
    rule = split["rule"]
    if rule == "explicit":
        for name in SPLITS:
            if name == "val" and name not in split:
                continue
            speakers = _typed(split, name, list, f"split.{name}")
            if not all(isinstance(s, str) for s in speakers):
                raise ProtocolError(f"split.{name}: speaker ids must be strings")
            for spk in speakers:
                hidden = ", ".join(f"U+{ord(c):04X}" for c in spk if unicodedata.category(c)[0] in "CZ")
                if hidden or not spk:
                    raise ProtocolError(f"split.{name}: speaker id {spk!r} is empty or holds invisible or "
                                        f"space characters ({hidden or 'empty'})")
        seen: dict[str, str] = {}
        for name in SPLITS:
            for spk in split.get(name, []):
                if spk in seen:
                    raise ProtocolError(f"split: speaker {spk!r} is in both {seen[spk]} and {name}")
                seen[spk] = name
    elif rule == "speaker_disjoint":
        counts = _typed(split, "counts", dict, "split.counts")
        for name, value in counts.items():
            if name not in SPLITS or not isinstance(value, int) or value < 0:
                raise ProtocolError(f"split.counts.{name}: expected a split name with a count >= 0")
        if counts.get("test", 0) < 1:
            raise ProtocolError("split.counts.test: at least one test speaker is needed")
        _typed(split, "seed", int, "split.seed")
    elif rule == "time":
        # Person-specific video (the NeRF papers): every video of the one person is cut by time,
        # the last `test_seconds` (or `test_fraction`) of each video is test, the rest train.
        keys = {"rule", "test_seconds", "test_fraction", "val_seconds"}
        for key in split:
            if key not in keys:
                raise ProtocolError(f"split.{key}: unknown key for rule 'time'; allowed: {sorted(keys)}")
        if ("test_seconds" in split) == ("test_fraction" in split):
            raise ProtocolError("split: rule 'time' needs exactly one of test_seconds, test_fraction")
        if "test_seconds" in split:
            if _typed(split, "test_seconds", (int, float), "split.test_seconds") <= 0:
                raise ProtocolError("split.test_seconds: must be positive")
        else:
            fraction = _typed(split, "test_fraction", (int, float), "split.test_fraction")
            if not 0 < fraction < 1:
                raise ProtocolError(f"split.test_fraction: must be between 0 and 1, got {fraction}")
        if "val_seconds" in split and _typed(split, "val_seconds", (int, float), "split.val_seconds") < 0:
            raise ProtocolError("split.val_seconds: must be >= 0")
    elif rule == "clip_random":
        # Clip-level random split (KFusion's public code: a random 90/10 split of the MEAD clips):
        # clips, not speakers, are assigned, so a speaker's clips fall in train and test alike.
        # See `split_clips_random` for the seeded, deterministic assignment.
        keys = {"rule", "seed", "fractions"}
        for key in split:
            if key not in keys:
                raise ProtocolError(f"split.{key}: unknown key for rule 'clip_random'; allowed: {sorted(keys)}")
        _typed(split, "seed", int, "split.seed")
        fractions = _typed(split, "fractions", dict, "split.fractions")
        for name, value in fractions.items():
            if name not in SPLITS:
                raise ProtocolError(f"split.fractions.{name}: not a split name ({', '.join(SPLITS)})")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ProtocolError(f"split.fractions.{name}: expected a number between 0 and 1, got {value!r}")
        for name in ("train", "test"):
            if not fractions.get(name, 0) > 0:
                raise ProtocolError(f"split.fractions.{name}: must be > 0")
        if abs(sum(fractions.values()) - 1.0) > 1e-9:
            raise ProtocolError(f"split.fractions: must sum to 1, got {sum(fractions.values())}")
    else:
        raise ProtocolError(f"split.rule: {rule!r} is not one of {', '.join(SPLIT_RULES)}")
    return split


def _parse_windowing(win: Any) -> dict:
    """`{mode: whole}`, or `{mode: fixed, seconds, hop (default seconds), parts}`: clips of the
    splits named in `parts` (default all) are cut into windows of `seconds` every `hop` seconds
    (a tail shorter than a window is dropped); the other splits keep whole clips. The
    person-specific protocols window only the test part (`parts: [test]`): training sees the whole
    train part, and the test scores have one value per window, so N > 1 and real intervals."""
    if not isinstance(win, dict) or win.get("mode") not in ("whole", "fixed"):
        raise ProtocolError("windowing.mode: expected 'whole' or 'fixed'")
    keys = {"mode"} | ({"seconds", "hop", "parts"} if win["mode"] == "fixed" else set())
    for key in win:
        if key not in keys:
            raise ProtocolError(f"windowing.{key}: unknown key for mode {win['mode']!r}; allowed: {sorted(keys)}")
    if win["mode"] == "fixed":
        seconds = _typed(win, "seconds", (int, float), "windowing.seconds")
        hop = win.get("hop", seconds)
        if isinstance(hop, bool) or not isinstance(hop, (int, float)):
            raise ProtocolError(f"windowing.hop: expected int or float, got {hop!r}")
        if seconds <= 0 or hop <= 0:
            raise ProtocolError("windowing: seconds and hop must be positive")
        parts = win.get("parts", list(SPLITS))
        if (not isinstance(parts, list) or not parts or len(set(parts)) != len(parts)
                or any(p not in SPLITS for p in parts)):
            raise ProtocolError(f"windowing.parts: expected a non-empty list of distinct split names "
                                f"({', '.join(SPLITS)}), got {parts!r}")
        return {"mode": "fixed", "seconds": float(seconds), "hop": float(hop),
                "parts": [p for p in SPLITS if p in parts]}
    return {"mode": "whole"}


def time_split_bounds(num_frames: int, fps: float, rule: dict, what: str = "a clip"
                      ) -> dict[str, tuple[int, int]]:
    """Frame ranges [start, stop) of train, val and test under split rule `time`.

    The last `test_seconds` (or `test_fraction` of the frames, rounded) is test, the `val_seconds`
    before it val, the rest train. ProtocolError naming `what` when no train or test frame is left.
    """
    n = int(num_frames)
    if "test_seconds" in rule:
        n_test = int(round(rule["test_seconds"] * fps))
    else:
        n_test = int(round(rule["test_fraction"] * n))
    n_val = int(round(rule.get("val_seconds", 0) * fps))
    n_train = n - n_test - n_val
    if n_test < 1 or n_train < 1:
        raise ProtocolError(f"split: {what} has {n} frames; rule 'time' leaves {n_train} for train "
                            f"and {n_test} for test")
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}


def _parse_metric(entry: Any, i: int) -> MetricSpec:
    if isinstance(entry, str):
        _check_name(METRICS, entry, f"metrics[{i}]")
        return MetricSpec(entry, entry, {})
    if not isinstance(entry, dict) or "name" not in entry:
        raise ProtocolError(f"metrics[{i}]: expected a metric name or a mapping with 'name'")
    for key in entry:
        if key not in ("name", "label", "params"):
            raise ProtocolError(f"metrics[{i}].{key}: unknown key; allowed: label, name, params")
    params = entry.get("params", {}) or {}
    if not isinstance(params, dict):
        raise ProtocolError(f"metrics[{i}].params: expected a mapping")
    _check_name(METRICS, entry["name"], f"metrics[{i}].name")
    unknown = sorted(set(params) - set(METRICS.get(entry["name"]).defaults))
    if unknown:
        raise ProtocolError(f"metrics[{i}].params: unknown parameter(s) {unknown} of metric "
                            f"{entry['name']}; known: {sorted(METRICS.get(entry['name']).defaults)}")
    for key, allowed in METRICS.get(entry["name"]).choices.items():
        if key in params and params[key] not in allowed:
            raise ProtocolError(f"metrics[{i}].params.{key}: {params[key]!r} is not one of "
                                f"{list(allowed)} (metric {entry['name']})")
    return MetricSpec(str(entry["name"]), str(entry.get("label", entry["name"])), params)


def _parse_method(entry: Any, i: int) -> MethodSpec:
    if isinstance(entry, str):
        _check_name(METHODS, entry, f"methods[{i}]")
        return MethodSpec(entry)
    if not isinstance(entry, dict) or "name" not in entry:
        raise ProtocolError(f"methods[{i}]: expected a method name or a mapping with 'name'")
    for key in entry:
        if key not in ("name", "preset", "label", "config"):
            raise ProtocolError(f"methods[{i}].{key}: unknown key; allowed: config, label, name, preset")
    _check_name(METHODS, entry["name"], f"methods[{i}].name")
    return MethodSpec(str(entry["name"]), str(entry.get("preset", "tiny")), entry.get("label"),
                      dict(entry.get("config", {}) or {}))


def _check_reference(ref: Any, i: int, labels: set[str]) -> None:
    """One transcribed paper table (a dataset part of it). Keys (besides the required ones):

    caption: the caption as printed; columns: the metric labels in the paper's column order;
    scale: {label: factor} with talkbench value = paper value x factor, for a paper unit the metric
    does not use (e.g. accuracy printed in %: 0.01), and unit: {label: text} naming that unit;
    setting_column: the header of a non-metric column (KFusion's "Year", the NeRF "Iteration").
    Row keys: paper_row (the row label exactly as printed, default `method`), setting (that row's
    cell in setting_column, as printed), ours (the talkbench result row that reproduces it),
    ranked (false for rows the paper leaves out of best/second, e.g. ground truth), note.
    """
    where = f"reference_results[{i}]"
    if not isinstance(ref, dict):
        raise ProtocolError(f"{where}: expected a mapping")
    for key in ("source", "table", "rows"):
        if key not in ref:
            raise ProtocolError(f"{where}.{key}: missing")
    allowed = {"source", "table", "caption", "rows", "columns", "scale", "unit", "setting_column", "note"}
    for key in ref:
        if key not in allowed:
            raise ProtocolError(f"{where}.{key}: unknown key; allowed: {sorted(allowed)}")
    for key in ("source", "table", "caption", "setting_column", "note"):
        if key in ref and not isinstance(ref[key], str):
            raise ProtocolError(f"{where}.{key}: expected text, got {ref[key]!r}")
    if not isinstance(ref["rows"], list) or not ref["rows"]:
        raise ProtocolError(f"{where}.rows: expected a non-empty list of rows")
    columns = ref.get("columns")
    if columns is not None:
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ProtocolError(f"{where}.columns: expected a list of metric labels")
        for c in columns:
            if c not in labels:
                raise ProtocolError(f"{where}.columns: {c!r} is not a metric label of this protocol")
        if len(set(columns)) != len(columns):
            raise ProtocolError(f"{where}.columns: a label is listed twice")
    for key, kind in (("scale", (int, float)), ("unit", str)):
        mapping = ref.get(key, {})
        if not isinstance(mapping, dict):
            raise ProtocolError(f"{where}.{key}: expected a mapping of metric label to value")
        for label, value in mapping.items():
            if label not in labels:
                raise ProtocolError(f"{where}.{key}.{label}: not a metric of this protocol")
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ProtocolError(f"{where}.{key}.{label}: expected {'a number' if key == 'scale' else 'text'}")
            if key == "scale" and not value > 0:
                raise ProtocolError(f"{where}.scale.{label}: must be positive, got {value}")
    row_keys = {"method", "values", "paper_row", "setting", "ours", "ranked", "note"}
    seen: set[tuple] = set()
    for j, row in enumerate(ref["rows"]):
        if not isinstance(row, dict) or "method" not in row or not isinstance(row.get("values"), dict):
            raise ProtocolError(f"{where}.rows[{j}]: expected {{method: ..., values: {{metric: number}}}}")
        for key in row:
            if key not in row_keys:
                raise ProtocolError(f"{where}.rows[{j}].{key}: unknown key; allowed: {sorted(row_keys)}")
        for key in ("method", "paper_row", "ours", "note"):
            if key in row and not isinstance(row[key], str):
                raise ProtocolError(f"{where}.rows[{j}].{key}: expected text, got {row[key]!r}")
        if "setting" in row:
            if "setting_column" not in ref:
                raise ProtocolError(f"{where}.rows[{j}].setting: the table has no setting_column")
            if row["setting"] is not None and not isinstance(row["setting"], str):
                raise ProtocolError(f"{where}.rows[{j}].setting: expected text as printed (quote numbers)")
        if "ranked" in row and not isinstance(row["ranked"], bool):
            raise ProtocolError(f"{where}.rows[{j}].ranked: expected true or false")
        ident = (row["method"], row.get("setting"))
        if ident in seen:
            raise ProtocolError(f"{where}.rows[{j}]: row {row['method']!r} appears twice")
        seen.add(ident)
        for metric, value in row["values"].items():
            if metric not in labels:
                raise ProtocolError(f"{where}.rows[{j}].values.{metric}: not a metric of this protocol")
            if columns is not None and metric not in columns:
                raise ProtocolError(f"{where}.rows[{j}].values.{metric}: not one of the table's columns")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ProtocolError(f"{where}.rows[{j}].values.{metric}: expected a number")


def reference_columns(ref: dict, protocol: "Protocol") -> list[str]:
    """The metric labels of one reference table in the paper's column order."""
    if ref.get("columns"):
        return list(ref["columns"])
    present = {k for r in ref["rows"] for k in r["values"]}
    return [l for l in [m.label for m in protocol.metrics] + [f["label"] for f in protocol.fit_statistics]
            if l in present]


# -- splits ----------------------------------------------------------------------------------------

def resolve_split(protocol: Protocol, speakers: list[str]) -> dict[str, list[str]]:
    """Speaker lists per split. A seeded rule is expanded once and pinned in a split file."""
    if protocol.split["rule"] == "explicit":
        split = {name: list(protocol.split.get(name, [])) for name in SPLITS}
    else:
        pinned = split_file(protocol)
        if pinned.exists():
            body = json.loads(pinned.read_text())
            if body.get("rule") != protocol.split:
                raise ProtocolError(
                    f"split: the rule changed since {pinned} was pinned ({body.get('rule')} -> "
                    f"{protocol.split}); delete that file to expand the new rule"
                )
            split = body["speakers"]
        else:
            split = _expand_speaker_split(protocol.split, speakers)
            _pin_split(protocol, split)
    missing = sorted({s for names in split.values() for s in names} - set(speakers))
    if missing:
        raise ProtocolError(
            f"split names speakers the dataset does not have: {missing} (dataset has {len(speakers)})"
        )
    return split


def split_clips_random(clip_ids: list[str], rule: dict) -> dict[str, list[str]]:
    """Split rule `clip_random`: clip ids per split, seeded and deterministic.

    Each clip is ranked by sha256 of "<seed>:<clip id>"; the first round(fractions.test x n) clips
    of that ranking are test, the next round(fractions.val x n) val, the rest train. The result
    depends only on the seed and the set of ids (not on their order or on the machine), so it needs
    no pinned split file; a clip added to or missing from the dataset moves at most one other clip
    across each boundary. It is applied to the dataset's clips before windowing, so every window of
    a clip is in the clip's split.
    """
    ids = sorted(set(clip_ids))
    if len(ids) != len(clip_ids):
        raise ProtocolError("split: rule 'clip_random' needs unique clip ids")
    seed = rule["seed"]
    ranked = sorted(ids, key=lambda cid: (hashlib.sha256(f"{seed}:{cid}".encode()).hexdigest(), cid))
    fractions = rule["fractions"]
    n = len(ranked)
    n_test = int(round(fractions.get("test", 0) * n))
    n_val = int(round(fractions.get("val", 0) * n))
    if n and (n_test < 1 or n - n_test - n_val < 1):
        raise ProtocolError(f"split: rule 'clip_random' with fractions {fractions} leaves {n - n_test - n_val} "
                            f"train and {n_test} test clips of {n}")
    return {"test": sorted(ranked[:n_test]), "val": sorted(ranked[n_test:n_test + n_val]),
            "train": sorted(ranked[n_test + n_val:])}


def split_file(protocol: Protocol) -> Path:
    """The pinned split: shipped next to the protocol, else expanded into TALKBENCH_HOME."""
    shipped = PROTOCOL_DIR / "splits" / f"{protocol.id}.json"
    if shipped.exists():
        return shipped
    return talkbench_home() / "splits" / f"{protocol.id}-{protocol.hash[:12]}.json"


def _expand_speaker_split(rule: dict, speakers: list[str]) -> dict[str, list[str]]:
    counts = rule["counts"]
    need = sum(counts.values())
    if need > len(speakers):
        raise ProtocolError(f"split.counts asks for {need} speakers, the dataset has {len(speakers)}")
    order = sorted(speakers)
    random.Random(rule["seed"]).shuffle(order)
    split, start = {}, 0
    for name in SPLITS:
        n = counts.get(name, 0)
        split[name] = sorted(order[start:start + n])
        start += n
    return split


def _pin_split(protocol: Protocol, split: dict[str, list[str]]) -> None:
    path = split_file(protocol)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"protocol": protocol.id, "protocol_hash": protocol.hash, "rule": protocol.split,
            "speakers": split}
    path.write_text(json.dumps(body, indent=2) + "\n")
