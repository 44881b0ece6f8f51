"""Stage ``features`` on Hume-Reaction's videos (paper section 3.2's data): decode every
video, find and align its face in each frame (``mmarnn_min.video_faces``), then run the
frozen MMA; the aligned crops are cached per video (stage ``e2e`` trains from them, and a
killed run loses at most one video) and the per-frame vectors per split, in the format of
``mmarnn_min.stages.features``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from mmarnn_min.checkpoints import load_mma, read_checkpoint
from mmarnn_min.data.synth import SPLITS
from mmarnn_min.files import replace_atomically
from mmarnn_min.progress import ProgressLine
from mmarnn_min.stages.features import extract_features, write_features
from mmarnn_min.video_faces import video_crops


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
    align, then the frozen MMA; one file per split. Videos with no detectable face are left
    out, with one warning naming them."""
    out_dir, device = Path(out_dir), torch.device(device)
    size = int(read_checkpoint(mma_checkpoint, "cpu", needs=("image_size",))["image_size"])
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
        write_features(path, per_video, np.stack([video.reactions for video in kept]), [video.id for video in kept])
        log(f"features {split}: {len(kept)} videos, wrote {path}")
    return paths
