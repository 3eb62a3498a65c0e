"""Content-addressed caches: a value is stored under the sha256 of everything it depends on.

Keys hash inputs (clip content, prediction file, metric name + version + parameters), never file
names or run ids, so a changed input can never return a stale value, and an interrupted run
picks up every value it already computed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from core.io import atomic_write_bytes, temp_name
from core.paths import talkbench_home


class Cache:
    def __init__(self, root: Optional[Path] = None) -> None:
        self.root = Path(root) if root else talkbench_home() / "cache"

    def _path(self, namespace: str, key: str, suffix: str) -> Path:
        return self.root / namespace / key[:2] / f"{key}{suffix}"

    def get_json(self, namespace: str, key: str) -> Optional[Any]:
        path = self._path(namespace, key, ".json")
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:  # a write cut short by a kill: recompute
            return None

    def put_json(self, namespace: str, key: str, value: Any) -> None:
        path = self._path(namespace, key, ".json")
        atomic_write_bytes(path, json.dumps(value).encode())

    def get_arrays(self, namespace: str, key: str) -> Optional[dict[str, np.ndarray]]:
        path = self._path(namespace, key, ".npz")
        if not path.exists():
            return None
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except Exception:  # truncated file: recompute
            return None

    def put_arrays(self, namespace: str, key: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._path(namespace, key, ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(path)  # one per writer: ranks on several machines may share the cache
        try:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

