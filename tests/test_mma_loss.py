"""MMA's multi-task loss (docs/design.md, section 4): partial labels, CCC for VA, the distribution-
matching term built on the Du et al. table, and where each term's gradient goes."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min.affect import AUS, EXPRESSIONS, au_relation_matrix
from mmarnn_min.losses import au_soft_targets, ccc, mma_loss
from mmarnn_min.mma import MMA, MMAConfig

R = au_relation_matrix()

# Du et al. 2014's table, typed out again from docs/design.md: expression -> every AU it relates to
# (prototypical and observational alike).
DU_TABLE_TYPED = {
    "neutral": [],
    "anger": [4, 7, 24, 10, 17, 23],
    "disgust": [9, 10, 17, 4, 24],
    "fear": [1, 4, 20, 25, 2, 5, 26],
    "happiness": [12, 25, 6],
    "sadness": [4, 15, 1, 6, 11, 17],
    "surprise": [1, 2, 25, 26, 5],
}


def test_relation_matrix_matches_design_cell_by_cell():
    assert AUS == (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 15, 17, 20, 23, 24, 25, 26)
    assert R.shape == (7, 17)
    for e, expression in enumerate(EXPRESSIONS):
        for a, au in enumerate(AUS):
            assert R[e, a] == (1.0 if au in DU_TABLE_TYPED[expression] else 0.0), (expression, au)


def one_hot(expression: str) -> torch.Tensor:
    return F.one_hot(torch.tensor([EXPRESSIONS.index(expression)]), 7).float()


def active(q: torch.Tensor) -> dict[int, float]:
    return {au: float(value) for au, value in zip(AUS, q[0]) if value > 0}


def test_soft_targets_on_hand_made_examples():
    assert active(au_soft_targets(one_hot("happiness"), R)) == {6: 1.0, 12: 1.0, 25: 1.0}
    assert active(au_soft_targets(one_hot("neutral"), R)) == {}
    half = 0.5 * one_hot("happiness") + 0.5 * one_hot("surprise")
    assert active(au_soft_targets(half, R)) == {1: 0.5, 2: 0.5, 5: 0.5, 6: 0.5, 12: 0.5, 25: 1.0, 26: 0.5}
    p = torch.softmax(torch.randn(50, 7), dim=1)
    q = au_soft_targets(p, R)
    assert ((q >= 0) & (q <= 1 + 1e-6)).all()


def random_batch(n: int, seed: int = 0, labelled: float = 0.5):
    """MMA-shaped outputs (leaf tensors) and labels in which each label is present with
    probability ``labelled``, independently per sample (and per AU)."""
    gen = torch.Generator().manual_seed(seed)
    va = (torch.rand(n, 2, generator=gen) * 2 - 1).requires_grad_()
    expression = torch.randn(n, 7, generator=gen).requires_grad_()
    aus = torch.randn(n, 17, generator=gen).requires_grad_()
    va_labels = torch.rand(n, 2, generator=gen) * 2 - 1
    va_labels[torch.rand(n, generator=gen) > labelled] = math.nan
    expression_labels = torch.randint(0, 7, (n,), generator=gen)
    expression_labels[torch.rand(n, generator=gen) > labelled] = -1
    au_labels = (torch.rand(n, 17, generator=gen) < 0.3).float()
    au_labels[torch.rand(n, 17, generator=gen) > labelled] = math.nan
    return (va, expression, aus), (va_labels, expression_labels, au_labels)


def test_each_term_is_its_textbook_formula_over_the_labelled_samples():
    outputs, labels = random_batch(40, seed=1)
    va, expression, aus = outputs
    va_labels, expression_labels, au_labels = labels
    total, parts = mma_loss(outputs, labels, R, dm_weight=0.3)

    v = ~torch.isnan(va_labels[:, 0])
    ccc_v, ccc_a = ccc(va[v].detach(), va_labels[v]).tolist()
    assert parts["va"] == pytest.approx(1 - (ccc_v + ccc_a) / 2, abs=1e-6)

    e = expression_labels >= 0
    log_p = expression.detach().log_softmax(dim=1)[e]
    assert parts["expr"] == pytest.approx(-log_p[torch.arange(int(e.sum())), expression_labels[e]].mean().item(), abs=1e-6)

    present = ~torch.isnan(au_labels)
    s, y = aus.detach().sigmoid()[present], au_labels[present]
    assert parts["au"] == pytest.approx(-(y * s.log() + (1 - y) * (1 - s).log()).mean().item(), abs=1e-5)

    q = expression.detach().softmax(dim=1) @ R                                 # every sample
    s = aus.detach().sigmoid()
    assert parts["dm"] == pytest.approx(-(q * s.log() + (1 - q) * (1 - s).log()).mean().item(), abs=1e-5)

    expected = parts["va"] + parts["expr"] + parts["au"] + 0.3 * parts["dm"]
    assert total.item() == pytest.approx(expected, abs=1e-5) and parts["total"] == pytest.approx(expected, abs=1e-5)


def test_a_term_without_labels_is_zero_not_nan():
    outputs, (va_labels, expression_labels, au_labels) = random_batch(6)
    nothing = (torch.full_like(va_labels, math.nan), torch.full_like(expression_labels, -1),
               torch.full_like(au_labels, math.nan))
    total, parts = mma_loss(outputs, nothing, R, dm_weight=0.0)
    assert parts == {"va": 0.0, "expr": 0.0, "au": 0.0, "dm": pytest.approx(parts["dm"]), "total": 0.0}
    total.backward()                                                       # still a graph, all-zero gradients
    assert all(torch.equal(t.grad, torch.zeros_like(t)) for t in outputs)
    one_va = nothing[0].clone()
    one_va[2] = 0.5                                                        # CCC needs 2 samples
    assert mma_loss(outputs, (one_va, *nothing[1:]), R, dm_weight=0.0)[1]["va"] == 0.0


def grads(term: str, outputs, labels, dm_weight: float = 0.0) -> list[bool]:
    """Which of (va, expression, aus) outputs get a nonzero gradient from one term."""
    outputs = tuple(t.detach().requires_grad_() for t in outputs)
    va_labels, expression_labels, au_labels = labels
    keep = {"va": (va_labels, torch.full_like(expression_labels, -1), torch.full_like(au_labels, math.nan)),
            "expr": (torch.full_like(va_labels, math.nan), expression_labels, torch.full_like(au_labels, math.nan)),
            "au": (torch.full_like(va_labels, math.nan), torch.full_like(expression_labels, -1), au_labels)}
    total, _ = mma_loss(outputs, keep[term], R, dm_weight)
    total.backward()
    return [bool(t.grad.abs().sum() > 0) for t in outputs]


def test_each_head_learns_only_from_its_own_labels():
    outputs, labels = random_batch(32, seed=2, labelled=1.0)
    assert grads("va", outputs, labels) == [True, False, False]
    assert grads("expr", outputs, labels) == [False, True, False]
    assert grads("au", outputs, labels) == [False, False, True]


def test_through_the_network_each_head_moves_only_with_its_labels():
    """In MMA itself: a batch with only expression labels (and no L_DM) gives the VA and AU
    heads exactly zero gradient; the shared trunk is trained by every task."""
    torch.manual_seed(0)
    model = MMA(MMAConfig.tiny())
    outputs, (va_labels, expression_labels, au_labels) = random_batch(8, labelled=1.0)
    only_expression = (torch.full_like(va_labels, math.nan), expression_labels, torch.full_like(au_labels, math.nan))
    mma_loss(model(torch.rand(8, 3, 16, 16)), only_expression, R, dm_weight=0.0)[0].backward()
    assert model.va_head.weight.grad.abs().sum() == 0 and model.au_head.weight.grad.abs().sum() == 0
    assert model.expression_head.weight.grad.abs().sum() > 0 and model.embedding[0].weight.grad.abs().sum() > 0


def test_distribution_matching_couples_expression_and_aus_both_ways():
    """L_DM reaches the AU head and, through the soft targets (not detached), the expression
    head, for samples without any label; never the VA head."""
    outputs, labels = random_batch(16, seed=3, labelled=0.0)
    assert grads("au", outputs, labels, dm_weight=1.0) == [False, True, True]
    # the AU logits are pulled towards q: certain happiness with AU 12 predicted off
    expression = 20 * one_hot("happiness")
    aus = torch.full((1, 17), -3.0, requires_grad=True)
    no_labels = (torch.full((1, 2), math.nan), torch.tensor([-1]), torch.full((1, 17), math.nan))
    mma_loss((torch.zeros(1, 2), expression, aus), no_labels, R, dm_weight=1.0)[0].backward()
    assert aus.grad[0, AUS.index(12)] < 0 and aus.grad[0, AUS.index(4)] > 0  # descent raises AU 12, lowers AU 4


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**16), st.floats(0.2, 1.0), st.integers(1, 10))
def test_unlabelled_samples_change_no_supervised_term(seed, labelled, extra):
    """Each supervised term is a mean over the labelled samples only: appending samples that
    carry no label leaves L_VA, L_EXPR and L_AU and their gradients as they were; so does
    shuffling the batch."""
    outputs, labels = random_batch(12, seed=seed, labelled=labelled)
    more_outputs, more_labels = random_batch(extra, seed=seed + 1, labelled=0.0)
    supervised = lambda outputs, labels: mma_loss(outputs, labels, R, dm_weight=0.0)
    first, parts = supervised(outputs, labels)
    first_grads = torch.autograd.grad(first, outputs)

    order = torch.randperm(12 + extra, generator=torch.Generator().manual_seed(seed))
    joined = tuple(torch.cat([a.detach(), b.detach()])[order].requires_grad_() for a, b in zip(outputs, more_outputs))
    joined_labels = tuple(torch.cat([a, b])[order] for a, b in zip(labels, more_labels))
    second, second_parts = supervised(joined, joined_labels)
    for term in ("va", "expr", "au"):
        assert second_parts[term] == pytest.approx(parts[term], abs=1e-5)
    second_grads = torch.autograd.grad(second, joined)
    original = torch.argsort(order)[:12]                          # where the first 12 samples went
    for a, b in zip(first_grads, second_grads):
        torch.testing.assert_close(b[original], a, atol=1e-6, rtol=1e-4)
        assert (b[torch.argsort(order)[12:]] == 0).all()          # the unlabelled ones: none
