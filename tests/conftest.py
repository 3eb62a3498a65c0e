"""Test-wide settings: offline, CPU, and a private TALKBENCH_HOME shared by the session."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# the CLI's --workers default (the cores): one process in tests unless a test asks for more
os.environ["TALKBENCH_WORKERS"] = "1"
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="talkbench-tests-"))
os.environ["TALKBENCH_HOME"] = str(_SESSION_HOME)

_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    """Tests must never reach the network: only loopback and local sockets are allowed."""
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
        raise RuntimeError(f"a test tried to open a network connection to {address}")
    return _real_connect(self, address)


socket.socket.connect = _guarded_connect


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test, restored after: tiny models run fastest so, above all
    when other processes share the cores (`pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def talkbench_home() -> Path:
    return _SESSION_HOME
