"""Atomic writes: a reader never sees a half-written file, and a killed writer leaves no result."""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import numpy as np


def temp_name(path: Path) -> Path:
    """A temporary file beside `path` that no other writer uses: not another process, nor one on
    another machine sharing the filesystem (torchrun ranks), nor another thread."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all; concurrent writers of one path each replace it whole (the
    last one wins), so a reader sees one writer's complete bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
