"""Error classes shared across layers. Each names what went wrong and, where it can, the fix."""

from __future__ import annotations


class MetricError(Exception):
    """This clip cannot be scored by this metric (the message says why)."""


class MetricUnavailable(Exception):
    """A metric, model or backend cannot run at all here (e.g. missing weights); the message says
    how to fix it (usually the `talkbench weights download NAME` command)."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, for another method, or from another config."""


def short_error(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` of an exception on one line, cut at `limit` characters (for error texts
    that quote a library's exception)."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + " ..."
