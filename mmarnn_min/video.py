"""Video files in and out: the first step of the data flow (docs/design.md section 1).

    video file --decode (OpenCV's bundled FFmpeg)--> RGB frames (N,H,W,3) uint8 + fps

Reading fails with a ``VideoError`` naming the file (a ``UserError``, so the commands print it
as one line): ``VideoNotFoundError`` (also a ``FileNotFoundError``) when it does not exist; a
plain ``VideoError`` (also a ``ValueError``) when it is empty, cannot be opened or decoded, or
is truncated (fewer frames decode than its container declares; ``allow_truncated=True`` keeps
what decodes, with a warning).

One layout is decoded here rather than by OpenCV: uncompressed 24-bit AVI stored bottom-up
(BI_RGB with a positive height: the DIB's standard row order, which capture and export tools
write by default).
FFmpeg hands such a frame over as a view with a negative row stride, and OpenCV 4.14's copy
of it into its BGR output (libswscale's ``sws_scale_frame``, BGR24 to BGR24) corrupts the
heap: ``VideoCapture.read`` aborts or segfaults the whole process. So the AVI header is read
first (``avi_video_format``), and frames of that layout are taken from the file as raw
packets (``CAP_PROP_FORMAT = -1``: no conversion) and flipped here, bit-exact. Every other
layout (8-, 16- and 32-bit or top-down uncompressed AVI, and all compressed codecs) goes
through OpenCV's decoder, which handles them.

Writing uses codecs that opencv-python's FFmpeg build has everywhere: MPEG-4 part 2
(``mp4v``) in ``.mp4`` and Motion-JPEG (``MJPG``) in ``.avi``; both are lossy.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from mmarnn_min.errors import UserError

# File suffix -> FourCC of a codec opencv-python's bundled FFmpeg can write.
CODECS: dict[str, str] = {".mp4": "mp4v", ".avi": "MJPG"}
BI_RGB = 0  # BITMAPINFOHEADER.biCompression of uncompressed frames

# FFmpeg's own log lines ("moov atom not found", ...) would come before our one-line error on
# stderr. OpenCV reads this when it first uses FFmpeg; a value the user set wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


class VideoError(UserError, ValueError):
    """A video file that cannot be read; the message names the file and what is wrong."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """A video file that does not exist."""


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


@dataclass(frozen=True)
class BitmapFormat:
    """The BITMAPINFOHEADER of an AVI video stream: how its frames are stored."""

    width: int
    height: int        # > 0: rows stored bottom-up; < 0: top-down
    bit_count: int     # bits per pixel
    compression: int   # BI_RGB (0) for uncompressed, else the codec's FourCC

    @property
    def is_bottom_up_bgr24(self) -> bool:
        """The layout OpenCV's FFmpeg decoder crashes on (module docstring)."""
        return self.compression == BI_RGB and self.bit_count == 24 and self.height > 0


def avi_video_format(path: str | os.PathLike) -> BitmapFormat | None:
    """The format of the first video stream of a RIFF AVI file, read from its header list
    (``RIFF 'AVI ' > LIST 'hdrl' > LIST 'strl' > 'strh' ('vids'), 'strf'``); None for a file
    that is not an AVI or whose header does not hold one."""
    with open(path, "rb") as file:
        riff = file.read(24)  # RIFF <size> AVI  LIST <size> hdrl
        if len(riff) < 24 or riff[:4] != b"RIFF" or riff[8:12] != b"AVI " or riff[12:16] != b"LIST" \
                or riff[20:24] != b"hdrl":
            return None
        hdrl = file.read(max(0, min(int.from_bytes(riff[16:20], "little"), 1 << 20) - 4))
    for list_id, strl in _riff_chunks(hdrl):
        if list_id != b"LIST" or strl[:4] != b"strl":
            continue
        chunks = dict(_riff_chunks(strl[4:]))
        strh, strf = chunks.get(b"strh", b""), chunks.get(b"strf", b"")
        if strh[:4] == b"vids" and len(strf) >= 20:
            width, height, _, bit_count, compression = struct.unpack_from("<iiHHI", strf, 4)
            return BitmapFormat(width, height, bit_count, compression)
    return None


def _riff_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(id, body) of the chunks laid end to end in ``data`` (bodies are padded to even sizes)."""
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset + 4:offset + 8], "little")
        yield data[offset:offset + 4], data[offset + 8:offset + 8 + size]
        offset += 8 + size + size % 2


def _open(path: str | os.PathLike) -> tuple[Path, cv2.VideoCapture]:
    path = Path(path)
    if not path.is_file():
        raise VideoNotFoundError(f"{path} is a directory, not a video file" if path.is_dir() else
                                 f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"video file is empty (0 bytes): {path}")
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its open-failure warning says less than ours
    try:
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"cannot open video (corrupt, truncated or unknown format): {path}")
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
    bitmap = avi_video_format(path)
    decoded = 0
    try:
        if bitmap is not None and bitmap.is_bottom_up_bgr24:
            frames = _bottom_up_bgr24_frames(capture, bitmap, path)
        else:
            frames = _decoded_frames(capture)
        for frame in frames:
            decoded += 1
            yield frame
    finally:
        capture.release()
    if decoded == 0:
        raise VideoError(f"no frame could be decoded from {path}")
    if decoded < declared:
        message = f"video is truncated or corrupt: decoded {decoded} of {declared} frames in {path}"
        if not allow_truncated:
            raise VideoError(message + " (pass allow_truncated=True to keep what decodes)")
        warnings.warn(message, stacklevel=2)


def _decoded_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """OpenCV's decoder: (H,W,3) uint8 RGB frames."""
    while True:
        ok, frame_bgr = capture.read()
        if not ok:
            return
        yield cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


def _bottom_up_bgr24_frames(capture: cv2.VideoCapture, bitmap: BitmapFormat, path: Path) -> Iterator[np.ndarray]:
    """Uncompressed bottom-up 24-bit frames, unpacked from the raw packets: (H,W,3) uint8 RGB.
    Each row holds W BGR pixels padded to a multiple of 4 bytes; the last row comes first."""
    width, height = bitmap.width, bitmap.height
    row_bytes = (3 * width + 3) // 4 * 4
    if not capture.set(cv2.CAP_PROP_FORMAT, -1):  # packets as stored, without decoding
        raise VideoError(f"cannot read the uncompressed frames of {path} as raw packets")
    while True:
        ok, packet = capture.read()                                    # (1, bytes) uint8
        if not ok or packet.size != row_bytes * height:  # a cut-off frame ends the video, as a decoder would
            return
        bgr = packet.reshape(height, row_bytes)[:, :3 * width].reshape(height, width, 3)  # (H,W,3), bottom row first
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        yield cv2.flip(rgb, 0, dst=rgb)                                # top row first


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
