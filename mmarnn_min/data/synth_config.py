"""The configuration of SynthAffect, the embedded data set (docs/design.md, "SynthAffect")."""

from __future__ import annotations

from dataclasses import dataclass

SPLITS: tuple[str, ...] = ("train", "val", "test")
RENDER_MODES: tuple[str, ...] = ("canvas", "crop")


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and seed of a SynthAffect data set. Everything generated is a deterministic
    function of this config (and of the generator's code): the cache key hashes both.

    The defaults are the data of the first command (``python -m mmarnn_min.train``, the
    ``default`` preset of ``mmarnn_min.config``): sized for a CPU-sized model;
    ``SynthConfig.paper()`` gives the paper's crop size and padded length.
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
    min_frames: int = 16            # video lengths are uniform in [min_frames, max_frames]
    max_frames: int = 64            # T: the padded length the MRNN routes over
    fps: float = 25.0

    def __post_init__(self) -> None:
        if self.render not in RENDER_MODES:
            raise ValueError(f"render must be one of {RENDER_MODES}, got {self.render!r}")
        if not 8 <= self.image_size <= self.canvas_size:
            raise ValueError(f"need 8 <= image_size <= canvas_size, got {self.image_size}, "
                             f"{self.canvas_size}")
        if not 8 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 8 <= min_frames <= max_frames, got {self.min_frames}, "
                             f"{self.max_frames}")
        if min(self.train_images_per_source, self.eval_images_per_source, self.train_videos,
               self.eval_videos) < 0 or self.fps <= 0:
            raise ValueError("counts must be >= 0 and fps > 0")

    @staticmethod
    def paper() -> SynthConfig:
        """Paper-like sizes: 112 x 112 crops, T = 480 frames at 30 fps (a GPU-sized job: the
        train videos alone hold about 1 GB of crops)."""
        return SynthConfig(image_size=112, canvas_size=256, min_frames=100, max_frames=480, fps=30.0)

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
