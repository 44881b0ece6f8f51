"""AffectNet: about 400 000 web photos of faces labelled by hand with one of 8 expression codes
(plus 3 "no label" codes) and valence-arousal. It is the expression + VA source of MMA
training (paper section 3.1; SynthAffect's "expr_va"). Two releases exist; ``read_affectnet``
detects which one is under ``root`` (docs/data_formats.md):

Original release:
    <root>/Manually_Annotated_file_lists/{training,validation}.csv
    <root>/Manually_Annotated_Images/<subDirectory_filePath>
    columns (read by name): subDirectory_filePath, face_x, face_y, face_width, face_height,
    facial_landmarks (68 points as 136 numbers "x1;y1;x2;y2;..."), expression, valence, arousal
Newer 8-label release:
    <root>/{train_set,val_set}/images/<id>.jpg
    <root>/{train_set,val_set}/annotations/<id>_{exp,val,aro,lnd}.npy  (values may be strings)

Expression codes 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger map onto
EXPRESSIONS; 7 Contempt, 8 None, 9 Uncertain, 10 No-Face carry no expression label. Valence
or arousal -2 means none (then both are NaN). An image with neither label is left out.

The 5 alignment points come from the 68 iBUG landmarks: the eyes are the means of points
36..41 and 42..47 (the subject's right eye first, which is the *image-left* eye, as
RetinaFace's order wants), the nose tip is point 30, the mouth corners points 48 and 54.
Without landmarks they are estimated from the face box (detectors.HAAR_LANDMARKS_IN_BOX); a box of
zeros as well means the whole image is the face (NaN landmarks: load_image_set resizes it).

Refused, naming the file and line: a column given twice, an image listed twice, an image in
both the training and the validation split (checked when the train split is read: the same
path in both lists; in the newer release, the same file under the same name), landmarks
or a box that are not finite numbers (a NaN there would silently turn a photo into an
"aligned crop"), 68 landmarks all on one point, and labels out of range or blank.
"""

from __future__ import annotations

import filecmp
import itertools
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from mmarnn_min.affect import EXPRESSIONS, NUM_AUS
from mmarnn_min.data.real_images import (
    ImageRecords,
    MissingDataError,
    check_new_id,
    check_unique_columns,
    check_width,
    csv_rows,
    format_error,
    make_records,
    parse_float,
)
from mmarnn_min.detectors import HAAR_LANDMARKS_IN_BOX

# AffectNet code -> index into EXPRESSIONS (codes 7..10: no expression label).
AFFECTNET_EXPRESSIONS: tuple[str, ...] = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")
EXPRESSION_OF_CODE: dict[int, int] = {code: EXPRESSIONS.index(name) for code, name in enumerate(AFFECTNET_EXPRESSIONS)}
MAX_CODE = 10
NO_VA = -2.0

ORIGINAL_LISTS = "Manually_Annotated_file_lists"
ORIGINAL_IMAGES = "Manually_Annotated_Images"
ORIGINAL_CSV = {"train": "training.csv", "val": "validation.csv"}
ORIGINAL_COLUMNS: tuple[str, ...] = (
    "subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
    "expression", "valence", "arousal",
)
NEWER_SETS = {"train": "train_set", "val": "val_set"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# iBUG-68 indices of the 5 points: (indices averaged) for left eye, right eye, nose, mouth corners.
IBUG_FIVE_POINTS: tuple[tuple[int, ...], ...] = (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,))


def read_affectnet(root: str | Path, split: str) -> ImageRecords:
    """The labelled images of ``split`` ("train" or "val") of either release under ``root``."""
    root = Path(root)
    if split not in ORIGINAL_CSV:
        raise ValueError(f"split must be one of {sorted(ORIGINAL_CSV)}, got {split!r}")
    if (root / ORIGINAL_LISTS).is_dir():
        val_csv = root / ORIGINAL_LISTS / ORIGINAL_CSV["val"]
        return _read_original(root / ORIGINAL_LISTS / ORIGINAL_CSV[split], root / ORIGINAL_IMAGES,
                              val_csv if split == "train" and val_csv.is_file() else None)
    if (root / NEWER_SETS[split]).is_dir():
        if split == "train" and (root / NEWER_SETS["val"] / "images").is_dir():
            _check_newer_leak(root / NEWER_SETS["train"] / "images", root / NEWER_SETS["val"] / "images")
        return _read_newer(root / NEWER_SETS[split])
    raise MissingDataError(
        f"no AffectNet under {root}: looked for {ORIGINAL_LISTS}/{ORIGINAL_CSV[split]} (original "
        f"release) and {NEWER_SETS[split]}/images + annotations (newer release)"
    )


def five_points_from_68(points: np.ndarray) -> np.ndarray:
    """(68,2) iBUG landmarks -> (5,2) left eye, right eye, nose tip, left and right mouth corner."""
    return np.stack([points[list(indices)].mean(axis=0) for indices in IBUG_FIVE_POINTS])


def five_points_from_box(x: float, y: float, width: float, height: float) -> np.ndarray:
    """(5,2) points estimated from a face box, as the Haar detector places them."""
    return np.array([x, y]) + HAAR_LANDMARKS_IN_BOX * np.array([width, height])


def expression_index(code: int) -> int:
    """AffectNet expression code -> index into EXPRESSIONS, -1 for codes without one (7..10)."""
    return EXPRESSION_OF_CODE.get(code, -1)


# ---------------------------------------------------------------------- original release

def _read_original(csv_path: Path, images_root: Path, val_csv: Path | None) -> ImageRecords:
    """The rows of training.csv / validation.csv; ``val_csv``: the validation list, whose
    images must not be in ``csv_path`` too."""
    paths, va, expression, landmarks = [], [], [], []
    seen: dict[str, int] = {}  # subDirectory_filePath -> line
    for line, cell in _original_rows(csv_path):
        check_new_id(csv_path, line, seen, cell["subDirectory_filePath"], "image")
        sample_expression = expression_index(_expression_code(csv_path, line, cell["expression"]))
        values = [parse_float(csv_path, line, name, cell[name]) for name in ("valence", "arousal")]
        sample_va = _valence_arousal(csv_path, line, values)
        if sample_expression < 0 and np.isnan(sample_va).all():
            continue  # no label at all
        paths.append(images_root / cell["subDirectory_filePath"])
        va.append(sample_va)
        expression.append(sample_expression)
        landmarks.append(_original_landmarks(csv_path, line, cell))
    if not paths:
        raise format_error(csv_path, None, "no row carries an expression (codes 0..6) or valence-arousal")
    if val_csv is not None:
        _check_original_leak(csv_path, seen, val_csv)
    return _records(paths, va, expression, landmarks)


def _original_rows(csv_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, {column name: cell}) of every data row. A file whose first row is data rather
    than a header (reported for some copies of validation.csv) is read in the documented
    column order."""
    rows = csv_rows(csv_path)
    first_line, first = next(rows, (1, []))
    header = [cell.lower() for cell in first]
    if ORIGINAL_COLUMNS[0].lower() in header:
        wanted = {name.lower() for name in ORIGINAL_COLUMNS}
        check_unique_columns(csv_path, first_line, first, [cell if cell in wanted else None for cell in header])
        missing = [name for name in ORIGINAL_COLUMNS if name.lower() not in header]
        if missing:
            raise format_error(csv_path, first_line, f"expected the columns {list(ORIGINAL_COLUMNS)}, "
                                                     f"missing {missing}")
        columns = {name: header.index(name.lower()) for name in ORIGINAL_COLUMNS}
    elif len(first) == len(ORIGINAL_COLUMNS):
        columns = {name: i for i, name in enumerate(ORIGINAL_COLUMNS)}
        rows = itertools.chain([(first_line, first)], rows)
    else:
        raise format_error(csv_path, first_line, f"expected a header with {list(ORIGINAL_COLUMNS)}, "
                                                 f"found {first}")
    for line, row in rows:
        check_width(csv_path, line, row, len(first))
        yield line, {name: row[index] for name, index in columns.items()}


def _check_original_leak(train_csv: Path, train: dict[str, int], val_csv: Path) -> None:
    """Fail when an image of ``train`` (path -> line in ``train_csv``) is in ``val_csv`` too."""
    for line, cell in _original_rows(val_csv):
        if cell["subDirectory_filePath"] in train:
            raise format_error(val_csv, line, f"image {cell['subDirectory_filePath']!r} is also in {train_csv} "
                                              f"(line {train[cell['subDirectory_filePath']]}): an image in both "
                                              "splits leaks the validation set into training")


def _expression_code(path: Path, line: int, text: str) -> int:
    value = parse_float(path, line, "expression", text)
    if value not in range(MAX_CODE + 1):
        raise format_error(path, line, f"column 'expression': expected a code 0..{MAX_CODE}, found {text!r}")
    return int(value)


def _valence_arousal(path: Path | str, line: int | None, values: list[float]) -> np.ndarray:
    """(2,) valence, arousal; NaN for both when either is -2 (none)."""
    if NO_VA in values:
        return np.full(2, np.nan)
    if not all(-1.0 <= v <= 1.0 for v in values):
        raise format_error(path, line, f"expected valence and arousal in [-1, 1] or {NO_VA:g}, found "
                                       f"{', '.join(f'{v:g}' for v in values)}")
    return np.array(values)


def _original_landmarks(path: Path, line: int, cell: dict[str, str]) -> np.ndarray:
    """(5,2) from the 68 landmarks, else from the face box, else NaN (box of zeros)."""
    text = cell["facial_landmarks"]
    if text:
        numbers = [parse_float(path, line, "facial_landmarks", n) for n in text.split(";") if n.strip()]
        if len(numbers) != 136:
            raise format_error(path, line, f"column 'facial_landmarks': expected 136 numbers (68 points) "
                                           f"separated by ';', found {len(numbers)}")
        return five_points_from_68(_checked_68(path, line, np.reshape(numbers, (68, 2)), "column 'facial_landmarks': "))
    names = ("face_x", "face_y", "face_width", "face_height")
    box = [parse_float(path, line, name, cell[name]) for name in names]
    for name, value in zip(names, box):
        if not math.isfinite(value):
            raise format_error(path, line, f"column {name!r}: expected a finite number, found {cell[name]!r}")
    if not any(box):
        return np.full((5, 2), np.nan)
    if box[2] <= 0 or box[3] <= 0:
        raise format_error(path, line, f"expected a face box with positive width and height (or all "
                                       f"zeros), found {box}")
    return five_points_from_box(*box)


def _checked_68(path: Path, line: int | None, points: np.ndarray, where: str = "") -> np.ndarray:
    """``points`` (68,2) when they can place a face: all finite, not all on one point."""
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise format_error(path, line, f"{where}expected 68 finite points, point {bad + 1} is "
                                       f"{points[bad, 0]:g}, {points[bad, 1]:g}")
    if (points == points[0]).all():
        raise format_error(path, line, f"{where}all 68 points are ({points[0, 0]:g}, {points[0, 1]:g}): "
                                       "no face to align on")
    return points


# ------------------------------------------------------------------------- newer release

def _read_newer(set_dir: Path) -> ImageRecords:
    """<set>/images/<id>.jpg with <set>/annotations/<id>_{exp,val,aro,lnd}.npy, in id order."""
    images_dir, annotations = set_dir / "images", set_dir / "annotations"
    for directory in (images_dir, annotations):
        if not directory.is_dir():
            raise MissingDataError(f"AffectNet (newer release): {directory} is not a directory")
    images = sorted(name for name in os.listdir(images_dir) if name.lower().endswith(IMAGE_EXTENSIONS))
    paths, va, expression, landmarks = [], [], [], []
    for name in images:
        stem = Path(name).stem
        code = _load_number(annotations / f"{stem}_exp.npy")
        if code not in range(MAX_CODE + 1):
            raise format_error(annotations / f"{stem}_exp.npy", None, f"expected a code 0..{MAX_CODE}, found {code:g}")
        sample_expression = expression_index(int(code))
        values = [_load_number(annotations / f"{stem}_{kind}.npy") for kind in ("val", "aro")]
        sample_va = _valence_arousal(f"{annotations / stem}_{{val,aro}}.npy", None, values)
        if sample_expression < 0 and np.isnan(sample_va).all():
            continue  # no label at all
        paths.append(images_dir / name)
        va.append(sample_va)
        expression.append(sample_expression)
        landmarks.append(five_points_from_68(_load_landmarks(annotations / f"{stem}_lnd.npy")))
    if not paths:
        raise MissingDataError(f"AffectNet (newer release): no labelled image in {images_dir}")
    return _records(paths, va, expression, landmarks)


def _check_newer_leak(train_images: Path, val_images: Path) -> None:
    """Fail when an image of val_set is also, byte for byte, in train_set under the same name
    (the names alone prove nothing: each set may number its images from 0)."""
    for name in sorted(set(os.listdir(train_images)) & set(os.listdir(val_images))):
        if filecmp.cmp(train_images / name, val_images / name, shallow=False):  # sizes first, then bytes
            raise format_error(val_images / name, None, f"the same image as {train_images / name}: an image in "
                                                        "both splits leaks the validation set into training")


def _load_array(path: Path) -> np.ndarray:
    """A .npy file as float64 (numbers stored as strings are cast)."""
    if not path.is_file():
        raise MissingDataError(f"AffectNet annotation missing: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # not a .npy file, truncated, or pickled objects
        raise format_error(path, None, f"cannot be read as a .npy array: {error}") from None
    try:
        return array.astype(np.float64)
    except ValueError as error:
        raise format_error(path, None, f"expected numbers (or numbers stored as strings): {error}") from None


def _load_number(path: Path) -> float:
    array = _load_array(path)
    if array.size != 1:
        raise format_error(path, None, f"expected one number, found an array of shape {array.shape}")
    return float(array.item())


def _load_landmarks(path: Path) -> np.ndarray:
    array = _load_array(path)
    if array.size != 136:
        raise format_error(path, None, f"expected 68 landmarks (68x2 or 136 numbers), found shape {array.shape}")
    return _checked_68(path, None, array.reshape(68, 2))


def _records(paths: list[Path], va: list, expression: list, landmarks: list) -> ImageRecords:
    """AffectNet has no AU labels: every AU is NaN."""
    return make_records("AffectNet", paths, va, expression, np.full((len(paths), NUM_AUS), np.nan), landmarks)

