# %% [markdown]
# # Lesson 4: a GRU written from its equations
#
# **Goal.** MRNN (section 3.2) reads a video's per-frame affect vectors z_t with a one-layer
# GRU of 128 units. `mmarnn_min.gru` writes that GRU out from its equations, in plain
# PyTorch, with the parameter names and shapes of `torch.nn.GRU`. Here you load the *same*
# weights into both, prove they compute the same function (values and gradients), then open
# the box and watch the gates work over a video.
#
# The equations (PyTorch's convention; sigma is the logistic sigmoid, * elementwise):
#
#     r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
#     z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate
#     n_t = tanh (W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))  candidate state
#     h_t = (1 - z_t) * n_t + z_t * h_{t-1}                       new state, h_0 = 0
#
# stacked as torch stacks them: weight_ih_l0 = [W_ir; W_iz; W_in] (3H, I), weight_hh_l0 =
# [W_hr; W_hz; W_hn] (3H, H), and the biases likewise (3H,).

# %%
import torch

import _common
from mmarnn_min.affect import AFFECT_DIM
from mmarnn_min.bench.gru import measure
from mmarnn_min.config import preset
from mmarnn_min.data.synth_labels import oracle_features
from mmarnn_min.data.synth_make import video_plan
from mmarnn_min.gru import GRU, gru_layer

LESSON = "04_gru"
plt = _common.pyplot()
_common.banner("Lesson 4: the GRU")
torch.manual_seed(0)

# %% [markdown]
# ## Input: a few videos' affect vectors
#
# SynthAffect can give the *true* per-frame affect vector of a video (what a perfect MMA would
# output) without rendering a pixel: `video_plan` draws the video's trajectories and
# `oracle_features` turns them into z_t. We pad 4 videos of different lengths to the longest.

# %%
config = preset(_common.PRESET).data                  # SynthAffect's sizes (the tiny preset in quick mode)
plans = [video_plan(config, "val", index)[0] for index in range(4)]
lengths = torch.tensor([plan.length for plan in plans])
x = torch.zeros(len(plans), int(lengths.max()), AFFECT_DIM)                  # (B, T, 26), zero padding
for b, plan in enumerate(plans):
    x[b, :plan.length] = torch.from_numpy(oracle_features(plan.aus, plan.va))
print(f"x {tuple(x.shape)}, lengths {lengths.tolist()}, reaction windows {[plan.windows for plan in plans]}")

# %% [markdown]
# ## Same names, same shapes, same weights
#
# The hand-written GRU registers exactly torch's parameters, so a state dict moves between
# them in either direction.

# %%
hidden = 16                                                                   # MRNN uses 128; 16 is easier to look at
ours = GRU(AFFECT_DIM, hidden)
reference = torch.nn.GRU(AFFECT_DIM, hidden, batch_first=True)
for (name, p), (ref_name, ref_p) in zip(ours.named_parameters(), reference.named_parameters()):
    print(f"{name:14s} {str(tuple(p.shape)):10s} | torch: {ref_name:14s} {tuple(ref_p.shape)}")
ours.load_state_dict(reference.state_dict())                                 # torch -> ours
torch.nn.GRU(AFFECT_DIM, hidden, batch_first=True).load_state_dict(ours.state_dict())  # and back

# %% [markdown]
# ## Check: the outputs and the gradients agree
#
# Same input, same weights: compare the outputs (B, T, H), the final states and, after a
# backward pass of the same random projection, every gradient, in float32. Outputs lie in
# [-1, 1] and are compared as they are; gradients are compared relative to their largest
# entry.

# %%
x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
out_ours, last_ours = ours(x_ours)
out_ref, last_ref = reference(x_ref)
projection = torch.randn_like(out_ref)
(out_ours * projection).sum().backward()
(out_ref * projection).sum().backward()

def relative(grad: torch.Tensor, ref_grad: torch.Tensor) -> torch.Tensor:
    """max |difference| in units of the gradient's largest entry (a weight's gradient sums
    B*T terms, so its float32 rounding grows with its size)."""
    return (grad - ref_grad).abs().max() / ref_grad.abs().max()


differences = {"output": (out_ours - out_ref).abs().max(), "h_n": (last_ours - last_ref).abs().max(),
               "grad x (relative)": relative(x_ours.grad, x_ref.grad)}
for (name, p), ref_p in zip(ours.named_parameters(), reference.parameters()):
    differences[f"grad {name} (relative)"] = relative(p.grad, ref_p.grad)
for name, difference in differences.items():
    print(f"max |ours - torch| {name:32s} {difference:.2e}")
    assert difference < 1e-5, name
print(f"matched: outputs, final state and all {len(differences) - 2} gradients agree with torch.nn.GRU "
      f"to < 1e-5 (worst {max(differences.values()):.1e})")

# %% [markdown]
# `GRU.forward` runs `gru_layer` once per layer; calling it yourself with the layer's four
# tensors gives the same outputs (a one-layer GRU is just this function):

# %%
with torch.no_grad():
    by_layer = gru_layer(x, torch.zeros(len(plans), hidden), *ours.layer_parameters(0))
    assert torch.equal(by_layer, ours(x)[0])
print("gru_layer(x, h0, *ours.layer_parameters(0)) equals ours(x)[0] exactly")

# %% [markdown]
# ## Open the box: the gates over one video
#
# The module returns only h_t, so we step the four equations ourselves with its weights,
# one frame at a time, and keep r_t, z_t and n_t. If our step is right, its h_t equals the
# module's output at every frame; that is a second check of the equations.

# %%
w_ir, w_iz, w_in = ours.weight_ih_l0.detach().chunk(3)                        # (H, I) each
w_hr, w_hz, w_hn = ours.weight_hh_l0.detach().chunk(3)                        # (H, H) each
b_ir, b_iz, b_in = ours.bias_ih_l0.detach().chunk(3)
b_hr, b_hz, b_hn = ours.bias_hh_l0.detach().chunk(3)

video = int(lengths.argmax())
h = torch.zeros(hidden)
gates = {"r (reset)": [], "z (update)": [], "n (candidate)": [], "h (state)": []}
for x_t in x[video, :lengths[video]]:
    r = torch.sigmoid(w_ir @ x_t + b_ir + w_hr @ h + b_hr)
    z = torch.sigmoid(w_iz @ x_t + b_iz + w_hz @ h + b_hz)
    n = torch.tanh(w_in @ x_t + b_in + r * (w_hn @ h + b_hn))
    h = (1 - z) * n + z * h
    for name, value in zip(gates, (r, z, n, h)):
        gates[name].append(value)
gates = {name: torch.stack(values) for name, values in gates.items()}       # name -> (L, H)
step_error = (gates["h (state)"] - out_ours[video, :lengths[video]].detach()).abs().max()
assert step_error < 1e-5
print(f"matched: stepping the equations by hand reproduces the module's h_t to {step_error:.1e}")

# %%
windows = plans[video].windows                                                  # [(start, stop), ...]
panels = {"x (input z_t)": x[video, :lengths[video]], **gates}                  # name -> (L, features)
fig, axes = plt.subplots(len(panels), 1, figsize=(10, 11), sharex=True)
for ax, (name, values) in zip(axes, panels.items()):
    signed = name.startswith(("n", "h"))
    image = ax.imshow(values.T.numpy(), aspect="auto", interpolation="nearest",
                      cmap="coolwarm" if signed else "viridis", vmin=-1 if signed else 0, vmax=1)
    ax.set_ylabel(f"{name}\n{'feature' if name.startswith('x') else 'unit'}", fontsize=8)
    for edge in (edge for window in windows for edge in window):
        ax.axvline(edge - 0.5, color="white" if not signed else "black", ls="--", lw=1)
    fig.colorbar(image, ax=ax, pad=0.01)
axes[0].set_title(f"video {video} ({int(lengths[video])} frames); dashed: the reaction window(s) "
                  + ", ".join(f"[{start}, {stop})" for start, stop in windows), fontsize=9)
axes[-1].set_xlabel("frame t")
_common.save(fig, LESSON, "gates.png")

# %% [markdown]
# These are an *untrained* GRU's gates, so they carry no learned meaning yet, but you can read
# the mechanics: an update gate z near 1 keeps the old state (memory), near 0 replaces it by
# the candidate n; the gates move when the face moves (the shaded reaction window), and the
# state h is a smoothed, squashed echo of the input. Training (lesson 8) shapes them.
#
# ## Padding does not leak backwards
#
# A unidirectional GRU's output at frame t depends only on frames 0..t. So padding a short
# video with anything (zeros, noise, the next video) leaves its outputs at t < length
# *exactly* unchanged: MRNN can run padded batches without packing them.

# %%
noisy = x.clone()
for b, length in enumerate(lengths.tolist()):
    noisy[b, length:] = 100 * torch.randn_like(noisy[b, length:])
with torch.no_grad():
    clean_out, noisy_out = ours(x)[0], ours(noisy)[0]
for b, length in enumerate(lengths.tolist()):
    assert torch.equal(clean_out[b, :length], noisy_out[b, :length])
print("matched: outputs before each video's length are bit-for-bit the same with noise in the padding")

# %% [markdown]
# ## How fast is the hand-written loop?
#
# torch.nn.GRU runs its time loop in C++; ours runs it in Python but computes all the input
# projections in one matrix product first. `mmarnn_min.bench.gru.measure` times both, in
# alternating turns; `python -m mmarnn_min.bench --only gru` runs it at the paper's size.

# %%
rows = measure(torch.device("cpu"), batch=8, frames=_common.quick(160, 24), input_size=AFFECT_DIM,
               hidden_size=_common.quick(128, 16), turns=_common.quick(5, 2))
for row in rows:
    print(f"{row['pass']:8s} hand-written {row['hand-written ms']:7.2f} ms   torch {row['torch ms']:7.2f} ms   "
          f"ratio {row['ratio']:.2f}")

# %% [markdown]
# ## Exercises
#
# Check an answer with `tutorials/checks.py`: in a cell (or a script in `tutorials/`) run
# `import checks`, then the check named after the exercise; it prints "correct" or fails with
# a hint. Worked solutions: `tutorials/solutions/04_gru.py`.
#
# 1. `last_ours` (h_n) is the state after the *padded* length T, not after each video's own
#    length. Compare `last_ours[0, b]` with `out_ours[b, lengths[b] - 1]` for every video:
#    which videos b differ, and why does MRNN read the per-frame outputs instead?
#    Check: `checks.check_04_1(videos)` with the set of indices b.
# 2. Memory: compute the gradient of `out_ours[b, L-1].sum()` with respect to `x_ours[b, t]`
#    for every t and plot its norm against t. How fast does the influence of old frames fade
#    in this untrained GRU? Multiply `weight_hh_l0` by 3 and look again. (Open: the worked
#    solution draws both curves.)
# 3. Write an LSTM layer from its equations, `lstm_layer(x, h0, c0, weight_ih, weight_hh,
#    bias_ih, bias_hh) -> outputs (B, T, H)` (gates i, f, g, o in torch's order), as this
#    lesson did for the GRU. Check: `checks.check_04_3(lstm_layer)` compares it with
#    `torch.nn.LSTM` holding the same weights.
