"""The MRNN ablation variants (mmarnn_min.mrnn_variants): other RNNs, subsets of z, and the
sequence strategies without the mask."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min.mrnn import MRNNConfig
from mmarnn_min.mrnn_variants import (
    AblatedMRNN,
    MRNNVariant,
    build_mrnn,
    fixed_length,
    variant_of,
)

SMALL = dict(input_size=5, hidden_size=6, routed_size=4, num_reactions=3, max_frames=9)


def small_model(seed: int = 0, **variant) -> AblatedMRNN:
    torch.manual_seed(seed)
    return build_mrnn(MRNNConfig(**SMALL), MRNNVariant(**variant)).double()



@pytest.mark.parametrize("strategy, long, short, short_real", [
    ("crop_repeat", [3, 4, 5, 6], [0, 0, 1, 2], 4),          # the centre 4; floor(i * 3 / 4)
    ("sample", [0, 3, 6, 9], [0, 1, 1, 2], 4),               # round(linspace(0, L - 1, 4))
    ("truncate", [0, 1, 2, 3], [0, 1, 2, 2], 3),             # the first 4; a zero frame after the end
    ("trim_last", [0, 1, 2, 3], [0, 1, 2, 2], 4),            # the first 4; the last frame repeated
])
def test_the_fixed_length_strategies(strategy, long, short, short_real):
    z = torch.arange(10, dtype=torch.float64)[None, :, None].repeat(2, 1, 1)      # frame t holds t
    out, real = fixed_length(z, torch.tensor([10, 3]), 4, strategy)
    assert out[0, :, 0].tolist() == long and out[1, :, 0].tolist() == short
    assert real[0].all() and int(real[1].sum()) == short_real


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=4), st.integers(1, 12),
       st.sampled_from(["crop_repeat", "sample", "truncate", "trim_last"]))
def test_a_fixed_length_video_reads_only_its_own_real_frames(lengths, frames, strategy):
    """Every index lies in [0, L): no strategy reads padding; a video at least N long loses no
    order (indices never decrease)."""
    lengths = torch.tensor(lengths)
    z = torch.arange(30, dtype=torch.float64)[None, :, None].repeat(len(lengths), 1, 1)
    out, real = fixed_length(z, lengths, frames, strategy)
    index = out[..., 0].long()
    assert ((index >= 0) & (index < lengths[:, None])).all()
    assert (index.diff(dim=1) >= 0).all() and real.shape == (len(lengths), frames)


def test_a_subset_of_inputs_ignores_the_other_columns():
    torch.manual_seed(0)
    model = build_mrnn(MRNNConfig(hidden_size=6, routed_size=4, max_frames=9), MRNNVariant(inputs="va")).double()
    z, lengths = torch.randn(2, 9, 26, dtype=torch.float64), torch.tensor([9, 4])
    changed = z.clone()
    changed[..., 2:] = torch.randn(2, 9, 24, dtype=torch.float64)            # expressions and AUs
    assert torch.equal(model(z, lengths), model(changed, lengths))
    assert model.rnn.weight_ih_l0.shape[1] == 2


@pytest.mark.parametrize("sequence", ["padded", "sample", "truncate", "trim_last", "crop_repeat"])
def test_the_strategies_without_the_mask_train_every_weight_block(sequence):
    model = small_model(sequence=sequence, fixed_frames=5)
    frames = model.routed_frames
    assert model.routing_weight.shape == (4, frames * 6)
    z, lengths = torch.randn(2, 9, 5, dtype=torch.float64), torch.tensor([3, 2])
    model(z, lengths).sum().backward()
    assert model.frames_reached(lengths) == frames
    blocks = model.routing_weight.grad.view(4, frames, 6)
    assert (blocks.abs().sum(dim=(0, 2)) > 0).all()        # padded or repeated frames get gradient too


def test_fixed_length_reads_videos_longer_than_max_frames():
    model = small_model(sequence="sample", fixed_frames=4)
    assert model(torch.randn(1, 30, 5, dtype=torch.float64), torch.tensor([30])).shape == (1, 3)


@pytest.mark.parametrize("change, message", [
    (dict(inputs="va,pose"), "inputs"), (dict(inputs=""), "inputs"), (dict(sequence="cropped"), "sequence"),
    (dict(rnn="rnn"), "rnn"), (dict(fixed_frames=0), ">= 1"), (dict(inputs="va,va"), "inputs"),
])
def test_invalid_variant_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        MRNNVariant(**change)


def test_a_subset_of_z_needs_the_26_value_vector():
    with pytest.raises(ValueError, match="input_size must be 26"):
        build_mrnn(MRNNConfig(**SMALL), MRNNVariant(inputs="au"))


def test_each_variant_names_itself_for_its_checkpoint():
    assert variant_of(small_model(rnn="lstm")) == MRNNVariant(rnn="lstm")
    assert variant_of(build_mrnn(MRNNConfig(**SMALL))) == MRNNVariant()
    assert MRNNVariant(inputs="au,va,expr").is_paper and not MRNNVariant(sequence="padded").is_paper
