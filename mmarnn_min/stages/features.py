"""Stage ``features``: run the frozen MMA (paper section 3.1) once over every video's aligned
frames and cache the per-frame affect vectors, so that the ``mrnn`` stage (section 3.2) never
touches pixels again.

One file per split, ``features-<split>-<key>.npz``, holding

    features (sum L_i, 26) float32   [VA | 7 expression probs | 17 AU probs], videos back to back
    offsets  (V + 1,) int64          video i is features[offsets[i]:offsets[i + 1]]
    lengths  (V,) int64              L_i, its true number of frames
    reactions (V, 7) float32         its labels
    ids      (V,) str
    crops    (V,) str                 real videos only: each video's file of aligned crops

The key hashes everything the file's content depends on: the MMA checkpoint's bytes, the
SynthAffect videos' own cache key (their config and the generator's code) and the code that
computes the features (``FEATURES_CODE``) with the torch version: a retrained MMA, other videos
or changed code give a new file, and a file already there is reused (the stage resumes split
by split).
``OUT/features/latest.json`` names the files of the last run of the stage
(``load_run_features``). Hume-Reaction's videos: ``mmarnn_min.stages.features_hume``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from mmarnn_min.cache import code_digest
from mmarnn_min.checkpoints import load_mma
from mmarnn_min.data import synth_cache
from mmarnn_min.data.sequences import SequenceDataset
from mmarnn_min.data.synth import SPLITS, SynthConfig, VideoSet, make_videos
from mmarnn_min.errors import UserError
from mmarnn_min.files import replace_atomically, write_json
from mmarnn_min.mma import MMA, predict_features
from mmarnn_min.progress import frame_progress


def extract_features(
    model: MMA,
    videos: VideoSet | Sequence[np.ndarray],
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """MMA's affect vectors of every frame: one (L_i, 26) float32 array per video. ``videos``:
    a VideoSet or a list of (L_i, S, S, 3) uint8 frame arrays. The frames of all videos go
    through the model together, in batches of ``batch_size`` that cross video boundaries."""
    if isinstance(videos, VideoSet):
        frames, offsets = videos.frames, videos.offsets
    else:
        frames = np.concatenate(videos)                                            # (sum L, S, S, 3)
        offsets = np.concatenate([[0], np.cumsum([len(v) for v in videos])])
    z = predict_features(model, frames, batch_size, torch.device(device), progress)  # (sum L, 26)
    return [z[start:stop] for start, stop in zip(offsets[:-1], offsets[1:])]


FEATURES_CODE = ("mma.py", "stages/features.py")  # the code between a crop and its 26 values


def features_key(mma_checkpoint: str | Path, synth_config: SynthConfig) -> str:
    """Hex digest of the checkpoint's bytes, the videos' cache key and the features' code."""
    digest = hashlib.sha256(Path(mma_checkpoint).read_bytes())
    digest.update(synth_cache.cache_key(synth_config).encode())
    digest.update(code_digest(*FEATURES_CODE) + torch.__version__.encode())
    return digest.hexdigest()[:16]


def run_features(
    synth_config: SynthConfig,
    mma_checkpoint: str | Path,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    splits: Sequence[str] = SPLITS,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Cache MMA's features of every video of each split in ``out_dir`` (see the module
    docstring) and return split -> file. Files already there for this checkpoint are kept."""
    out_dir, device = Path(out_dir), torch.device(device)
    key = features_key(mma_checkpoint, synth_config)
    paths, model = {}, None
    for split in splits:
        path = out_dir / f"features-{split}-{key}.npz"
        paths[split] = path
        if path.exists():
            log(f"features {split}: cached in {path}")
            continue
        model = model or load_mma(mma_checkpoint, device)
        videos = make_videos(synth_config, split)
        per_video = extract_features(model, videos, batch_size, device, frame_progress(f"features {split}", log))
        write_features(path, per_video, videos.reactions, videos.ids)
        log(f"features {split}: {len(videos)} videos, wrote {path}")
    return paths


def write_features(path: Path, per_video: Sequence[np.ndarray], reactions: np.ndarray, ids: Sequence[str],
                   crops: Sequence[str] | None = None) -> None:
    """One split's cache file in the format of the module docstring, atomically; ``crops``
    names each video's file of aligned crops, when they were cached (real videos)."""
    lengths = np.array([len(z) for z in per_video], np.int64)
    arrays = {"features": np.concatenate(per_video), "offsets": np.concatenate([[0], np.cumsum(lengths)]),
              "lengths": lengths, "reactions": np.asarray(reactions, np.float32), "ids": np.array(ids)}
    if crops is not None:
        arrays["crops"] = np.array(crops)
    replace_atomically(path, lambda file: np.savez(file, **arrays))


def load_features(path: str | Path) -> SequenceDataset:
    """A cached split as MRNN's training data: one (L_i, 26) sequence and 7 reactions per video."""
    with np.load(path, allow_pickle=False) as cached:
        z, offsets, reactions = cached["features"], cached["offsets"], cached["reactions"]
    return SequenceDataset([z[start:stop] for start, stop in zip(offsets[:-1], offsets[1:])], reactions)


def record_run_features(out: Path, paths: dict[str, Path]) -> None:
    """Note in ``out/features/latest.json`` which cache files the run's later stages read."""
    write_json({split: str(path) for split, path in paths.items()}, Path(out) / "features" / "latest.json")


def load_run_features(out: str | Path) -> dict[str, SequenceDataset]:
    """The features the last run of stage ``features`` cached for the run in ``out``, per split."""
    index = Path(out) / "features" / "latest.json"
    if not index.exists():
        raise UserError(f"this stage needs cached features ({index}): run stage features with --out {out}")
    return {split: load_features(path) for split, path in json.loads(index.read_text()).items()}
