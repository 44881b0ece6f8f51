"""EmotioNet: web photos of faces with action units coded by hand (the manually annotated file,
e.g. ``EmotioNet_FACS_aws_2020_24600.csv``). It is the AU-only source of MMA training (paper
section 3.1; SynthAffect's "aus").

    URL,URL orig,'AU 1','AU 2','AU 4',...
    'https://example.org/img/000123.jpg',http://orig.example/x.jpg,1,0,0,...

AU headers hold quotes and a space (``'AU 1'``; ``AU 1`` and ``AU1`` are accepted too); URL
cells may be wrapped in single quotes. Values: 1 present, 0 absent, 999 not coded (NaN). The
set of AU columns varies by release: those among the project's 17 AUs are read, the others
ignored, and AUs of the 17 the file lacks stay NaN.

The images are the photos behind the URLs, downloaded by the user into one directory: the file
of a row is ``image_root / <the last part of the URL's path>``. Many URLs have died, so rows
whose image is absent are skipped (one warning says how many). Two rows whose present image is
the same file are refused (whose labels the photo carries would be a guess): keep their names
apart when downloading, and edit the URLs to match. A column given twice (the URL, or one AU,
e.g. 'AU 1' and 'AU1') is refused too, as is a value other than 0, 1 or 999; each error names
the file and line.

The photos are not aligned crops, and the file gives no landmarks: the landmarks are NaN and
``load_image_set`` resizes the whole photo. For real use run a face detector first
(``detectors.RetinaFaceDetector`` or ``detectors.HaarDetector``) and align on its 5 points.
"""

from __future__ import annotations

import os
import posixpath
import re
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from mmarnn_min.affect import AUS, NUM_AUS
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

URL_COLUMN = "url"  # compared lower-cased, quotes stripped
NOT_CODED = 999.0
_AU_HEADER = re.compile(r"AU\s*0*(\d+)", re.IGNORECASE)


def read_emotionet(csv_path: str | Path, image_root: str | Path) -> ImageRecords:
    """One record per row whose image is in ``image_root`` and that codes at least one of
    the 17 AUs, in file order."""
    csv_path, image_root = Path(csv_path), Path(image_root)
    rows = csv_rows(csv_path)
    header_line, header = next(rows, (1, []))
    url_column, au_columns = _columns(csv_path, header_line, header)
    if not image_root.is_dir():
        raise MissingDataError(f"EmotioNet image directory not found: {image_root}")
    present = set(os.listdir(image_root))
    paths, aus, absent = [], [], 0
    used: dict[str, int] = {}  # image name -> line
    for line, row in rows:
        check_width(csv_path, line, row, len(header))
        name = image_name(csv_path, line, row[url_column])
        sample_aus = np.full(NUM_AUS, np.nan)
        for column, position in au_columns.items():
            sample_aus[position] = _au_value(csv_path, line, header[column], row[column])
        if np.isnan(sample_aus).all():
            continue  # codes none of the 17 AUs
        if name not in present:
            absent += 1
            continue
        check_new_id(csv_path, line, used, name, "image file")
        paths.append(image_root / name)
        aus.append(sample_aus)
    if not paths:
        raise MissingDataError(f"EmotioNet: none of the images listed in {csv_path} is in {image_root} "
                               f"(expected each as image_root/<last part of its URL>)")
    if absent:
        warnings.warn(f"EmotioNet: {absent} images listed in {csv_path} are not in {image_root}: "
                      "skipping them", stacklevel=2)
    n = len(paths)
    return make_records("EmotioNet", paths, np.full((n, 2), np.nan), np.full(n, -1), aus,
                        np.full((n, 5, 2), np.nan))


def image_name(path: Path, line: int, url: str) -> str:
    """The file name of a row's image: the last part of the URL's path (quotes stripped)."""
    name = posixpath.basename(urlparse(_unquote(url)).path)
    if not name:
        raise format_error(path, line, f"column 'URL': expected an image URL ending in a file name, found {url!r}")
    return name


def _columns(path: Path, line: int, header: list[str]) -> tuple[int, dict[int, int]]:
    """The URL column's index and {column index: position in AUS} of the AU columns among the 17."""
    names = [_unquote(cell).lower() for cell in header]
    if URL_COLUMN not in names:
        raise format_error(path, line, f"expected a 'URL' column in the header, found {header}")
    au_numbers = [int(match.group(1)) if (match := _AU_HEADER.fullmatch(_unquote(cell))) else None
                  for cell in header]
    check_unique_columns(path, line, header, [URL_COLUMN if name == URL_COLUMN else number
                                              for name, number in zip(names, au_numbers)])
    au_columns = {column: AUS.index(number) for column, number in enumerate(au_numbers) if number in AUS}
    any_au = any(number is not None for number in au_numbers)
    if not any_au:
        raise format_error(path, line, f"expected AU columns like 'AU 1' in the header, found {header}")
    if not au_columns:
        raise format_error(path, line, f"expected at least one AU column among the project's AUs {AUS}, "
                                       f"found {header}")
    return names.index(URL_COLUMN), au_columns


def _au_value(path: Path, line: int, column: str, text: str) -> float:
    """1 or 0, NaN for 999 (not coded)."""
    value = parse_float(path, line, column, text)
    if value not in (0.0, 1.0, NOT_CODED):
        raise format_error(path, line, f"column {column}: expected 1, 0 or {NOT_CODED:g}, found {text!r}")
    return np.nan if value == NOT_CODED else value


def _unquote(text: str) -> str:
    """"'AU 1'" -> "AU 1" (surrounding single or double quotes and spaces removed)."""
    return text.strip().strip("'\"").strip()
