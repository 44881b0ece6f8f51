"""MRNN, the paper's model: a video's output depends on its own real frames only; lengths 1..T;
clear errors. (Its ablation variants: test_mrnn_variants.py.)"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min.mrnn import MRNN, MRNNConfig
from mmarnn_min.mrnn_variants import MRNNVariant, build_mrnn

SETTINGS = settings(max_examples=20, deadline=None)
SMALL = dict(input_size=5, hidden_size=6, routed_size=4, num_reactions=3, max_frames=9)


def small_model(seed: int = 0, variant: MRNNVariant | None = None, **overrides) -> MRNN:
    torch.manual_seed(seed)
    return build_mrnn(MRNNConfig(**(SMALL | overrides)), variant).double()


@st.composite
def batches(draw, max_frames=9):
    """(z (B, T', 5) float64, lengths (B,)) with T' >= max(lengths), 1 <= lengths <= max_frames."""
    batch = draw(st.integers(1, 5))
    lengths = torch.tensor(draw(st.lists(st.integers(1, max_frames), min_size=batch, max_size=batch)))
    frames = int(lengths.max()) + draw(st.integers(0, 3))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return torch.randn(batch, frames, 5, generator=gen, dtype=torch.float64), lengths


def test_paper_sizes_and_output_range():
    config = MRNNConfig()
    assert (config.input_size, config.hidden_size, config.num_layers, config.routed_size, config.num_reactions) == (26, 128, 1, 32, 7)
    model = MRNN(MRNNConfig(max_frames=480))
    assert model.routing_weight.shape == (32, 480 * 128)
    z, lengths = torch.randn(3, 20, 26), torch.tensor([20, 1, 7])
    out = model(z, lengths)
    assert out.shape == (3, 7) and ((0 <= out) & (out <= 1)).all()


@SETTINGS
@given(batches(), st.sampled_from([0.0, 1e6, -3.0, math.nan, math.inf]), st.integers(0, 2**16))
def test_padding_never_changes_the_output_nor_receives_gradient(batch, fill, seed):
    z, lengths = batch
    model = small_model()
    is_padding = torch.arange(z.shape[1])[None, :] >= lengths[:, None]            # (B, T')
    noisy = z.clone()
    noisy[is_padding] = torch.randn(int(is_padding.sum()), 5, generator=torch.Generator().manual_seed(seed), dtype=z.dtype)
    filled = z.clone()
    filled[is_padding] = fill
    reference = model(z, lengths)
    assert torch.equal(model(noisy, lengths), reference)
    filled.requires_grad_()
    out = model(filled, lengths)
    assert torch.equal(out, reference)
    out.sum().backward()
    assert torch.isfinite(filled.grad).all() and (filled.grad[is_padding] == 0).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@SETTINGS
@given(batches(), st.sampled_from(["gru", "torch_gru", "lstm"]))
def test_a_video_does_not_depend_on_the_rest_of_the_batch(batch, rnn):
    z, lengths = batch
    model = small_model(variant=MRNNVariant(rnn=rnn))
    together = model(z, lengths)
    for b in range(z.shape[0]):
        alone = model(z[b : b + 1, : lengths[b]], lengths[b : b + 1])
        torch.testing.assert_close(alone[0], together[b], rtol=1e-12, atol=1e-12)
    order = torch.randperm(z.shape[0])
    torch.testing.assert_close(model(z[order], lengths[order]), together[order], rtol=1e-12, atol=1e-12)


def test_every_length_from_one_to_T_and_only_those_frames_count():
    model = small_model()
    z = torch.randn(9, 9, 5, dtype=torch.float64)
    lengths = torch.arange(1, 10)
    out = model(z, lengths)
    for b in range(9):
        cut = z[b : b + 1].clone()
        cut[:, lengths[b]:] = 0
        torch.testing.assert_close(model(cut, lengths[b : b + 1])[0], out[b], rtol=1e-12, atol=1e-12)
    # frames past a video's length: the routed weight's columns for them get exactly zero gradient
    model(z[:, :4], torch.full((9,), 4)).sum().backward()
    assert (model.routing_weight.grad[:, 4 * 6 :] == 0).all() and (model.routing_weight.grad[:, : 4 * 6] != 0).any()


def test_hand_written_and_torch_gru_are_interchangeable():
    ours, theirs = small_model(), small_model(variant=MRNNVariant(rnn="torch_gru"))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    z, lengths = torch.randn(4, 9, 5, dtype=torch.float64), torch.tensor([9, 2, 5, 1])
    torch.testing.assert_close(ours(z, lengths), theirs(z, lengths), rtol=1e-12, atol=1e-12)
    ours.load_state_dict(theirs.state_dict())


def test_sigmoid_switch():
    z, lengths = torch.randn(4, 9, 5, dtype=torch.float64), torch.tensor([9, 2, 5, 1])
    raw = small_model(sigmoid=False)(z, lengths)
    torch.testing.assert_close(torch.sigmoid(raw), small_model(sigmoid=True)(z, lengths))


def test_clear_errors():
    model = small_model()
    z = torch.randn(2, 12, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="max_frames = 9"):
        model(z, torch.tensor([10, 3]))
    with pytest.raises(ValueError, match=r"\[1, 6\]"):
        model(z[:, :6], torch.tensor([7, 3]))
    with pytest.raises(ValueError, match=r"\[1, 12\]"):
        model(z, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\(B, T, 5\)"):
        model(torch.randn(2, 9, 4, dtype=torch.float64), torch.tensor([9, 3]))
    with pytest.raises(ValueError, match="integers"):
        model(z, torch.tensor([9.0, 3.0]))
    with pytest.raises(ValueError, match="no video"):
        model(z[:0], torch.tensor([], dtype=torch.int64))
    with pytest.raises(ValueError, match=">= 1"):
        MRNNConfig(hidden_size=0)


def test_the_paper_forward_is_the_composition_of_its_parts():
    """GRU -> masked routing -> FC -> ReLU -> FC -> sigmoid, written out with the parts."""
    from mmarnn_min.routing import masked_routing

    model = small_model()
    z, lengths = torch.randn(3, 9, 5, dtype=torch.float64), torch.tensor([9, 4, 1])
    h, _ = model.rnn(torch.where(torch.arange(9)[None, :, None] < lengths[:, None, None], z, 0.0))
    routed = masked_routing(h, lengths, model.routing_weight, model.routing_bias, backend="fallback")
    expected = torch.sigmoid(model.head(torch.relu(routed)))
    torch.testing.assert_close(model(z, lengths), expected, rtol=1e-12, atol=1e-12)
    assert type(small_model()) is MRNN                          # the default variant is the paper's model
