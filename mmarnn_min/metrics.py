"""Evaluation metrics (NumPy, float64), ABAW / MuSe conventions (docs/design.md, section 4):
Pearson per reaction and its mean (the paper's number, section 4), CCC for valence and arousal,
macro F1 over the 7 expressions and macro F1 over the AUs at a threshold of 0.5.

Inputs may be NumPy arrays, PyTorch tensors or nested lists. Unlike the losses in
``mmarnn_min.losses`` these carry no eps: they are the textbook formulas.
"""

from __future__ import annotations

import math

import numpy as np


def _as_float64(x) -> np.ndarray:
    if hasattr(x, "detach"):                 # a torch.Tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _paired(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, y = _as_float64(pred), _as_float64(target)
    if p.shape != y.shape or p.ndim not in (1, 2) or p.shape[0] < 2:
        raise ValueError(f"pred and target must both be (N,) or (N, C) with N >= 2, got {p.shape} and {y.shape}")
    return p, y


def pearson(pred, target) -> np.ndarray:
    """Pearson's r over dimension 0: (N,) -> 0-d array, (N, C) -> (C,).

        r = sum (p - mean p)(y - mean y) / sqrt(sum (p - mean p)^2 * sum (y - mean y)^2)

    r is undefined when a column is constant (or holds a NaN): it is then NaN, never a number
    that could pass for a result, and so is any mean over reactions that includes it.
    """
    p, y = _paired(pred, target)
    defined = _varies(p) & _varies(y)                              # a constant column: no r
    p, y = p - p.mean(axis=0), y - y.mean(axis=0)
    numerator = (p * y).sum(axis=0)
    denominator = np.sqrt((p * p).sum(axis=0) * (y * y).sum(axis=0))
    defined &= denominator > 0
    return np.where(defined, numerator / np.where(defined, denominator, 1.0), np.nan)


def _varies(x: np.ndarray) -> np.ndarray:
    """Per column: not every value equal (compared as given: centring a constant column can
    leave rounding residue of 1e-17 that would pass for variance)."""
    return x.max(axis=0) != x.min(axis=0)


def ccc(pred, target) -> np.ndarray:
    """Concordance correlation coefficient over dimension 0, population statistics:
    2 cov / (var_p + var_y + (mean_p - mean_y)^2); (N,) -> 0-d array, (N, C) -> (C,). NaN where
    undefined: both columns constant and equal (0 / 0)."""
    p, y = _paired(pred, target)
    covariance = ((p - p.mean(axis=0)) * (y - y.mean(axis=0))).mean(axis=0)
    denominator = p.var(axis=0) + y.var(axis=0) + (p.mean(axis=0) - y.mean(axis=0)) ** 2
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, 2 * covariance / safe, np.nan)


def _f1_per_class(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """F1 = 2 TP / (2 TP + FP + FN) per column of boolean (N, K) arrays; 0 where the class is
    neither present nor predicted (scikit-learn's ``zero_division=0``)."""
    true_positive = (predicted & actual).sum(axis=0)
    wrong = (predicted ^ actual).sum(axis=0)                       # FP + FN
    denominator = 2 * true_positive + wrong
    return np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0)


def expression_f1(pred_labels, true_labels, num_classes: int = 7) -> float:
    """Macro F1 over ``num_classes`` classes from integer labels (N,) (the argmax of the logits),
    every class counted (ABAW's expression metric)."""
    predicted, actual = np.asarray(pred_labels), np.asarray(true_labels)
    classes = np.arange(num_classes)
    return float(_f1_per_class(predicted[:, None] == classes, actual[:, None] == classes).mean())


def au_f1(pred_probs, true_labels, threshold: float = 0.5) -> float:
    """Macro F1 over the AU columns: pred_probs (N, K) thresholded at ``threshold`` (an AU is
    active when its probability is >= threshold), true_labels (N, K) in {0, 1}. A NaN label
    means "not coded" (real data sets code different AUs): each AU's F1 counts only the
    samples that code it, and the mean skips AUs no sample codes."""
    probs, labels = _as_float64(pred_probs), _as_float64(true_labels)
    coded = ~np.isnan(labels)                                      # (N, K)
    predicted = (probs >= threshold) & coded
    actual = (np.nan_to_num(labels) > 0.5) & coded
    return float(_f1_per_class(predicted, actual)[coded.any(axis=0)].mean())


def improves(candidate: float, best: float) -> bool:
    """Whether a validation score ``candidate`` beats ``best``: a defined score beats an
    undefined (NaN) one and any lower one; an undefined one beats nothing."""
    return math.isfinite(candidate) and (not math.isfinite(best) or candidate > best)
