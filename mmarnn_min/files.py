"""Writing a run's files so that a killed process never leaves half a file behind: every
write goes to a temporary file beside the target, then one rename puts it in place."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def replace_atomically(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``
    (atomic on POSIX and Windows): readers see the old file or the new one, never a partial
    one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def save_torch(state: dict, path: Path) -> None:
    """``torch.save(state, path)``, atomically."""
    replace_atomically(Path(path), lambda file: torch.save(state, file))


def write_json(data: dict, path: Path) -> None:
    """``data`` as indented JSON at ``path``, atomically."""
    replace_atomically(Path(path), lambda file: file.write((json.dumps(data, indent=2) + "\n").encode()))
