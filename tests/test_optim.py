"""'The weights not involved in the routing process remain constant' (paper, section 3.2):
LazyAdam leaves unreached frame blocks and their Adam state bit-for-bit still, and trains
everything else exactly as torch.optim.Adam does."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min.losses import pearson_loss
from mmarnn_min.mrnn import MRNN, MRNNConfig
from mmarnn_min.optim import LazyAdam, mrnn_optimizer
from mmarnn_min.stages.mrnn import train_step

SETTINGS = settings(max_examples=20, deadline=None)
TOLERANCE = dict(rtol=1e-12, atol=1e-14)


def test_plain_parameters_follow_torch_adam():
    torch.manual_seed(0)
    ours = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True), torch.randn(5, dtype=torch.float64, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    lazy, adam = LazyAdam(ours, lr=0.1, betas=(0.8, 0.9), eps=1e-6), torch.optim.Adam(theirs, lr=0.1, betas=(0.8, 0.9), eps=1e-6)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in ours]
        for params, optimizer in ((ours, lazy), (theirs, adam)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, **TOLERANCE)


@SETTINGS
@given(st.lists(st.integers(0, 6), min_size=1, max_size=6), st.integers(0, 2**16))
def test_each_frame_block_is_adam_on_the_steps_that_reached_it(reached_per_step, seed):
    """Frame t of a (F, T*D) weight, T = 6, D = 2: unchanged (values, moments, step count)
    by a step that did not reach it; otherwise exactly torch.optim.Adam fed only the
    gradients of the steps that reached it."""
    frames, width = 6, 2
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(3, frames * width, generator=gen, dtype=torch.float64, requires_grad=True)
    lazy = LazyAdam([{"params": [weight], "frames": frames}], lr=0.05)
    blocks = [weight.detach()[:, t * width : (t + 1) * width].clone().requires_grad_() for t in range(frames)]
    adams = [torch.optim.Adam([block], lr=0.05) for block in blocks]
    for reached in reached_per_step:
        grad = torch.randn(weight.shape, generator=gen, dtype=torch.float64)
        grad[:, reached * width :] = 0                     # what masked routing gives unreached frames
        before = {name: value.clone() for name, value in lazy.state[weight].items()}
        value_before = weight.detach().clone()
        weight.grad = grad
        lazy.step(frames_reached=reached)
        columns = slice(reached * width, None)
        assert torch.equal(weight.detach()[:, columns], value_before[:, columns])
        if before:
            for name in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(lazy.state[weight][name][:, columns], before[name][:, columns])
            assert torch.equal(lazy.state[weight]["step"][reached:], before["step"][reached:])
        for t in range(reached):
            blocks[t].grad = grad[:, t * width : (t + 1) * width].clone()
            adams[t].step()
    for t in range(frames):
        torch.testing.assert_close(weight.detach()[:, t * width : (t + 1) * width], blocks[t].detach(), **TOLERANCE)


def test_training_step_keeps_unrouted_weights_still_and_trains_the_rest_as_adam():
    """Both halves of the paper's sentence, on MRNN with the training step of stage mrnn.
    Step 1 reaches every frame (so all blocks have non-zero Adam moments), steps 2-4 reach
    frames t < 4 only."""
    torch.manual_seed(0)
    config = MRNNConfig(input_size=5, hidden_size=6, routed_size=4, num_reactions=3, max_frames=10)
    model = MRNN(config).double()
    reference = copy.deepcopy(model)
    lazy, adam = mrnn_optimizer(model, lr=1e-2), torch.optim.Adam(reference.parameters(), lr=1e-2)
    z, target = torch.randn(6, 10, 5, dtype=torch.float64), torch.rand(6, 3, dtype=torch.float64)
    long_batch, short_batch = torch.tensor([10, 3, 4, 5, 6, 7]), torch.tensor([4, 3, 4, 2, 1, 4])
    reached, D = 4, config.hidden_size
    unreached = slice(reached * D, None)               # columns of frames t >= 4

    def adam_step(lengths):
        adam.zero_grad()
        pearson_loss(reference(z, lengths), target).backward()
        adam.step()

    train_step(model, lazy, z, long_batch, target)
    adam_step(long_batch)
    after_first = {"weight": model.routing_weight.detach().clone(),
                   **{k: v.clone() for k, v in lazy.state[model.routing_weight].items()}}
    for _ in range(3):
        train_step(model, lazy, z, short_batch, target)
        adam_step(short_batch)

    # 1. weights not involved in the routing remain constant, and so does their optimiser state
    state = lazy.state[model.routing_weight]
    assert torch.equal(model.routing_weight.detach()[:, unreached], after_first["weight"][:, unreached])
    assert torch.equal(state["exp_avg"][:, unreached], after_first["exp_avg"][:, unreached])
    assert torch.equal(state["exp_avg_sq"][:, unreached], after_first["exp_avg_sq"][:, unreached])
    assert torch.equal(state["step"], torch.tensor([4.0] * reached + [1.0] * (10 - reached), dtype=torch.float64))
    # ... which plain Adam does not do: its moments keep moving those columns
    assert not torch.equal(reference.routing_weight.detach()[:, unreached], after_first["weight"][:, unreached])

    # 2. everything else trains as Adam would
    torch.testing.assert_close(model.routing_weight.detach()[:, : reached * D],
                               reference.routing_weight.detach()[:, : reached * D], **TOLERANCE)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        if name != "routing_weight":
            torch.testing.assert_close(p.detach(), q.detach(), **TOLERANCE, msg=name)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = MRNN(MRNNConfig(input_size=5, hidden_size=6, routed_size=4, num_reactions=3, max_frames=8)).double()
    optimizer = mrnn_optimizer(model, lr=1e-2)
    z, target = torch.randn(5, 8, 5, dtype=torch.float64), torch.rand(5, 3, dtype=torch.float64)
    train_step(model, optimizer, z, torch.tensor([8, 2, 3, 4, 5]), target)
    twin = copy.deepcopy(model)
    twin_optimizer = mrnn_optimizer(twin, lr=1e-2)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))   # as through a checkpoint file
    for m, o in ((model, optimizer), (twin, twin_optimizer)):
        train_step(m, o, z, torch.tensor([3, 2, 3, 1, 2]), target)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_errors():
    weight = torch.zeros(2, 9, requires_grad=True)
    with pytest.raises(ValueError, match=r"\(F, T\*D\)"):
        LazyAdam([{"params": [weight], "frames": 4}])
    optimizer = LazyAdam([{"params": [weight], "frames": 3}])
    weight.grad = torch.ones_like(weight)
    with pytest.raises(ValueError, match="frames_reached"):
        optimizer.step()
