"""Markdown tables and number formatting."""

from __future__ import annotations

import math
from collections.abc import Sequence


def rate(value: float) -> str:
    """Tasks per second, or a dash when not measured."""
    return "—" if math.isnan(value) else f"{value:,.0f}"


def ms(value: float) -> str:
    """Milliseconds with two decimals below 10, else whole."""
    if math.isnan(value):
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:,.0f}"


def ratio(ours: float, theirs: float, per_repeat: Sequence[float] = ()) -> str:
    """``ours / theirs`` as ``1.23x`` (a dash when either is missing).

    With ``per_repeat`` (the ratio within each repeat) of two or more, their
    range follows: ``1.23x (1.10-1.31)``.
    """
    if math.isnan(ours) or math.isnan(theirs) or theirs == 0:
        return "—"
    text = f"{ours / theirs:.2f}x"
    if len(per_repeat) > 1:
        text += f" ({min(per_repeat):.2f}-{max(per_repeat):.2f})"
    return text


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table; the first column is left-aligned, the others right."""
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
