"""Atomic writes: a reader never sees a half-written file, and a killed writer leaves no result."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def json_default(value: Any) -> Any:
    """`json.dumps` default for numpy scalars and arrays."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, value: Any) -> None:
    """Pretty, key-sorted JSON with a trailing newline, written atomically."""
    text = json.dumps(value, indent=1, sort_keys=True, default=json_default) + "\n"
    atomic_write_bytes(path, text.encode())
