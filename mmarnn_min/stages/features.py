"""Stage ``features`` (DESIGN section 1, stage 2): run the frozen MMA (paper section 3.1) once
over every video's aligned frames and cache the per-frame affect vectors, so that the
``mrnn`` stage never touches pixels again.

One file per split, ``features-<split>-<key>.npz``, holding

    features (sum L_i, 26) float32   [VA | 7 expression probs | 17 AU probs], videos back to back
    offsets  (V + 1,) int64          video i is features[offsets[i]:offsets[i + 1]]
    lengths  (V,) int64              L_i, its true number of frames
    reactions (V, 7) float32         its labels
    ids      (V,) str

The key hashes the MMA checkpoint's bytes and the SynthAffect config: a retrained MMA or other
videos give a new file, and a file already there is reused (the stage resumes split by split).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from mmarnn_min.data.sequences import SequenceDataset
from mmarnn_min.data.synth import SPLITS, SynthConfig, VideoSet, make_videos
from mmarnn_min.mma import MMA, predict_features
from mmarnn_min.stages import ProgressLine, replace_atomically
from mmarnn_min.stages.mma import load_mma


def progress_line(label: str, log: Callable[[str], None] | None = None) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback for frames (``ProgressLine`` on stderr) that, at
    the end, hands a summary line to ``log`` when one is given."""
    line: ProgressLine | None = None

    def progress(done: int, total: int) -> None:
        nonlocal line
        line = line or ProgressLine(label, total, "frames")
        line.update(done)
        if done == total and log is not None:
            seconds = time.perf_counter() - line.start
            log(f"{label}: {total} frames in {seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} frames/s)")

    return progress


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


def features_key(mma_checkpoint: str | Path, synth_config: SynthConfig) -> str:
    """Hex digest of the checkpoint's bytes and the SynthAffect config."""
    digest = hashlib.sha256(Path(mma_checkpoint).read_bytes())
    digest.update(json.dumps(dataclasses.asdict(synth_config), sort_keys=True).encode())
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
        per_video = extract_features(model, videos, batch_size, device, progress_line(f"features {split}", log))
        arrays = {"features": np.concatenate(per_video), "offsets": videos.offsets, "lengths": videos.lengths,
                  "reactions": videos.reactions, "ids": np.array(videos.ids)}
        replace_atomically(path, lambda file: np.savez(file, **arrays))
        log(f"features {split}: {len(videos)} videos, wrote {path}")
    return paths


def load_features(path: str | Path) -> SequenceDataset:
    """A cached split as MRNN's training data: one (L_i, 26) sequence and 7 reactions per video."""
    with np.load(path, allow_pickle=False) as cached:
        z, offsets, reactions = cached["features"], cached["offsets"], cached["reactions"]
    return SequenceDataset([z[start:stop] for start, stop in zip(offsets[:-1], offsets[1:])], reactions)


def hume_crops_dir(out_dir: str | Path, detector: str, size: int, stride: int) -> Path:
    """Where stage ``features`` keeps each Hume-Reaction video's aligned crops (one .npy per
    video, S*S*3 bytes a frame): ``features`` reuses them, ``e2e`` trains from them."""
    return Path(out_dir) / f"crops-{detector}-{size}px-stride{stride}"


def run_hume_features(
    videos: Sequence,
    mma_checkpoint: str | Path,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    detector: str = "auto",
    retinaface_weights: str | None = None,
    stride: int = 1,
    batch_size: int = 512,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Stage ``features`` on real videos (``mmarnn_min.data.hume.HumeVideo``s): decode, detect,
    align (``mmarnn_min.predict.video_crops``; crops cached per video, so a killed run loses at
    most one video), then the frozen MMA; one file per split in the format of the module
    docstring. Videos with no detectable face are left out, with one warning naming them."""
    from mmarnn_min.predict import video_crops  # predict imports this module

    out_dir, device = Path(out_dir), torch.device(device)
    state = torch.load(mma_checkpoint, map_location="cpu", weights_only=False)
    size = int(state.get("image_size", 64))
    digest = hashlib.sha256(Path(mma_checkpoint).read_bytes())
    digest.update(f"{detector}/{stride}".encode())
    key = digest.hexdigest()[:16]
    crops_dir = hume_crops_dir(out_dir, detector, size, stride)
    crops_dir.mkdir(parents=True, exist_ok=True)
    model, paths = None, {}
    for split in SPLITS:
        split_videos = [video for video in videos if video.split == split]
        path = paths[split] = out_dir / f"features-{split}-{key}.npz"
        if not split_videos:
            paths.pop(split)
            continue
        if path.exists():
            log(f"features {split}: cached in {path}")
            continue
        model = model or load_mma(mma_checkpoint, device)
        kept, per_video, no_face = [], [], []
        progress = ProgressLine(f"features {split}", len(split_videos), "videos")
        for done, video in enumerate(split_videos, 1):
            crops_path = crops_dir / f"{video.id}.npy"
            if crops_path.exists():
                crops = np.load(crops_path)                                        # (L, S, S, 3)
            else:
                crops = video_crops(video.path, detector, size, stride, retinaface_weights, device)[0]
                replace_atomically(crops_path, lambda file: np.save(file, crops))
            progress.update(done)
            if len(crops) == 0:
                no_face.append(video.id)
                continue
            kept.append(video)
            per_video.append(extract_features(model, [crops], batch_size, device)[0])
        if no_face:
            warnings.warn(f"features {split}: {len(no_face)} video(s) left out, no face found: "
                          + "; ".join(no_face[:5]) + (" ..." if len(no_face) > 5 else ""), stacklevel=2)
        if not kept:
            raise ValueError(f"features {split}: no face found in any of its {len(split_videos)} videos")
        lengths = np.array([len(z) for z in per_video], np.int64)
        arrays = {"features": np.concatenate(per_video), "offsets": np.concatenate([[0], np.cumsum(lengths)]),
                  "lengths": lengths, "reactions": np.stack([video.reactions for video in kept]).astype(np.float32),
                  "ids": np.array([video.id for video in kept])}
        replace_atomically(path, lambda file: np.savez(file, **arrays))
        log(f"features {split}: {len(kept)} videos, wrote {path}")
    return paths
