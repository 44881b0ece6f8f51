"""A video's affect at a glance, as ``predict --plot`` draws it: on the left its timeline of
what MMA reads per frame (paper section 3.1), on the right the 7 reaction intensities MRNN
gives the whole video (section 3.2):

    valence and arousal over time              lines in [-1, 1]
    the 7 expression probabilities over time   stacked areas, the legend led by the most frequent
    the 17 AU probabilities over time          a heat map, the leading AUs' names in bold
    the 7 intensities                          bars

Frames without a face are shaded grey. Drawn with matplotlib's object interface (no pyplot, no
display needed); matplotlib is an optional dependency (``pip install -e ".[plot]"``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mmarnn_min.affect import AUS, EXPRESSIONS, NUM_EXPRESSIONS
from mmarnn_min.errors import UserError
from mmarnn_min.files import replace_atomically
from mmarnn_min.frame_table import FrameTable

PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
LEADING_AUS = 5  # AU names drawn in bold: the most active ones on average
EXPRESSION_COLOURS = {"neutral": "#b0b0b0", "anger": "#d62728", "disgust": "#8c564b", "fear": "#9467bd",
                      "happiness": "#f2b701", "sadness": "#1f77b4", "surprise": "#17becf"}


def require_matplotlib() -> None:
    """A UserError saying how to install matplotlib when it is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError('--plot needs matplotlib: pip install -e ".[plot]"') from None


def _shade_missing(ax, x: np.ndarray, found: np.ndarray, step: float) -> None:
    """Grey spans over the runs of frames without a face."""
    for start, stop in _runs(~found):
        ax.axvspan(x[start] - step / 2, x[stop - 1] + step / 2, color="0.85", lw=0, zorder=0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def timeline_figure(table: FrameTable, intensities: dict[str, float], title: str):
    """The figure (a matplotlib ``Figure``) of one video's ``table`` and ``intensities``."""
    from matplotlib.figure import Figure

    has_time = bool(np.isfinite(table.time).all())
    x = table.time if has_time else table.index.astype(np.float64)                  # (N,)
    step = float(np.median(np.diff(x))) if len(x) > 1 else 1.0
    found = table.found
    va, expressions, aus = np.split(table.affect, [2, 2 + NUM_EXPRESSIONS], axis=1)  # (N,2), (N,7), (N,17)

    fig = Figure(figsize=(14, 7.5), layout="constrained")
    grid = fig.add_gridspec(3, 2, width_ratios=(3.4, 1), height_ratios=(1, 1.1, 1.6))
    ax_va = fig.add_subplot(grid[0, 0])
    ax_expr = fig.add_subplot(grid[1, 0], sharex=ax_va)
    ax_au = fig.add_subplot(grid[2, 0], sharex=ax_va)
    ax_int = fig.add_subplot(grid[:, 1])
    fig.suptitle(title, fontsize=12)

    ax_va.axhline(0, color="0.6", lw=0.8)
    ax_va.plot(x, va[:, 0], color="#2a9d8f", lw=1.6, label="valence")
    ax_va.plot(x, va[:, 1], color="#e76f51", lw=1.6, label="arousal")
    ax_va.set_ylim(-1.05, 1.05)
    ax_va.set_ylabel("valence / arousal")
    ax_va.legend(loc="upper right", ncols=2, fontsize=9, frameon=False)

    mean_expression = np.nanmean(expressions, axis=0)                                # (7,)
    order = np.argsort(-mean_expression)                                             # leading first
    for run, (start, stop) in enumerate(_runs(found)):  # one stack per run of frames with a face
        ax_expr.stackplot(x[start:stop], expressions[start:stop, order].T,
                          colors=[EXPRESSION_COLOURS[EXPRESSIONS[e]] for e in order],
                          labels=[f"{EXPRESSIONS[e]} {mean_expression[e]:.0%}" for e in order] if run == 0 else ())
    ax_expr.set_ylim(0, 1)
    ax_expr.set_ylabel("expressions\n(% = mean)")
    ax_expr.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=NUM_EXPRESSIONS, fontsize=8,
                   frameon=False, handlelength=1.2, columnspacing=1.0, borderaxespad=0.1)

    image = ax_au.imshow(np.where(found[:, None], aus, np.nan).T, aspect="auto", cmap="magma", vmin=0, vmax=1,
                         interpolation="nearest", origin="upper",
                         extent=(x[0] - step / 2, x[-1] + step / 2, len(AUS) - 0.5, -0.5))
    mean_au = np.nanmean(aus, axis=0)                                               # (17,)
    leading = set(np.argsort(-mean_au)[:LEADING_AUS].tolist())
    ax_au.set_yticks(range(len(AUS)), [f"AU{au}" for au in AUS], fontsize=8)
    for row, label in enumerate(ax_au.get_yticklabels()):
        label.set_fontweight("bold" if row in leading else "normal")
    ax_au.set_ylabel(f"AU probability\n({LEADING_AUS} leading in bold)")
    ax_au.set_xlabel("time (s)" if has_time else "frame")
    fig.colorbar(image, ax=ax_au, location="bottom", fraction=0.06, pad=0.02, aspect=60, label="AU probability")

    for ax in (ax_va, ax_expr):
        _shade_missing(ax, x, found, step)
        ax.tick_params(labelbottom=False)
    ax_au.set_facecolor("0.85")  # frames without a face: NaN in the heat map, shown as the background
    ax_va.set_xlim(x[0] - step / 2, x[-1] + step / 2)

    names = list(intensities)[::-1]
    values = np.array([intensities[name] for name in names])                        # (7,)
    ax_int.barh(names, values, color="#264653")
    for row, value in enumerate(values):
        ax_int.text(value, row, f" {value:.3f}", va="center", fontsize=9)
    ax_int.set_xlim(min(0.0, values.min() * 1.2), max(1.0, values.max() * 1.25))
    ax_int.set_title("reaction intensities\n(MRNN, whole video)", fontsize=10)
    ax_int.grid(axis="x", color="0.9")
    ax_int.set_axisbelow(True)
    return fig


def save_timeline(table: FrameTable, intensities: dict[str, float], title: str, path: str | Path) -> None:
    """Draw ``timeline_figure`` and write it to ``path`` (its suffix picks the format),
    atomically."""
    path = Path(path)
    fig = timeline_figure(table, intensities, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".").lower(), dpi=110)
    replace_atomically(path, lambda file: file.write(buffer.getvalue()))
