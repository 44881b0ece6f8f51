# %% [markdown]
# # Lesson 8: MRNN built from its parts, and trained where you can see it
#
# **Goal.** Put together the pieces of the last lessons into MRNN, the video half of the model
# (paper, section 3.2): the GRU of lesson 4, the Mask layer and routed FC layer of lesson 5,
# then ReLU and a last FC layer giving the 7 reaction intensities. You write it as a small
# module, train it with the Pearson loss of lesson 7 and LazyAdam in a loop of about thirty
# lines, watch the validation Pearson rise, and finally prove that the package's `MRNN`
# computes exactly the same function once it has the same weights.
#
# For a batch of B videos padded to T frames, with true lengths L_b:
#
#     z (B, T, 26)  --GRU-->  h (B, T, D)                              lesson 4
#     route(h, L)   (B, T*D)  every value of a frame t >= L_b set to 0  lesson 5 (the Mask layer)
#     r = W route(h, L) + c   (B, F)   W (F, T*D): one column block W_t per frame t
#       = c + sum_{t < L_b} W_t h[b, t]                                  lesson 5 (masked routing)
#     y = sigmoid(V relu(r) + d)   (B, 7)                                the 7 reaction intensities
#
# trained with the Pearson loss over the batch (lesson 7),
#
#     L_P = 1 - (1/7) sum_c cov(y_c, Y_c) / (sigma(y_c) sigma(Y_c))
#
# and LazyAdam, which steps only the blocks W_t that a video of the batch reached.

# %%
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import _common
from mmarnn_min.affect import AFFECT_DIM, NUM_REACTIONS, REACTIONS
from mmarnn_min.config import preset
from mmarnn_min.data.sequences import oracle_sequences, pad_collate
from mmarnn_min.gru import GRU
from mmarnn_min.losses import pearson_loss
from mmarnn_min.metrics import pearson
from mmarnn_min.mrnn import MRNN
from mmarnn_min.optim import LazyAdam, mrnn_optimizer
from mmarnn_min.routing import masked_routing, route
from mmarnn_min.stages.mrnn import train_step

LESSON = "08_mrnn_from_parts"
plt = _common.pyplot()
_common.banner("Lesson 8: MRNN from its parts")

# %% [markdown]
# ## The data: SynthAffect's videos as the oracle sees them
#
# MRNN reads one 26-number affect vector per frame. To study MRNN alone we give it the *true*
# vectors (what a perfect MMA would output), which SynthAffect computes from its label
# trajectories without drawing a pixel: `oracle_sequences(config.data, split)`. The sizes
# come from the preset (`default`; `tiny` in quick mode); in quick mode we keep the tiny
# networks but give them more videos and epochs than the tiny preset has, so that the
# training curve still means something.

# %%
config = preset(_common.PRESET)
if _common.QUICK:
    config = replace(config, data=replace(config.data, train_videos=240, eval_videos=60),
                     mrnn=replace(config.mrnn, epochs=4))
data, sizes, training = config.data, config.mrnn.model, config.mrnn   # SynthConfig, MRNNConfig, MRNNTrainConfig
train_set = oracle_sequences(data, "train")
val_set = oracle_sequences(data, "val")
print(f"preset {_common.PRESET!r}: {len(train_set)} training and {len(val_set)} validation videos of "
      f"{int(train_set.lengths.min())}-{int(train_set.lengths.max())} frames, {AFFECT_DIM} values per frame, "
      f"{NUM_REACTIONS} reaction intensities per video")
print(f"MRNN sizes: GRU {sizes.hidden_size} units, routed FC {sizes.routed_size}, T = {sizes.max_frames} frames; "
      f"training: {training.epochs} epochs, batches of {training.batch_size}, lr {training.lr}")

# `pad_collate` pads a list of videos to the longest of them and keeps the lengths
z, lengths, y = pad_collate([train_set[i] for i in range(4)])
print(f"a batch of 4: z {tuple(z.shape)}, lengths {lengths.tolist()}, y {tuple(y.shape)}")

# %% [markdown]
# ## The model, from its parts
#
# Three layers hold all the weights: the GRU, the routed FC layer and the head. The routed
# layer is an ordinary `nn.Linear(T*D, F)`; what makes it *masked routing* is what it is
# given, `route(h, lengths)`, and that a batch whose longest video has L frames uses only the
# first L*D columns of its weight (the blocks W_0 .. W_{L-1}).

# %%
class MRNNFromParts(nn.Module):
    def __init__(self, hidden: int, routed: int, max_frames: int) -> None:
        super().__init__()
        self.gru = GRU(AFFECT_DIM, hidden)                           # lesson 4
        self.routed = nn.Linear(max_frames * hidden, routed)         # W (F, T*D), c (F,)
        self.head = nn.Linear(routed, NUM_REACTIONS)                 # V (7, F), d (7,)

    def forward(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(z)                                           # (B, L, D), L = frames in z
        frames, width = h.shape[1], h.shape[2]
        weight = self.routed.weight[:, : frames * width]             # (F, L*D): blocks W_0 .. W_{L-1}
        r = F.linear(route(h, lengths), weight, self.routed.bias)   # (B, F): real frames only
        # the sigmoid keeps intensities in [0, 1]; the Pearson loss would not need it
        return torch.sigmoid(self.head(F.relu(r)))                  # (B, 7)


torch.manual_seed(0)
model = MRNNFromParts(sizes.hidden_size, sizes.routed_size, sizes.max_frames)
for name, p in model.named_parameters():
    print(f"{name:20s} {tuple(p.shape)}")
print(f"{sum(p.numel() for p in model.parameters()):,} weights")

# %% [markdown]
# ## The training loop
#
# Everything `python -m mmarnn_min.train mrnn` does, minus checkpoints and logs. Two things
# are particular to MRNN:
#
# * the Pearson loss is a statistic of the *batch*: it needs at least two videos, so the last
#   incomplete batch of an epoch is dropped;
# * LazyAdam is told which parameter is cut into frame blocks (`"frames": T`) and, at every
#   step, how many blocks the batch reached (its longest video), so the blocks and Adam
#   state of frames no video reached stay still.

# %%
optimizer = LazyAdam([{"params": [model.routed.weight], "frames": sizes.max_frames},
                      {"params": [p for name, p in model.named_parameters() if name != "routed.weight"]}],
                     lr=training.lr)
loader = DataLoader(train_set, batch_size=training.batch_size, shuffle=True, drop_last=True,
                    collate_fn=pad_collate, generator=torch.Generator().manual_seed(0))
val_z, val_lengths, val_y = pad_collate([val_set[i] for i in range(len(val_set))])


def validation_pearson(model: nn.Module) -> float:
    """The paper's number on the validation videos: Pearson per reaction, averaged over 7."""
    with torch.no_grad():
        return float(pearson(model(val_z, val_lengths), val_y).mean())


epochs = training.epochs
initial_routed_weight = model.routed.weight.detach().clone()
history, losses, reached = [validation_pearson(model)], [], []
started = time.perf_counter()
print(f"epoch 0: validation Pearson {history[0]:+.4f} (untrained)")
for epoch in range(1, epochs + 1):
    for z, lengths, y in loader:                                   # (B, T, 26), (B,), (B, 7)
        loss = pearson_loss(model(z, lengths), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step(frames_reached=int(lengths.max()))
        losses.append(loss.item())
        reached.append(int(lengths.max()))
    history.append(validation_pearson(model))
    print(f"epoch {epoch}: training loss {np.mean(losses[-len(loader):]):.4f}, "
          f"validation Pearson {history[-1]:+.4f}  ({time.perf_counter() - started:.0f} s)")

# %% [markdown]
# The curves: the training loss per step (it is noisy: each step's loss is a correlation
# over one batch) and the validation Pearson after each epoch. On the right, how far each
# weight block W_t moved during training, against how many videos and how many steps reached
# frame t. Fewer and fewer videos reach the late frames, but a step trains every block up to
# its batch's *longest* video, and Adam's step size hardly depends on the gradient's size:
# read from the picture how much that evens out the late blocks' training.

# %%
moved = (model.routed.weight.detach() - initial_routed_weight).reshape(sizes.routed_size, sizes.max_frames, -1)
moved = moved.norm(dim=(0, 2))                                      # (T,): one number per block W_t
frame = torch.arange(sizes.max_frames)[:, None]                     # (T, 1)
videos_reaching = (train_set.lengths[None, :] > frame).float().mean(1)        # (T,) fraction of videos
steps_reaching = (torch.tensor(reached)[None, :] > frame).float().mean(1)     # (T,) fraction of steps

fig, (ax_loss, ax_val, ax_blocks) = plt.subplots(1, 3, figsize=(14, 3.6))
ax_loss.plot(losses, lw=0.8)
ax_loss.set(xlabel="step", ylabel="Pearson loss", title="training loss per batch")
ax_val.plot(range(len(history)), history, marker="o")
ax_val.set(xlabel="epoch", ylabel="mean Pearson", title="validation Pearson (7 reactions)")
ax_blocks.bar(range(sizes.max_frames), moved.numpy(), color="tab:green", label="|W_t after - W_t before|")
ax_count = ax_blocks.twinx()
ax_count.plot(range(sizes.max_frames), videos_reaching.numpy(), color="black", lw=1, label="videos reaching t")
ax_count.plot(range(sizes.max_frames), steps_reaching.numpy(), color="tab:orange", lw=1.5, label="steps reaching t")
ax_count.set(ylabel="fraction reaching frame t", ylim=(0, 1.05))
ax_blocks.set(xlabel="frame t (weight block W_t)", ylabel="change of W_t", title="what training moved")
ax_blocks.legend(loc="lower left", fontsize=7)
ax_count.legend(loc="center right", fontsize=7)
fig.tight_layout()
_common.save(fig, LESSON, "training.png")

# %% [markdown]
# How high the validation Pearson goes is lesson 9's subject (this oracle model is the
# ceiling of the whole pipeline). Here it only has to rise clearly above the untrained
# model's, which is near 0:

# %%
assert history[-1] > history[0] + 0.1, history
print(f"matched: the validation Pearson rose from {history[0]:+.3f} to {history[-1]:+.3f} in {epochs} epochs")

# %% [markdown]
# ## Check: the package's `MRNN` is the same function
#
# `mmarnn_min.mrnn.MRNN` is the model the training command uses. Its parameters have other
# names (`rnn`, `routing_weight`, `routing_bias`, `head`) but the same shapes, so our trained
# weights load into it by renaming. Two differences in how it computes, neither of which
# changes the function: it uses the fused `masked_routing` (no masked copy of h) instead of
# `linear(route(...))`, and it sets padded frames of z to 0 before the GRU, so that NaN or
# inf in the padding cannot reach the gradients (`pad_collate` pads with zeros anyway). In
# float64 the two must agree to rounding.

# %%
package = MRNN(sizes)
renamed = {"routing_weight": model.routed.weight, "routing_bias": model.routed.bias,
           **{f"rnn.{name}": p for name, p in model.gru.state_dict().items()},
           **{f"head.{name}": p for name, p in model.head.state_dict().items()}}
package.load_state_dict(renamed)                                     # strict: every name must match
ours, theirs = model.double().eval(), package.double().eval()

z, lengths, y = pad_collate([val_set[i] for i in range(min(len(val_set), 64))])
z = z.double()
with torch.no_grad():
    difference = (ours(z, lengths) - theirs(z, lengths)).abs().max().item()
assert difference < 1e-12, difference
print(f"matched: MRNNFromParts and mmarnn_min.mrnn.MRNN agree to {difference:.1e} (float64) on {len(lengths)} "
      f"validation videos of {int(lengths.min())}-{int(lengths.max())} frames")

# %% [markdown]
# The same holds for a training step: the stage's `train_step` (the Pearson loss, then
# LazyAdam through `mrnn_optimizer`) moves the package's weights exactly as one turn of our
# loop moves ours.

# %%
z, lengths, y = next(iter(loader))
z, y = z.double(), y.double()
optimizer = LazyAdam([{"params": [ours.routed.weight], "frames": sizes.max_frames},
                      {"params": [p for name, p in ours.named_parameters() if name != "routed.weight"]}],
                     lr=training.lr)
loss = pearson_loss(ours(z, lengths), y)
optimizer.zero_grad()
loss.backward()
optimizer.step(frames_reached=int(lengths.max()))
train_step(theirs, mrnn_optimizer(theirs, lr=training.lr), z, lengths, y)

pairs = {"routed weight": (ours.routed.weight, theirs.routing_weight), "head weight": (ours.head.weight, theirs.head.weight),
         "GRU weight_hh_l0": (ours.gru.weight_hh_l0, theirs.rnn.weight_hh_l0)}
step_difference = max((a - b).abs().max().item() for a, b in pairs.values())
assert step_difference < 1e-12, step_difference
print(f"matched: after one step of each loop the weights agree to {step_difference:.1e} "
      f"({', '.join(pairs)} compared)")

# %% [markdown]
# And the fused routing inside `MRNN` is the `linear(route(h, L), W, c)` of our module, on
# any h (masked_routing picks the C++ extension when it is built, lesson 6):

# %%
h = torch.randn(len(lengths), int(lengths.max()), sizes.hidden_size, dtype=torch.float64)
weight = theirs.routing_weight[:, : h.shape[1] * sizes.hidden_size].detach()
routing_difference = (masked_routing(h, lengths, weight, theirs.routing_bias.detach())
                      - F.linear(route(h, lengths), weight, theirs.routing_bias.detach())).abs().max().item()
assert routing_difference < 1e-12, routing_difference
print(f"matched: masked_routing equals linear(route(h, lengths), W, c) to {routing_difference:.1e}")

# %% [markdown]
# Predictions of the trained model against the truth on the validation videos, one panel
# per reaction:

# %%
with torch.no_grad():
    prediction = ours(val_z.double(), val_lengths).float()
per_reaction = pearson(prediction, val_y)
fig, axes = plt.subplots(1, NUM_REACTIONS, figsize=(2.3 * NUM_REACTIONS, 2.6), sharex=True, sharey=True)
for c, ax in enumerate(axes):
    ax.scatter(val_y[:, c], prediction[:, c], s=5, alpha=0.6)
    ax.set_title(f"{REACTIONS[c]}\nr = {per_reaction[c]:.2f}", fontsize=8)
    ax.set_xlabel("true", fontsize=7)
axes[0].set_ylabel("predicted")
_common.save(fig, LESSON, "predictions.png")

# %% [markdown]
# ## Exercises
#
# Check an answer with the helpers of `tutorials/checks.py` (`import checks` from a cell or a
# script in `tutorials/`); each prints "correct" or fails with a hint. Worked solutions are in
# `tutorials/solutions/08_mrnn_from_parts.py`.
#
# 1. How many weights does MRNN have at the paper's sizes (`MRNN(preset("paper").mrnn.model)`),
#    and what fraction of them is the routed layer's weight W? Work both out from the shapes
#    in this lesson's equations first, then count. Check: `checks.check_08_1(total, fraction)`.
# 2. Write MRNN as one plain function of its state dict, `mrnn_function(state, z, lengths)`,
#    with `mmarnn_min.gru.gru_layer`, `route` and `F.linear` (no module). Check:
#    `checks.check_08_2(mrnn_function)` calls it on a random MRNN's state dict and compares
#    with the package in float64.
# 3. Train on the videos of at most T/2 frames only (T = `sizes.max_frames`), once with
#    LazyAdam and once with `torch.optim.Adam`. How far does any weight of the blocks W_t,
#    t >= T/2, move under each (the largest |change|)? Explain the answer with Adam's moments,
#    and say how lesson 5's two-step experiment differs. Check:
#    `checks.check_08_3(moved_lazy, moved_adam)`.
# 4. Train the same model with MSE instead of the Pearson loss (same seed, same epochs) and
#    compare the validation Pearson and the spread of the predictions. What would it take to
#    call one loss better? (Open: the worked solution shows one way to read it.)
