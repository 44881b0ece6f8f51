"""``python -m mmarnn_min.predict``: one real video file through decode, landmarks, alignment,
MMA and MRNN equals the same steps done by hand; the per-frame table, the plot and images; the
checkpoint layouts; clear user errors, output paths checked before any work."""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mmarnn_min import cli
from mmarnn_min.affect import AUS, EXPRESSIONS, REACTIONS
from mmarnn_min.checkpoints import load_trained
from mmarnn_min.data.synth import SynthConfig, export_videos
from mmarnn_min.faces import align_faces
from mmarnn_min.frame_table import COLUMNS
from mmarnn_min.inference import predict_video
from mmarnn_min.mma import MMA, MMAConfig, predict_features
from mmarnn_min.mrnn import MRNN, MRNNConfig
from mmarnn_min.predict import main
from mmarnn_min.video import read_video, write_video
from mmarnn_min.video_faces import face_batches, make_detector, video_crops

TINY = SynthConfig(image_size=32, canvas_size=96, train_images_per_source=6, eval_images_per_source=3,
                   train_videos=1, eval_videos=1, min_frames=10, max_frames=16)
MRNN_CONFIG = MRNNConfig(hidden_size=8, routed_size=4, max_frames=64)


@pytest.fixture(autouse=True)
def fallback_routing(cache_dir, monkeypatch):
    """A fresh cache, and the plain-PyTorch routing: no extension build in these tests."""
    monkeypatch.setenv("MMARNN_BACKEND", "fallback")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A SynthAffect video file with its landmarks file beside it."""
    return export_videos(TINY, tmp_path_factory.mktemp("videos"), splits=("train",), count=1)[0]


def tiny_models(seed: int, max_frames: int = 64) -> tuple[MMA, MRNN]:
    """Untrained tiny models; MRNN's weights are spread out so that its output follows its input."""
    torch.manual_seed(seed)
    mrnn = MRNN(replace(MRNN_CONFIG, max_frames=max_frames))
    with torch.no_grad():
        for parameter in mrnn.parameters():
            parameter.normal_(0.0, 0.3)
    return MMA(MMAConfig.tiny()).eval(), mrnn.eval()


def save_run(run_dir: Path, mma: MMA, mrnn: MRNN, e2e: bool = False) -> Path:
    """Save the models in the layout of a training run; returns ``run_dir``."""
    if e2e:
        (run_dir / "e2e").mkdir(parents=True)
        torch.save({"mma": mma.state_dict(), "mma_config": asdict(mma.config), "image_size": TINY.image_size,
                    "mrnn": mrnn.state_dict(), "mrnn_config": asdict(mrnn.config)}, run_dir / "e2e" / "best.pt")
    else:
        (run_dir / "mma").mkdir(parents=True)
        (run_dir / "mrnn").mkdir(parents=True)
        torch.save({"model": mma.state_dict(), "config": asdict(mma.config), "image_size": TINY.image_size,
                    "epoch": 1}, run_dir / "mma" / "best.pt")
        torch.save({"model": mrnn.state_dict(), "config": asdict(mrnn.config)}, run_dir / "mrnn" / "best.pt")
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_run(tmp_path_factory.mktemp("run"), *tiny_models(seed=0))


def by_hand(video: Path, mma: MMA, mrnn: MRNN) -> np.ndarray:
    """The pipeline's steps, each done directly: -> (7,) intensities."""
    frames = read_video(video).frames                                              # (N,H,W,3)
    landmarks = np.load(video.with_name(f"{video.stem}.landmarks.npy"))            # (N,5,2)
    assert np.isfinite(landmarks).all()  # a face in every frame: no frame to drop
    z = torch.from_numpy(predict_features(mma, align_faces(frames, landmarks, TINY.image_size)))  # (N,26)
    with torch.no_grad():
        return mrnn(z[None], torch.tensor([len(z)]))[0].numpy()


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of a CLI run expected to fail, through the command's entry point."""
    try:
        code = cli.run(main, argv, "python -m mmarnn_min.predict")
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 0 or len(err.strip().splitlines()) == 1 or "usage:" in err, err   # one line
    return code, err


def test_prediction_equals_the_steps_done_by_hand(video, run_dir):
    pipeline = load_trained(run_dir)
    result = predict_video(pipeline, video)
    frames = len(read_video(video).frames)
    assert result["video"] == str(video) and result["detector"] == "landmarks"  # auto finds the file
    assert result["frames"] == result["frames_with_face"] == frames
    assert list(result["intensities"]) == list(REACTIONS)
    np.testing.assert_allclose(list(result["intensities"].values()), by_hand(video, pipeline.mma, pipeline.mrnn),
                               atol=1e-5, rtol=0)


def test_cli_prints_json_and_a_table(video, run_dir, capsys):
    result = main([str(video), "--checkpoint", str(run_dir), "--json", "--device", "cpu"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == result and list(printed["intensities"]) == list(REACTIONS)
    main([str(video), "--checkpoint", str(run_dir), "--device", "cpu"])
    table = capsys.readouterr().out
    assert all(reaction in table for reaction in REACTIONS)
    assert f"{result['intensities']['Fear']:.4f}" in table


def test_the_end_to_end_checkpoint_is_preferred(video, tmp_path):
    mma, mrnn = tiny_models(seed=0)
    e2e_mma, e2e_mrnn = tiny_models(seed=1)
    save_run(tmp_path, mma, mrnn)
    save_run(tmp_path, e2e_mma, e2e_mrnn, e2e=True)
    pipeline = load_trained(tmp_path)
    assert pipeline.source == (tmp_path / "e2e" / "best.pt",) and pipeline.image_size == TINY.image_size
    result = predict_video(pipeline, video)
    np.testing.assert_allclose(list(result["intensities"].values()), by_hand(video, e2e_mma, e2e_mrnn),
                               atol=1e-5, rtol=0)
    assert not np.allclose(list(result["intensities"].values()), by_hand(video, mma, mrnn), atol=1e-3)


def test_stride_reads_every_kth_frame(video, run_dir):
    frames = len(read_video(video).frames)
    crops, indices = video_crops(video, "landmarks", size=TINY.image_size, stride=2)
    assert crops.shape == (math.ceil(frames / 2), TINY.image_size, TINY.image_size, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(indices, np.arange(0, frames, 2))
    result = predict_video(load_trained(run_dir), video, stride=2)
    assert result["frames"] == result["frames_with_face"] == math.ceil(frames / 2)


def test_frames_without_a_face_are_dropped(video, tmp_path):
    copy = Path(shutil.copy(video, tmp_path / "clip.mp4"))
    landmarks = np.load(video.with_name(f"{video.stem}.landmarks.npy"))
    landmarks[1::3] = np.nan  # no face in frames 1, 4, 7, ...
    np.save(tmp_path / "clip.landmarks.npy", landmarks)
    crops, indices = video_crops(copy, "auto", size=TINY.image_size)
    keep = np.isfinite(landmarks).all(axis=(1, 2))
    np.testing.assert_array_equal(indices, np.flatnonzero(keep))
    np.testing.assert_array_equal(crops, align_faces(read_video(copy).frames[keep], landmarks[keep], TINY.image_size))


def test_missing_checkpoint(video, tmp_path, capsys):
    code, err = run_cli([str(video), "--checkpoint", str(tmp_path)], capsys)
    assert code == 2 and "Traceback" not in err
    assert str(tmp_path / "mma" / "best.pt") in err and f"python -m mmarnn_min.train --out {tmp_path}" in err


def test_missing_video(run_dir, tmp_path, capsys):
    code, err = run_cli([str(tmp_path / "nothing.mp4"), "--checkpoint", str(run_dir)], capsys)
    assert code == 2 and "video file not found" in err and "nothing.mp4" in err


def test_corrupt_video(run_dir, tmp_path, capsys):
    path = tmp_path / "x.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    code, err = run_cli([str(path), "--checkpoint", str(run_dir)], capsys)
    assert code == 2 and "cannot open video" in err and "x.mp4" in err and "Traceback" not in err


def test_no_face_in_the_landmarks(video, run_dir, tmp_path, capsys):
    copy = shutil.copy(video, tmp_path / "clip.mp4")
    frames = len(read_video(video).frames)
    np.save(tmp_path / "clip.landmarks.npy", np.full((frames, 5, 2), np.nan, np.float32))
    code, err = run_cli([str(copy), "--checkpoint", str(run_dir)], capsys)
    assert code == 2 and f"no face found in any of the {frames} frames of {copy}" in err


def test_no_face_in_blank_frames(run_dir, tmp_path, capsys):
    blank = write_video(tmp_path / "blank.mp4", np.full((6, 64, 64, 3), 128, np.uint8), fps=25.0)
    code, err = run_cli([str(blank), "--checkpoint", str(run_dir), "--detector", "haar"], capsys)
    assert code == 2 and f"no face found in any of the 6 frames of {blank}" in err


def test_landmarks_file_missing_or_of_the_wrong_shape(video, run_dir, tmp_path, capsys):
    copy = shutil.copy(video, tmp_path / "clip.mp4")
    code, err = run_cli([str(copy), "--checkpoint", str(run_dir), "--detector", "landmarks"], capsys)
    assert code == 2 and "clip.landmarks.npy" in err
    np.save(tmp_path / "clip.landmarks.npy", np.zeros((3, 5, 2), np.float32))
    code, err = run_cli([str(copy), "--checkpoint", str(run_dir), "--detector", "landmarks"], capsys)
    assert code == 2 and "got float32 (3, 5, 2)" in err


def test_too_many_frames_suggests_the_smallest_stride_that_fits(video, tmp_path, capsys):
    run = save_run(tmp_path, *tiny_models(seed=0, max_frames=4))
    frames = len(read_video(video).frames)
    code, err = run_cli([str(video), "--checkpoint", str(run)], capsys)
    assert code == 2 and f"{frames} of its {frames} frames" in err and "max_frames = 4" in err
    stride = math.ceil(frames / 4)  # a face in every frame: ceil(frames / stride) must be <= 4
    assert f"the smallest --stride that fits is {stride}" in err
    result = main([str(video), "--checkpoint", str(run), "--stride", str(stride), "--json"])
    assert result["frames_with_face"] <= 4
    shorter = stride - 1  # >= 2 for 10..16 frames: a stride too short, not 1; its first fitting multiple is 2x
    code, err = run_cli([str(video), "--checkpoint", str(run), "--stride", str(shorter)], capsys)
    assert code == 2 and f"--stride {2 * shorter} fits (the smallest multiple of {shorter} that does)" in err


def test_bad_stride_is_a_usage_error(video, run_dir, capsys):
    code, err = run_cli([str(video), "--checkpoint", str(run_dir), "--stride", "0"], capsys)
    assert code == 2 and "--stride must be >= 1" in err


# ---- the per-frame table, the plot, images, output paths ----

def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames), list(reader)


@pytest.fixture
def gappy_video(video, tmp_path) -> tuple[Path, np.ndarray]:
    """A copy of the video whose landmarks say there is no face in frames 1, 4, 7, ..."""
    copy = Path(shutil.copy(video, tmp_path / "clip.mp4"))
    landmarks = np.load(video.with_name(f"{video.stem}.landmarks.npy"))
    landmarks[1::3] = np.nan
    np.save(tmp_path / "clip.landmarks.npy", landmarks)
    return copy, landmarks


@pytest.mark.parametrize("stride", [1, 2])
def test_the_frames_table_holds_one_named_row_per_frame_read(gappy_video, run_dir, tmp_path, stride):
    path, landmarks = gappy_video
    table = tmp_path / "frames.csv"
    result = main([str(path), "--checkpoint", str(run_dir), "--frames", str(table), "--stride", str(stride),
                   "--device", "cpu"])
    header, rows = read_table(table)
    assert header == list(COLUMNS) and len(header) == 3 + 4 + 10 + 2 + 7 + 17
    assert header[:3] == ["frame", "time_s", "face"] and header[7:9] == ["left_eye_x", "left_eye_y"]
    assert header[17:19] == ["valence", "arousal"] and header[19:26] == list(EXPRESSIONS)
    assert header[26:] == [f"AU{au}" for au in AUS] and header[26] == "AU1" and header[-1] == "AU26"

    video = read_video(path)
    read = np.arange(0, len(video.frames), stride)
    assert [int(row["frame"]) for row in rows] == read.tolist() and result["frames"] == len(rows)
    np.testing.assert_allclose([float(row["time_s"]) for row in rows], read / video.fps, atol=1e-4)
    found = np.isfinite(landmarks[read]).all(axis=(1, 2))
    assert [row["face"] for row in rows] == ["1" if f else "0" for f in found]
    assert result["frames_with_face"] == found.sum()
    for row, has_face in zip(rows, found):
        assert all((row[name] != "") == has_face for name in COLUMNS[3:])  # empty cells where no face

    kept = read[found]
    cells = np.array([[float(row[name]) for name in COLUMNS[3:]] for row in rows if row["face"] == "1"])
    np.testing.assert_allclose(cells[:, 4:14], landmarks[kept].reshape(-1, 10), atol=0.006)
    mma = load_trained(run_dir).mma
    z = predict_features(mma, align_faces(video.frames[kept], landmarks[kept], TINY.image_size))   # (L,26)
    np.testing.assert_allclose(cells[:, 14:], z, atol=2e-6)


def test_the_plot_is_a_png_of_the_timeline_and_the_intensities(gappy_video, run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    path, _ = gappy_video
    plot = tmp_path / "timeline.png"
    main([str(path), "--checkpoint", str(run_dir), "--plot", str(plot), "--device", "cpu"])
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    from matplotlib.image import imread

    pixels = imread(plot)
    assert pixels.shape[1] > 1000 and pixels[..., :3].std() > 0.1  # a wide figure, not a blank page


def test_an_image_gives_its_one_row_and_a_note(video, run_dir, tmp_path, capsys):
    from PIL import Image

    frame = read_video(video).frames[3]
    image = tmp_path / "face.png"
    Image.fromarray(frame).save(image)
    points = np.load(video.with_name(f"{video.stem}.landmarks.npy"))[3:4]                 # (1,5,2)
    np.save(tmp_path / "face.landmarks.npy", points)
    table = tmp_path / "face.csv"
    result = main([str(image), "--checkpoint", str(run_dir), "--frames", str(table), "--json"])
    assert json.loads(capsys.readouterr().out) == result
    assert result["image"] == str(image) and result["intensities"] is None and "need a video" in result["note"]
    assert result["frames"] == result["frames_with_face"] == 1 and result["detector"] == "landmarks"
    z = predict_features(load_trained(run_dir).mma, align_faces(frame[None], points, TINY.image_size))[0]
    affect = result["affect"]
    got = [affect["valence"], affect["arousal"], *affect["expressions"].values(), *affect["aus"].values()]
    np.testing.assert_allclose(got, z, atol=1e-6)
    assert list(affect["expressions"]) == list(EXPRESSIONS) and list(affect["aus"])[-1] == "AU26"
    header, rows = read_table(table)
    assert len(rows) == 1 and rows[0]["frame"] == "0" and rows[0]["time_s"] == "" and rows[0]["face"] == "1"
    main([str(image), "--checkpoint", str(run_dir)])
    printed = capsys.readouterr().out
    assert "a face found (detector: landmarks" in printed and "note: the 7 reaction intensities need a video" in printed


def test_an_image_cannot_be_plotted_and_nothing_is_written(video, run_dir, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "face.jpg"
    Image.fromarray(read_video(video).frames[0]).save(image)
    table, plot = tmp_path / "face.csv", tmp_path / "face.png"
    code, err = run_cli([str(image), "--checkpoint", str(run_dir), "--frames", str(table), "--plot", str(plot)], capsys)
    assert code == 2 and "--plot draws a video's timeline" in err and not table.exists() and not plot.exists()


def test_unreadable_images(run_dir, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    code, err = run_cli([str(broken), "--checkpoint", str(run_dir)], capsys)
    assert code == 2 and "cannot read" in err and "broken.png" in err
    code, err = run_cli([str(tmp_path / "absent.jpg"), "--checkpoint", str(run_dir)], capsys)
    assert code == 2 and "image file not found" in err


@pytest.mark.parametrize("flags, message", [
    (["--frames", "{tmp}/missing/frames.csv"], "the directory {tmp}/missing does not exist"),
    (["--frames", "{tmp}/frames.txt"], "--frames {tmp}/frames.txt: the file name must end in .csv"),
    (["--frames", "{tmp}/folder.csv"], "is a directory"),
    (["--frames", "{tmp}/mine.csv"], "--frames {tmp}/mine.csv exists: pass --overwrite"),
    (["--plot", "{tmp}/mine.png"], "--plot {tmp}/mine.png exists: pass --overwrite"),
    (["--plot", "{tmp}/plot.gif"], "must end in .png or .pdf or .svg or .jpg or .jpeg"),
    (["--frames", "{tmp}/new.csv", "--plot", "{tmp}/mine.png"], "--plot {tmp}/mine.png exists"),
    (["--detect-side", "-1"], "--detect-side must be >= 0"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_outputs_are_checked_before_any_work_and_never_replaced_silently(video, tmp_path, capsys, flags, message):
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "mine.csv").write_text("a user's table\n")
    (tmp_path / "mine.png").write_bytes(b"a user's picture")
    argv = [str(video), "--checkpoint", str(tmp_path / "no run here")] + [f.format(tmp=tmp_path) for f in flags]
    code, err = run_cli(argv, capsys)   # the checkpoint is missing too: the outputs are checked first
    assert code == 2 and message.format(tmp=tmp_path) in err, err
    assert (tmp_path / "mine.csv").read_text() == "a user's table\n" and not (tmp_path / "new.csv").exists()
    assert (tmp_path / "mine.png").read_bytes() == b"a user's picture"


def test_overwrite_replaces_the_files(video, run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    table, plot = tmp_path / "mine.csv", tmp_path / "mine.png"
    table.write_text("old\n")
    plot.write_bytes(b"old")
    main([str(video), "--checkpoint", str(run_dir), "--frames", str(table), "--plot", str(plot), "--overwrite"])
    assert table.read_text().startswith("frame,time_s,face,") and plot.read_bytes()[:4] == b"\x89PNG"


def test_batches_hold_consecutive_frames_and_only_their_crops(gappy_video):
    path, landmarks = gappy_video
    faces = make_detector("landmarks", path)
    batches = list(face_batches(path, faces, TINY.image_size, stride=1, batch_frames=4))
    frames = len(landmarks)
    assert [len(b.indices) for b in batches] == [4] * (frames // 4) + ([frames % 4] if frames % 4 else [])
    np.testing.assert_array_equal(np.concatenate([b.indices for b in batches]), np.arange(frames))
    for batch in batches:
        assert len(batch.crops) == batch.found.sum() and batch.crops.dtype == np.uint8
        np.testing.assert_array_equal(batch.found, np.isfinite(landmarks[batch.indices]).all(axis=(1, 2)))
    crops, indices = video_crops(path, faces, TINY.image_size)
    np.testing.assert_array_equal(crops, np.concatenate([b.crops for b in batches]))


@pytest.mark.parametrize("detector", ["haar", "mtcnn"])
def test_a_real_face_video_through_each_detector(run_dir, tmp_path, detector):
    if detector == "mtcnn":
        pytest.importorskip("facenet_pytorch", reason="facenet-pytorch is not installed")
    from mmarnn_min.bench.faces import face_video

    path = face_video(tmp_path / "grace.mp4", frames=6)
    table = tmp_path / "frames.csv"
    result = main([str(path), "--checkpoint", str(run_dir), "--detector", detector, "--frames", str(table)])
    assert result["detector"] == detector and result["frames"] == result["frames_with_face"] == 6
    _, rows = read_table(table)
    eyes = np.array([[float(row[name]) for name in ("left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y")]
                     for row in rows])
    assert (eyes[:, 0] < eyes[:, 2]).all() and (np.abs(eyes[:, 2] - eyes[:, 0]) > 40).all()  # two eyes, apart


def test_frames_stream_through_one_batch_at_a_time(gappy_video, monkeypatch):
    """Only one batch of frames is decoded ahead: a long video never sits in memory whole."""
    from mmarnn_min import video_faces

    path, _ = gappy_video
    decoded = []
    real = video_faces.iter_media_frames

    def counting(video):
        for frame in real(video):
            decoded.append(frame.shape)
            yield frame

    monkeypatch.setattr(video_faces, "iter_media_frames", counting)
    batches = face_batches(path, make_detector("landmarks", path), TINY.image_size, batch_frames=4)
    assert len(next(batches).indices) == 4 and len(decoded) == 4
    assert len(next(batches).indices) == 4 and len(decoded) == 8
