"""Tables for people: plain text for the terminal, Markdown for report files. A number that
is undefined (None, or NaN: a correlation of a constant column, say) reads "undefined", never
a value that could pass for a result."""

from __future__ import annotations

import math


def number(value: float | None, spec: str = ".4f") -> str:
    """``value`` formatted with ``spec``, or "undefined" for None and NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "undefined"
    return format(value, spec)


def format_table(header: list[str], rows: list[list[object]]) -> str:
    """A plain-text table with right-aligned columns (floats to 3 significant digits)."""
    cells = [header] + [[number(c, ".3g") if isinstance(c, float) or c is None else str(c) for c in row]
                        for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(header: list, rows: list[list]) -> str:
    """A Markdown table (floats to 4 decimals)."""
    def cell(value) -> str:
        return number(value) if isinstance(value, float) or value is None else str(value)

    return "\n".join(["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(map(cell, row)) + " |" for row in rows])
