"""Hume-Reaction: videos of people reacting to emotional clips, each labelled with the
intensities in [0, 1] of 7 self-reported reactions (REACTIONS order). It is the data MRNN is
trained and evaluated on (paper section 3.2). Two distributions exist; ``read_hume`` detects
which one is under ``root`` (DATA_FORMATS.md):

    MuSe 2022 (Reaction sub-challenge)      ABAW5 (ERI challenge)
    <root>/labels.csv     File_ID + 7       <root>/data_info.csv  File_ID, Split, 7, Country
    <root>/partition.csv  id, ..., split    <root>/{train,val,test}/mp4/<id>.mp4
    splits train | devel | test             splits Train | Val | Test

Ids are written "[00042]" in the CSVs and "00042" in file names; columns are read by name
("Empathic Pain" is accepted for "Empathic-Pain"); an empty cell is a withheld label (NaN),
not zero. Splits are normalised to train | val | test (MuSe's devel is val).

Each video file is looked up, in this order, in ``<root>/<split>/mp4/`` (the split directory
in any case), ``<root>/``, ``<root>/raw/``, ``<root>/videos/`` and ``<root>/mp4/``, as .mp4,
.avi, .mkv or .webm. A ``<video stem>.landmarks.npy`` beside it ((L,5,2) per-frame 5 points,
as SynthAffect's export writes) is picked up when present.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from mmarnn_min.affect import REACTIONS
from mmarnn_min.data.real_images import check_width, csv_rows, format_error, parse_float

HUME_SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_NAMES: dict[str, str] = {"train": "train", "devel": "val", "val": "val", "test": "test"}  # lower-cased
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm")
VIDEO_DIRS: tuple[str, ...] = ("", "raw", "videos", "mp4")  # under root, after <split>/mp4
ID_COLUMN = "File_ID"


@dataclass(frozen=True)
class HumeVideo:
    """One Hume-Reaction video and its 7 reaction intensities."""

    id: str                  # without brackets, e.g. "00042"
    split: str               # "train" | "val" | "test"
    path: Path               # the video file
    reactions: np.ndarray    # (7,) float32 in REACTIONS order; NaN where the label is withheld
    landmarks: Path | None   # <video stem>.landmarks.npy beside the video, or None


@dataclass(frozen=True)
class _LabelRow:
    id: str
    split: str
    reactions: np.ndarray  # (7,) float32


def read_hume(root: str | Path, require_videos: bool = True) -> list[HumeVideo]:
    """Every labelled video under ``root``, in the order of the label file.

    ``require_videos=True``: a label row whose video is not found raises FileNotFoundError
    (how many, the first ids, where they were looked for); ``False``: such rows are skipped
    with one warning giving their count."""
    root = Path(root)
    if (root / "labels.csv").is_file() and (root / "partition.csv").is_file():
        rows = _read_muse(root / "labels.csv", root / "partition.csv")
    elif (root / "data_info.csv").is_file():
        rows = _read_abaw5(root / "data_info.csv")
    else:
        raise FileNotFoundError(
            f"no Hume-Reaction labels under {root}: looked for labels.csv + partition.csv "
            "(MuSe 2022) and data_info.csv (ABAW5 ERI)"
        )
    return _attach_videos(root, rows, require_videos)


def hume_split(videos: Iterable[HumeVideo], split: str) -> list[HumeVideo]:
    """The videos of ``split`` ("train", "val" or "test")."""
    if split not in HUME_SPLITS:
        raise ValueError(f"split must be one of {HUME_SPLITS}, got {split!r}")
    return [video for video in videos if video.split == split]


# ---------------------------------------------------------------------------- label files

def _read_muse(labels_path: Path, partition_path: Path) -> list[_LabelRow]:
    """MuSe 2022: intensities from labels.csv, splits from partition.csv (id first, split last)."""
    partition = _read_partition(partition_path)
    rows = []
    for line, video_id, reactions, _ in _read_reaction_table(labels_path):
        if video_id not in partition:
            raise format_error(labels_path, line, f"id {video_id!r} is not in {partition_path}")
        rows.append(_LabelRow(video_id, partition[video_id], reactions))
    labelled = {row.id for row in rows}
    unlabelled = sorted(video_id for video_id in partition if video_id not in labelled)
    not_test = [video_id for video_id in unlabelled if partition[video_id] != "test"]
    if not_test:
        raise format_error(partition_path, None, f"{len(not_test)} train/devel ids have no row in {labels_path}, "
                                                 f"e.g. {not_test[:5]}")
    # test ids may be left out of labels.csv altogether: their labels are withheld
    withheld = np.full(len(REACTIONS), np.nan, np.float32)
    return rows + [_LabelRow(video_id, "test", withheld) for video_id in unlabelled]


def _read_partition(path: Path) -> dict[str, str]:
    """id -> split from MuSe's partition.csv: the first column the id, the last the split; the
    first row is a header unless its last cell is a split name."""
    partition: dict[str, str] = {}
    for index, (line, row) in enumerate(csv_rows(path)):
        if index == 0 and row[-1].lower() not in SPLIT_NAMES:
            continue  # the header
        if len(row) < 2:
            raise format_error(path, line, f"expected an id and a split, found {row}")
        video_id = _strip_id(row[0])
        if video_id in partition:
            raise format_error(path, line, f"id {video_id!r} appears twice")
        partition[video_id] = _normalise_split(path, line, row[-1])
    return partition


def _read_abaw5(path: Path) -> list[_LabelRow]:
    """ABAW5: ids, splits and intensities all in data_info.csv."""
    return [
        _LabelRow(video_id, _normalise_split(path, line, split), reactions)
        for line, video_id, reactions, (split,) in _read_reaction_table(path, extra_columns=("Split",))
    ]


def _read_reaction_table(path: Path, extra_columns: tuple[str, ...] = ()) -> Iterator[tuple]:
    """(line, id, reactions (7,) float32, [cells of extra_columns]) of every row of a label CSV
    with a File_ID column and the 7 reaction columns (all found by name)."""
    rows = csv_rows(path)
    header_line, header = next(rows, (1, []))
    id_column = _column(path, header_line, header, ID_COLUMN)
    columns = [_column(path, header_line, header, name) for name in REACTIONS]
    extras = [_column(path, header_line, header, name) for name in extra_columns]
    seen: set[str] = set()
    for line, row in rows:
        check_width(path, line, row, len(header))
        video_id = _strip_id(row[id_column])
        if not video_id:
            raise format_error(path, line, f"empty {ID_COLUMN}")
        if video_id in seen:
            raise format_error(path, line, f"id {video_id!r} appears twice")
        seen.add(video_id)
        reactions = np.array([_intensity(path, line, header[c], row[c]) for c in columns], np.float32)
        yield line, video_id, reactions, [row[c] for c in extras]


def _column(path: Path, line: int, header: list[str], name: str) -> int:
    """The index of column ``name`` in ``header``, comparing case-insensitively with spaces and
    hyphens alike ("Empathic Pain" is "Empathic-Pain")."""
    keys = [_column_key(cell) for cell in header]
    if _column_key(name) not in keys:
        raise format_error(path, line, f"expected a column {name!r} in the header, found {header}")
    return keys.index(_column_key(name))


def _column_key(name: str) -> str:
    return name.strip().lower().replace(" ", "-").replace("_", "-")


def _intensity(path: Path, line: int, column: str, text: str) -> float:
    """A reaction intensity: a number in [0, 1], or NaN for an empty (withheld) cell."""
    if text == "":
        return float("nan")
    value = parse_float(path, line, column, text)
    if not 0.0 <= value <= 1.0:
        raise format_error(path, line, f"column {column!r}: expected an intensity in [0, 1] or an "
                                       f"empty cell, found {text!r}")
    return value


def _strip_id(text: str) -> str:
    """"[00042]" -> "00042"."""
    return text.strip().removeprefix("[").removesuffix("]").strip()


def _normalise_split(path: Path, line: int, text: str) -> str:
    split = SPLIT_NAMES.get(text.strip().lower())
    if split is None:
        raise format_error(path, line, f"expected a split among {sorted(SPLIT_NAMES)} (any case), "
                                       f"found {text!r}")
    return split


# --------------------------------------------------------------------------------- videos

def _attach_videos(root: Path, rows: list[_LabelRow], require_videos: bool) -> list[HumeVideo]:
    """HumeVideo for every row whose video file is found (see the module docstring)."""
    listings: dict[Path, set[str]] = {}  # directory -> its file names, listed once
    places = {split: _video_places(root, split, listings) for split in HUME_SPLITS}
    videos, missing = [], []
    for row in rows:
        path = _find_video(row.id, places[row.split], listings)
        if path is None:
            missing.append(row)
            continue
        landmarks = f"{path.stem}.landmarks.npy"
        videos.append(HumeVideo(row.id, row.split, path, row.reactions,
                                path.parent / landmarks if landmarks in listings[path.parent] else None))
    if missing:
        looked = dict.fromkeys(place for row in missing for place in places[row.split])
        message = (f"{len(missing)} of {len(rows)} Hume-Reaction videos not found (first ids: "
                   f"{[row.id for row in missing[:5]]}); looked for <id>{{{','.join(VIDEO_EXTENSIONS)}}} "
                   f"in " + ", ".join(str(place) for place in looked))
        if require_videos:
            raise FileNotFoundError(message)
        warnings.warn(f"{message}: skipping them", stacklevel=3)
    return videos


def _video_places(root: Path, split: str, listings: dict[Path, set[str]]) -> list[Path]:
    """The directories a video of ``split`` may be in, in the order they are searched."""
    split_dirs = sorted(d for d in _listing(root, listings) if d.lower() == split and (root / d).is_dir())
    return [root / d / "mp4" for d in split_dirs] + [root / d for d in VIDEO_DIRS]


def _find_video(video_id: str, places: list[Path], listings: dict[Path, set[str]]) -> Path | None:
    for place in places:
        names = _listing(place, listings)
        for extension in VIDEO_EXTENSIONS:
            if video_id + extension in names:
                return place / (video_id + extension)
    return None


def _listing(directory: Path, listings: dict[Path, set[str]]) -> set[str]:
    """The names in ``directory`` (empty if it does not exist), cached in ``listings``."""
    if directory not in listings:
        listings[directory] = set(os.listdir(directory)) if directory.is_dir() else set()
    return listings[directory]
