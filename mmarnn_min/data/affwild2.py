"""Aff-Wild2 (the ABAW challenges' data set): in-the-wild videos annotated frame by frame with
valence-arousal, 8 expression classes and 12 AUs, distributed as 112 x 112 aligned face crops.
It is the one source carrying all three MMA tasks (paper section 3.1; SynthAffect's "all").

    <root>/cropped_aligned/<video>/00001.jpg ...          crops, 1-based, gaps where no face
    <root>/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt
    <root>/EXPR_Classification_Challenge/...   (EXPR_Recognition_Challenge in later years)
    <root>/AU_Detection_Challenge/...

Each annotation file has one header line; the k-th line after it is frame k (crop k, 1-based):
    VA    "valence,arousal"; -5 marks an invalid frame
    EXPR  "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"; one class index per
          line; -1 marks an invalid frame and 7 (Other) is none of the 7 basic expressions:
          both carry no expression label. 0..6 is already the project's EXPRESSIONS order.
    AU    "AU1,AU2,AU4,...": one 0/1 per AU named in the header; -1 marks an invalid frame.
          AUs of the 17 that the header does not name stay NaN.
Any subset of the three tasks may be present. Annotations of the same video name are merged
frame by frame (two-person videos carry _left/_right in both the annotation and crop names).

Refused, naming the file and line: a value outside its task's range (NaN included), a blank
line before the last label, an AU named twice in a header, both EXPR directory names at once,
and a video annotated for one task in both Train_Set and Validation_Set (a leak; a video in
different splits for different tasks only gets a warning). Missing directories raise
MissingDataError (a FileNotFoundError) saying where they were looked for.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmarnn_min.affect import AUS, EXPRESSIONS, NUM_AUS
from mmarnn_min.data.real_images import (
    ImageRecords,
    MissingDataError,
    check_unique_columns,
    format_error,
    parse_float,
    read_text,
)

SPLIT_DIRS: dict[str, str] = {"train": "Train_Set", "val": "Validation_Set"}
TASK_DIRS: dict[str, tuple[str, ...]] = {
    "VA": ("VA_Estimation_Challenge",),
    "EXPR": ("EXPR_Classification_Challenge", "EXPR_Recognition_Challenge"),
    "AU": ("AU_Detection_Challenge",),
}
CROP_EXTENSIONS: tuple[str, ...] = (".jpg", ".png")
VA_INVALID, EXPR_INVALID, EXPR_OTHER, AU_INVALID = -5.0, -1, 7, -1.0
_AU_NAME = re.compile(r"AU\s*0*(\d+)", re.IGNORECASE)


@dataclass
class _VideoLabels:
    """One video's labels per frame (row 0 = frame 1), as far as each task's file goes."""

    va: np.ndarray | None = None          # (L,2) float32, NaN: invalid
    expression: np.ndarray | None = None  # (L,) int64, -1: none
    aus: np.ndarray | None = None         # (L,17) float32, NaN: invalid or not coded

    def padded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(va (F,2), expression (F,), aus (F,17)) over the longest task's F frames: no label
        (NaN, -1) beyond the end of a shorter task's file or for a task without a file."""
        frames = max(len(a) for a in (self.va, self.expression, self.aus) if a is not None)
        return (_pad(self.va, frames, (2,), np.nan, np.float32),
                _pad(self.expression, frames, (), -1, np.int64),
                _pad(self.aus, frames, (NUM_AUS,), np.nan, np.float32))


def _pad(labels: np.ndarray | None, frames: int, shape: tuple[int, ...], fill: float, dtype) -> np.ndarray:
    padded = np.full((frames, *shape), fill, dtype)
    if labels is not None:
        padded[:len(labels)] = labels[:frames]
    return padded


def read_affwild2(root: str | Path, split: str, every: int = 1) -> ImageRecords:
    """One record per frame of ``split`` ("train": Train_Set, "val": Validation_Set) that has
    a crop and at least one valid label, keeping frames 1, 1 + every, 1 + 2 every, ... of each
    video (Aff-Wild2 has millions of frames). Videos in name order, frames in order. The crops
    are aligned already: the landmarks are NaN (load_image_set only resizes them)."""
    root = Path(root)
    if split not in SPLIT_DIRS:
        raise ValueError(f"split must be one of {sorted(SPLIT_DIRS)}, got {split!r}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    videos = _read_annotations(root, SPLIT_DIRS[split])
    _check_split_leaks(root, SPLIT_DIRS[split])
    crops_root = root / "cropped_aligned"
    if not crops_root.is_dir():
        raise MissingDataError(f"no Aff-Wild2 crops: {crops_root} is not a directory")
    paths, chunks, without_crops = [], [], []  # chunks: (va, expression, aus) of each video's kept frames
    for name in sorted(videos):
        crop_dir = crops_root / name
        crops = set(os.listdir(crop_dir)) if crop_dir.is_dir() else set()
        if not crops:
            without_crops.append(name)
            continue
        va, expression, aus = videos[name].padded()
        has_label = ~np.isnan(va).any(axis=1) | (expression >= 0) | ~np.isnan(aus).all(axis=1)
        frames = np.flatnonzero(has_label[::every]) * every  # 0-based
        found = [next((f for f in _crop_files(index + 1) if f in crops), None) for index in frames]
        kept = frames[np.array([crop is not None for crop in found], dtype=bool)]
        paths += [crop_dir / crop for crop in found if crop is not None]
        chunks.append((va[kept], expression[kept], aus[kept]))
    if without_crops:
        warnings.warn(f"Aff-Wild2: {len(without_crops)} annotated videos have no crops in "
                      f"{crops_root} (first: {without_crops[:5]}): skipping them", stacklevel=2)
    if not paths:
        raise MissingDataError(f"Aff-Wild2 {split}: no labelled frame has a crop in {crops_root}")
    va, expression, aus = (np.concatenate(arrays) for arrays in zip(*chunks))
    return ImageRecords("Aff-Wild2", paths, va, expression, aus,
                        landmarks=np.full((len(paths), 5, 2), np.nan, np.float32))


def _read_annotations(root: Path, split_dir: str) -> dict[str, _VideoLabels]:
    """video name -> its labels, from whichever of the three tasks' files exist."""
    videos: dict[str, _VideoLabels] = {}
    found = False
    for task, (field, read) in _TASKS.items():
        directory = _task_directory(root, task, split_dir)
        if directory is None:
            continue
        found = True
        for file in sorted(directory.glob("*.txt")):
            setattr(videos.setdefault(file.stem, _VideoLabels()), field, read(file))
    if not found:
        looked = [str(root / d / split_dir) for dirs in TASK_DIRS.values() for d in dirs]
        raise MissingDataError(f"no Aff-Wild2 annotations: none of {looked} is a directory")
    return videos


def _task_directory(root: Path, task: str, split_dir: str) -> Path | None:
    """Where ``task``'s annotations of one split are, or None. Both names of the EXPR
    challenge at once is an error: which year's labels to use would be a guess."""
    found = [root / d / split_dir for d in TASK_DIRS[task] if (root / d / split_dir).is_dir()]
    if len(found) > 1:
        raise format_error(found[1], None, f"{task} annotations exist under two names (also {found[0]}): keep one")
    return found[0] if found else None


def _check_split_leaks(root: Path, split_dir: str) -> None:
    """A video annotated for one task in both Train_Set and Validation_Set is an error (its
    frames would be trained on and validated on). One annotated for a task in this split and
    for another task in the other split gets a warning: its frames are in both splits, each
    with a different task's labels."""
    other = next(d for d in SPLIT_DIRS.values() if d != split_dir)
    here, there = ({task: _annotated(_task_directory(root, task, d)) for task in TASK_DIRS}
                   for d in (split_dir, other))
    for task in TASK_DIRS:
        both = sorted(here[task] & there[task])
        if both:
            file = _task_directory(root, task, split_dir) / f"{both[0]}.txt"
            raise format_error(file, None, f"video {both[0]!r} is annotated in {other} too "
                                           f"({_task_directory(root, task, other)}), a leak between splits "
                                           f"({len(both)} such videos): keep each video in one split")
    across = sorted(set().union(*here.values()) & set().union(*there.values()))
    if across:
        warnings.warn(f"Aff-Wild2: {len(across)} videos are annotated for one task in {split_dir} and for another "
                      f"in {other} (first: {across[:5]}): their frames are in both splits", stacklevel=3)


def _annotated(directory: Path | None) -> set[str]:
    """The video names with an annotation file in ``directory`` (None: no directory)."""
    return set() if directory is None else {file.stem for file in directory.glob("*.txt")}


def read_va_file(path: Path) -> np.ndarray:
    """(L,2) float32 valence, arousal per frame; NaN for a frame marked -5 (in either value)."""
    header, values = _read_table(path, 2)
    if [name.lower() for name in header] != ["valence", "arousal"]:
        raise format_error(path, 1, f"expected the header 'valence,arousal', found {','.join(header)!r}")
    invalid = (values == VA_INVALID).any(axis=1)
    _check_values(path, values, invalid | ((values >= -1) & (values <= 1)).all(axis=1),
                  f"valence and arousal in [-1, 1], or {VA_INVALID:g}")
    return np.where(invalid[:, None], np.nan, values).astype(np.float32)


def read_expr_file(path: Path) -> np.ndarray:
    """(L,) int64 expression index per frame (EXPRESSIONS order); -1 for -1 and for 7 (Other)."""
    header, values = _read_table(path, 1)
    if [name.lower() for name in header[:len(EXPRESSIONS)]] != list(EXPRESSIONS):
        raise format_error(path, 1, "expected the header 'Neutral,Anger,Disgust,Fear,Happiness,Sadness,"
                                    f"Surprise,Other', found {','.join(header)!r}")
    codes = values[:, 0]
    _check_values(path, values, np.isin(codes, np.arange(EXPR_INVALID, EXPR_OTHER + 1)),
                  f"a class index 0..{EXPR_OTHER} or {EXPR_INVALID}")
    return np.where(codes == EXPR_OTHER, -1, codes).astype(np.int64)


def read_au_file(path: Path) -> np.ndarray:
    """(L,17) float32 in AUS order: 0/1 for the AUs the header names, NaN for -1 (invalid) and
    for the AUs it does not name (AUs outside the 17 are ignored)."""
    header, values = _read_table(path, None)
    numbers = []
    for name in header:
        match = _AU_NAME.fullmatch(name)
        if match is None:
            raise format_error(path, 1, f"expected AU names like 'AU1,AU2,...' in the header, found {name!r}")
        numbers.append(int(match.group(1)))
    check_unique_columns(path, 1, header, numbers)  # "AU1" and "AU01" too
    aus = np.full((len(values), NUM_AUS), np.nan, np.float32)
    for column, number in enumerate(numbers):
        if number in AUS:
            aus[:, AUS.index(number)] = values[:, column]
    _check_values(path, values, np.isin(values, (0, 1, AU_INVALID)).all(axis=1),
                  f"0, 1 or {AU_INVALID:g} for every AU")
    aus[aus == AU_INVALID] = np.nan
    return aus


_TASKS = {"VA": ("va", read_va_file), "EXPR": ("expression", read_expr_file),
          "AU": ("aus", read_au_file)}


def _read_table(path: Path, width: int | None) -> tuple[list[str], np.ndarray]:
    """The header cells and the numbers (L, width) of an annotation file: ``width`` values per
    line (None: as many as the header has). Line k + 1 is frame k, so a blank line before the
    last label is an error; trailing blank lines are dropped."""
    lines = read_text(path).rstrip().splitlines()
    if not lines:
        raise format_error(path, 1, "expected a header line, found an empty file")
    header = [cell.strip() for cell in lines[0].split(",")]
    width = len(header) if width is None else width
    body = lines[1:]
    if not body:
        return header, np.empty((0, width))
    try:  # the fast path: numpy parses a well-formed file in C (a skipped blank line fails the reshape)
        return header, np.loadtxt(body, delimiter=",", comments=None, dtype=np.float64,
                                  ndmin=2).reshape(len(body), width)
    except ValueError:
        names = header if len(header) == width else [f"value {c + 1}" for c in range(width)]
        return header, _parse_lines(path, body, names)


def _parse_lines(path: Path, body: list[str], names: list[str]) -> np.ndarray:
    """Line by line, naming the first line that is blank, has the wrong count or a non-number."""
    values = np.empty((len(body), len(names)), np.float64)
    for index, text in enumerate(body):
        line = index + 2
        cells = [cell.strip() for cell in text.split(",")]
        if not text.strip():
            raise format_error(path, line, "expected a label, found a blank line (line k + 1 must be frame k)")
        if len(cells) != len(names):
            raise format_error(path, line, f"expected {len(names)} comma-separated values, found {len(cells)}")
        values[index] = [parse_float(path, line, name, cell) for name, cell in zip(names, cells)]
    return values


def _check_values(path: Path, values: np.ndarray, valid: np.ndarray, expected: str) -> None:
    """Fail on the first row that is not ``valid`` (L,) bool, naming its line."""
    if not valid.all():
        index = int(np.argmin(valid))
        raise format_error(path, index + 2, f"expected {expected}, found "
                                            f"{','.join(f'{v:g}' for v in values[index])}")


def _crop_files(frame: int) -> list[str]:
    """The names frame ``frame`` (1-based) may have: 00001.jpg, 00001.png."""
    return [f"{frame:05d}{extension}" for extension in CROP_EXTENSIONS]
