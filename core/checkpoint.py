"""Checkpoints: a method's config and learned arrays in one .npz, with its sha256 beside it.

The config travels inside the file so `load` can refuse a checkpoint trained with other
hyperparameters instead of silently running a different model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from core.errors import CheckpointError
from core.hashing import file_sha256
from core.io import atomic_write_bytes, temp_name


def save_checkpoint(path: Path, method: str, config: dict[str, Any], state: dict[str, np.ndarray]) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"method": method, "config": config}, sort_keys=True, default=str)
    arrays = {f"state/{k}": np.asarray(v) for k, v in sorted(state.items())}
    tmp = temp_name(path)  # one per writer: ranks of a torchrun job may save the same file
    try:
        with open(tmp, "wb") as handle:  # np.savez on a handle keeps the name we chose
            np.savez(handle, __meta__=np.frombuffer(meta.encode(), dtype=np.uint8), **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    sha = file_sha256(path)
    atomic_write_bytes(path.with_name(path.name + ".sha256"), (sha + "\n").encode())
    return sha


def load_checkpoint(path: Path, method: str, expected_config: Optional[dict[str, Any]] = None
                    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            state = {k[len("state/"):]: data[k] for k in data.files if k.startswith("state/")}
    except Exception as exc:  # zip, json or key errors all mean the file is not a checkpoint
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from exc
    if meta.get("method") != method:
        raise CheckpointError(f"checkpoint {path} is for method {meta.get('method')!r}, not {method!r}")
    if expected_config is not None:
        expected = json.loads(json.dumps(expected_config, sort_keys=True, default=str))
        diff = sorted(k for k in set(expected) | set(meta["config"])
                      if expected.get(k) != meta["config"].get(k))
        if diff:
            details = ", ".join(f"{k}: checkpoint {meta['config'].get(k)!r} vs requested {expected.get(k)!r}"
                                for k in diff)
            raise CheckpointError(f"checkpoint {path} was trained with another config ({details})")
    return meta["config"], state
