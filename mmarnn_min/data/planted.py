"""A planted-signal sequence data set for MRNN (paper, section 3.2), deterministic by seed.

Each video has 7 labels y in [0, 1]^7 and L frames, L uniform in [ceil(T/4), T]. Every frame is
Gaussian noise in 26 dimensions; in one window of ``window`` consecutive frames, at a random
place, the labels are added through a fixed mixing matrix A (7, 26):

    z_t = noise * e_t + [s <= t < s + window] * (y @ A),     e_t ~ N(0, I)

so the labels are recoverable, but only by a model that finds the window (the mean over all
frames dilutes the signal by a factor window / L that varies from video to video). These are
not affect vectors: the set tests that MRNN, its masked routing and its training loop learn
what they should, quickly, before real or synthetic features exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mmarnn_min.affect import AFFECT_DIM, NUM_REACTIONS
from mmarnn_min.data.sequences import SequenceDataset

SPLITS = ("train", "val", "test")


@dataclass
class PlantedConfig:
    num_train: int = 2048    # videos in the training split
    num_val: int = 256       # videos in the validation split
    window: int = 16         # consecutive frames of a video in which its labels show
    noise: float = 1.0       # standard deviation of the per-frame noise (the signal's is about 1.5)
    data_seed: int = 0       # seed of the data set (the mixing matrix and every split)


def make_planted(
    num_videos: int,
    max_frames: int,
    split: str = "train",
    window: int = 16,
    noise: float = 1.0,
    seed: int = 0,
    features: int = AFFECT_DIM,
) -> SequenceDataset:
    """``num_videos`` planted sequences of at most ``max_frames`` frames. All splits of one seed
    share the mixing matrix; the videos of each split are drawn from their own stream."""
    if not 1 <= window <= math.ceil(max_frames / 4):
        raise ValueError(f"make_planted: window must lie in [1, ceil(T/4)] = [1, {math.ceil(max_frames / 4)}], got {window}")
    mixing = np.random.default_rng(seed).normal(size=(NUM_REACTIONS, features))     # A (7, D)
    rng = np.random.default_rng([seed, SPLITS.index(split) + 1])
    labels = rng.random((num_videos, NUM_REACTIONS))                                 # (N, 7)
    sequences = []
    for y in labels:
        length = int(rng.integers(math.ceil(max_frames / 4), max_frames + 1))
        start = int(rng.integers(0, length - window + 1))
        z = noise * rng.normal(size=(length, features))                              # (L, D)
        z[start:start + window] += y @ mixing                                        # (D,) onto the window
        sequences.append(z)
    return SequenceDataset(sequences, labels)


def planted_splits(config: PlantedConfig, max_frames: int, features: int = AFFECT_DIM) -> tuple[SequenceDataset, SequenceDataset]:
    """(train, val) planted data sets for ``config``."""
    common = dict(max_frames=max_frames, window=config.window, noise=config.noise, seed=config.data_seed, features=features)
    return make_planted(config.num_train, split="train", **common), make_planted(config.num_val, split="val", **common)
