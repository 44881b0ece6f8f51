"""A minimal writer of uncompressed AVI files (RIFF, one 'vids' stream of BI_RGB 24-bit DIB
frames, an idx1 index), written from the AVI and BITMAPINFOHEADER specifications so that the
tests can make the files OpenCV's own writer never produces: bottom-up (the DIB default, a
positive biHeight) or top-down (negative biHeight), rows padded to 4 bytes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

AVIF_HASINDEX = 0x10
AVIIF_KEYFRAME = 0x10


def _chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(body)) + body + b"\0" * (len(body) % 2)


def _list(kind: bytes, body: bytes) -> bytes:
    return b"LIST" + struct.pack("<I", 4 + len(body)) + kind + body


def dib_rows(frame: np.ndarray, bottom_up: bool) -> bytes:
    """One (H,W,3) uint8 RGB frame as DIB bytes: BGR pixels, rows padded to 4 bytes."""
    height, width, _ = frame.shape
    row_bytes = (3 * width + 3) // 4 * 4
    rows = np.zeros((height, row_bytes), np.uint8)
    rows[:, :3 * width] = frame[..., ::-1].reshape(height, 3 * width)
    return (rows[::-1] if bottom_up else rows).tobytes()


def write_uncompressed_avi(path: Path, frames: np.ndarray, fps: int = 10, bottom_up: bool = True) -> Path:
    """Write RGB frames (N,H,W,3) uint8 as an uncompressed 24-bit AVI; returns the path."""
    count, height, width, _ = frames.shape
    frame_bytes = (3 * width + 3) // 4 * 4 * height
    avih = struct.pack("<14I", 1_000_000 // fps, frame_bytes * fps, 0, AVIF_HASINDEX, count, 0, 1,
                       frame_bytes, width, height, 0, 0, 0, 0)
    strh = b"vids" + b"DIB " + struct.pack("<IHHIIIIIIIIhhhh", 0, 0, 0, 0, 1, fps, 0, count, frame_bytes,
                                           0xFFFFFFFF, 0, 0, 0, width, height)
    strf = struct.pack("<IiiHHIIiiII", 40, width, height if bottom_up else -height, 1, 24, 0, frame_bytes,
                       0, 0, 0, 0)
    header = _list(b"hdrl", _chunk(b"avih", avih) + _list(b"strl", _chunk(b"strh", strh) + _chunk(b"strf", strf)))
    movi, index, offset = b"", b"", 4  # idx1 offsets count from the 'movi' fourcc
    for frame in frames:
        data = _chunk(b"00db", dib_rows(frame, bottom_up))
        index += b"00db" + struct.pack("<III", AVIIF_KEYFRAME, offset, frame_bytes)
        movi += data
        offset += len(data)
    body = b"AVI " + header + _list(b"movi", movi) + _chunk(b"idx1", index)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path
