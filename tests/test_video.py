"""Reading and writing video files (mmarnn_min.video): round trips, clear errors, and the
uncompressed bottom-up AVI that crashes OpenCV's own decoder."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from uncompressed_avi import write_uncompressed_avi

from mmarnn_min.errors import UserError
from mmarnn_min.video import (
    BitmapFormat,
    VideoError,
    VideoNotFoundError,
    avi_video_format,
    iter_frames,
    probe_video,
    read_video,
    write_video,
)


def _moving_square(count: int = 12, height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth frames (count,H,W,3) uint8 that lossy codecs keep well: a gradient and a square."""
    y, x = np.mgrid[:height, :width]
    frames = np.empty((count, height, width, 3), np.uint8)
    for t in range(count):
        frames[t, ..., 0] = (4 * x + 10 * t) % 256
        frames[t, ..., 1] = 3 * y + 40
        frames[t, ..., 2] = 90
        frames[t, 10:26, 5 + 2 * t:21 + 2 * t] = (250, 240, 30)
    return frames


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_round_trip(tmp_path, suffix):
    frames = _moving_square()
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=25.0)
    video = read_video(path)
    assert video.frames.shape == frames.shape and video.frames.dtype == np.uint8
    assert video.fps == pytest.approx(25.0) and video.num_frames == 12
    assert video.duration == pytest.approx(12 / 25)
    assert np.abs(video.frames.astype(int) - frames).mean() < 6  # lossy, but close
    red, _, blue = video.frames[5, 18, 20]  # inside the yellow square: RGB order, not BGR
    assert red > 200 and blue < 70
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (12, 64, 48)
    np.testing.assert_array_equal(np.stack(list(iter_frames(path))), video.frames)


def test_missing_file(tmp_path):
    with pytest.raises(VideoNotFoundError, match="nothing.mp4") as error:
        read_video(tmp_path / "nothing.mp4")
    assert isinstance(error.value, FileNotFoundError) and isinstance(error.value, UserError)


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty.mp4") as error:
        read_video(tmp_path / "empty.mp4")
    assert isinstance(error.value, ValueError) and isinstance(error.value, UserError)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="garbage.mp4"):
        read_video(path)


def test_a_broken_file_prints_nothing_but_the_error(tmp_path, capfd):
    """FFmpeg's and OpenCV's own log lines would come before the one-line error on stderr."""
    whole = write_video(tmp_path / "whole.mp4", _moving_square(), fps=25.0).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(VideoError, match="cut.mp4"):
        read_video(tmp_path / "cut.mp4")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_truncated_file(tmp_path, suffix):
    whole = write_video(tmp_path / f"whole{suffix}", _moving_square(), fps=25.0).read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=f"cut{suffix}"):
        read_video(path)
    if suffix == ".avi":  # the index is gone but the first frames decode: keep them if asked
        with pytest.warns(UserWarning, match="truncated"):
            video = read_video(path, allow_truncated=True)
        assert 0 < video.num_frames < 12


def test_write_video_rejects_bad_input(tmp_path):
    frames = _moving_square(2)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", frames.astype(np.float32), 25.0)
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "a.mkv", frames, 25.0)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "a.mp4", frames, 0.0)


# ------------------------------------------------------------------- uncompressed AVI

def _random_frames(count: int = 5, height: int = 37, width: int = 21) -> np.ndarray:
    """Odd sizes on purpose: each DIB row of 3 * 21 = 63 bytes is padded to 64."""
    return np.random.default_rng(count).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def _read_in_child(path, allow_truncated: bool = False) -> tuple[np.ndarray | None, str]:
    """read_video(path) in a fresh interpreter, so that a decoder crash fails the test instead
    of killing the test session: (the frames, "") or (None, the VideoError's message)."""
    code = ("import sys, numpy as np\n"
            "from mmarnn_min.video import VideoError, read_video\n"
            "try:\n"
            "    np.save(sys.argv[1] + '.npy', read_video(sys.argv[1], allow_truncated=sys.argv[2] == 'yes').frames)\n"
            "except VideoError as error:\n"
            "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code, str(path), "yes" if allow_truncated else "no"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"decoding {path} ended with exit code {result.returncode}: {result.stderr[-500:]}"
    return (None, result.stdout.strip()) if result.stdout else (np.load(f"{path}.npy"), "")


@pytest.mark.parametrize("bottom_up", [True, False])
def test_uncompressed_avi_decodes_exactly(tmp_path, bottom_up):
    frames = _random_frames()
    path = write_uncompressed_avi(tmp_path / "raw.avi", frames, fps=10, bottom_up=bottom_up)
    assert avi_video_format(path) == BitmapFormat(21, 37 if bottom_up else -37, 24, 0)
    decoded, _ = _read_in_child(path)
    np.testing.assert_array_equal(decoded, frames)  # lossless, upright, RGB
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (5, 21, 37, 10.0)


def test_opencv_alone_still_crashes_on_bottom_up_avi(tmp_path):
    """Why video.py reads these files itself: OpenCV's decoder kills the process. When this
    test fails, OpenCV has fixed it and the raw-packet path in video.py can go."""
    path = write_uncompressed_avi(tmp_path / "raw.avi", _random_frames(3, 48, 64))
    code = "import cv2, sys; capture = cv2.VideoCapture(sys.argv[1], cv2.CAP_FFMPEG); capture.read()"
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=60)
    assert result.returncode < 0  # killed by a signal (SIGSEGV or SIGABRT)


def test_truncated_bottom_up_avi(tmp_path):
    frames = _random_frames(6)
    whole = write_uncompressed_avi(tmp_path / "whole.avi", frames).read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(whole[: len(whole) // 2])
    assert _read_in_child(path) == (None, f"video is truncated or corrupt: decoded 2 of 6 frames in {path} "
                                          "(pass allow_truncated=True to keep what decodes)")
    kept, _ = _read_in_child(path, allow_truncated=True)
    np.testing.assert_array_equal(kept, frames[:2])  # the whole frames before the cut


def test_avi_video_format_of_other_files(tmp_path):
    mjpeg = write_video(tmp_path / "clip.avi", _moving_square(2), fps=25.0)
    assert avi_video_format(mjpeg) == BitmapFormat(64, 48, 24, int.from_bytes(b"MJPG", "little"))
    assert avi_video_format(write_video(tmp_path / "clip.mp4", _moving_square(2), fps=25.0)) is None
    (tmp_path / "short.avi").write_bytes(b"RIFF\x04\x00\x00\x00AVI ")
    assert avi_video_format(tmp_path / "short.avi") is None
