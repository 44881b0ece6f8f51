"""The configuration of SynthAffect, the embedded data set of docs/design.md, section 6."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

SPLITS: tuple[str, ...] = ("train", "val", "test")
RENDER_MODES: tuple[str, ...] = ("canvas", "crop")
VideoMode = Literal["window", "hume"]
VIDEO_MODES: tuple[str, ...] = get_args(VideoMode)
HUME_SECONDS: tuple[float, float] = (3.0, 16.0)  # Hume-Reaction's shortest and longest videos, about


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and seed of a SynthAffect data set. Everything generated is a deterministic
    function of this config (and of the generator's code): the cache key hashes both.

    The defaults are the data of the first command (``python -m mmarnn_min.train``, the
    ``default`` preset of ``mmarnn_min.config``), sized for a CPU-sized model;
    ``SynthConfig.paper()`` gives the paper's crop size and padded length,
    ``SynthConfig.hume(fps)`` Hume-like videos.

    Two kinds of video (``video_mode``):
        "window"  lengths uniform in [min_frames, max_frames]; one reaction window; the labels
                  are the reaction intensities themselves (synth_video)
        "hume"    like Hume-Reaction's (synth_hume): durations in [min_frames, max_frames] / fps
                  seconds with mean ``mean_seconds``; 1-3 reaction windows at random places;
                  the labels are self-reports scaled per video by their maximum
    """

    seed: int = 0
    image_size: int = 64            # S: side of the aligned face crops (the paper uses 112)
    canvas_size: int = 160          # side of the square canvas the faces are drawn on
    render: str = "canvas"          # "canvas": draw on the canvas at a random position, scale and
                                    # rotation, then align with the true landmarks (as real
                                    # data); "crop": draw straight into the aligned crop (faster)
    train_images_per_source: int = 2000  # images per source (3 sources) in the train split
    eval_images_per_source: int = 300    # images per source in val and in test
    train_videos: int = 1000        # the MRNN learns from videos: their number matters (docs/experiments.md)
    eval_videos: int = 100          # videos in val and in test
    min_frames: int = 16            # video lengths lie in [min_frames, max_frames]
    max_frames: int = 64            # T: the padded length the MRNN routes over
    fps: float = 25.0
    video_mode: VideoMode = "window"  # "window" or "hume" (above)
    mean_seconds: float = 11.0      # "hume": mean duration (Hume-Reaction: about 75 h / 25,000 videos)

    def __post_init__(self) -> None:
        if self.render not in RENDER_MODES:
            raise ValueError(f"render must be one of {RENDER_MODES}, got {self.render!r}")
        if self.video_mode not in VIDEO_MODES:
            raise ValueError(f"video_mode must be one of {VIDEO_MODES}, got {self.video_mode!r}")
        if not 8 <= self.image_size <= self.canvas_size:
            raise ValueError(f"need 8 <= image_size <= canvas_size, got {self.image_size}, "
                             f"{self.canvas_size}")
        if not 8 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 8 <= min_frames <= max_frames, got {self.min_frames}, "
                             f"{self.max_frames}")
        if min(self.train_images_per_source, self.eval_images_per_source, self.train_videos,
               self.eval_videos) < 0 or self.fps <= 0:
            raise ValueError("counts must be >= 0 and fps > 0")
        shortest, longest = self.min_frames / self.fps, self.max_frames / self.fps
        if self.video_mode == "hume" and not shortest < self.mean_seconds < longest:
            raise ValueError(f"video_mode 'hume': mean_seconds ({self.mean_seconds}) must lie inside "
                             f"[min_frames, max_frames] / fps = [{shortest:.3g}, {longest:.3g}] s; "
                             "SynthConfig.hume(fps) sets Hume-Reaction's 3-16 s")

    @staticmethod
    def paper() -> SynthConfig:
        """Paper-like sizes: 112 x 112 crops, T = 480 frames at 30 fps (a GPU-sized job: the
        train videos alone hold about 1 GB of crops)."""
        return SynthConfig(image_size=112, canvas_size=256, min_frames=100, max_frames=480, fps=30.0)

    @staticmethod
    def hume(fps: float = 5.0, **fields) -> SynthConfig:
        """Hume-like videos of 3-16 s (``video_mode="hume"``) at ``fps`` frames a second: at 5
        fps, the CPU default, 15-80 frames (T = 80); at 30 fps the paper's T = 480 (with
        ``image_size=112, canvas_size=256`` the paper's sizes). ``fields``: other settings."""
        low, high = HUME_SECONDS
        return SynthConfig(video_mode="hume", fps=fps, min_frames=round(low * fps),
                           max_frames=round(high * fps), **fields)

    def images_per_source(self, split: str) -> int:
        if _check_split(split) == "train":
            return self.train_images_per_source
        return self.eval_images_per_source

    def num_videos(self, split: str) -> int:
        return self.train_videos if _check_split(split) == "train" else self.eval_videos


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def split_index(split: str) -> int:
    return SPLITS.index(_check_split(split))
