"""The training stages of DESIGN section 1, one module each (``mrnn``: paper section 3.2), and
what they share: choosing the device and writing results so that a killed run never leaves a
half-written file behind.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def replace_atomically(path: Path, write) -> None:
    """Write into a temporary file next to ``path``, then rename it over ``path`` (atomic on
    POSIX and Windows): readers see the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def save_checkpoint(state: dict, path: Path) -> None:
    """``torch.save(state, path)``, atomically."""
    replace_atomically(Path(path), lambda file: torch.save(state, file))


def save_training_state(path: Path, results: dict, **parts) -> None:
    """A stage's ``last.pt``: the state of every part (models, optimizers, random generators),
    under its keyword's name, and the results so far, atomically."""
    state = {name: part.get_state() if isinstance(part, torch.Generator) else part.state_dict()
             for name, part in parts.items()}
    save_checkpoint(state | {"results": results}, path)


def load_training_state(path: Path, device: str | torch.device, **parts) -> dict:
    """Restore every part from a file of ``save_training_state`` (the same keywords); return
    its results. Generator states stay on the CPU, where torch.Generator wants them."""
    checkpoint = torch.load(path, map_location=device, weights_only=False)
    for name, part in parts.items():
        if isinstance(part, torch.Generator):
            part.set_state(checkpoint[name].cpu())
        else:
            part.load_state_dict(checkpoint[name])
    return checkpoint["results"]


def write_json(data: dict, path: Path) -> None:
    """``data`` as indented JSON at ``path``, atomically."""
    replace_atomically(Path(path), lambda file: file.write((json.dumps(data, indent=2) + "\n").encode()))


class ProgressLine:
    """Progress of a long loop on stderr: ``update(done)`` shows done/total, the rate and the
    seconds left. On a terminal the line is redrawn in place; in a log file or a pipe a line
    is written at most every ``every`` seconds, and at the end."""

    def __init__(self, label: str, total: int, unit: str = "steps", every: float = 10.0) -> None:
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.start = self.last = time.perf_counter()
        self.redraw = sys.stderr.isatty()

    def update(self, done: int, note: str = "") -> str:
        now = time.perf_counter()
        rate = done / max(now - self.start, 1e-9)
        line = (f"{self.label}: {done}/{self.total} {self.unit}, {rate:,.1f} {self.unit}/s, "
                f"{(self.total - done) / max(rate, 1e-9):4.0f} s left{'  ' + note if note else ''}")
        finished = done >= self.total
        if self.redraw:
            print("\r" + line, end="\n" if finished else "", file=sys.stderr, flush=True)
        elif finished or now - self.last >= self.every:
            print(line, file=sys.stderr, flush=True)
            self.last = now
        return line
