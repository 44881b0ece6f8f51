"""Reading and writing video files (mmarnn_min.video): round trips and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from mmarnn_min.video import iter_frames, probe_video, read_video, write_video


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
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        read_video(tmp_path / "nothing.mp4")


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mp4"):
        read_video(tmp_path / "empty.mp4")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="garbage.mp4"):
        read_video(path)


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
