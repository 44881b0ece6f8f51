"""The per-frame table of one video: for every frame read, where the face is and what MMA reads
in it (paper section 3.1: valence-arousal, the 7 expressions, the 17 AUs), as ``predict
--frames`` writes it (CSV, one row per frame read, a header of named columns):

    frame, time_s, face                          index in the video, its time, 1 if a face was found
    box_x1, box_y1, box_x2, box_y2               the face box, in frame pixels
    left_eye_x, left_eye_y, ... mouth_right_y    the 5 landmarks ("left" = image left), in pixels
    valence, arousal                             in [-1, 1]
    neutral, anger, ..., surprise                the 7 expression probabilities (they sum to 1)
    AU1, AU2, ..., AU26                          the 17 AU probabilities

A frame without a face has its index, time and ``face`` = 0, and empty cells elsewhere. So
does ``time_s`` when the video states no frame rate (and for an image).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmarnn_min.affect import AFFECT_DIM, AUS, EXPRESSIONS
from mmarnn_min.files import replace_atomically

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
BOX_COLUMNS = ("box_x1", "box_y1", "box_x2", "box_y2")
LANDMARK_COLUMNS = tuple(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy")
AFFECT_COLUMNS = ("valence", "arousal", *EXPRESSIONS, *(f"AU{au}" for au in AUS))
COLUMNS = ("frame", "time_s", "face", *BOX_COLUMNS, *LANDMARK_COLUMNS, *AFFECT_COLUMNS)


@dataclass(frozen=True)
class FrameTable:
    """N frames read: ``index`` (N,) int64, ``time`` (N,) seconds, ``boxes`` (N,4),
    ``landmarks`` (N,5,2) and ``affect`` (N,26) = [valence, arousal | 7 expressions | 17 AUs];
    NaN where a frame has no face (and in ``time`` when the frame rate is unknown)."""

    index: np.ndarray
    time: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    affect: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.index)
        shapes = {"time": (n,), "boxes": (n, 4), "landmarks": (n, 5, 2), "affect": (n, AFFECT_DIM)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"FrameTable.{name} must be {shape} for {n} frames, got {getattr(self, name).shape}")

    @property
    def found(self) -> np.ndarray:
        """(N,) bool: which frames have a face."""
        return np.isfinite(self.landmarks).all(axis=(1, 2))

    def rows(self) -> list[list[str]]:
        """The CSV rows (without the header) as text: pixels to 0.01, affect to 1e-6."""
        def cells(values: np.ndarray, digits: int) -> list[str]:
            return ["" if np.isnan(value) else f"{value:.{digits}f}" for value in values.tolist()]

        return [[str(index), *cells(np.array([time]), 4), str(int(found)),
                 *cells(box, 2), *cells(points.reshape(10), 2), *cells(affect, 6)]
                for index, time, found, box, points, affect
                in zip(self.index.tolist(), self.time, self.found, self.boxes, self.landmarks, self.affect)]

    def csv_text(self) -> str:
        """The whole table as CSV text, header first."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(self.rows())
        return out.getvalue()

    def write_csv(self, path: str | Path) -> None:
        """The table as CSV at ``path``, atomically (a reader never sees half a file)."""
        text = self.csv_text().encode()
        replace_atomically(Path(path), lambda file: file.write(text))
