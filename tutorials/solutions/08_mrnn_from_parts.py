"""Worked solutions to the exercises of lesson 8 (MRNN from its parts); the answers with a
definite value are passed to their checks in ``tutorials/checks.py``.
Run: ``python tutorials/solutions/08_mrnn_from_parts.py``."""

# %%
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tutorials/: checks and _common

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import _common
import checks
from mmarnn_min.affect import AFFECT_DIM, NUM_REACTIONS
from mmarnn_min.config import preset
from mmarnn_min.data.sequences import SequenceDataset, oracle_sequences, pad_collate
from mmarnn_min.gru import gru_layer
from mmarnn_min.losses import pearson_loss
from mmarnn_min.metrics import pearson
from mmarnn_min.mrnn import MRNN
from mmarnn_min.optim import mrnn_optimizer
from mmarnn_min.routing import route
from mmarnn_min.stages.mrnn import train_step

# the lesson's data and sizes
config = preset(_common.PRESET)
if _common.QUICK:
    config = replace(config, data=replace(config.data, train_videos=240, eval_videos=60),
                     mrnn=replace(config.mrnn, epochs=4))
sizes, training = config.mrnn.model, config.mrnn
train_set, val_set = oracle_sequences(config.data, "train"), oracle_sequences(config.data, "val")

# %% [markdown]
# ## 1. Where MRNN's weights are
#
# With I = 26 inputs, D = 128 GRU units, T = 480 frames, F = 32 and 7 outputs:
#
#     GRU       3D I + 3D D + 2 (3D)     =    59,136
#     routed    F (T D) + F              = 1,966,112
#     head      7 F + 7                  =       231
#
# Almost all of it is the routed layer: one block of F x D weights per frame position.

# %%
paper = preset("paper").mrnn.model
I, D, T, F_, C = AFFECT_DIM, paper.hidden_size, paper.max_frames, paper.routed_size, NUM_REACTIONS
by_hand = (3 * D * I + 3 * D * D + 2 * 3 * D) + (F_ * T * D + F_) + (C * F_ + C)
model = MRNN(paper)
counted = sum(p.numel() for p in model.parameters())
assert by_hand == counted, (by_hand, counted)
fraction = model.routing_weight.numel() / counted
print(f"MRNN at the paper's sizes: {counted:,} weights, {fraction:.1%} of them in the routed weight W")
checks.check_08_1(counted, fraction)

# %% [markdown]
# ## 2. MRNN as one function of its state dict

# %%
def mrnn_function(state: dict, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    h = gru_layer(z, z.new_zeros(z.shape[0], state["rnn.weight_hh_l0"].shape[1]), state["rnn.weight_ih_l0"],
                  state["rnn.weight_hh_l0"], state["rnn.bias_ih_l0"], state["rnn.bias_hh_l0"])   # (B, L, D)
    frames, width = h.shape[1], h.shape[2]
    routed = F.linear(route(h, lengths), state["routing_weight"][:, : frames * width], state["routing_bias"])
    return torch.sigmoid(F.linear(F.relu(routed), state["head.weight"], state["head.bias"]))       # (B, 7)


checks.check_08_2(mrnn_function)

# %% [markdown]
# ## 3. Blocks that no video reaches
#
# A block that never gets a gradient has m = v = 0 under Adam too, so its update
# m / (sqrt(v) + eps) is exactly 0: both optimizers leave it alone. The difference shows only
# for a block that *was* reached once and then is not (lesson 5): Adam's moments remember the
# old gradient and keep moving it; LazyAdam freezes it.

# %%
half = sizes.max_frames // 2
short = [i for i in range(len(train_set)) if train_set.lengths[i] <= half]
short_set = SequenceDataset([train_set.features[i] for i in short], train_set.labels[short])
moved = {}
for name in ("LazyAdam", "Adam"):
    torch.manual_seed(0)
    model = MRNN(sizes)
    optimizer = mrnn_optimizer(model, lr=training.lr) if name == "LazyAdam" else torch.optim.Adam(model.parameters(), lr=training.lr)
    before = model.routing_weight.detach().clone()
    for z, lengths, y in DataLoader(short_set, batch_size=training.batch_size, shuffle=True, drop_last=True,
                                    collate_fn=pad_collate, generator=torch.Generator().manual_seed(0)):
        loss = pearson_loss(model(z, lengths), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step(**({"frames_reached": int(lengths.max())} if name == "LazyAdam" else {}))
    change = (model.routing_weight.detach() - before).abs()
    moved[name] = change[:, half * sizes.hidden_size:].max().item()
    print(f"{name:8s} on {len(short_set)} videos of <= {half} frames: blocks t < {half} moved up to "
          f"{change[:, :half * sizes.hidden_size].max().item():.3g}, blocks t >= {half} by {moved[name]}")
checks.check_08_3(moved["LazyAdam"], moved["Adam"])

# %% [markdown]
# ## 4. Pearson loss or MSE (open)
#
# The Pearson loss only asks the outputs to rise and fall with the labels; MSE asks them to
# *equal* the intensities. Train both the same way and compare the validation Pearson and the
# spread of the predictions. One run per loss cannot settle which is better: the ablation of
# lesson 9 (`python -m mmarnn_min.ablate --variants paper,mse`) repeats it over seeds and
# reports the spread.

# %%
val_z, val_lengths, val_y = pad_collate([val_set[i] for i in range(len(val_set))])
for name, loss_fn in (("Pearson loss", pearson_loss), ("MSE", F.mse_loss)):
    torch.manual_seed(0)
    model = MRNN(sizes)
    optimizer = mrnn_optimizer(model, lr=training.lr)
    loader = DataLoader(train_set, batch_size=training.batch_size, shuffle=True, drop_last=True,
                        collate_fn=pad_collate, generator=torch.Generator().manual_seed(0))
    for epoch in range(training.epochs):
        for z, lengths, y in loader:
            train_step(model, optimizer, z, lengths, y, loss_fn)
    with torch.no_grad():
        prediction = model.eval()(val_z, val_lengths)
    print(f"{name:12s}: validation Pearson {pearson(prediction, val_y).mean():.3f}, prediction std "
          f"{prediction.std(0).mean():.3f} (labels {val_y.std(0).mean():.3f})")
