"""Where mmarnn_min keeps what it can rebuild: compiled extensions, generated data sets."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """``$MMARNN_CACHE``, else ``$XDG_CACHE_HOME/mmarnn_min``, else ``~/.cache/mmarnn_min``."""
    if os.environ.get("MMARNN_CACHE"):
        return Path(os.environ["MMARNN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmarnn_min"


PACKAGE = Path(__file__).resolve().parent


def code_digest(*names: str) -> bytes:
    """SHA-256 of these source files of the package (paths relative to ``mmarnn_min/``): a
    cache key that hashes it changes when the code that makes the cached entry changes."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (PACKAGE / name).read_bytes())
    return digest.digest()
