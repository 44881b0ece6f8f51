"""Evaluation metrics against NumPy and textbook loops."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min.losses import pearson_loss
from mmarnn_min.metrics import au_f1, ccc, expression_f1, pearson

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def paired(draw):
    """(pred, target), both (N, C) float64, sometimes related, sometimes with a constant column."""
    rows, columns = draw(st.integers(3, 20)), draw(st.integers(1, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    target = rng.normal(size=(rows, columns)) * draw(st.floats(0.1, 10)) + draw(st.floats(-10, 10))
    pred = draw(st.floats(-1, 1)) * target + rng.normal(size=(rows, columns)) * draw(st.floats(0.1, 10))
    if draw(st.booleans()):
        pred[:, 0] = draw(st.integers(-50, 50)) / 10          # not subnormal: its squares must not vanish
    return pred, target


@SETTINGS
@given(paired())
def test_pearson_equals_numpy_corrcoef_and_the_loss(pair):
    pred, target = pair
    constant = pred.max(axis=0) == pred.min(axis=0)          # r undefined: NaN (corrcoef may give 1e-17)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.array([np.corrcoef(pred[:, c], target[:, c])[0, 1] for c in range(pred.shape[1])])
    expected[constant] = np.nan
    np.testing.assert_allclose(pearson(pred, target), expected, atol=1e-9)
    np.testing.assert_allclose(pearson(torch.from_numpy(pred), target), expected, atol=1e-9)
    loss = pearson_loss(torch.from_numpy(pred), torch.from_numpy(target), eps=1e-15).item()  # r = 0 on a constant column
    assert 1 - np.nan_to_num(pearson(pred, target)).mean() == pytest.approx(loss, abs=1e-9)


def test_pearson_and_ccc_shapes_and_degenerate_columns():
    y = np.linspace(0, 1, 10)
    assert pearson(y, 3 * y + 1).shape == () and pearson(y, 3 * y + 1) == pytest.approx(1)
    assert np.isnan(pearson(np.ones(10), y))                       # undefined: NaN, never a number
    assert ccc(y, y) == pytest.approx(1) and ccc(y, 3 * y + 1) < 0.5
    assert np.isnan(ccc(np.ones(4), np.ones(4)))
    with pytest.raises(ValueError, match="N >= 2"):
        pearson(np.ones(1), np.ones(1))


@SETTINGS
@given(paired())
def test_ccc_equals_textbook(pair):
    pred, target = pair
    for c in range(pred.shape[1]):
        p, y = pred[:, c], target[:, c]
        mp, my = sum(p) / len(p), sum(y) / len(y)
        vp = sum((a - mp) ** 2 for a in p) / len(p)
        vy = sum((b - my) ** 2 for b in y) / len(y)
        cov = sum((a - mp) * (b - my) for a, b in zip(p, y)) / len(p)
        denominator = vp + vy + (mp - my) ** 2
        expected = 2 * cov / denominator if denominator > 0 else 0.0
        assert ccc(pred, target)[c] == pytest.approx(expected, abs=1e-9)


def textbook_f1(predicted: list[bool], actual: list[bool]) -> float:
    tp = sum(p and a for p, a in zip(predicted, actual))
    fp = sum(p and not a for p, a in zip(predicted, actual))
    fn = sum(a and not p for p, a in zip(predicted, actual))
    return 0.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=30))
def test_expression_f1_is_the_macro_mean_of_per_class_f1(pairs):
    predicted, actual = zip(*pairs)
    expected = np.mean([textbook_f1([p == k for p in predicted], [a == k for a in actual]) for k in range(7)])
    assert expression_f1(predicted, actual) == pytest.approx(expected)


@SETTINGS
@given(st.integers(1, 20), st.integers(1, 17), st.integers(0, 2**16))
def test_au_f1_thresholds_at_one_half(rows, columns, seed):
    rng = np.random.default_rng(seed)
    probs, labels = rng.random((rows, columns)), rng.integers(0, 2, (rows, columns))
    expected = np.mean([
        textbook_f1([p >= 0.5 for p in probs[:, k]], [bool(a) for a in labels[:, k]]) for k in range(columns)
    ])
    assert au_f1(probs, labels) == pytest.approx(expected)
