"""How hard is SynthAffect's video task? Ridge regression on per-video oracle features.

The oracle features (true per-frame VA, expression and AU probabilities; synth_labels) are
summarised per video, and a ridge regression (numpy least squares, the ridge strength picked
on val) maps them to the 7 intensities. The Pearson correlation per reaction on test, and
its mean (the paper's number), say how much of the labels the faces carry:

    mean over all frames          what a model blind to time gets
    mean + max over all frames    the peak helps, but distractor twitches fool it
    mean over the true window(s)  a model that finds the reaction windows (oracle windows)
    window mean + max             the best of these summaries

The trained pipeline (MMA on pixels, then MRNN) is read against these numbers: it sees
estimated features instead of true ones, but may learn better summaries than these.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mmarnn_min.affect import REACTIONS
from mmarnn_min.baselines import RIDGE_STRENGTHS, ridge_fit
from mmarnn_min.data.synth_config import SynthConfig
from mmarnn_min.data.synth_labels import oracle_features
from mmarnn_min.data.synth_make import video_plan
from mmarnn_min.metrics import pearson

SUMMARIES = ("mean", "mean+max", "window mean", "window mean+max")


def summarise(oracle: np.ndarray, window: tuple[int, int] | np.ndarray, summary: str) -> np.ndarray:
    """One video's feature vector from its oracle features (L,26): (26,) or (52,). ``window``:
    the frames the reaction shows in, a [start, stop) pair or an (L,) bool mask (a plan's
    ``in_window``, for videos with several windows)."""
    inside = oracle[window] if isinstance(window, np.ndarray) else oracle[window[0]:window[1]]
    return {
        "mean": lambda: oracle.mean(0),
        "mean+max": lambda: np.concatenate([oracle.mean(0), oracle.max(0)]),
        "window mean": lambda: inside.mean(0),
        "window mean+max": lambda: np.concatenate([inside.mean(0), inside.max(0)]),
    }[summary]()


def _split(config: SynthConfig, split: str) -> tuple[list, np.ndarray]:
    """[(oracle (L,26), in_window (L,) bool)] and the labels (V,7) of a split's videos."""
    videos, labels = [], []
    for index in range(config.num_videos(split)):
        plan, _ = video_plan(config, split, index)
        videos.append((oracle_features(plan.aus, plan.va), plan.in_window))
        labels.append(plan.reactions)
    return videos, np.array(labels)


def ridge_baseline(config: SynthConfig = SynthConfig()) -> dict[str, np.ndarray]:
    """Test Pearson per reaction (7,) for every summary in SUMMARIES, ridge strength chosen
    on val. Uses the config's video counts; only labels are drawn, no pixels."""
    data = {split: _split(config, split) for split in ("train", "val", "test")}
    results = {}
    for summary in SUMMARIES:
        x = {split: np.array([summarise(o, w, summary) for o, w in videos])
             for split, (videos, _) in data.items()}
        y = {split: labels for split, (_, labels) in data.items()}
        best = max(RIDGE_STRENGTHS, key=lambda strength: pearson(
            ridge_fit(x["train"], y["train"], strength)(x["val"]), y["val"]).mean())
        results[summary] = pearson(ridge_fit(x["train"], y["train"], best)(x["test"]), y["test"])
    return results


def print_baseline(config: SynthConfig, train_videos: int | None = None) -> None:
    """Print the table of ``ridge_baseline`` (``train_videos``: override the train count;
    val and test then get a third of it each)."""
    if train_videos is not None:
        config = replace(config, train_videos=train_videos, eval_videos=max(10, train_videos // 3))
    results = ridge_baseline(config)
    print(f"ridge on oracle features, {config.train_videos} train / {config.eval_videos} val / "
          f"{config.eval_videos} test {config.video_mode!r} videos of {config.min_frames}-"
          f"{config.max_frames} frames at {config.fps:g} fps; test Pearson:")
    print(f"{'summary':18s} {'mean':>6s}  " + " ".join(f"{r[:8]:>8s}" for r in REACTIONS))
    for summary, values in results.items():
        print(f"{summary:18s} {values.mean():6.3f}  " + " ".join(f"{v:8.3f}" for v in values))
