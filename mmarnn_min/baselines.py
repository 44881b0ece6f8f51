"""A baseline that any video model of this task should beat: summarise each video's per-frame
affect vectors (L, 26) by their mean, maximum and standard deviation over time, and map those
78 numbers to the 7 reaction intensities by ridge regression (the ridge strength picked on the
validation split by the mean Pearson). It sees every frame of every video, whatever its length,
but not the order of the frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mmarnn_min.metrics import pearson

RIDGE_STRENGTHS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def ridge_fit(x: np.ndarray, y: np.ndarray, strength: float) -> Callable[[np.ndarray], np.ndarray]:
    """Standardise x (N, F), fit y (N, C) by ridge least squares (the intercept unpenalised);
    returns the predict function."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    design = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])  # (N, F+1), last: intercept
    penalty = strength * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    weights = np.linalg.solve(design.T @ design + penalty, design.T @ y)  # (F+1, C)
    return lambda x_new: np.hstack([(x_new - mean) / scale, np.ones((len(x_new), 1))]) @ weights


def video_summary(z: np.ndarray) -> np.ndarray:
    """One video's (L, D) per-frame vectors -> (3 D,): mean, maximum and standard deviation over time."""
    z = np.asarray(z, dtype=np.float64)
    return np.concatenate([z.mean(0), z.max(0), z.std(0)])


def fit_summary_ridge(train: Sequence[np.ndarray], train_labels: np.ndarray, val: Sequence[np.ndarray],
                      val_labels: np.ndarray) -> tuple[Callable[[Sequence[np.ndarray]], np.ndarray], float]:
    """The summary + ridge model fitted on the training videos, its strength chosen on the
    validation videos: (predict(videos) -> (N, C), the strength)."""
    x_train = np.stack([video_summary(z) for z in train])
    x_val = np.stack([video_summary(z) for z in val])
    scores = {strength: np.nanmean(pearson(ridge_fit(x_train, train_labels, strength)(x_val), val_labels))
              for strength in RIDGE_STRENGTHS}
    best = max(RIDGE_STRENGTHS, key=lambda strength: -np.inf if np.isnan(scores[strength]) else scores[strength])
    model = ridge_fit(x_train, train_labels, best)
    return (lambda videos: model(np.stack([video_summary(z) for z in videos]))), best
