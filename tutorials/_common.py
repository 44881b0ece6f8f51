"""What every lesson shares: the quick switch and where the figures go.

    MMARNN_QUICK=1           shrink a lesson (fewer images, epochs, repeats) so the test suite
                             can run every lesson in seconds; the checks stay the same
    MMARNN_TUTORIAL_OUT=DIR  where figures and training runs go (default: runs/tutorials/ in
                             the repository, which git ignores)

The lessons take their data and network sizes from the presets of ``mmarnn_min.config``:
``default`` at full size, ``tiny`` in quick mode (``PRESET``).

In a notebook (Jupyter, VS Code) figures show inline and are saved too; as a script,
matplotlib draws off-screen (the Agg backend) and the lesson prints where each PNG went.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

QUICK = os.environ.get("MMARNN_QUICK", "") not in ("", "0")
REPO = Path(__file__).resolve().parent.parent
# The preset of ``mmarnn_min.config`` every lesson takes its data and sizes from, so that each
# number a lesson prints traces back to one configuration: ``preset(PRESET)``.
PRESET = "tiny" if QUICK else "default"


def in_notebook() -> bool:
    """True inside a Jupyter / IPython kernel (figures then display inline)."""
    return "ipykernel" in sys.modules


def quick(full, small):
    """``small`` under MMARNN_QUICK=1, else ``full``."""
    return small if QUICK else full


def output_dir(lesson: str) -> Path:
    """The folder for this lesson's figures and runs: ``$MMARNN_TUTORIAL_OUT/<lesson>``."""
    root = Path(os.environ.get("MMARNN_TUTORIAL_OUT") or REPO / "runs" / "tutorials")
    path = root / lesson
    path.mkdir(parents=True, exist_ok=True)
    return path


def pyplot():
    """matplotlib.pyplot, off-screen (Agg) unless a notebook shows the figures."""
    import matplotlib

    if not in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, lesson: str, name: str) -> Path:
    """Save ``fig`` as ``<output_dir(lesson)>/<name>`` and say where; outside a notebook the
    figure is closed afterwards (a notebook still shows it below the cell)."""
    path = output_dir(lesson) / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"figure: {path}")
    if not in_notebook():
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def banner(text: str) -> None:
    """A line saying which mode the lesson runs in."""
    print(f"{text}  [{'QUICK mode (MMARNN_QUICK=1)' if QUICK else 'full size'}]")
