"""Where mmarnn_min keeps what it can rebuild: compiled extensions, generated data sets."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$MMARNN_CACHE``, else ``$XDG_CACHE_HOME/mmarnn_min``, else ``~/.cache/mmarnn_min``."""
    if os.environ.get("MMARNN_CACHE"):
        return Path(os.environ["MMARNN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmarnn_min"
