"""What ``predict`` reads, as RGB frames: a video file (``mmarnn_min.video``, streamed one
frame at a time) or a single image (PNG, JPEG, ...), which is a video of one frame without a
frame rate. The file's suffix decides which.

An image is read with Pillow, turned upright as its EXIF orientation says (phones store
portraits sideways and say so there) and converted to RGB (grey, palette and alpha images
too). A missing or unreadable image is an ``ImageError`` (a ``UserError``) naming the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmarnn_min.errors import UserError
from mmarnn_min.video import iter_frames, probe_video

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageError(UserError, ValueError):
    """An image file that does not exist or cannot be read; the message names it."""


@dataclass(frozen=True)
class MediaInfo:
    """A video's or an image's frame count (the container's, for a video) and frame rate
    (NaN for an image, 0.0 for a video that states none)."""

    path: Path
    num_frames: int
    fps: float
    is_image: bool


def is_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an image file (by its suffix), not a video."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path``, upright, as (H,W,3) uint8 RGB."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path} is a directory, not an image file" if path.is_dir() else
                         f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))  # (H,W,3)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageError(f"cannot read {path} as an image ({error})") from None


def probe_media(path: str | os.PathLike) -> MediaInfo:
    """Frame count and rate of a video (from its container, without decoding) or an image
    (1 frame, read to check that it can be)."""
    if is_image(path):
        read_image(path)
        return MediaInfo(Path(path), 1, math.nan, True)
    info = probe_video(path)
    return MediaInfo(info.path, info.num_frames, info.fps, False)


def iter_media_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """The frames of a video one at a time, or an image's one frame: (H,W,3) uint8 RGB."""
    if is_image(path):
        yield read_image(path)
    else:
        yield from iter_frames(path)
