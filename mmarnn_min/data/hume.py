"""Hume-Reaction: videos of people reacting to emotional clips, each labelled with the
intensities in [0, 1] of 7 self-reported reactions (REACTIONS order). It is the data MRNN is
trained and evaluated on (paper section 3.2). Two distributions exist; ``read_hume`` detects
which one is under ``root`` (docs/data_formats.md):

    MuSe 2022 (Reaction sub-challenge)      ABAW5 (ERI challenge)
    <root>/labels.csv     File_ID + 7       <root>/data_info.csv  File_ID, Split, 7, Country
    <root>/partition.csv  id, ..., split    <root>/{train,val,test}/mp4/<id>.mp4
    splits train | devel | test             splits Train | Val | Test

Ids are written "[00042]" in the CSVs and "00042" in file names; columns are read by name
("Empathic Pain" is accepted for "Empathic-Pain"). Splits are normalised to train | val | test
(MuSe's devel is val).

The labels are checked as they are read, each error naming the file and line: an id listed
twice (in two splits, it would leak), a column given twice, an intensity outside [0, 1] or not
a number. Only test labels may be withheld: a test video whose 7 cells are all empty (or, in
MuSe, that labels.csv leaves out) gets NaN reactions and ``labelled == False``; an empty cell
anywhere else is an error (a blank is not 0), and the test split is either all labelled or all
withheld. ``need`` names the splits a caller cannot do without (training: train and val).

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
from typing import Callable, Iterable

import numpy as np

from mmarnn_min.affect import REACTIONS
from mmarnn_min.data.real_images import (
    DataFormatError,
    MissingDataError,
    check_unique_columns,
    check_width,
    csv_rows,
    format_error,
    parse_float,
)

HUME_SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_NAMES: dict[str, str] = {"train": "train", "devel": "val", "val": "val", "test": "test"}  # lower-cased
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm")
VIDEO_DIRS: tuple[str, ...] = ("", "raw", "videos", "mp4")  # under root, after <split>/mp4
ID_COLUMN = "File_ID"
WITHHELD = "test"  # the only split whose labels may be withheld


@dataclass(frozen=True)
class HumeVideo:
    """One Hume-Reaction video and its 7 reaction intensities."""

    id: str                  # without brackets, e.g. "00042"
    split: str               # "train" | "val" | "test"
    path: Path               # the video file
    reactions: np.ndarray    # (7,) float32 in REACTIONS order; all NaN where the labels are withheld
    landmarks: Path | None   # <video stem>.landmarks.npy beside the video, or None

    @property
    def labelled(self) -> bool:
        """False for a test video whose labels are withheld."""
        return not np.isnan(self.reactions).any()


@dataclass(frozen=True)
class _LabelRow:
    id: str
    split: str
    reactions: np.ndarray  # (7,) float32, all NaN when withheld
    where: str             # "<file>:<line>" of the row, for messages


def read_hume(root: str | Path, require_videos: bool = True, need: Iterable[str] = ()) -> list[HumeVideo]:
    """Every listed video under ``root``, in the order of the label file.

    ``require_videos=True``: a label row whose video is not found raises MissingDataError
    (a FileNotFoundError: how many, the first ids, where they were looked for); ``False``: such
    rows are skipped with one warning giving their count. ``need``: splits that must hold at
    least one video (e.g. ("train", "val") to train), else a DataFormatError naming the label
    file. Malformed labels raise DataFormatError naming the file and line (module docstring)."""
    root, need = Path(root), tuple(need)
    unknown = [split for split in need if split not in HUME_SPLITS]
    if unknown:
        raise ValueError(f"need must name splits among {HUME_SPLITS}, got {unknown}")
    if (root / "labels.csv").is_file() and (root / "partition.csv").is_file():
        label_file = root / "partition.csv"  # where the splits are given
        rows = _read_muse(root / "labels.csv", label_file)
    elif (root / "data_info.csv").is_file():
        label_file = root / "data_info.csv"
        rows = _read_abaw5(label_file)
    else:
        raise MissingDataError(
            f"no Hume-Reaction labels under {root}: looked for labels.csv + partition.csv "
            "(MuSe 2022) and data_info.csv (ABAW5 ERI)"
        )
    if not rows:
        raise DataFormatError(f"{label_file}: lists no video")
    _check_test_labels(rows)
    _check_needed(label_file, [row.split for row in rows], need, on_disk=False)
    videos = _attach_videos(label_file, root, rows, require_videos)
    _check_needed(label_file, [video.split for video in videos], need, on_disk=True)
    return videos


def hume_split(videos: Iterable[HumeVideo], split: str) -> list[HumeVideo]:
    """The videos of ``split`` ("train", "val" or "test")."""
    if split not in HUME_SPLITS:
        raise ValueError(f"split must be one of {HUME_SPLITS}, got {split!r}")
    return [video for video in videos if video.split == split]


def hume_splits(videos: Iterable[HumeVideo]) -> dict[str, list[HumeVideo]]:
    """split -> its videos, for the splits that have any, in HUME_SPLITS order."""
    videos = list(videos)
    return {split: chosen for split in HUME_SPLITS if (chosen := hume_split(videos, split))}


def _check_needed(label_file: Path, splits: list[str], need: tuple[str, ...], on_disk: bool) -> None:
    """Fail when a split of ``need`` is not among ``splits`` (of the label rows, or of the
    videos found on disk)."""
    for split in need:
        if split not in splits:
            spelling = {"train": "train / Train", "val": "devel / Val", "test": "test / Test"}[split]
            what = (f"none of its {split} videos was found on disk" if on_disk else
                    f"it lists no {split} video (MuSe / ABAW5 write {spelling})")
            raise DataFormatError(f"{label_file}: {what}, and {' and '.join(need)} videos are needed")


def _check_test_labels(rows: list[_LabelRow]) -> None:
    """The test split is all labelled or all withheld (else the evaluation would silently use
    only part of it)."""
    test = [row for row in rows if row.split == WITHHELD]
    labelled = [row for row in test if not np.isnan(row.reactions).any()]
    withheld = [row for row in test if np.isnan(row.reactions).any()]
    if labelled and withheld:
        raise DataFormatError(f"{labelled[0].where}: this test video is labelled but others are withheld "
                              f"(first: {withheld[0].where}): give the labels of every test video, or of none")


# ---------------------------------------------------------------------------- label files

def _read_muse(labels_path: Path, partition_path: Path) -> list[_LabelRow]:
    """MuSe 2022: intensities from labels.csv, splits from partition.csv (id first, split last)."""
    partition = _read_partition(partition_path)

    def split_of(line: int, video_id: str, extras: list[str]) -> str:
        if video_id not in partition:
            raise format_error(labels_path, line, f"id {video_id!r} is not in {partition_path}")
        return partition[video_id][0]

    rows = _read_label_table(labels_path, split_of)
    labelled = {row.id for row in rows}
    unlabelled = [video_id for video_id in partition if video_id not in labelled]
    not_test = sorted(video_id for video_id in unlabelled if partition[video_id][0] != WITHHELD)
    if not_test:
        raise format_error(partition_path, None, f"{len(not_test)} train/devel ids have no row in {labels_path}, "
                                                 f"e.g. {not_test[:5]}")
    # test ids may be left out of labels.csv altogether: their labels are withheld
    withheld = np.full(len(REACTIONS), np.nan, np.float32)
    return rows + [_LabelRow(video_id, WITHHELD, withheld, f"{partition_path}:{partition[video_id][1]}")
                   for video_id in sorted(unlabelled)]


def _read_partition(path: Path) -> dict[str, tuple[str, int]]:
    """id -> (split, line) from MuSe's partition.csv: the first column the id, the last the
    split; the first row is a header unless its last cell is a split name."""
    partition: dict[str, tuple[str, int]] = {}
    for index, (line, row) in enumerate(csv_rows(path)):
        if index == 0 and row[-1].lower() not in SPLIT_NAMES:
            continue  # the header
        if len(row) < 2:
            raise format_error(path, line, f"expected an id and a split, found {row}")
        video_id, split = _strip_id(row[0]), _normalise_split(path, line, row[-1])
        if not video_id:
            raise format_error(path, line, "empty id")
        if video_id in partition:
            raise _repeated_id(path, line, video_id, split, partition[video_id])
        partition[video_id] = (split, line)
    return partition


def _read_abaw5(path: Path) -> list[_LabelRow]:
    """ABAW5: ids, splits and intensities all in data_info.csv."""
    return _read_label_table(path, lambda line, video_id, extras: _normalise_split(path, line, extras[0]),
                             extra_columns=("Split",))


def _read_label_table(path: Path, split_of: Callable[[int, str, list[str]], str],
                      extra_columns: tuple[str, ...] = ()) -> list[_LabelRow]:
    """The rows of a label CSV with a File_ID column and the 7 reaction columns (all found by
    name); ``split_of(line, id, [cells of extra_columns])`` gives a row's split."""
    rows = csv_rows(path)
    header_line, header = next(rows, (1, []))
    wanted = {_column_key(name) for name in (ID_COLUMN, *REACTIONS, *extra_columns)}
    check_unique_columns(path, header_line, header,  # e.g. "Empathic-Pain" and "Empathic Pain"
                         [key if key in wanted else None for key in map(_column_key, header)])
    id_column = _column(path, header_line, header, ID_COLUMN)
    columns = [_column(path, header_line, header, name) for name in REACTIONS]
    extras = [_column(path, header_line, header, name) for name in extra_columns]
    seen: dict[str, tuple[str, int]] = {}  # id -> (split, line)
    table = []
    for line, row in rows:
        check_width(path, line, row, len(header))
        video_id = _strip_id(row[id_column])
        if not video_id:
            raise format_error(path, line, f"empty {ID_COLUMN}")
        split = split_of(line, video_id, [row[c] for c in extras])
        if video_id in seen:
            raise _repeated_id(path, line, video_id, split, seen[video_id])
        seen[video_id] = (split, line)
        reactions = _reactions(path, line, split, [header[c] for c in columns], [row[c] for c in columns])
        table.append(_LabelRow(video_id, split, reactions, f"{path}:{line}"))
    return table


def _repeated_id(path: Path, line: int, video_id: str, split: str, first: tuple[str, int]) -> DataFormatError:
    first_split, first_line = first
    leak = f": in {first_split} and {split}, a leak between splits" if split != first_split else ""
    return format_error(path, line, f"id {video_id!r} appears twice (first on line {first_line}){leak}")


def _column(path: Path, line: int, header: list[str], name: str) -> int:
    """The index of column ``name`` in ``header``, comparing case-insensitively with spaces and
    hyphens alike ("Empathic Pain" is "Empathic-Pain")."""
    keys = [_column_key(cell) for cell in header]
    if _column_key(name) not in keys:
        raise format_error(path, line, f"expected a column {name!r} in the header, found {header}")
    return keys.index(_column_key(name))


def _column_key(name: str) -> str:
    return name.strip().lower().replace(" ", "-").replace("_", "-")


def _reactions(path: Path, line: int, split: str, names: list[str], cells: list[str]) -> np.ndarray:
    """(7,) float32 intensities of one row; all NaN for a test row whose 7 cells are empty
    (withheld). An empty cell in any other row is an error: a blank is not a 0."""
    blank = [name for name, cell in zip(names, cells) if cell == ""]
    if split == WITHHELD and len(blank) == len(cells):
        return np.full(len(cells), np.nan, np.float32)
    if blank and split == WITHHELD:
        raise format_error(path, line, f"column {blank[0]!r}: empty, but {len(cells) - len(blank)} of this test "
                                       f"video's 7 labels are given: give all 7, or leave all 7 empty (withheld)")
    if blank:
        raise format_error(path, line, f"column {blank[0]!r}: empty label in a {split} video (only test labels "
                                       "may be withheld)")
    return np.array([_intensity(path, line, name, cell) for name, cell in zip(names, cells)], np.float32)


def _intensity(path: Path, line: int, column: str, text: str) -> float:
    """A reaction intensity: a number in [0, 1] (NaN and infinities fail the test)."""
    value = parse_float(path, line, column, text)
    if not 0.0 <= value <= 1.0:
        raise format_error(path, line, f"column {column!r}: expected an intensity in [0, 1], found {text!r}")
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

def _attach_videos(label_file: Path, root: Path, rows: list[_LabelRow], require_videos: bool) -> list[HumeVideo]:
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
        message = (f"{label_file}: {len(missing)} of {len(rows)} Hume-Reaction videos not found (first ids: "
                   f"{[row.id for row in missing[:5]]}); looked for <id>{{{','.join(VIDEO_EXTENSIONS)}}} "
                   f"in " + ", ".join(str(place) for place in looked))
        if require_videos:
            raise MissingDataError(message)
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
