"""The Pearson loss (docs/design.md, section 4) and the differentiable CCC."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mmarnn_min.losses import ccc, pearson_loss

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def paired(draw):
    """(pred, target), both (B, C) float64: random normal columns at a drawn scale and offset,
    sometimes correlated, sometimes with repeated rows."""
    rows, columns = draw(st.integers(3, 12)), draw(st.integers(1, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    target = rng.normal(size=(rows, columns)) * draw(st.floats(0.1, 10)) + draw(st.floats(-10, 10))
    pred = draw(st.floats(-1, 1)) * target + rng.normal(size=(rows, columns)) * draw(st.floats(0.1, 10))
    if draw(st.booleans()):
        pred[-1], target[-1] = pred[0], target[0]
    return torch.from_numpy(pred), torch.from_numpy(target)


def well_spread(x: torch.Tensor) -> bool:
    """Every column varies clearly, so that eps is negligible against sigma_P sigma_Y."""
    return bool((x.std(dim=0) > 1e-2).all())


def textbook_loss(pred: torch.Tensor, target: torch.Tensor) -> float:
    correlations = [np.corrcoef(pred[:, c].numpy(), target[:, c].numpy())[0, 1] for c in range(pred.shape[1])]
    return 1 - float(np.mean(correlations))


@SETTINGS
@given(paired())
def test_equals_the_textbook_formula(pair):
    pred, target = pair
    assume(well_spread(pred) and well_spread(target))
    assert pearson_loss(pred, target, eps=0).item() == pytest.approx(textbook_loss(pred, target), abs=1e-9)
    # the default eps moves each column's r by at most eps / (sigma_P sigma_Y)
    sigmas = pred.std(dim=0, unbiased=False) * target.std(dim=0, unbiased=False)
    bound = (1e-8 / sigmas).max().item()
    assert abs(pearson_loss(pred, target).item() - textbook_loss(pred, target)) <= bound + 1e-12


@SETTINGS
@given(paired(), st.floats(-100, 100), st.floats(1e-2, 1e2), st.integers(0, 6))
def test_invariant_to_shift_and_positive_scale_of_a_column(pair, shift, scale, column):
    pred, target = pair
    assume(well_spread(pred) and well_spread(target))
    column = column % pred.shape[1]
    moved = pred.clone()
    moved[:, column] = moved[:, column] * scale + shift
    # exact for the formula (eps = 0); the default eps moves it by at most eps / (sigma_P sigma_Y)
    assert pearson_loss(moved, target, eps=0).item() == pytest.approx(pearson_loss(pred, target, eps=0).item(), abs=1e-9)


@SETTINGS
@given(paired(), st.floats(-5, 5), st.integers(0, 6))
def test_constant_column_gives_finite_gradient(pair, constant, column):
    pred, target = pair
    column = column % pred.shape[1]
    pred = pred.clone()
    pred[:, column] = constant
    pred.requires_grad_()
    loss = pearson_loss(pred, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_extremes_and_gradient_direction():
    target = torch.randn(16, 7, dtype=torch.float64)
    assert pearson_loss(2 * target + 1, target).item() == pytest.approx(0, abs=1e-7)
    assert pearson_loss(-target, target).item() == pytest.approx(2, abs=1e-7)
    pred = torch.randn(16, 7, dtype=torch.float64, requires_grad=True)
    pearson_loss(pred, target).backward()
    with torch.no_grad():
        assert pearson_loss(pred - 1e-3 * pred.grad, target) < pearson_loss(pred, target)
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        pearson_loss(torch.zeros(4), torch.zeros(4))


@SETTINGS
@given(paired())
def test_ccc_equals_textbook_and_is_one_only_on_identity(pair):
    pred, target = pair
    assume(well_spread(pred) and well_spread(target))
    p, y = pred.numpy(), target.numpy()
    expected = 2 * ((p - p.mean(0)) * (y - y.mean(0))).mean(0) / (p.var(0) + y.var(0) + (p.mean(0) - y.mean(0)) ** 2)
    np.testing.assert_allclose(ccc(pred, target, eps=0).numpy(), expected, atol=1e-9)
    np.testing.assert_allclose(ccc(target, target, eps=0).numpy(), 1.0, atol=1e-12)
    assert ccc(pred[:, 0], target[:, 0]).shape == ()
    assert (ccc(target + 1, target) < 1).all()
