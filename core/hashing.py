"""Hashing: file digests, cache keys, array digests and code fingerprints, in one place."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
CHUNK = 1 << 20


def file_sha256(path: PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def fingerprint(path: PathLike) -> str:
    """`file_sha256`, remembered per (path, size, mtime) so a process hashes a file once."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = file_sha256(p)
    return _FINGERPRINTS[key]


def key_of(*parts: Any) -> str:
    """SHA-256 of the canonical JSON of `parts`: the key of every content-addressed cache entry."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def array_digest(*arrays: Optional[np.ndarray]) -> str:
    """A content digest of arrays (dtype, shape and bytes): the key of per-clip result caches that
    several metrics share (one SyncNet evaluation for LSE-D/LSE-C/offset, one Hopenet pass for
    Diversity/BeatAlign)."""
    h = hashlib.blake2b(digest_size=20)
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


# -- code fingerprints ---------------------------------------------------------------------------
# Packages whose source can change a computed value. A fingerprint covers a module and every module
# of these packages it imports (at module level or inside functions), transitively, so editing a
# helper a metric calls changes the metric's cache key too. A caller may narrow the packages (or
# name sub-packages, e.g. "bench.data") to what can change its value.
PROJECT_PACKAGES = ("core", "faces", "metrics", "baselines", "bench")
_CODE_FINGERPRINTS: dict[str, str] = {}


def _module_file(name: str) -> Optional[Path]:
    """The source file of module `name`, found without running it (None: not a module)."""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None) if module is not None else None
    if path is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            return None
        path = spec.origin if spec is not None else None
    if not path or not str(path).endswith(".py"):
        return None
    return Path(path)


def _project_imports(name: str, source: bytes, packages: tuple[str, ...],
                     source_is_package: bool = False) -> list[str]:
    import ast

    out: list[str] = []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return out
    base = name.split(".") if source_is_package else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[:len(base) - (node.level - 1)]
                mod = ".".join(parent + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            out.extend(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return [mod for mod in out if _within(mod, packages)]


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def code_fingerprint(*modules: Union[str, type, Any], packages: Iterable[str] = PROJECT_PACKAGES
                     ) -> str:
    """SHA-256 over the source of `modules` (names, classes or module objects) and of every
    module of `packages` they import, transitively (imports inside functions included). The named
    modules are always covered, so a plug-in's own module counts wherever it lives.

    Cache keys of computed values carry it, so editing the code that computes a value (or a
    helper it imports) can never return the value the old code cached.
    """
    packages = tuple(packages)
    names = []
    for m in modules:
        if isinstance(m, str):
            names.append(m)
        elif inspect.ismodule(m):
            names.append(m.__name__)
        else:
            names.append(m.__module__)
    memo_key = "|".join(sorted(names)) + "#" + ",".join(packages)
    if memo_key in _CODE_FINGERPRINTS:
        return _CODE_FINGERPRINTS[memo_key]
    seen: dict[str, bytes] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue  # `from pkg import function`: the function's module is already listed
        seen[name] = path.read_bytes()
        todo.extend(m for m in _project_imports(name, seen[name], packages, path.name == "__init__.py")
                    if m not in seen)
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(name.encode() + b"\0" + hashlib.sha256(seen[name]).digest())
    _CODE_FINGERPRINTS[memo_key] = digest.hexdigest()
    return _CODE_FINGERPRINTS[memo_key]
