"""Video files in and out: the first step of the data flow (DESIGN.md section 1).

    video file --decode (OpenCV's bundled FFmpeg)--> RGB frames (N,H,W,3) uint8 + fps

Reading fails with a clear error naming the file: ``FileNotFoundError`` when it does not
exist, ``ValueError`` when it is empty, cannot be opened or decoded, or is truncated (fewer
frames decode than its container declares; ``allow_truncated=True`` keeps what decodes, with
a warning). Writing uses codecs that opencv-python's FFmpeg build has everywhere:
MPEG-4 part 2 (``mp4v``) in ``.mp4`` and Motion-JPEG (``MJPG``) in ``.avi``; both are lossy.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

# File suffix -> FourCC of a codec opencv-python's bundled FFmpeg can write.
CODECS: dict[str, str] = {".mp4": "mp4v", ".avi": "MJPG"}


@dataclass(frozen=True)
class Video:
    """Decoded frames of one file: ``frames`` (N,H,W,3) uint8 RGB; ``fps`` as the container
    states it (0.0 when it states none)."""

    frames: np.ndarray
    fps: float
    path: Path

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def duration(self) -> float:
        """Seconds (NaN when the frame rate is unknown)."""
        return self.num_frames / self.fps if self.fps > 0 else math.nan


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares, without decoding: frame count (may be an estimate for
    some formats), fps, width and height."""

    path: Path
    num_frames: int
    fps: float
    width: int
    height: int


def _open(path: str | os.PathLike) -> tuple[Path, cv2.VideoCapture]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"video file is empty (0 bytes): {path}")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise ValueError(f"cannot open video (corrupt, truncated or unknown format): {path}")
    return path, capture


def _fps(capture: cv2.VideoCapture) -> float:
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if math.isfinite(fps) and fps > 0 else 0.0


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """The container's frame count, fps and size, without decoding the frames."""
    path, capture = _open(path)
    try:
        return VideoInfo(
            path=path,
            num_frames=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            fps=_fps(capture),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()


def iter_frames(path: str | os.PathLike, allow_truncated: bool = False) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time as (H,W,3) uint8 RGB, for long videos.
    Raises like ``read_video`` (a truncation is noticed when the decoder stops early)."""
    path, capture = _open(path)
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    decoded = 0
    try:
        while True:
            ok, frame_bgr = capture.read()
            if not ok:
                break
            decoded += 1
            yield cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    if decoded == 0:
        raise ValueError(f"no frame could be decoded from {path}")
    if decoded < declared:
        message = f"video is truncated or corrupt: decoded {decoded} of {declared} frames in {path}"
        if not allow_truncated:
            raise ValueError(message + " (pass allow_truncated=True to keep what decodes)")
        warnings.warn(message, stacklevel=2)


def read_video(path: str | os.PathLike, allow_truncated: bool = False) -> Video:
    """Decode a whole video file into RGB frames (N,H,W,3) uint8 with its fps."""
    info = probe_video(path)
    frames = np.stack(list(iter_frames(path, allow_truncated=allow_truncated)))  # (N,H,W,3)
    return Video(frames=frames, fps=info.fps, path=info.path)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """Write RGB frames (N,H,W,3) uint8 to ``path`` (.mp4: mp4v, .avi: MJPG); returns the path."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or len(frames) == 0:
        raise ValueError(
            f"frames must be a non-empty (N,H,W,3) uint8 array, got {frames.dtype} {frames.shape}"
        )
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    codec = CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"unsupported video suffix {path.suffix!r} for {path}: "
                         f"use one of {sorted(CODECS)}")
    height, width = frames.shape[1:3]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*codec),
                             float(fps), (width, height))
    if not writer.isOpened():
        raise ValueError(f"OpenCV cannot write {codec} video to {path}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
