"""Tables for people: plain text for the terminal, Markdown for report files."""

from __future__ import annotations


def format_table(header: list[str], rows: list[list[object]]) -> str:
    """A plain-text table with right-aligned columns (floats to 3 significant digits)."""
    cells = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(header: list, rows: list[list]) -> str:
    """A Markdown table (floats to 4 decimals)."""
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    return "\n".join(["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(map(cell, row)) + " |" for row in rows])
