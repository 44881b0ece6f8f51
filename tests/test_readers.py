"""The real-data readers (Hume-Reaction, Aff-Wild2, AffectNet, EmotioNet) and load_image_set,
each on a small fixture written in the data set's own format (docs/data_formats.md): the parsed
values exactly, the invalid markers, and a clear error naming the file and line on a
malformed file."""

from __future__ import annotations

import csv
import os
import re
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmarnn_min.affect import AUS, EXPRESSIONS, REACTIONS
from mmarnn_min.data import real_images
from mmarnn_min.data.affectnet import (
    expression_index,
    five_points_from_68,
    five_points_from_box,
    read_affectnet,
)
from mmarnn_min.data.affwild2 import read_affwild2
from mmarnn_min.data.emotionet import read_emotionet
from mmarnn_min.data.hume import hume_split, hume_splits, read_hume
from mmarnn_min.data.real_images import (
    DataFormatError,
    ImageRecords,
    concat_records,
    load_image_set,
    make_records,
)
from mmarnn_min.data.synth import SynthConfig, export_videos, video_id
from mmarnn_min.faces import align_face, align_template
from mmarnn_min.video import write_video

NAN = np.nan
TINY = SynthConfig(image_size=32, canvas_size=96, train_images_per_source=6, eval_images_per_source=3,
                   train_videos=3, eval_videos=2, min_frames=8, max_frames=16)


def write_image(path: Path, height: int = 24, width: int = 20, seed: int = 0) -> np.ndarray:
    """A random image written with cv2.imwrite; returns it as RGB as read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_csv(path: Path, rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(rows)
    return path


def names_file_and_line(error: pytest.ExceptionInfo, path: Path, line: int) -> bool:
    return f"{path}:{line}:" in str(error.value)


def au_row(values: dict[int, float]) -> list[float]:
    """A (17,) row in AUS order: the given AUs, NaN for the others."""
    return [values.get(au, NAN) for au in AUS]


# ------------------------------------------------------------------------- load_image_set

def _two_records(tmp_path: Path) -> tuple[ImageRecords, list[np.ndarray]]:
    """One photo with 5 landmarks, one aligned crop (NaN landmarks)."""
    photo = write_image(tmp_path / "img" / "photo.png", 60, 50, seed=1)
    crop = write_image(tmp_path / "img" / "crop.png", 40, 40, seed=2)
    points = np.array([[18, 24], [32, 23], [25, 32], [19, 41], [31, 40]], np.float32)
    records = make_records(
        "Test", [tmp_path / "img" / "photo.png", tmp_path / "img" / "crop.png"],
        va=[[0.5, -0.5], [NAN, NAN]], expression=[3, -1], aus=[au_row({}), au_row({1: 1.0, 2: 0.0})],
        landmarks=[points, np.full((5, 2), NAN)],
    )
    return records, [photo, crop]


def test_load_image_set_aligns_with_landmarks_and_resizes_without(tmp_path):
    records, (photo, crop) = _two_records(tmp_path)
    images = load_image_set(records, size=32, source=1, cache=False)
    assert images.images.shape == (2, 32, 32, 3) and images.images.dtype == np.uint8
    np.testing.assert_array_equal(images.images[0], align_face(photo, records.landmarks[0], 32))
    np.testing.assert_array_equal(images.images[1], cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(images.va, records.va)
    np.testing.assert_array_equal(images.true_va, records.va)
    np.testing.assert_array_equal(images.expression, [3, -1])
    np.testing.assert_array_equal(images.true_aus, records.aus)
    np.testing.assert_array_equal(images.source, [1, 1])
    np.testing.assert_allclose(images.landmarks, np.stack([align_template(32)] * 2), rtol=1e-6)
    assert len(images) == 2


def test_load_image_set_caches_the_crops_and_reuses_them(tmp_path, cache_dir, monkeypatch):
    records, _ = _two_records(tmp_path)
    first = load_image_set(records, size=32, source=0)
    assert isinstance(first.images, np.memmap)
    cached = list((cache_dir / "real").glob("*.npy"))
    assert len(cached) == 1 and not list((cache_dir / "real").glob("*.tmp"))

    def no_reading(path):
        raise AssertionError(f"read {path} again")

    with monkeypatch.context() as patch:
        patch.setattr(real_images, "read_rgb", no_reading)
        second = load_image_set(records, size=32, source=0)
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    np.testing.assert_array_equal(second.images, first.images)
    stat = os.stat(records.paths[1])  # an edited image (new mtime) is cropped again
    os.utime(records.paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    load_image_set(records, size=32, source=0)
    assert len(list((cache_dir / "real").glob("*.npy"))) == 2


def test_load_image_set_names_a_missing_or_broken_image(tmp_path, cache_dir):
    records, _ = _two_records(tmp_path)
    write_text(records.paths[1], "not an image")
    with pytest.raises(DataFormatError, match=re.escape(f"{records.paths[1]}: cannot be decoded")):
        load_image_set(records, size=32, source=0)
    assert not list((cache_dir / "real").iterdir())  # no partial cache file left behind
    records.paths[1].unlink()
    with pytest.raises(DataFormatError, match=re.escape(f"{records.paths[1]}: image file missing")):
        load_image_set(records, size=32, source=0)
    with pytest.raises(DataFormatError, match="image file missing"):
        load_image_set(records, size=32, source=0, cache=False)


def test_load_image_set_reports_progress(tmp_path, monkeypatch, capsys):
    records, _ = _two_records(tmp_path)
    monkeypatch.setattr(real_images, "PROGRESS_EVERY", 1)
    load_image_set(records, size=16, source=0, cache=False)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[1].startswith("Test: cropped 2/2 images") and "s left" in lines[1]


def test_concat_records_and_their_checks(tmp_path):
    records, _ = _two_records(tmp_path)
    other = make_records("Other", [tmp_path / "x.png"], [[0.1, 0.2]], [0], [au_row({})], [np.full((5, 2), NAN)])
    joined = concat_records([records, other, records])
    assert joined.dataset == "Test+Other" and len(joined) == 5
    assert joined.paths[2] == tmp_path / "x.png"
    np.testing.assert_array_equal(joined.expression, [3, -1, 0, 3, -1])
    assert joined.landmarks.shape == (5, 5, 2) and joined.aus.shape == (5, 17)
    half_nan = records.landmarks.copy()
    half_nan[0, 0, 0] = NAN
    with pytest.raises(ValueError, match="partly NaN"):
        ImageRecords("Test", records.paths, records.va, records.expression, records.aus, half_nan)
    with pytest.raises(ValueError, match="va must be float32"):
        ImageRecords("Test", records.paths, records.va[:1], records.expression, records.aus, records.landmarks)


# ------------------------------------------------------------------------------- Hume

@pytest.fixture
def muse_root(tmp_path, cache_dir) -> Path:
    """SynthAffect's MuSe-layout export (one video per split), with labels.csv rewritten the
    way the real file looks: "Empathic Pain" spelled with a space, test labels withheld, and
    the devel video moved into raw/."""
    root = tmp_path / "muse"
    export_videos(TINY, root, count=1)
    with open(root / "labels.csv") as file:
        rows = list(csv.reader(file))
    rows[0] = [name.replace("Empathic-Pain", "Empathic Pain") for name in rows[0]]
    rows[3][1:] = [""] * 7  # the test video
    write_csv(root / "labels.csv", rows)
    (root / "raw").mkdir()
    val = video_id("val", 0)
    for name in (f"{val}.mp4", f"{val}.landmarks.npy"):
        shutil.move(root / name, root / "raw" / name)
    return root


def test_read_hume_muse(muse_root):
    with open(muse_root / "labels.csv") as file:
        labels = list(csv.reader(file))
    videos = read_hume(muse_root)
    assert [v.id for v in videos] == [video_id(s, 0) for s in ("train", "val", "test")]
    assert [v.split for v in videos] == ["train", "val", "test"]
    assert videos[0].path == muse_root / f"{video_id('train', 0)}.mp4"
    assert videos[1].path == muse_root / "raw" / f"{video_id('val', 0)}.mp4"
    assert videos[1].landmarks == muse_root / "raw" / f"{video_id('val', 0)}.landmarks.npy"
    np.testing.assert_array_equal(videos[0].reactions, np.array(labels[1][1:], np.float32))
    assert videos[0].reactions.dtype == np.float32 and videos[0].reactions.shape == (7,)
    assert np.isnan(videos[2].reactions).all()
    assert [v.id for v in hume_split(videos, "val")] == [video_id("val", 0)]
    with pytest.raises(ValueError, match="split must be one of"):
        hume_split(videos, "devel")
    assert [v.labelled for v in videos] == [True, True, False]  # the test labels are withheld


def test_hume_splits_and_the_splits_a_caller_needs(muse_root):
    videos = read_hume(muse_root, need=("train", "val", "test"))
    assert {split: [v.id for v in chosen] for split, chosen in hume_splits(videos).items()} == {
        split: [video_id(split, 0)] for split in ("train", "val", "test")}
    partition = muse_root / "partition.csv"
    partition.write_text(partition.read_text().replace("devel", "train"))
    videos = read_hume(muse_root)  # the devel video is now a train one, found where it lies
    assert {split: len(chosen) for split, chosen in hume_splits(videos).items()} == {"train": 2, "test": 1}
    with pytest.raises(DataFormatError, match=re.escape(f"{partition}: it lists no val video")):
        read_hume(muse_root, need=("train", "val"))
    with pytest.raises(ValueError, match="need must name splits"):
        read_hume(muse_root, need=("devel",))


def test_read_hume_need_counts_the_videos_found(muse_root):
    (muse_root / "raw" / f"{video_id('val', 0)}.mp4").unlink()
    with pytest.warns(UserWarning, match="1 of 3"), pytest.raises(
            DataFormatError, match="none of its val videos was found on disk, and train and val videos are needed"):
        read_hume(muse_root, require_videos=False, need=("train", "val"))


def test_read_hume_muse_missing_videos(muse_root):
    (muse_root / "raw" / f"{video_id('val', 0)}.mp4").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 Hume-Reaction videos not found.*'100000'.*raw"):
        read_hume(muse_root)
    with pytest.warns(UserWarning, match="1 of 3 .*skipping them"):
        videos = read_hume(muse_root, require_videos=False)
    assert [v.split for v in videos] == ["train", "test"]


@pytest.mark.parametrize("edit, line, message", [
    (lambda rows: rows[1].__setitem__(3, "1.5"), 2, "column 'Anxiety': expected an intensity in [0, 1]"),
    (lambda rows: rows[2].__setitem__(1, "high"), 3, "column 'Adoration': expected a number, found 'high'"),
    (lambda rows: rows[3].__setitem__(0, "[999999]"), 4, "id '999999' is not in"),
    (lambda rows: rows[1].pop(), 2, "expected 8 comma-separated values"),
])
def test_read_hume_muse_malformed_labels(muse_root, edit, line, message):
    with open(muse_root / "labels.csv") as file:
        rows = list(csv.reader(file))
    edit(rows)
    labels = write_csv(muse_root / "labels.csv", rows)
    with pytest.raises(DataFormatError) as error:
        read_hume(muse_root)
    assert names_file_and_line(error, labels, line) and message in str(error.value)


def test_read_hume_muse_malformed_partition(muse_root):
    partition = muse_root / "partition.csv"
    rows = [["Id", "Partition"], ["000000", "train"], ["100000", "holdout"], ["200000", "test"]]
    write_csv(partition, rows)
    with pytest.raises(DataFormatError, match=re.escape(f"{partition}:3: expected a split")):
        read_hume(muse_root)
    write_csv(partition, [*rows[:2], ["100000", "devel"], rows[3], ["300000", "train"]])
    with pytest.raises(DataFormatError, match=r"1 train/devel ids have no row in .*labels.csv.*'300000'"):
        read_hume(muse_root)


def test_read_hume_muse_test_ids_left_out_of_the_labels_are_withheld(muse_root):
    with open(muse_root / "partition.csv", "a") as file:
        file.write("300000,test\n")
    with pytest.warns(UserWarning, match="1"):
        videos = read_hume(muse_root, require_videos=False)   # 300000 has no video either
    assert "300000" not in {video.id for video in videos}
    shutil.copy(muse_root / "200000.mp4", muse_root / "300000.mp4")
    withheld = {video.id: video for video in read_hume(muse_root)}["300000"]
    assert withheld.split == "test" and np.isnan(withheld.reactions).all()


def test_read_hume_abaw5(tmp_path):
    root = tmp_path / "abaw5"
    header = ["Split", "File_ID", "Country", *REACTIONS]  # column order differs from the docs on purpose
    values = [0.33, 0.70, 0.0, 0.05, 0.12, 0.01, 0.52]
    write_csv(root / "data_info.csv", [
        header,
        ["Train", "[00007]", "United States", *values],
        ["Test", "[00913]", "South Africa", *[""] * 7],
        ["Val", "[00010]", "Venezuela", *values[::-1]],
    ])
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    for split_dir, name in (("Train", "00007"), ("test", "00913"), ("val", "00010")):
        write_video(root / split_dir / "mp4" / f"{name}.mp4", frames, fps=10.0)
    videos = read_hume(root)
    assert [(v.id, v.split) for v in videos] == [("00007", "train"), ("00913", "test"), ("00010", "val")]
    assert videos[0].path == root / "Train" / "mp4" / "00007.mp4" and videos[0].landmarks is None
    np.testing.assert_array_equal(videos[0].reactions, np.array(values, np.float32))
    np.testing.assert_array_equal(videos[2].reactions, np.array(values[::-1], np.float32))
    assert np.isnan(videos[1].reactions).all()
    assert [v.id for v in hume_split(videos, "test")] == ["00913"]

    write_csv(root / "data_info.csv", [header, ["Dev", "[00007]", "X", *values]])
    with pytest.raises(DataFormatError, match=re.escape(f"{root / 'data_info.csv'}:2: expected a split")):
        read_hume(root)
    write_csv(root / "data_info.csv", [["File_ID", "Split", *REACTIONS[:-1]], ["[00007]", "Train", *values[:-1]]])
    with pytest.raises(DataFormatError, match=r"data_info.csv:1: expected a column 'Surprise'"):
        read_hume(root)


def test_read_hume_without_labels(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.csv \\+ partition.csv .*data_info.csv"):
        read_hume(tmp_path)


# --------------------------------------------------------------------------- Aff-Wild2

AFFWILD2_AUS = (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26)
EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n"


def write_affwild2(root: Path, expr_dir: str) -> None:
    """vidA: all three tasks, crops 1, 2, 4 (no face in frame 3); vidB_left: EXPR and an AU file
    naming AUs in another order (and AU 27, outside the 17), .png crops; vidC: validation VA."""
    au_header = ",".join(f"AU{au}" for au in AFFWILD2_AUS) + "\n"
    write_text(root / "VA_Estimation_Challenge" / "Train_Set" / "vidA.txt",
               "valence,arousal\n0.5,-0.25\n-5,-5\n0.1,0.2\n-5,0.3\n")
    write_text(root / expr_dir / "Train_Set" / "vidA.txt", EXPR_HEADER + "4\n7\n1\n-1\n")
    write_text(root / "AU_Detection_Challenge" / "Train_Set" / "vidA.txt", au_header
               + "0,0,1,0,0,0,0,0,0,0,1,0\n" + ",".join(["-1"] * 12) + "\n"
               + "1,1,1,1,1,1,1,1,1,1,1,1\n" + "1,0,0,0,0,0,1,0,0,0,0,1\n\n")
    write_text(root / expr_dir / "Train_Set" / "vidB_left.txt", EXPR_HEADER + "0\n6\n")
    write_text(root / "AU_Detection_Challenge" / "Train_Set" / "vidB_left.txt", "AU12,AU1,AU27\n1,0,1\n0,1,0\n")
    write_text(root / "VA_Estimation_Challenge" / "Validation_Set" / "vidC.txt", "Valence,Arousal\n0.3,0.4\n")
    for video, frames, extension in (("vidA", (1, 2, 4), "jpg"), ("vidB_left", (1, 2), "png"), ("vidC", (1,), "jpg")):
        for frame in frames:
            write_image(root / "cropped_aligned" / video / f"{frame:05d}.{extension}", 8, 8, seed=frame)


@pytest.mark.parametrize("expr_dir", ["EXPR_Classification_Challenge", "EXPR_Recognition_Challenge"])
def test_read_affwild2(tmp_path, expr_dir):
    write_affwild2(tmp_path, expr_dir)
    records = read_affwild2(tmp_path, "train")
    crops = tmp_path / "cropped_aligned"
    assert records.dataset == "Aff-Wild2"
    assert records.paths == [crops / "vidA" / "00001.jpg", crops / "vidA" / "00004.jpg",
                             crops / "vidB_left" / "00001.png", crops / "vidB_left" / "00002.png"]
    np.testing.assert_array_equal(records.va, np.array([[0.5, -0.25], [NAN, NAN], [NAN, NAN], [NAN, NAN]], np.float32))
    happiness, neutral, surprise = (EXPRESSIONS.index(e) for e in ("happiness", "neutral", "surprise"))
    np.testing.assert_array_equal(records.expression, [happiness, -1, neutral, surprise])
    first = dict(zip(AFFWILD2_AUS, [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]))
    fourth = dict(zip(AFFWILD2_AUS, [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]))
    np.testing.assert_array_equal(records.aus, np.array(
        [au_row(first), au_row(fourth), au_row({12: 1, 1: 0}), au_row({12: 0, 1: 1})], np.float32))
    assert np.isnan(records.landmarks).all()

    every_other = read_affwild2(tmp_path, "train", every=2)  # frames 1 and 3 (no crop) of vidA, 1 of vidB
    assert every_other.paths == [crops / "vidA" / "00001.jpg", crops / "vidB_left" / "00001.png"]
    val = read_affwild2(tmp_path, "val")
    assert val.paths == [crops / "vidC" / "00001.jpg"] and np.isnan(val.aus).all()
    np.testing.assert_array_equal(val.va, np.array([[0.3, 0.4]], np.float32))
    assert load_image_set(val, size=16, source=2, cache=False).images.shape == (1, 16, 16, 3)


@pytest.mark.parametrize("task, text, line, message", [
    ("VA_Estimation_Challenge", "val,aro\n0.1,0.2\n", 1, "expected the header 'valence,arousal'"),
    ("VA_Estimation_Challenge", "valence,arousal\n0.1,0.2\n0.1,0.2,0.3\n", 3, "expected 2 comma-separated values, found 3"),
    ("VA_Estimation_Challenge", "valence,arousal\n0.1,abc\n", 2, "column 'arousal': expected a number, found 'abc'"),
    ("VA_Estimation_Challenge", "valence,arousal\n0.1,0.2\n1.5,0\n", 3, "expected valence and arousal in [-1, 1], or -5"),
    ("VA_Estimation_Challenge", "valence,arousal\n0.1,0.2\n\n0.1,0.2\n", 3, "found a blank line"),
    ("EXPR_Classification_Challenge", EXPR_HEADER + "3\n8\n", 3, "expected a class index 0..7 or -1, found 8"),
    ("EXPR_Classification_Challenge", "Anger,Neutral\n1\n", 1, "expected the header 'Neutral,Anger"),
    ("AU_Detection_Challenge", "AU1,AU2\n0,1\n1,2\n", 3, "expected 0, 1 or -1 for every AU, found 1,2"),
    ("AU_Detection_Challenge", "AU1,Smile\n0,1\n", 1, "expected AU names like 'AU1,AU2,...' in the header, found 'Smile'"),
])
def test_read_affwild2_malformed(tmp_path, task, text, line, message):
    path = write_text(tmp_path / task / "Train_Set" / "vid.txt", text)
    write_image(tmp_path / "cropped_aligned" / "vid" / "00001.jpg", 8, 8)
    with pytest.raises(DataFormatError) as error:
        read_affwild2(tmp_path, "train")
    assert names_file_and_line(error, path, line) and message in str(error.value)


def test_read_affwild2_warns_of_a_video_in_both_splits_for_different_tasks(tmp_path):
    write_affwild2(tmp_path, "EXPR_Classification_Challenge")
    # vidB_left: EXPR and AU in Train_Set, and now VA in Validation_Set
    write_text(tmp_path / "VA_Estimation_Challenge" / "Validation_Set" / "vidB_left.txt", "valence,arousal\n0,0\n")
    with pytest.warns(UserWarning, match=r"1 videos are annotated for one task in Train_Set .* \['vidB_left'\]"):
        records = read_affwild2(tmp_path, "train")
    assert len(records) == 4  # read all the same


def test_read_affwild2_without_annotations_or_crops(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Aff-Wild2 annotations: none of .*VA_Estimation_Challenge"):
        read_affwild2(tmp_path, "train")
    write_text(tmp_path / "VA_Estimation_Challenge" / "Train_Set" / "vid.txt", "valence,arousal\n0.1,0.2\n")
    with pytest.raises(FileNotFoundError, match="cropped_aligned is not a directory"):
        read_affwild2(tmp_path, "train")
    write_image(tmp_path / "cropped_aligned" / "other" / "00001.jpg", 8, 8)
    with pytest.warns(UserWarning, match="1 annotated videos have no crops"), \
            pytest.raises(FileNotFoundError, match="no labelled frame has a crop"):
        read_affwild2(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        read_affwild2(tmp_path, "test")


# --------------------------------------------------------------------------- AffectNet

def ibug68(left_eye: tuple, right_eye: tuple, nose: tuple, mouth_left: tuple, mouth_right: tuple) -> np.ndarray:
    """68 points: random, except that the eyes (36..41, 42..47) scatter around the given
    centres symmetrically and points 30, 48, 54 sit where given."""
    points = np.random.default_rng(0).uniform(0, 60, (68, 2))
    ring = np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]], float)
    points[36:42], points[42:48] = ring + left_eye, ring + right_eye
    points[30], points[48], points[54] = nose, mouth_left, mouth_right
    return points


FIVE = ((20.0, 25.0), (40.0, 24.0), (30.0, 35.0), (22.0, 45.0), (38.0, 46.0))
ORIGINAL_HEADER = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                   "facial_landmarks", "expression", "valence", "arousal"]


def original_rows() -> list[list]:
    landmarks = ";".join(f"{v:.3f}" for v in ibug68(*FIVE).ravel())
    return [
        ["12/a1b2c3.jpg", 5, 6, 50, 50, landmarks, 1, 0.684, 0.127],
        ["77/ffee01.png", 0, 0, 0, 0, "", 10, -2, -2],        # no face, no label: left out
        ["77/abc.jpg", 10, 20, 40, 30, "", 6, -2, -2],        # anger, no VA, box only
        ["3/d.jpg", 0, 0, 0, 0, "", 7, -0.5, 0.25],           # contempt: VA only, whole image
    ]


def test_affectnet_expression_codes():
    assert [EXPRESSIONS[expression_index(code)] for code in range(7)] == [
        "neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]
    assert [expression_index(code) for code in range(7, 11)] == [-1, -1, -1, -1]


def test_five_points_from_68_keep_image_left_first():
    points = five_points_from_68(ibug68(*FIVE))
    np.testing.assert_allclose(points, FIVE, atol=1e-12)
    assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]


def test_read_affectnet_original(tmp_path):
    lists = tmp_path / "Manually_Annotated_file_lists"
    write_csv(lists / "training.csv", [ORIGINAL_HEADER, *original_rows()])
    val_rows = [[f"val/{row[0]}", *row[1:]] for row in original_rows()[2:]]  # other images, no header row
    write_csv(lists / "validation.csv", val_rows)
    records = read_affectnet(tmp_path, "train")
    images = tmp_path / "Manually_Annotated_Images"
    assert records.dataset == "AffectNet"
    assert records.paths == [images / "12/a1b2c3.jpg", images / "77/abc.jpg", images / "3/d.jpg"]
    np.testing.assert_array_equal(records.expression,
                                  [EXPRESSIONS.index("happiness"), EXPRESSIONS.index("anger"), -1])
    np.testing.assert_array_equal(records.va, np.array([[0.684, 0.127], [NAN, NAN], [-0.5, 0.25]], np.float32))
    assert np.isnan(records.aus).all()
    np.testing.assert_allclose(records.landmarks[0], FIVE, atol=1e-3)
    np.testing.assert_allclose(records.landmarks[1], five_points_from_box(10, 20, 40, 30), rtol=1e-6)
    assert np.isnan(records.landmarks[2]).all()
    val = read_affectnet(tmp_path, "val")
    assert val.paths == [images / "val" / path.relative_to(images) for path in records.paths[1:]]
    np.testing.assert_array_equal(val.va, records.va[1:])
    for path, seed in zip(records.paths, range(3)):
        write_image(path, 64, 64, seed)
    assert load_image_set(records, size=24, source=0, cache=False).images.shape == (3, 24, 24, 3)


@pytest.mark.parametrize("column, value, message", [
    ("facial_landmarks", "1;2;3", "column 'facial_landmarks': expected 136 numbers (68 points) separated by ';', found 3"),
    ("valence", 1.5, "expected valence and arousal in [-1, 1] or -2, found 1.5, 0.127"),
    ("expression", 11, "column 'expression': expected a code 0..10, found '11'"),
    ("face_width", -4, "expected a face box with positive width and height"),
])
def test_read_affectnet_original_malformed(tmp_path, column, value, message):
    rows = original_rows()
    rows[0][ORIGINAL_HEADER.index(column)] = value
    rows[0][ORIGINAL_HEADER.index("facial_landmarks")] = value if column == "facial_landmarks" else ""
    path = write_csv(tmp_path / "Manually_Annotated_file_lists" / "training.csv", [ORIGINAL_HEADER, *rows])
    with pytest.raises(DataFormatError) as error:
        read_affectnet(tmp_path, "train")
    assert names_file_and_line(error, path, 2) and message in str(error.value)


def test_read_affectnet_newer(tmp_path):
    annotations = tmp_path / "train_set" / "annotations"
    annotations.mkdir(parents=True)
    landmarks = ibug68(*FIVE)
    samples = {  # id: (exp, val, aro, lnd), as strings and as numbers
        "0": (np.array("3"), np.array("0.5"), np.array(-0.1), landmarks.ravel().astype(str)),
        "1": (np.array("8"), np.array("-2"), np.array("-2"), landmarks),  # no label: left out
        "2": (np.array(0.0), np.array(0.2), np.array("0.3"), landmarks + 1),
    }
    for name, arrays in samples.items():
        write_image(tmp_path / "train_set" / "images" / f"{name}.jpg", 8, 8)
        for kind, array in zip(("exp", "val", "aro", "lnd"), arrays):
            np.save(annotations / f"{name}_{kind}.npy", array)
    records = read_affectnet(tmp_path, "train")
    assert records.paths == [tmp_path / "train_set" / "images" / f"{i}.jpg" for i in ("0", "2")]
    np.testing.assert_array_equal(records.expression, [EXPRESSIONS.index("surprise"), EXPRESSIONS.index("neutral")])
    np.testing.assert_array_equal(records.va, np.array([[0.5, -0.1], [0.2, 0.3]], np.float32))
    np.testing.assert_allclose(records.landmarks, [FIVE, np.add(FIVE, 1)], rtol=1e-6)

    for name in samples:  # val_set numbers its own images from 0 too: a same name is no leak
        write_image(tmp_path / "val_set" / "images" / f"{name}.jpg", 8, 8, seed=7)
    assert read_affectnet(tmp_path, "train").paths == records.paths

    np.save(annotations / "2_lnd.npy", np.zeros(130))
    with pytest.raises(DataFormatError, match=re.escape(f"{annotations / '2_lnd.npy'}: expected 68 landmarks")):
        read_affectnet(tmp_path, "train")
    np.save(annotations / "2_exp.npy", np.array("happy"))
    with pytest.raises(DataFormatError, match=re.escape(f"{annotations / '2_exp.npy'}: expected numbers")):
        read_affectnet(tmp_path, "train")
    (annotations / "2_exp.npy").unlink()
    with pytest.raises(FileNotFoundError, match="annotation missing: .*2_exp.npy"):
        read_affectnet(tmp_path, "train")


def test_read_affectnet_without_either_release(tmp_path):
    with pytest.raises(FileNotFoundError, match="Manually_Annotated_file_lists/validation.csv .* val_set"):
        read_affectnet(tmp_path, "val")


# --------------------------------------------------------------------------- EmotioNet

EMOTIONET_AUS = (1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26, 43)


@pytest.mark.parametrize("quoted", [True, False])
def test_read_emotionet(tmp_path, quoted):
    header = ["URL", "URL orig", *(f"'AU {au}'" if quoted else f"AU {au}" for au in EMOTIONET_AUS)]
    first = [1, 0, 0, 999, 1, 0, 1, 0, 0, 1, 0, 1]
    second = [0, 1, 999, 999, 999, 999, 999, 999, 999, 999, 999, 0]
    path = write_csv(tmp_path / "EmotioNet_FACS.csv", [
        header,
        ["'https://example.org/img/000123.jpg'", "http://orig.example/x.jpg", *first],
        ["https://example.org/a/b/000124.png?size=large", "http://orig.example/y.jpg", *second],
        ["'https://example.org/img/dead.jpg'", "http://orig.example/z.jpg", *first],
        ["'https://example.org/img/only43.jpg'", "", *[999] * 11, 1],  # none of the 17: left out
    ])
    for name in ("000123.jpg", "000124.png", "only43.jpg"):
        write_image(tmp_path / "images" / name, 8, 8)
    with pytest.warns(UserWarning, match="EmotioNet: 1 images listed in .* are not in"):
        records = read_emotionet(path, tmp_path / "images")
    assert records.dataset == "EmotioNet"
    assert records.paths == [tmp_path / "images" / "000123.jpg", tmp_path / "images" / "000124.png"]
    expected = [au_row({au: v for au, v in zip(EMOTIONET_AUS, row) if au in AUS and v != 999})
                for row in (first, second)]
    np.testing.assert_array_equal(records.aus, np.array(expected, np.float32))
    assert np.isnan(records.va).all() and (records.expression == -1).all() and np.isnan(records.landmarks).all()


@pytest.mark.parametrize("rows, line, message", [
    ([["URL", "'AU 1'"], ["'http://a/x.jpg'", "2"]], 2, "column 'AU 1': expected 1, 0 or 999, found '2'"),
    ([["URL", "'AU 1'"], ["'http://a/x.jpg'", "1", "0"]], 2, "expected 2 comma-separated values"),
    ([["Link", "'AU 1'"], ["'http://a/x.jpg'", "1"]], 1, "expected a 'URL' column"),
    ([["URL", "URL orig"], ["'http://a/x.jpg'", "x"]], 1, "expected AU columns like 'AU 1'"),
    ([["URL", "'AU 43'"], ["'http://a/x.jpg'", "1"]], 1, "expected at least one AU column among the project's AUs"),
    ([["URL", "'AU 1'"], ["'http://a/'", "1"]], 2, "expected an image URL ending in a file name"),
])
def test_read_emotionet_malformed(tmp_path, rows, line, message):
    path = write_csv(tmp_path / "emotionet.csv", rows)
    write_image(tmp_path / "images" / "x.jpg", 8, 8)
    with pytest.raises(DataFormatError) as error:
        read_emotionet(path, tmp_path / "images")
    assert names_file_and_line(error, path, line) and message in str(error.value)


def test_read_emotionet_without_images(tmp_path):
    path = write_csv(tmp_path / "emotionet.csv", [["URL", "'AU 1'"], ["'http://a/x.jpg'", "1"]])
    with pytest.raises(FileNotFoundError, match="EmotioNet image directory not found: .*images"):
        read_emotionet(path, tmp_path / "images")
    (tmp_path / "images").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FileNotFoundError, match="none of the images listed in .* is in"):
            read_emotionet(path, tmp_path / "images")
