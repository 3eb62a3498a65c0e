"""Raw dataset items: what a dataset adapter finds on disk, before any preprocessing.

Every real dataset (MEAD, CREMA-D, GRID, TCD-TIMIT, HDTF, VoxCeleb2, person-specific video) has a
module in `bench/data/sources/` with one function, ``discover(root, options) -> list[RawItem]``,
registered in `DATASETS`. Discovery only reads the directory tree and the metadata that file names carry; it
never decodes media, so `talkbench data check` is fast. The preprocessing pipeline
(`bench/data/prepare.py`) turns each RawItem into a cached, protocol-conformant `Clip`.

A RawItem whose separate audio file is expected but absent keeps the expected path in `audio`:
`check` reports it missing and `prepare` records it in the failure manifest. Nothing is dropped at
discovery time except files that are not part of the dataset at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from core.registry import Registry


class DatasetError(ValueError):
    """A dataset root that cannot be read as the named dataset; the message says what was expected."""


@dataclass(frozen=True)
class RawItem:
    """One recording as distributed.

    id: unique within the dataset and filesystem-safe (e.g. ``M003_front_angry_3_001``).
    video: the video file; audio: a separate audio file, or None to take the video's audio track.
    start / end: seconds into the files (None: the whole file).
    meta: dataset-specific fields (view, sentence id, alignment file, ...), JSON-serialisable.
    """

    id: str
    speaker: str
    video: Optional[Path]
    audio: Optional[Path] = None
    emotion: str = "neutral"
    intensity: int = 1
    text: Optional[str] = None
    start: Optional[float] = None
    end: Optional[float] = None
    meta: dict[str, Any] = field(default_factory=dict)


Discover = Callable[[Path, dict], list[RawItem]]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset talkbench can read: a real corpus (`discover` lists its RawItems, which
    `bench.data.prepare` turns into clips) or a generated one (`load(protocol, progress)` returns
    its clips directly: synthtalk)."""

    name: str
    discover: Optional[Discover] = None
    load: Optional[Callable[..., list]] = None

    @property
    def real(self) -> bool:
        return self.discover is not None


# Every dataset by name; the modules of `bench.data.sources` register themselves.
DATASETS: Registry[DatasetSpec] = Registry("dataset", packages=("bench.data.sources",))


def register_source(name: str) -> Callable[[Discover], Discover]:
    """Decorator of a real dataset's ``discover(root, options) -> list[RawItem]``."""
    def wrap(fn: Discover) -> Discover:
        DATASETS.register(DatasetSpec(name, discover=fn))
        return fn
    return wrap


def source(name: str) -> Discover:
    """The discover function of a real dataset."""
    if name not in DATASETS:
        raise DatasetError(DATASETS.unknown(name))
    spec = DATASETS.get(name)
    if spec.discover is None:
        raise DatasetError(f"dataset {name!r} is generated, not read from a folder")
    return spec.discover


def root_env_var(name: str) -> str:
    return f"TALKBENCH_DATA_{name.upper()}"


def dataset_root(name: str, root: Optional[str | Path] = None) -> Path:
    """Where a dataset lives: the explicit `root`, else $TALKBENCH_DATA_<NAME>; never guessed."""
    value = root or os.environ.get(root_env_var(name))
    if not value:
        raise DatasetError(
            f"no root folder for dataset {name!r}: pass --root PATH or set {root_env_var(name)}"
        )
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DatasetError(f"dataset root {path} for {name!r} is not a folder")
    return path


def parse_options(dataset: str, options: Optional[dict], defaults: dict[str, Any],
                  choices: Optional[dict[str, Iterable[Any]]] = None) -> dict[str, Any]:
    """`options` checked against the adapter's known options and filled with their defaults.

    An unknown key, a list option that is not a list, or a value outside `choices` raises a
    DatasetError that names it, so a typo in a protocol's `dataset.options` cannot pass unnoticed.
    """
    options = dict(options or {})
    for key in options:
        if key not in defaults:
            raise DatasetError(
                f"{dataset}: unknown option {key!r}; allowed: {sorted(defaults) or 'none'}")
    out = {**defaults, **options}
    for key, allowed in (choices or {}).items():
        value = out[key]
        if not isinstance(value, (list, tuple)):
            raise DatasetError(f"{dataset}: option {key!r} must be a list, got {value!r}")
        allowed = list(allowed)
        bad = [v for v in value if v not in allowed]
        if bad:
            raise DatasetError(f"{dataset}: option {key!r} has unknown values {bad}; allowed: {allowed}")
        out[key] = list(value)
    return out


def not_dataset(dataset: str, root: Path, expected: str) -> DatasetError:
    """The error for a root that does not look like `dataset` at all; says which layout was expected."""
    return DatasetError(f"{root} does not look like {dataset}: expected {expected}")
