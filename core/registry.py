"""One registry class for every kind of plug-in: methods, metrics, dataset adapters, landmark and
pose backends, crop recipes.

An entry registers itself with a decorator where it is defined (``@METRICS.register``); nothing
keeps a hand-written list. The first lookup *discovers* the entries: it imports every module of the
registry's packages (so a new file in ``metrics/`` is found by being there) and loads the
entry points of its group (``talkbench.methods``, ``talkbench.metrics``), so another installed
distribution can add a method or a metric without editing talkbench::

    # a researcher's pyproject.toml
    [project.entry-points."talkbench.metrics"]
    my_metric = "my_package.metrics"   # a module whose classes use @register

An entry point may name a module (its decorators register) or a class (registered if it is not
yet). A plug-in that fails to import is reported with its error in every "unknown name" message,
never silently dropped.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import pkgutil
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry (a class or a spec object). `key` reads an entry's name (default `.name`)."""

    def __init__(self, kind: str, packages: tuple[str, ...] = (), entry_point_group: Optional[str] = None,
                 key: Callable[[Any], str] = lambda obj: obj.name) -> None:
        self.kind = kind
        self.packages = packages
        self.entry_point_group = entry_point_group
        self.key = key
        self._entries: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._discovered = False
        self._discovering = False
        self.plugin_errors: dict[str, str] = {}

    # -- registering ------------------------------------------------------------------------------
    def register(self, obj: Optional[T] = None, *, name: Optional[str] = None) -> Any:
        """Decorator (``@REG.register`` or ``@REG.register(name="x")``) or a plain call."""
        def add(entry: T) -> T:
            entry_name = name or self.key(entry)
            if not isinstance(entry_name, str) or not entry_name:
                raise ValueError(f"{self.kind} {entry!r} has no name")
            origin = getattr(entry, "__module__", type(entry).__module__)
            known = self._entries.get(entry_name)
            if known is not None and known is not entry:
                raise ValueError(f"{self.kind} {entry_name!r} registered twice "
                                 f"({self._origin[entry_name]} and {origin})")
            self._entries[entry_name] = entry
            self._origin[entry_name] = origin
            return entry

        return add(obj) if obj is not None else add

    # -- discovery --------------------------------------------------------------------------------
    def discover(self) -> None:
        """Import every module of the registry's packages, then its entry points; once."""
        if self._discovered or self._discovering:
            return
        self._discovering = True
        try:
            for package in self.packages:
                for name in _walk(package):
                    importlib.import_module(name)
            if self.entry_point_group:
                self._load_entry_points()
            self._discovered = True
        finally:
            self._discovering = False

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name in self._entries or ep.name in self.plugin_errors:
                continue  # loaded already (a module entry point registers under its own names)
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken plug-in must not break talkbench; it is reported
                self.plugin_errors[ep.name] = f"{ep.value}: {type(exc).__name__}: {exc}"
                log.warning("talkbench: plug-in %s (%s) of %s failed to load: %s", ep.name, ep.value,
                            self.entry_point_group, exc)
                continue
            if isinstance(loaded, type) and loaded not in self._entries.values():
                self.register(loaded)

    # -- lookup -----------------------------------------------------------------------------------
    def _find(self, name: object) -> bool:
        """Whether `name` is registered, discovering first and, on a miss, looking at the entry
        points again (a plug-in installed after the first lookup in this process)."""
        if name in self._entries:
            return True
        if not self._discovered:
            self.discover()
        elif self.entry_point_group and not self._discovering:
            self._load_entry_points()
        return name in self._entries

    def get(self, name: str) -> T:
        if not self._find(name):
            raise KeyError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: str) -> str:
        """The message for an unknown name: the known ones, a close match, broken plug-ins."""
        self.discover()
        text = f"unknown {self.kind} {name!r}; known: {sorted(self._entries)}"
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        if close:
            text += f" (did you mean {close[0]!r}?)"
        if self.plugin_errors:
            text += "; plug-ins that failed to load: " + "; ".join(
                f"{k} ({v})" for k, v in sorted(self.plugin_errors.items()))
        return text

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        return self._find(name)

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self.discover()
        return iter(sorted(self._entries.items()))

    def origin(self, name: str) -> str:
        """The module that registered `name`."""
        self.get(name)
        return self._origin[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _walk(package: str) -> list[str]:
    """Every module of `package` (recursively), skipping names that start with an underscore."""
    pkg = importlib.import_module(package)
    names = []
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(names)
