"""Bad data, case by case: every reader and the video decoder refuse a malformed or misleading
input with one line that names the culprit file (and line, where the file has lines), raised as
a ``UserError`` subclass so that the commands print it and exit 2.

Each case is a row of CASES: its name, a function that writes a small fixture into a fresh
directory and returns (the call that reads it, the culprit file, its line or None), the
exception type expected, and a phrase the message must hold. The fixtures hold no pixels where
the reader does not read them (it only lists the image and video names)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from mmarnn_min.affect import REACTIONS
from mmarnn_min.data.affectnet import read_affectnet
from mmarnn_min.data.affwild2 import read_affwild2
from mmarnn_min.data.emotionet import read_emotionet
from mmarnn_min.data.hume import read_hume
from mmarnn_min.data.real_images import (
    DataFormatError,
    MissingDataError,
    load_image_set,
    make_records,
)
from mmarnn_min.errors import UserError
from mmarnn_min.video import VideoError, VideoNotFoundError, read_video, write_video

Fixture = tuple[Callable[[], object], Path, "int | None"]  # (the call, the culprit file, its line)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Fixture]
    error: type[Exception]
    says: str  # a phrase the message holds


def write_csv(path: Path, rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(rows)
    return path


def touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


LABELS = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
BLANK = [""] * 7


# ------------------------------------------------------------------------------ Hume-Reaction

def muse(root: Path, labels: list[list], partition: list[list] | None = None,
         header: list[str] | None = None) -> tuple[Path, Path]:
    """A MuSe 2022 root: labels.csv (``labels``: [id, 7 cells] rows), partition.csv (default:
    00001 train, 00002 devel, 00003 test), and an (empty) video file per partition id."""
    partition = partition or [["00001", "train"], ["00002", "devel"], ["00003", "test"]]
    labels_path = write_csv(root / "labels.csv", [header or ["File_ID", *REACTIONS],
                                                  *[[f"[{row[0]}]", *row[1:]] for row in labels]])
    partition_path = write_csv(root / "partition.csv", [["Id", "Partition"], *partition])
    touch(*(root / f"{video_id}.mp4" for video_id, _ in partition))
    return labels_path, partition_path


GOOD_MUSE = [["00001", *LABELS], ["00002", *LABELS], ["00003", *BLANK]]


def muse_case(labels: list[list], culprit: str, line: int | None, partition: list[list] | None = None,
              header: list[str] | None = None, need: tuple[str, ...] = ()) -> Callable[[Path], Fixture]:
    def build(root: Path) -> Fixture:
        muse(root, labels, partition, header)
        return (lambda: read_hume(root, need=need)), root / culprit, line
    return build


def abaw5_case(rows: list[list], line: int | None, header: list[str] | None = None) -> Callable[[Path], Fixture]:
    """data_info.csv with ``rows`` ([id, split, 7 cells]) and their (empty) video files."""
    def build(root: Path) -> Fixture:
        path = write_csv(root / "data_info.csv", [header or ["File_ID", "Split", *REACTIONS],
                                                  *[[f"[{row[0]}]", *row[1:]] for row in rows]])
        touch(*(root / f"{row[0]}.mp4" for row in rows))
        return (lambda: read_hume(root)), path, line
    return build


def hume_without_labels(root: Path) -> Fixture:
    root.mkdir(exist_ok=True)
    return (lambda: read_hume(root)), root, None


def hume_video_missing(root: Path) -> Fixture:
    _, partition = muse(root, GOOD_MUSE)
    (root / "00002.mp4").unlink()
    return (lambda: read_hume(root)), partition, None


def hume_not_utf8(root: Path) -> Fixture:
    labels, _ = muse(root, GOOD_MUSE)
    labels.write_bytes(labels.read_bytes().replace(b"[00002]", b"[0000\xe9]"))
    return (lambda: read_hume(root)), labels, 3


def hume_open_quote(root: Path) -> Fixture:
    labels, _ = muse(root, GOOD_MUSE)
    labels.write_text(labels.read_text().replace("[00003]", '"[00003]'))
    return (lambda: read_hume(root)), labels, 4


HUME_CASES = [
    Case("hume: a reaction column twice", muse_case(
        [["00001", *LABELS, "0.9"]], "labels.csv", 1, header=["File_ID", *REACTIONS, "Empathic Pain"]),
        DataFormatError, "hold the same field"),
    Case("hume: an id twice", muse_case([*GOOD_MUSE, ["00001", *LABELS]], "labels.csv", 5),
         DataFormatError, "'00001' appears twice (first on line 2)"),
    Case("hume: an id in two splits", muse_case(
        GOOD_MUSE, "partition.csv", 5, partition=[["00001", "train"], ["00002", "devel"], ["00003", "test"],
                                                   ["00001", "devel"]]),
        DataFormatError, "in train and val, a leak between splits"),
    Case("hume: a blank label in train", muse_case(
        [["00001", *LABELS[:3], "", *LABELS[4:]], *GOOD_MUSE[1:]], "labels.csv", 2),
        DataFormatError, "column 'Disgust': empty label in a train video"),
    Case("hume: a NaN label", muse_case([["00001", *LABELS[:6], "nan"], *GOOD_MUSE[1:]], "labels.csv", 2),
         DataFormatError, "column 'Surprise': expected an intensity in [0, 1], found 'nan'"),
    Case("hume: a test video partly labelled", muse_case(
        [*GOOD_MUSE[:2], ["00003", "0.5", *BLANK[1:]]], "labels.csv", 4),
        DataFormatError, "give all 7, or leave all 7 empty"),
    Case("hume: test labels given for some videos only", muse_case(
        [*GOOD_MUSE[:2], ["00003", *LABELS], ["00004", *BLANK]], "labels.csv", 4,
        partition=[["00001", "train"], ["00002", "devel"], ["00003", "test"], ["00004", "test"]]),
        DataFormatError, "labelled but others are withheld (first: "),
    Case("hume: no validation videos", muse_case(
        [GOOD_MUSE[0], GOOD_MUSE[2]], "partition.csv", None, partition=[["00001", "train"], ["00003", "test"]],
        need=("train", "val")),
        DataFormatError, "it lists no val video"),
    Case("hume: an empty id", muse_case(GOOD_MUSE, "partition.csv", 5, partition=[
        ["00001", "train"], ["00002", "devel"], ["00003", "test"], ["[]", "test"]]),
        DataFormatError, "empty id"),
    Case("hume: a video missing", hume_video_missing, MissingDataError, "1 of 3 Hume-Reaction videos not found"),
    Case("hume: no label files", hume_without_labels, MissingDataError, "no Hume-Reaction labels under"),
    Case("hume: labels not UTF-8", hume_not_utf8, DataFormatError, "expected UTF-8 text"),
    Case("hume: a quote left open", hume_open_quote, DataFormatError, "malformed CSV"),
    Case("hume abaw5: an id in two splits", abaw5_case(
        [["00007", "Train", *LABELS], ["00008", "Val", *LABELS], ["00007", "Val", *LABELS]], 4),
        DataFormatError, "in train and val, a leak between splits"),
    Case("hume abaw5: a blank label in val", abaw5_case(
        [["00007", "Train", *LABELS], ["00008", "Val", "", *LABELS[1:]]], 3),
        DataFormatError, "column 'Adoration': empty label in a val video"),
    Case("hume abaw5: the split column twice", abaw5_case(
        [["00007", "Train", *LABELS, "Val"]], 1, header=["File_ID", "Split", *REACTIONS, "split"]),
        DataFormatError, "columns 2 and 10 ('Split' and 'split') hold the same field"),
    Case("hume abaw5: no rows", abaw5_case([], None), DataFormatError, "lists no video"),
]


# -------------------------------------------------------------------------------- Aff-Wild2

VA, EXPR, AU = "VA_Estimation_Challenge", "EXPR_Classification_Challenge", "AU_Detection_Challenge"


def affwild2_case(files: dict[str, str | bytes], culprit: str, line: int | None,
                  crops: bool = True) -> Callable[[Path], Fixture]:
    """Annotation files (path under root -> text) and, with ``crops``, crop 1 of each video."""
    def build(root: Path) -> Fixture:
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(text if isinstance(text, bytes) else text.encode())
            if crops:
                touch(root / "cropped_aligned" / Path(name).stem / "00001.jpg")
        return (lambda: read_affwild2(root, "train")), root / culprit, line
    return build


AFFWILD2_CASES = [
    Case("affwild2: an AU column twice", affwild2_case(
        {f"{AU}/Train_Set/v.txt": "AU1,AU2,AU01\n0,1,1\n"}, f"{AU}/Train_Set/v.txt", 1),
        DataFormatError, "columns 1 and 3 ('AU1' and 'AU01') hold the same field"),
    Case("affwild2: a video in both splits of a task", affwild2_case(
        {f"{VA}/Train_Set/v.txt": "valence,arousal\n0.1,0.2\n", f"{VA}/Validation_Set/v.txt": "valence,arousal\n0,0\n"},
        f"{VA}/Train_Set/v.txt", None),
        DataFormatError, "is annotated in Validation_Set too"),
    Case("affwild2: both EXPR directory names", affwild2_case(
        {f"{EXPR}/Train_Set/v.txt": "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n1\n",
         "EXPR_Recognition_Challenge/Train_Set/v.txt": "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n1\n"},
        "EXPR_Recognition_Challenge/Train_Set", None),
        DataFormatError, "annotations exist under two names"),
    Case("affwild2: a NaN valence", affwild2_case(
        {f"{VA}/Train_Set/v.txt": "valence,arousal\n0.1,0.2\nnan,0.2\n"}, f"{VA}/Train_Set/v.txt", 3),
        DataFormatError, "expected valence and arousal in [-1, 1], or -5, found nan,0.2"),
    Case("affwild2: a blank arousal", affwild2_case(
        {f"{VA}/Train_Set/v.txt": "valence,arousal\n0.1,\n"}, f"{VA}/Train_Set/v.txt", 2),
        DataFormatError, "column 'arousal': expected a number, found ''"),
    Case("affwild2: an AU neither 0, 1 nor -1", affwild2_case(
        {f"{AU}/Train_Set/v.txt": "AU1,AU2\n0,1\n0.5,1\n"}, f"{AU}/Train_Set/v.txt", 3),
        DataFormatError, "expected 0, 1 or -1 for every AU"),
    Case("affwild2: an annotation file not UTF-8", affwild2_case(
        {f"{VA}/Train_Set/v.txt": b"valence,arousal\n0.1,0.2\n0.1,\xff\n"}, f"{VA}/Train_Set/v.txt", 3),
        DataFormatError, "expected UTF-8 text"),
    Case("affwild2: no crops", affwild2_case(
        {f"{VA}/Train_Set/v.txt": "valence,arousal\n0.1,0.2\n"}, "cropped_aligned", None, crops=False),
        MissingDataError, "is not a directory"),
]


# -------------------------------------------------------------------------------- AffectNet

AFFECTNET_HEADER = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                    "facial_landmarks", "expression", "valence", "arousal"]
LANDMARKS = ";".join(f"{v:.1f}" for v in np.random.default_rng(0).uniform(10, 50, 136))


def affectnet_row(path: str = "1/a.jpg", landmarks: str = LANDMARKS, box=(5, 6, 50, 50), expression="1",
                  va=("0.5", "0.1")) -> list:
    return [path, *box, landmarks, expression, *va]


def affectnet_case(rows: list[list], line: int, header: list[str] = AFFECTNET_HEADER,
                   val_rows: list[list] | None = None) -> Callable[[Path], Fixture]:
    def build(root: Path) -> Fixture:
        lists = root / "Manually_Annotated_file_lists"
        train = write_csv(lists / "training.csv", [header, *rows])
        if val_rows is None:
            return (lambda: read_affectnet(root, "train")), train, line
        val = write_csv(lists / "validation.csv", [header, *val_rows])
        return (lambda: read_affectnet(root, "train")), val, line
    return build


def newer_affectnet(root: Path, landmarks: np.ndarray | None = None) -> Path:
    """train_set with one image 0.jpg and its four annotations; returns the annotation folder."""
    annotations = root / "train_set" / "annotations"
    annotations.mkdir(parents=True)
    touch(root / "train_set" / "images" / "0.jpg")
    points = np.random.default_rng(0).uniform(10, 50, (68, 2)) if landmarks is None else landmarks
    for kind, value in (("exp", np.array(1)), ("val", np.array(0.5)), ("aro", np.array(0.1)), ("lnd", points)):
        np.save(annotations / f"0_{kind}.npy", value)
    return annotations


def newer_nan_landmarks(root: Path) -> Fixture:
    points = np.random.default_rng(0).uniform(10, 50, (68, 2))
    points[30] = np.nan
    annotations = newer_affectnet(root, points)
    return (lambda: read_affectnet(root, "train")), annotations / "0_lnd.npy", None


def newer_truncated_npy(root: Path) -> Fixture:
    annotations = newer_affectnet(root)
    path = annotations / "0_val.npy"
    path.write_bytes(path.read_bytes()[:-4])
    return (lambda: read_affectnet(root, "train")), path, None


def newer_in_both_splits(root: Path) -> Fixture:
    """val_set/images/0.jpg is a copy of train_set's."""
    newer_affectnet(root)
    (root / "val_set" / "images").mkdir(parents=True)
    for split in ("train_set", "val_set"):
        (root / split / "images" / "0.jpg").write_bytes(b"a photo")
    return (lambda: read_affectnet(root, "train")), root / "val_set" / "images" / "0.jpg", None


def newer_annotation_missing(root: Path) -> Fixture:
    annotations = newer_affectnet(root)
    (annotations / "0_aro.npy").unlink()
    return (lambda: read_affectnet(root, "train")), annotations / "0_aro.npy", None


AFFECTNET_CASES = [
    Case("affectnet: NaN landmarks", affectnet_case(
        [affectnet_row(landmarks=LANDMARKS.replace(LANDMARKS.split(";")[61], "nan", 1))], 2),
        DataFormatError, "column 'facial_landmarks': expected 68 finite points, point 31 is"),
    Case("affectnet: landmarks all on one point", affectnet_case([affectnet_row(landmarks=";".join(["0"] * 136))], 2),
         DataFormatError, "all 68 points are (0, 0): no face to align on"),
    Case("affectnet: a NaN face box", affectnet_case([affectnet_row(landmarks="", box=("nan", 6, 50, 50))], 2),
         DataFormatError, "column 'face_x': expected a finite number, found 'nan'"),
    Case("affectnet: a column twice", affectnet_case(
        [[*affectnet_row(), "3"]], 1, header=[*AFFECTNET_HEADER, "Expression"]),
        DataFormatError, "columns 7 and 10 ('expression' and 'Expression') hold the same field"),
    Case("affectnet: an image twice", affectnet_case([affectnet_row(), affectnet_row(expression="2")], 3),
         DataFormatError, "image '1/a.jpg' appears twice (first on line 2)"),
    Case("affectnet: an image in both splits", affectnet_case(
        [affectnet_row(), affectnet_row("2/b.jpg")], 3, val_rows=[affectnet_row("3/c.jpg"), affectnet_row("2/b.jpg")]),
        DataFormatError, "image '2/b.jpg' is also in"),
    Case("affectnet: a blank valence", affectnet_case([affectnet_row(va=("", "0.1"))], 2),
         DataFormatError, "column 'valence': expected a number, found ''"),
    Case("affectnet: a NaN arousal", affectnet_case([affectnet_row(va=("0.5", "NaN"))], 2),
         DataFormatError, "expected valence and arousal in [-1, 1] or -2"),
    Case("affectnet newer: NaN landmarks", newer_nan_landmarks, DataFormatError, "expected 68 finite points, point 31"),
    Case("affectnet newer: a truncated .npy", newer_truncated_npy, DataFormatError, "cannot be read as a .npy array"),
    Case("affectnet newer: an image in both splits", newer_in_both_splits, DataFormatError,
         "the same image as"),
    Case("affectnet newer: an annotation missing", newer_annotation_missing, MissingDataError,
         "AffectNet annotation missing"),
]


# -------------------------------------------------------------------------------- EmotioNet

def emotionet_case(rows: list[list], line: int | None, images: tuple[str, ...] = ("x.jpg", "y.jpg"),
                   folder: bool = True) -> Callable[[Path], Fixture]:
    def build(root: Path) -> Fixture:
        path = write_csv(root / "emotionet.csv", rows)
        if folder:
            touch(*(root / "images" / name for name in images))
        return (lambda: read_emotionet(path, root / "images")), (path if folder else root / "images"), line
    return build


EMOTIONET_CASES = [
    Case("emotionet: an AU column twice", emotionet_case(
        [["URL", "'AU 1'", "'AU 2'", "AU1"], ["'http://a/x.jpg'", 1, 0, 0]], 1),
        DataFormatError, "columns 2 and 4 (\"'AU 1'\" and 'AU1') hold the same field"),
    Case("emotionet: the URL column twice", emotionet_case(
        [["URL", "'AU 1'", "'URL'"], ["'http://a/x.jpg'", 1, "'http://a/y.jpg'"]], 1),
        DataFormatError, "hold the same field"),
    Case("emotionet: two rows, one image file", emotionet_case(
        [["URL", "'AU 1'"], ["'http://a/x.jpg'", 1], ["'http://b/y.jpg'", 0], ["'http://c/x.jpg'", 0]], 4),
        DataFormatError, "image file 'x.jpg' appears twice (first on line 2)"),
    Case("emotionet: a NaN AU", emotionet_case([["URL", "'AU 1'"], ["'http://a/x.jpg'", "nan"]], 2),
         DataFormatError, "column 'AU 1': expected 1, 0 or 999, found 'nan'"),
    Case("emotionet: a blank AU", emotionet_case([["URL", "'AU 1'"], ["'http://a/x.jpg'", ""]], 2),
         DataFormatError, "column \"'AU 1'\": expected a number, found ''"),
    Case("emotionet: no image folder", emotionet_case([["URL", "'AU 1'"], ["'http://a/x.jpg'", 1]], None, folder=False),
         MissingDataError, "EmotioNet image directory not found"),
]


# ---------------------------------------------------------------------- images and videos

def undecodable_image(root: Path) -> Fixture:
    path = root / "broken.jpg"
    path.write_bytes(b"not an image")
    records = make_records("Test", [path], [[0.1, 0.2]], [1], [[np.nan] * 17], [np.full((5, 2), np.nan)])
    return (lambda: load_image_set(records, size=16, source=0, cache=False)), path, None


def video_case(make: Callable[[Path], Path]) -> Callable[[Path], Fixture]:
    def build(root: Path) -> Fixture:
        path = make(root)
        return (lambda: read_video(path)), path, None
    return build


def small_frames(count: int = 12) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, 32, 48, 3), dtype=np.uint8)


def cut_in_half(path: Path) -> Path:
    cut = path.with_name(f"cut{path.suffix}")
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return cut


def riff_garbage(root: Path) -> Path:
    """An AVI header followed by noise: the header check reads it, the decoder refuses it."""
    path = root / "noise.avi"
    path.write_bytes(b"RIFF\xff\xff\x00\x00AVI LIST\x10\x00\x00\x00hdrl" + bytes(range(256)) * 8)
    return path


def a_directory(root: Path) -> Path:
    (root / "folder.mp4").mkdir()
    return root / "folder.mp4"


IMAGE_AND_VIDEO_CASES = [
    Case("image: undecodable", undecodable_image, DataFormatError, "cannot be decoded as an image"),
    Case("video: missing", video_case(lambda root: root / "nothing.mp4"), VideoNotFoundError, "video file not found"),
    Case("video: a directory", video_case(a_directory), VideoNotFoundError, "folder.mp4 is a directory"),
    Case("video: empty", video_case(lambda root: (root / "empty.mp4").write_bytes(b"") or root / "empty.mp4"),
         VideoError, "video file is empty"),
    Case("video: noise after an AVI header", video_case(riff_garbage), VideoError, "cannot open video"),
    Case("video: a truncated mp4", video_case(
        lambda root: cut_in_half(write_video(root / "clip.mp4", small_frames(), 25.0))), VideoError, "cannot open video"),
    Case("video: a truncated MJPEG avi", video_case(
        lambda root: cut_in_half(write_video(root / "clip.avi", small_frames(), 25.0))), VideoError,
        "video is truncated or corrupt: decoded"),
]

CASES = HUME_CASES + AFFWILD2_CASES + AFFECTNET_CASES + EMOTIONET_CASES + IMAGE_AND_VIDEO_CASES


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gives_one_line_naming_the_culprit(tmp_path, case):
    call, culprit, line = case.build(tmp_path)
    with pytest.raises(case.error) as raised:
        call()
    error, message = raised.value, str(raised.value)
    assert isinstance(error, UserError), f"{type(error).__name__} is not a UserError"
    assert "\n" not in message, message
    where = f"{culprit}:{line}: " if line is not None else str(culprit)
    assert where in message, f"{where!r} not in {message!r}"
    assert case.says in message, f"{case.says!r} not in {message!r}"


def test_the_table_covers_every_reader_and_the_decoder():
    covered = {case.name.split(":")[0].split()[0] for case in CASES}
    assert covered == {"hume", "affwild2", "affectnet", "emotionet", "image", "video"}
    assert len({case.name for case in CASES}) == len(CASES)


def test_missing_and_video_errors_keep_their_builtin_types():
    """Callers that catch FileNotFoundError or ValueError (and older tests) still work."""
    assert issubclass(MissingDataError, FileNotFoundError) and issubclass(MissingDataError, DataFormatError)
    assert issubclass(DataFormatError, ValueError)
    assert issubclass(VideoNotFoundError, FileNotFoundError) and issubclass(VideoError, ValueError)
