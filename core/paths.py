"""Where talkbench keeps its caches, corpora and weights."""

from __future__ import annotations

import os
from pathlib import Path


def talkbench_home() -> Path:
    """Root of every cache: `$TALKBENCH_HOME`, default `~/.cache/talkbench`."""
    root = os.environ.get("TALKBENCH_HOME")
    path = Path(root) if root else Path.home() / ".cache" / "talkbench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The checkout (or install prefix) that holds `bench/`, `protocols/` and `results/`."""
    return Path(__file__).resolve().parent.parent
