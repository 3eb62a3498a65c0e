"""Markdown tables for reports, laid out by `tabulate` (pipe format)."""

from __future__ import annotations

from typing import Optional, Sequence

from tabulate import tabulate


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                   align: Optional[Sequence[str]] = None) -> list[str]:
    """The lines of a pipe table; cells are printed as given (no number parsing), `|` escaped."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")

    text = tabulate([[cell(v) for v in row] for row in rows], headers=[cell(h) for h in headers],
                    tablefmt="pipe", disable_numparse=True, colalign=align)
    return text.splitlines()
