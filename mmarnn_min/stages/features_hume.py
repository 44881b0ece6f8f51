"""Stage ``features`` on Hume-Reaction's videos (paper section 3.2's data): decode every
video, find and align its face in each frame (``mmarnn_min.video_faces``), then run the
frozen MMA; the aligned crops are cached per video (stage ``e2e`` trains from them, and a
killed run loses at most one video) and the per-frame vectors per split, in the format of
``mmarnn_min.stages.features``.

Both caches are keyed by everything their content depends on, so a changed input never
returns a stale entry: a video's crops by the video file's identity (path, size, modification
time), its landmarks file's, the detector (and the versions of the packages it may use), its
weights file's, the crop size, the stride and the code that decodes, detects and aligns
(``CROPS_CODE``, with the OpenCV and torch versions); a split's features by the MMA
checkpoint's bytes, every video's crops key and its labels (id, split, the 7 intensities), and
the code that computes the features.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from mmarnn_min.cache import code_digest
from mmarnn_min.checkpoints import load_mma, read_checkpoint
from mmarnn_min.data.synth import SPLITS
from mmarnn_min.errors import UserError
from mmarnn_min.files import replace_atomically
from mmarnn_min.progress import ProgressLine
from mmarnn_min.stages.features import FEATURES_CODE, extract_features, write_features
from mmarnn_min.video_faces import detector_packages, video_crops

CROPS_CODE = ("video.py", "media.py", "faces.py", "detectors.py", "video_faces.py")  # frame -> aligned crop


def file_identity(path: str | Path | None) -> bytes:
    """A file's absolute path, size and modification time (b"" for None or a missing file)."""
    if path is None or not Path(path).is_file():
        return b""
    stat = os.stat(path)
    return f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()


def crops_key(video, detector: str, size: int, stride: int, retinaface_weights: str | None) -> str:
    """The key of one video's aligned crops (see the module docstring)."""
    from mmarnn_min.detectors import default_retinaface_weights

    weights = retinaface_weights or (default_retinaface_weights() if detector in ("auto", "retinaface") else None)
    digest = hashlib.sha256(file_identity(video.path) + file_identity(video.landmarks) + file_identity(weights))
    digest.update(f"{detector}/{size}/{stride}/opencv {cv2.__version__}/torch {torch.__version__}".encode())
    digest.update(detector_packages(detector).encode())  # "auto" picks MTCNN once facenet-pytorch is installed
    digest.update(code_digest(*CROPS_CODE))
    return digest.hexdigest()[:16]


def hume_crops_dir(out_dir: str | Path) -> Path:
    """Where stage ``features`` keeps each Hume-Reaction video's aligned crops (one .npy per
    video and key, S*S*3 bytes a frame): ``features`` reuses them, ``e2e`` trains from them."""
    return Path(out_dir) / "crops"


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
    align, then the frozen MMA; one file per split, which also names each video's crops file.
    Videos with no detectable face are left out, with one warning naming them."""
    out_dir, device = Path(out_dir), torch.device(device)
    size = int(read_checkpoint(mma_checkpoint, "cpu", needs=("image_size",))["image_size"])
    crops_dir = hume_crops_dir(out_dir)
    crops_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_digest = hashlib.sha256(Path(mma_checkpoint).read_bytes()).digest()
    model, paths = None, {}
    for split in SPLITS:
        split_videos = [video for video in videos if video.split == split]
        if not split_videos:
            continue
        crops_names = [f"{video.id}-{crops_key(video, detector, size, stride, retinaface_weights)}.npy"
                       for video in split_videos]
        digest = hashlib.sha256(checkpoint_digest + code_digest(*FEATURES_CODE))
        for video, name in zip(split_videos, crops_names):
            digest.update(f"{video.id}\0{video.split}\0{name}\0".encode() + np.asarray(video.reactions).tobytes())
        path = paths[split] = out_dir / f"features-{split}-{digest.hexdigest()[:16]}.npz"
        if path.exists():
            log(f"features {split}: cached in {path}")
            continue
        model = model or load_mma(mma_checkpoint, device)
        kept, kept_names, per_video, no_face = [], [], [], []
        progress = ProgressLine(f"features {split}", len(split_videos), "videos")
        for done, (video, name) in enumerate(zip(split_videos, crops_names), 1):
            crops_path = crops_dir / name
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
            kept_names.append(name)
            per_video.append(extract_features(model, [crops], batch_size, device)[0])
        if no_face:
            warnings.warn(f"features {split}: {len(no_face)} video(s) left out, no face found: "
                          + "; ".join(no_face[:5]) + (" ..." if len(no_face) > 5 else ""), stacklevel=2)
        if not kept:
            raise UserError(f"features {split}: no face found in any of its {len(split_videos)} videos "
                            f"(detector {detector}): try another --detector")
        write_features(path, per_video, np.stack([video.reactions for video in kept]), [video.id for video in kept],
                       crops=kept_names)
        log(f"features {split}: {len(kept)} videos, wrote {path}")
    return paths
