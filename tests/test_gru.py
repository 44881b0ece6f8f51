"""The hand-written GRU equals torch.nn.GRU: state dicts, outputs, h_n and every gradient."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min.gru import GRU

SETTINGS = settings(max_examples=25, deadline=None)


def twin_grus(input_size, hidden_size, num_layers, seed):
    """Our GRU and torch's (batch_first) with the same float64 parameters."""
    torch.manual_seed(seed)
    reference = torch.nn.GRU(input_size, hidden_size, num_layers, batch_first=True).double()
    ours = GRU(input_size, hidden_size, num_layers).double()
    ours.load_state_dict(reference.state_dict())
    return ours, reference


@pytest.mark.parametrize("num_layers", [1, 2])
def test_state_dicts_load_both_ways(num_layers):
    ours, reference = GRU(5, 7, num_layers), torch.nn.GRU(5, 7, num_layers, batch_first=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    ours.load_state_dict(reference.state_dict())           # torch -> ours (strict)
    for name, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value)
    fresh = GRU(5, 7, num_layers)
    reference.load_state_dict(fresh.state_dict())          # ours -> torch (strict)
    for name, value in fresh.state_dict().items():
        assert torch.equal(reference.state_dict()[name], value)


@SETTINGS
@given(
    batch=st.integers(1, 4),
    frames=st.integers(1, 7),
    input_size=st.integers(1, 5),
    hidden_size=st.integers(1, 6),
    num_layers=st.integers(1, 2),
    with_h0=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_torch_outputs_and_all_gradients(batch, frames, input_size, hidden_size, num_layers, with_h0, seed):
    ours, reference = twin_grus(input_size, hidden_size, num_layers, seed)
    x = torch.randn(batch, frames, input_size, dtype=torch.float64)
    h0 = torch.randn(num_layers, batch, hidden_size, dtype=torch.float64) if with_h0 else None
    grad_out = torch.randn(batch, frames, hidden_size, dtype=torch.float64)
    grad_hn = torch.randn(num_layers, batch, hidden_size, dtype=torch.float64)

    results = []
    for gru in (ours, reference):
        x_ = x.clone().requires_grad_()
        h0_ = None if h0 is None else h0.clone().requires_grad_()
        out, h_n = gru(x_, h0_)
        ((out * grad_out).sum() + (h_n * grad_hn).sum()).backward()
        grads = {name: p.grad for name, p in gru.named_parameters()}
        grads["x"] = x_.grad
        if h0_ is not None:
            grads["h0"] = h0_.grad
        results.append((out, h_n, grads))

    (out, h_n, grads), (ref_out, ref_h_n, ref_grads) = results
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, ref_h_n, rtol=1e-12, atol=1e-12)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-10, atol=1e-12, msg=name)


@SETTINGS
@given(batch=st.integers(1, 4), frames=st.integers(2, 8), data=st.data())
def test_outputs_before_a_length_ignore_what_follows(batch, frames, data):
    length = data.draw(st.integers(1, frames - 1))
    torch.manual_seed(data.draw(st.integers(0, 2**16)))
    gru = GRU(3, 4).double()
    x = torch.randn(batch, frames, 3, dtype=torch.float64)
    changed = x.clone()
    changed[:, length:] = torch.randn(batch, frames - length, 3, dtype=torch.float64) * 100
    assert torch.equal(gru(x)[0][:, :length], gru(changed)[0][:, :length])


def test_rejects_bad_shapes():
    gru = GRU(3, 4)
    with pytest.raises(ValueError, match=r"\(B, T, 3\)"):
        gru(torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="T >= 1"):
        gru(torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match="h0"):
        gru(torch.zeros(2, 5, 3), torch.zeros(2, 4))
