# %% [markdown]
# # Lesson 5: videos of any length, and masked routing
#
# **Goal.** Videos differ in length; a fully-connected layer wants a fixed-size input. The
# usual fixes crop long videos and loop short ones to a fixed length, which throws frames away
# or counts them twice. MRNN's answer (section 3.2, the Mask layer and the routed FC layer) is
# to pad every video to T frames and route only the real frames of each into the layer, with
# one weight block per frame position. You will see the cost of cropping, write the
# operation's definition as a loop and check the package against it, prove its gradient
# properties, and see why the optimizer must keep the unused weights still.
#
# The operation (`mmarnn_min.routing`; `docs/design.md` writes it out), for GRU outputs
# h (B, T, D), true lengths L_b, weight (F, T*D) cut into T column blocks W_t (F, D), bias (F,):
#
#     out[b] = bias + sum_{t < L_b} W_t h[b, t]                                    (B, F)
#            = linear(route(h, L), weight, bias),   route zeroes the frames t >= L_b
#
# and its gradient, for an upstream gradient g_b = d loss / d out[b]:
#
#     d loss / d h[b, t] = W_t^T g_b   if t < L_b,   else exactly 0
#     d loss / d W_t     = sum_{b : t < L_b} g_b h[b, t]^T      (0 when no video reaches t)
#     d loss / d bias    = sum_b g_b

# %%
import numpy as np
import torch
import torch.nn.functional as F

import _common
from mmarnn_min.config import preset
from mmarnn_min.data.synth_make import video_plan
from mmarnn_min.optim import LazyAdam
from mmarnn_min.routing import available_backends, masked_routing, masked_routing_reference, route

LESSON = "05_masked_routing"
plt = _common.pyplot()
_common.banner("Lesson 5: variable-length video and masked routing")
torch.manual_seed(0)

# %% [markdown]
# ## The old way: crop or loop to a fixed length
#
# Take SynthAffect's validation videos (each shows its reaction only inside a window of
# frames) and force them to a fixed length, the middle of the preset's range of lengths:
# longer videos keep their first `fixed` frames, shorter ones are played again from the start
# until they fill it. How much of the reaction window survives, and how much is counted twice?

# %%
config = preset(_common.PRESET).data                      # SynthAffect's sizes (the tiny preset in quick mode)
fixed = (config.min_frames + config.max_frames) // 2      # about half the videos are longer
plans = [video_plan(config, "val", index)[0] for index in range(config.eval_videos)]
print(f"{len(plans)} validation videos of {config.min_frames}-{config.max_frames} frames, fixed length {fixed}")
lost, doubled = [], []
for plan in plans:
    window = np.flatnonzero(plan.in_window)                       # the frames of its reaction windows
    if plan.length >= fixed:
        lost.append(np.mean(window >= fixed))                     # window frames cut away
    else:
        kept = np.arange(fixed) % plan.length                     # the looped frame indices
        doubled.append(np.isin(kept, window).sum() / len(window) - 1)  # extra copies of the window
lost, doubled = np.array(lost), np.array(doubled)
print(f"{len(lost)} videos of at least {fixed} frames: cropping loses {lost.mean():.0%} of the reaction "
      f"window on average, all of it in {np.mean(lost == 1):.0%} of them")
print(f"{len(doubled)} shorter videos: looping shows their window {1 + doubled.mean():.2f} times on average")

# %%
shown = plans[:10]
fig, ax = plt.subplots(figsize=(9, 4))
for row, plan in enumerate(shown):
    ax.barh(row, plan.length, color="lightgrey", edgecolor="grey")
    for start, stop in plan.windows:                              # one or more reaction windows
        ax.barh(row, stop - start, left=start, color="tab:red", alpha=0.7)
    if plan.length < fixed:
        ax.barh(row, fixed - plan.length, left=plan.length, color="none", edgecolor="tab:blue", hatch="//")
ax.axvline(fixed, color="black", ls="--")
ax.text(fixed + 1, len(shown) - 0.4, f"fixed length {fixed}: crop here", fontsize=8)
ax.set(xlabel="frame", ylabel="video", title="Reaction windows (red); cropped beyond the line, looped where hatched")
_common.save(fig, LESSON, "crop_or_loop.png")

# %% [markdown]
# ## The Mask layer
#
# Masked routing pads instead, and remembers each length. `route(h, lengths)` is the Mask
# layer on its own: it flattens h to (B, T*D) and sets every value of a padded frame to 0
# (with `where`, so even a NaN in the padding cannot leak). Here with T = 4 frames of D = 2:

# %%
h = torch.arange(1.0, 25.0).reshape(3, 4, 2)                           # (B=3, T=4, D=2)
lengths = torch.tensor([4, 2, 1])
print("route(h, lengths) =\n", route(h, lengths))

# %% [markdown]
# The routed FC layer is then an ordinary `linear` on that vector: frame t of every video
# meets the same weight block W_t, and the blocks past a video's length meet zeros. The
# package also offers the fused form, `masked_routing(h, lengths, weight, bias)`, which never
# builds the masked copy (lesson 6 shows how it is built).
#
# ## Check: three ways of computing it agree
#
# The package writes the definition as a plain loop, `masked_routing_reference` (read it at
# the top of `mmarnn_min/routing.py`); we compare it with `route` + `linear` and with
# `masked_routing`, in float64 on a batch of random lengths (some 0, one T).

# %%
B, T, D, F_ = 6, 12, 5, 4
h = torch.randn(B, T, D, dtype=torch.float64)
lengths = torch.tensor([12, 9, 5, 5, 1, 0])
weight = torch.randn(F_, T * D, dtype=torch.float64)
bias = torch.randn(F_, dtype=torch.float64)

reference = masked_routing_reference(h, lengths, weight, bias)
by_mask = F.linear(route(h, lengths), weight, bias)
fused = masked_routing(h, lengths, weight, bias)
print(f"backends available here: {available_backends()} (masked_routing used the first)")
for name, value in (("route + linear", by_mask), ("masked_routing", fused)):
    error = (value - reference).abs().max().item()
    assert error < 1e-12, (name, error)
    print(f"matched: {name:15s} equals the reference loop to {error:.1e} (float64)")

# %% [markdown]
# Padding invariance follows: fill every padded frame with NaN and nothing changes.

# %%
poisoned = h.clone()
for b, length in enumerate(lengths.tolist()):
    poisoned[b, length:] = float("nan")
assert torch.equal(masked_routing(poisoned, lengths, weight, bias), fused)
print("matched: NaN in the padding leaves the output bit-for-bit unchanged")

# %% [markdown]
# ## Check: the gradient never reaches padding, nor unreached weight blocks
#
# Backpropagate a random upstream gradient through a batch whose longest video has 9 of the
# T = 12 frames. The gradient of h must be exactly 0 on every padded frame, and the weight
# blocks W_9 .. W_11, which no video reaches, must get exactly 0.

# %%
lengths = torch.tensor([9, 7, 7, 4, 2, 0])
h = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
weight = torch.randn(F_, T * D, dtype=torch.float64, requires_grad=True)
bias = torch.zeros(F_, dtype=torch.float64, requires_grad=True)
upstream = torch.randn(B, F_, dtype=torch.float64)
grad_h, grad_weight, grad_bias = torch.autograd.grad(masked_routing(h, lengths, weight, bias), (h, weight, bias), upstream)

frame = torch.arange(T)
padded = frame[None, :] >= lengths[:, None]                               # (B, T)
unreached = frame >= lengths.max()                                         # (T,)
blocks = grad_weight.reshape(F_, T, D)                                     # W_t = blocks[:, t]
assert torch.all(grad_h[padded] == 0) and torch.all(blocks[:, unreached] == 0)
assert torch.allclose(grad_bias, upstream.sum(0))
expected_w = torch.einsum("bf,btd->ftd", upstream, torch.where(padded[..., None], 0.0, h.detach()))
assert torch.allclose(blocks, expected_w, atol=1e-12)
print(f"matched: grad_h is exactly 0 on all {int(padded.sum())} padded frames; weight blocks "
      f"t >= {int(lengths.max())} get exactly 0; grad_weight and grad_bias follow the formulas")

# %% [markdown]
# Which weight blocks does each video train? Video b sends gradient to W_0 .. W_{L_b - 1}
# only; the batch trains the union, which is the prefix up to its longest video.

# %%
per_video = []
for b in range(B):
    (g,) = torch.autograd.grad(masked_routing(h[b:b + 1], lengths[b:b + 1], weight, bias), weight, upstream[b:b + 1])
    per_video.append(g.reshape(F_, T, D).abs().sum(dim=(0, 2)))           # (T,) gradient mass per block
per_video.append(blocks.abs().sum(dim=(0, 2)))
image = torch.stack(per_video) > 0                                          # (B + 1, T)

fig, ax = plt.subplots(figsize=(8, 3.6))
ax.imshow(image.numpy(), cmap="Greens", vmin=0, vmax=1.2, aspect="auto")
ax.set_yticks(range(B + 1), [f"video {b} (L={int(n)})" for b, n in enumerate(lengths)] + ["whole batch"])
ax.set_xticks(range(T), [f"W_{t}" for t in range(T)])
ax.axhline(B - 0.5, color="black")
ax.set_title("Which weight blocks receive gradient (green)")
_common.save(fig, LESSON, "weight_blocks_with_gradient.png")

# %% [markdown]
# ## Keeping unreached weights still: LazyAdam
#
# The paper: "the weights not involved in the routing process remain constant". A zero
# gradient is not enough with Adam: its moment estimates remember earlier batches, so a block
# that a long video reached once keeps moving on every later step. `mmarnn_min.optim.LazyAdam`
# gives each frame block its own Adam step and updates only the blocks t < max(lengths) of
# the current batch. Two steps: a batch reaching all 12 frames, then one reaching 4.

# %%
def two_steps(make_optimizer):
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(F_, T * D))
    optimizer = make_optimizer(w)
    changes = []
    for batch_lengths in (torch.tensor([12, 8, 3]), torch.tensor([4, 2, 1])):
        before = w.detach().clone()
        x = torch.randn(len(batch_lengths), T, D)
        loss = masked_routing(x, batch_lengths, w).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        if isinstance(optimizer, LazyAdam):
            optimizer.step(frames_reached=int(batch_lengths.max()))
        else:
            optimizer.step()
        changes.append((w.detach() - before).reshape(F_, T, D).abs().amax(dim=(0, 2)))   # (T,)
    return changes[1]                                                       # what step 2 moved


moved = {"torch.optim.Adam": two_steps(lambda w: torch.optim.Adam([w], lr=0.01)),
         "LazyAdam": two_steps(lambda w: LazyAdam([{"params": [w], "frames": T}], lr=0.01))}
for name, change in moved.items():
    print(f"{name:17s} step 2 moved the blocks {[t for t in range(T) if change[t] > 0]}")
assert torch.all(moved["LazyAdam"][4:] == 0) and torch.all(moved["LazyAdam"][:4] > 0)
assert torch.all(moved["torch.optim.Adam"][4:] > 0)
print("matched: with LazyAdam, blocks W_4..W_11 (not reached in step 2) stay bit-for-bit the same")

# %%
fig, ax = plt.subplots(figsize=(8, 3))
width = 0.4
for offset, (name, change) in zip((-width / 2, width / 2), moved.items()):
    ax.bar(np.arange(T) + offset, change.numpy(), width, label=name)
ax.axvline(3.5, color="black", ls="--")
ax.text(3.6, ax.get_ylim()[1] * 0.9, "step 2's longest video ends here", fontsize=8)
ax.set(xlabel="weight block t", ylabel="max |change| in step 2", title="What the second step moves")
ax.set_xticks(range(T))
ax.legend()
_common.save(fig, LESSON, "lazy_adam.png")

# %% [markdown]
# ## Does the mask win? What the ablation measured
#
# `python -m mmarnn_min.ablate` trains this lesson's alternatives with 3 seeds each, on the true
# per-frame affect of the default preset's Hume-like videos (1,000 training, 300 test videos of
# 3-16 s at 5 fps), and tests each ordering of the paper seed by seed. Test Pearson (mean of 7
# reactions), mean over seeds (docs/experiments.md has the table and the intervals):
#
#     masked routing (the paper)                 0.517
#     zero padding, no mask                      0.535   not decided (+-0.05 between seeds)
#     truncate / zero-pad to 1 s (5 frames)      0.075   the mask wins: a public entry's choice
#     uniform sampling to 17 frames              0.499   not decided
#     uniform sampling to the mean length (55)   0.561   the mask loses
#     per-video mean, max and std + ridge        0.663   the mask loses, by far
#
# Masked routing keeps every frame, but its routed layer has a separate weight block for every
# frame position, and a reaction can happen anywhere in a video: each position must learn the
# same patterns from its own share of the training videos. With 4,000 training videos instead
# of 1,000 the masked MRNN reaches 0.633 (0.526 with seed 0 at 1,000) and is still climbing,
# while the summary, which does not care where in the video the reaction was, is saturated
# (0.678). The paper's claim is about what the layer *can* read; how much data it needs to read
# it is the other half of the story.

# %% [markdown]
# ## Exercises
#
# Check an answer with `tutorials/checks.py`: in a cell (or a script in `tutorials/`) run
# `import checks`, then the check named after the exercise; it prints "correct" or fails with
# a hint. Worked solutions: `tutorials/solutions/05_masked_routing.py`.
#
# 1. Cropping from the start is not the only choice. Repeat the first experiment with the
#    centre crop of `mmarnn_min.mrnn_variants.fixed_length` (its "crop_repeat" strategy): over the
#    videos at least `fixed` frames long, which crop loses less of the reaction window on
#    average? Can any fixed crop lose nothing without knowing where the window is?
#    Check: `checks.check_05_1(fixed, lost_from_start, lost_centre)`.
# 2. Sample independence: change video 0's frames and measure the largest change of the
#    other videos' outputs of `masked_routing`. Which line of the definition guarantees it?
#    Check: `checks.check_05_2(max_change)`.
# 3. Plain Adam (lr 0.01, the default betas): a weight gets gradient 1 at step 1 (a block
#    that only step 1's long video reached) and 0 at every later step. Counting steps from 1,
#    at which step k does its change first fall below 1e-6? Explain with Adam's m and v.
#    Check: `checks.check_05_3(k)`.
