"""Real face images for MMA training (paper section 3.1): the records the image readers return,
and the step that turns them into aligned crops.

    affectnet.read_affectnet ─┐
    emotionet.read_emotionet ─┼─> ImageRecords (paths + labels + 5 landmarks) ─┐
    affwild2.read_affwild2  ──┘                                concat_records ─┴─> load_image_set
        -> ImageSet (S x S aligned uint8 crops + labels), the type SynthAffect's images have

Labels follow ImageSet's conventions: NaN (valence-arousal, AUs) or -1 (expression) where a
data set has no label. Landmarks are RetinaFace's 5 points in image pixels (left eye, right
eye, nose tip, left and right mouth corner; "left" = image left), or NaN for an image that is
already an aligned crop (it is only resized).

``load_image_set`` stores the crops once in ``<cache root>/real/<name>.npy`` (see
``crop_cache_path``) and later opens them memory-mapped, so a data set larger than memory is
read from disk as training needs it. Every reader raises ``DataFormatError`` on a malformed
file, naming the file, the line and what was expected, and ``MissingDataError`` (also a
FileNotFoundError) on a missing one; both are UserErrors, printed by the commands as one line.
The CSV helpers here, shared by the readers, also refuse a column given twice and an id
listed twice.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from mmarnn_min.affect import NUM_AUS
from mmarnn_min.cache import cache_root
from mmarnn_min.data.synth import SOURCES, ImageSet
from mmarnn_min.errors import UserError
from mmarnn_min.faces import align_face, align_template

PROGRESS_EVERY = 1000  # images between two progress lines of load_image_set
_SOURCES_HASHED = ("data/real_images.py", "faces.py")  # the code that draws the crops


class DataFormatError(UserError, ValueError):
    """A malformed data file: the message names the file, the line (1-based) and what was
    expected vs found."""


class MissingDataError(DataFormatError, FileNotFoundError):
    """A file or directory a data set needs is absent: the message names it and where it was
    looked for."""


def format_error(path: str | Path, line: int | None, message: str) -> DataFormatError:
    """A DataFormatError reading ``<path>:<line>: <message>`` (no line for a binary file)."""
    where = f"{path}" if line is None else f"{path}:{line}"
    return DataFormatError(f"{where}: {message}")


@dataclass(frozen=True)
class ImageRecords:
    """The images of a data set and their labels, before any pixel is read."""

    dataset: str              # "AffectNet", "EmotioNet", "Aff-Wild2" (for messages)
    paths: list[Path]         # one image file per sample
    va: np.ndarray            # (N,2) float32 valence, arousal in [-1,1]; NaN: no label
    expression: np.ndarray    # (N,) int64 index into EXPRESSIONS; -1: no label
    aus: np.ndarray           # (N,17) float32 in {0,1} in AUS order; NaN: no label for that AU
    landmarks: np.ndarray     # (N,5,2) float32 in image pixels; NaN: already an aligned crop

    def __post_init__(self) -> None:
        n = len(self.paths)
        expected = {"va": ((n, 2), np.float32), "expression": ((n,), np.int64),
                    "aus": ((n, NUM_AUS), np.float32), "landmarks": ((n, 5, 2), np.float32)}
        for name, (shape, dtype) in expected.items():
            array = getattr(self, name)
            if array.shape != shape or array.dtype != dtype:
                raise ValueError(f"{self.dataset} records: {name} must be {np.dtype(dtype)} {shape} "
                                 f"for {n} paths, got {array.dtype} {array.shape}")
        finite = np.isfinite(self.landmarks).reshape(n, -1)
        if (finite.any(axis=1) & ~finite.all(axis=1)).any():
            raise ValueError(f"{self.dataset} records: a landmark set is partly NaN "
                             "(all 10 numbers must be finite, or all NaN)")

    def __len__(self) -> int:
        return len(self.paths)


def make_records(dataset: str, paths: list[Path], va: list, expression: list, aus: list,
                 landmarks: list) -> ImageRecords:
    """ImageRecords from per-sample Python lists (what the readers collect row by row)."""
    n = len(paths)
    return ImageRecords(
        dataset=dataset, paths=paths,
        va=np.asarray(va, np.float32).reshape(n, 2),
        expression=np.asarray(expression, np.int64).reshape(n),
        aus=np.asarray(aus, np.float32).reshape(n, NUM_AUS),
        landmarks=np.asarray(landmarks, np.float32).reshape(n, 5, 2),
    )


def concat_records(records: Sequence[ImageRecords]) -> ImageRecords:
    """One set of records holding all of ``records``, in order."""
    if not records:
        raise ValueError("concat_records needs at least one set of records")
    names = list(dict.fromkeys(r.dataset for r in records))  # unique, in order
    return ImageRecords(
        dataset="+".join(names),
        paths=[path for r in records for path in r.paths],
        va=np.concatenate([r.va for r in records]),
        expression=np.concatenate([r.expression for r in records]),
        aus=np.concatenate([r.aus for r in records]),
        landmarks=np.concatenate([r.landmarks for r in records]),
    )


# ---------------------------------------------------------------------------- CSV helpers

def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row of a CSV file, header included; a UTF-8
    byte-order mark is dropped. A file that is not UTF-8 or has an unclosed quote is a
    DataFormatError naming the line."""
    if not path.is_file():
        raise MissingDataError(f"no such file: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file, strict=True)
            for row in reader:
                if any(cell.strip() for cell in row):
                    yield reader.line_num, [cell.strip() for cell in row]
    except UnicodeDecodeError:
        raise format_error(path, _first_line_not_utf8(path), "expected UTF-8 text (save the file as UTF-8)") from None
    except csv.Error as error:
        raise format_error(path, reader.line_num, f"malformed CSV ({error}; check the quotes)") from None
    except OSError as error:
        raise format_error(path, None, f"cannot read the file: {error.strerror}") from None


def read_text(path: Path) -> str:
    """A UTF-8 text file (a byte-order mark dropped); DataFormatError naming the first line
    that is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise format_error(path, _first_line_not_utf8(path), "expected UTF-8 text (save the file as UTF-8)") from None
    except OSError as error:
        raise format_error(path, None, f"cannot read the file: {error.strerror}") from None


def _first_line_not_utf8(path: Path) -> int:
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def check_width(path: Path, line: int, row: list[str], width: int) -> None:
    """Fail unless ``row`` has as many cells as the header."""
    if len(row) != width:
        raise format_error(path, line, f"expected {width} comma-separated values (as in the header), "
                                       f"found {len(row)}")


def check_unique_columns(path: Path, line: int, header: list[str], keys: list[object]) -> None:
    """Fail when two columns of ``header`` mean the same thing: ``keys[i]`` is what column i
    holds once spelling is normalised, None for a column the reader does not use."""
    first: dict[object, int] = {}
    for column, key in enumerate(keys):
        if key is None:
            continue
        if key in first:
            raise format_error(path, line, f"columns {first[key] + 1} and {column + 1} ({header[first[key]]!r} and "
                                           f"{header[column]!r}) hold the same field: keep one")
        first[key] = column


def check_new_id(path: Path, line: int, seen: dict[str, int], key: str, what: str) -> None:
    """Fail when ``key`` was already seen (``seen``: key -> its first line), else record it."""
    if key in seen:
        raise format_error(path, line, f"{what} {key!r} appears twice (first on line {seen[key]})")
    seen[key] = line


def parse_float(path: Path, line: int, column: str, text: str) -> float:
    """``text`` as a float, or a DataFormatError naming the file, line and column."""
    try:
        return float(text)
    except ValueError:
        raise format_error(path, line, f"column {column!r}: expected a number, found {text!r}") from None


# ------------------------------------------------------------------------------- crops

def load_image_set(records: ImageRecords, size: int, source: int, cache: bool = True) -> ImageSet:
    """Read, align and label every image of ``records``: an ImageSet of ``size`` x ``size``
    crops whose ``source`` (an index into SOURCES: 0 expr_va, 1 aus, 2 all) is ``source``.

    An image with landmarks is warped onto the 5-point template (``faces.align_face``); one
    with NaN landmarks is resized (INTER_AREA). Real data: the labels are all the truth there
    is, so ``true_va``, ``true_expression`` and ``true_aus`` are copies of the labels, and
    ``landmarks`` holds the template points of a ``size`` crop for every image (where the
    aligned points land; for a resized image, where they would).

    ``cache=True``: the crops are written once to ``crop_cache_path(records, size)`` and
    opened memory-mapped (read-only) from then on; editing, adding or removing an image
    changes the path, so stale crops are never used. A missing or undecodable image raises
    DataFormatError naming it."""
    if len(records) == 0:
        raise ValueError(f"{records.dataset}: no images to load")
    if not 0 <= source < len(SOURCES):
        raise ValueError(f"source must index SOURCES {SOURCES}, got {source}")
    if cache:
        path = crop_cache_path(records, size)
        if not path.is_file():
            _write_crop_cache(records, size, path)
        images = np.load(path, mmap_mode="r")
    else:
        images = np.empty((len(records), size, size, 3), np.uint8)
        _fill_crops(records, size, images)
    return ImageSet(
        images=images, va=records.va.copy(), expression=records.expression.copy(),
        aus=records.aus.copy(), source=np.full(len(records), source, np.int64),
        true_va=records.va.copy(), true_expression=records.expression.copy(),
        true_aus=records.aus.copy(),
        landmarks=np.broadcast_to(align_template(size).astype(np.float32), (len(records), 5, 2)).copy(),
    )


def crop_cache_path(records: ImageRecords, size: int) -> Path:
    """``<cache root>/real/<dataset>-<hash>.npy``. The hash covers every image's path, byte size
    and modification time, the landmarks, ``size``, and the code that draws the crops."""
    digest = hashlib.sha256(f"size={size} opencv={cv2.__version__}\n".encode())
    package = Path(__file__).resolve().parents[1]
    for name in _SOURCES_HASHED:
        digest.update((package / name).read_bytes())
    for path in records.paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise MissingDataError(f"{path}: image file missing (listed by the {records.dataset} "
                                   "annotations)") from None
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(np.ascontiguousarray(records.landmarks).tobytes())
    slug = "".join(c if c.isalnum() else "_" for c in records.dataset)
    return cache_root() / "real" / f"{slug}-{len(records)}x{size}-{digest.hexdigest()[:20]}.npy"


def _write_crop_cache(records: ImageRecords, size: int, path: Path) -> None:
    """Fill a temporary .npy next to ``path`` crop by crop (never all in memory), then move it
    into place in one step: a load killed half-way leaves no partial file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        crops = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8,
                                          shape=(len(records), size, size, 3))
        _fill_crops(records, size, crops)
        crops.flush()
        del crops
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _fill_crops(records: ImageRecords, size: int, out: np.ndarray) -> None:
    """out[i] = the crop of image i, with a progress line on stderr every PROGRESS_EVERY images."""
    started = time.perf_counter()
    total = len(records)
    for i, (path, points) in enumerate(zip(records.paths, records.landmarks)):
        out[i] = crop_image(read_rgb(path), points, size)
        done = i + 1
        if done % PROGRESS_EVERY == 0 or (done == total and total >= PROGRESS_EVERY):
            _print_progress(records.dataset, done, total, time.perf_counter() - started)


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (H,W,3); MissingDataError when it is missing, DataFormatError
    when it cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR; None when it cannot be read
    if image is None:
        if not Path(path).is_file():
            raise MissingDataError(f"{path}: image file missing")
        raise format_error(path, None, "cannot be decoded as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def crop_image(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """``size`` x ``size`` crop: aligned on ``landmarks`` (5,2), or resized when they are NaN."""
    if np.isnan(landmarks).any():
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return align_face(image, landmarks, size)


def _print_progress(dataset: str, done: int, total: int, seconds: float) -> None:
    rate = done / max(seconds, 1e-9)
    print(f"{dataset}: cropped {done}/{total} images, {rate:.0f} images/s, "
          f"{(total - done) / rate:.0f} s left", file=sys.stderr, flush=True)
