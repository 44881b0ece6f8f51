"""How good MMA is (paper section 3.1), with the metrics of the ABAW challenges: CCC of
valence and arousal, macro F1 over the 7 expressions (argmax), macro F1 over the AUs at 0.5,
each over the images that carry that label, and what guessing scores on the same images.
"""

from __future__ import annotations

import numpy as np
import torch

from mmarnn_min.affect import NUM_EXPRESSIONS
from mmarnn_min.data.synth import ImageSet
from mmarnn_min.metrics import au_f1, ccc, expression_f1
from mmarnn_min.mma import MMA, predict_features

TASKS: tuple[str, ...] = ("va", "expr", "au")
METRICS: dict[str, str] = {"va": "va_ccc_mean", "expr": "expr_f1", "au": "au_f1"}  # task -> its metric


def affect_metrics(z: np.ndarray, images: ImageSet) -> dict:
    """The ABAW metrics of per-image affect vectors z (N, 26) against ``images``' labels, each
    over the images that carry the label: CCC of valence and arousal and their mean, macro F1
    over the 7 expressions (argmax), macro F1 over the AUs at 0.5 (each AU over the images
    that code it)."""
    va_pred, expression_probs, au_probs = z[:, :2], z[:, 2:2 + NUM_EXPRESSIONS], z[:, 2 + NUM_EXPRESSIONS:]
    has_va = ~np.isnan(images.va).any(axis=1)
    has_expression = images.expression >= 0
    has_aus = ~np.isnan(images.aus).all(axis=1)                      # some AU coded (NaN: not coded)
    valence, arousal = ccc(va_pred[has_va], images.va[has_va])
    return {"va_ccc_mean": float(valence + arousal) / 2, "valence_ccc": float(valence), "arousal_ccc": float(arousal),
            "expr_f1": expression_f1(expression_probs[has_expression].argmax(axis=1), images.expression[has_expression]),
            "au_f1": au_f1(au_probs[has_aus], images.aus[has_aus])}


def chance_levels(images: ImageSet) -> dict:
    """What guessing scores on ``images``, for reading the metrics: VA CCC 0 (a prediction
    independent of the truth); expression F1 of a uniform random guess (class k: precision
    = its frequency b_k, recall 1/7); AU F1 of calling every AU present, the best guess that
    ignores the image (AU k: F1 = 2 b_k / (1 + b_k))."""
    expression = images.expression[images.expression >= 0]
    b = np.bincount(expression, minlength=NUM_EXPRESSIONS) / len(expression)
    r = 1 / NUM_EXPRESSIONS
    coded = ~np.isnan(images.aus).all(axis=0)                                 # AUs some image codes
    au_rate = np.nanmean(images.aus[:, coded], axis=0)
    return {"va_ccc_mean": 0.0, "expr_f1": float(np.mean(2 * b * r / (b + r))),
            "au_f1": float(np.mean(2 * au_rate / (1 + au_rate)))}


def evaluate(model: MMA, images: ImageSet, device: torch.device, tasks: tuple[str, ...] = TASKS) -> dict:
    """``affect_metrics`` of the model on ``images``, plus ``score``: the mean of the metrics of
    the trained ``tasks`` (what picks the best epoch)."""
    metrics = affect_metrics(predict_features(model, images.images, device=device), images)
    return metrics | {"score": float(np.mean([metrics[METRICS[task]] for task in tasks]))}


def describe(metrics: dict) -> str:
    return (f"VA CCC {metrics['va_ccc_mean']:.3f} (v {metrics['valence_ccc']:.3f}, a {metrics['arousal_ccc']:.3f})  "
            f"expr F1 {metrics['expr_f1']:.3f}  AU F1 {metrics['au_f1']:.3f}")
