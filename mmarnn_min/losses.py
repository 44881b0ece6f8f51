"""Training losses (differentiable, PyTorch): MRNN's Pearson loss (paper, section 3.2), the
concordance correlation coefficient, and MMA's multi-task loss with partial labels and the
distribution-matching term built from the Du et al. table (section 3.1; the definitions in docs/design.md, section 4).

Both are computed per column over the batch (dimension 0) with *population* statistics
(divide by B, not B - 1): the Pearson ratio is the same either way, and CCC follows the
ABAW convention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=0)


def _population_std(centred: torch.Tensor) -> torch.Tensor:
    """sqrt(mean(centred^2)) per column, written as a norm: the gradient of ``sqrt`` at 0 is
    infinite (0 * inf = NaN for a constant column), the norm's is defined as 0 there."""
    return torch.linalg.vector_norm(centred, dim=0) / centred.shape[0] ** 0.5


def pearson_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The Pearson loss, for P = pred and Y = target of shape (B, C):

        loss = 1 - (1/C) sum_c cov(P_c, Y_c) / (sigma(P_c) sigma(Y_c) + eps)

    0 for a perfect positive linear relation in every column, 1 for none, 2 for a perfect
    negative one. Invariant to a shift and to a positive scale of any column of P, so the
    predictions need not be calibrated. A constant column contributes 0 with a finite gradient
    (large, about (Y - mean Y) / (B eps): it points towards varying the column). Needs B >= 2.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"pearson_loss: pred and target must both be (B, C), got {tuple(pred.shape)} and {tuple(target.shape)}")
    p, y = _centre(pred), _centre(target)                          # (B, C)
    covariance = (p * y).mean(dim=0)                               # (C,)
    correlation = covariance / (_population_std(p) * _population_std(y) + eps)
    return 1 - correlation.mean()


def ccc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Concordance correlation coefficient over dimension 0: (B,) -> scalar, (B, C) -> (C,).

        CCC = 2 cov(P, Y) / (var(P) + var(Y) + (mean P - mean Y)^2 + eps)

    1 only when P equals Y; it penalises scale and shift, unlike Pearson. ``eps`` keeps two
    equal constant columns at 0 instead of 0 / 0.
    """
    if pred.shape != target.shape or pred.dim() not in (1, 2):
        raise ValueError(f"ccc: pred and target must both be (B,) or (B, C), got {tuple(pred.shape)} and {tuple(target.shape)}")
    p, y = _centre(pred), _centre(target)
    covariance = (p * y).mean(dim=0)
    mean_gap = pred.mean(dim=0) - target.mean(dim=0)
    return 2 * covariance / (p.pow(2).mean(dim=0) + y.pow(2).mean(dim=0) + mean_gap.pow(2) + eps)


# ---- MMA's multi-task loss (paper section 3.1) ---------------------------------------------

def au_soft_targets(expression_probs: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
    """The AU pseudo-labels of distribution matching: q(au) = sum_e p(e) R[e, au], i.e.
    (N, 7) expression probabilities @ R (7, 17) -> (N, 17). R is 0/1 and p sums to 1, so q
    lies in [0, 1]: the probability that the AU belongs to the expression shown."""
    return expression_probs @ relation


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is True; 0 (still part of the graph) where none is.
    ``values`` must be finite everywhere: masked-out entries get exactly zero gradient."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def mma_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    labels: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    relation: torch.Tensor,
    dm_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``L = L_VA + L_EXPR + L_AU + dm_weight * L_DM``.

    outputs: (va (N, 2) in [-1, 1], expression logits (N, 7), AU logits (N, 17)), as MMA
             returns them.
    labels:  (va (N, 2) float, NaN where absent; expression (N,) int, -1 where absent;
             aus (N, 17) in {0, 1}, NaN where absent). Any mix per sample, and per AU.
    relation: R (7, 17) of ``mmarnn_min.affect.au_relation_matrix()``.

    Each supervised term is averaged over the labels present only; with none it is 0 (not
    NaN). L_VA = mean over valence and arousal of (1 - CCC) over the samples labelled with
    that dimension; CCC needs two samples, so a dimension with fewer contributes 0.
    L_DM = BCE between the AU probabilities and the soft targets q = softmax(expression) @ R,
    over every sample and AU, labelled or not. q is *not* detached: the term trains the AU
    head towards the predicted expression's AUs and the expression head towards the
    expressions whose AUs are predicted, so unlabelled expressions learn from AU evidence
    and the other way round (Kollias et al., distribution matching).

    Returns the total (a scalar with a graph) and its parts as floats (for logging).
    """
    va, expression_logits, au_logits = outputs
    va_labels, expression_labels, au_labels = labels

    va_terms = []
    for dimension in range(va.shape[1]):                     # valence, arousal
        labelled = ~torch.isnan(va_labels[:, dimension])     # (N,)
        if int(labelled.sum()) >= 2:
            va_terms.append(1 - ccc(va[labelled, dimension], va_labels[labelled, dimension]))
    va_loss = torch.stack(va_terms).mean() if va_terms else va.sum() * 0

    has_expression = expression_labels >= 0                                       # (N,)
    cross_entropy = F.cross_entropy(expression_logits, expression_labels.clamp(min=0), reduction="none")
    expression_loss = _masked_mean(cross_entropy, has_expression)

    has_au = ~torch.isnan(au_labels)                                               # (N, 17)
    au_bce = F.binary_cross_entropy_with_logits(au_logits, au_labels.nan_to_num(0.0), reduction="none")
    au_loss = _masked_mean(au_bce, has_au)

    soft_targets = au_soft_targets(expression_logits.softmax(dim=1), relation)    # (N, 17)
    dm_loss = F.binary_cross_entropy_with_logits(au_logits, soft_targets)

    total = va_loss + expression_loss + au_loss + dm_weight * dm_loss
    parts = {"va": va_loss.item(), "expr": expression_loss.item(), "au": au_loss.item(),
             "dm": dm_loss.item(), "total": total.item()}
    return total, parts
