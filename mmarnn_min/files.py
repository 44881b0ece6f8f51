"""Writing a run's files so that a killed process never leaves half a file behind: every
write goes to a temporary file beside the target, then one rename puts it in place. Files get
the permissions the user's umask gives a new file, as ``open`` would.

JSON is always valid JSON: a number that is not finite (an undefined correlation, say) is
written as ``null``, never as the ``NaN`` that Python's json module would emit.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _umask() -> int:
    """The process's umask (read by setting it and setting it back: done once, at import)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


FILE_MODE = 0o666 & ~_umask()  # what ``open(path, "w")`` gives a new file


def replace_atomically(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``
    (atomic on POSIX and Windows): readers see the old file or the new one, never a partial
    one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(handle, FILE_MODE)  # mkstemp makes it private (0o600)
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def save_torch(state: dict, path: Path) -> None:
    """``torch.save(state, path)``, atomically."""
    replace_atomically(Path(path), lambda file: torch.save(state, file))


def finite_or_none(data: Any) -> Any:
    """``data`` with every float that is not finite replaced by None, in nested dicts, lists and
    tuples: JSON has no NaN."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_none(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(value) for value in data]
    return data


def json_text(data: Any) -> str:
    """``data`` as indented, valid JSON (non-finite numbers as null)."""
    return json.dumps(finite_or_none(data), indent=2, allow_nan=False)


def write_json(data: dict, path: Path) -> None:
    """``data`` as indented, valid JSON at ``path``, atomically."""
    replace_atomically(Path(path), lambda file: file.write((json_text(data) + "\n").encode()))
