"""An on-disk cache for SynthAffect's arrays (generated once, reused).

Layout: ``<cache root>/synthaffect/<name>-<key>/`` holding one ``.npy`` file per array. The
key hashes the config *and* the generator's source code (every ``synth*.py`` file, faces.py,
affect.py) and the OpenCV and numpy versions that draw the pixels: changing any of them
regenerates instead of loading stale data. An entry is written into a temporary directory
and renamed into place in one step, so a run killed half-way never leaves a partial entry.

Cache root: ``$MMARNN_CACHE`` if set, else ``$XDG_CACHE_HOME/mmarnn_min``, else
``~/.cache/mmarnn_min``. Old entries are never deleted automatically: remove the
``synthaffect`` directory to free the space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from mmarnn_min.cache import cache_root

_PACKAGE = Path(__file__).resolve().parents[1]  # mmarnn_min/


def _generator_sources() -> list[Path]:
    return sorted(_PACKAGE.glob("data/synth*.py")) + [_PACKAGE / "faces.py", _PACKAGE / "affect.py"]


def cache_key(config) -> str:
    """Hex digest of the config (a dataclass), the generator's sources and the library versions."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
    for path in _generator_sources():
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(f"opencv {cv2.__version__} numpy {np.__version__.split('.')[0]}".encode())
    return digest.hexdigest()[:20]


def entry_dir(name: str, config) -> Path:
    return cache_root() / "synthaffect" / f"{name}-{cache_key(config)}"


def is_complete(path: Path) -> bool:
    """Whether the entry at ``path`` was written whole (its manifest is written last)."""
    return (path / "manifest.json").is_file()


def load(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a complete entry, or None when there is none (or it cannot be read)."""
    manifest = path / "manifest.json"
    if not is_complete(path):
        return None
    try:
        names = json.loads(manifest.read_text())["arrays"]
        return {name: np.load(path / f"{name}.npy", allow_pickle=False) for name in names}
    except (OSError, ValueError, KeyError):
        return None


def save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an entry atomically: into a temporary sibling directory, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    try:
        for name, array in arrays.items():
            np.save(temporary / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        (temporary / "manifest.json").write_text(json.dumps({"arrays": sorted(arrays)}))
        try:
            os.replace(temporary, path)
        except OSError:  # an entry is there: another process's (keep it) or a broken one
            if load(path) is None:
                shutil.rmtree(path, ignore_errors=True)
                os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
