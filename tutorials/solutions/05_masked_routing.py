"""Worked solutions to the exercises of lesson 5 (masked routing); each answer is passed to its
check in ``tutorials/checks.py``. Run: ``python tutorials/solutions/05_masked_routing.py``."""

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tutorials/: checks and _common

import numpy as np
import torch

import _common
import checks
from mmarnn_min.config import preset
from mmarnn_min.data.synth_make import video_plan
from mmarnn_min.mrnn_variants import fixed_length
from mmarnn_min.routing import masked_routing

# %% [markdown]
# ## 1. Crop from the start, or the centre?
#
# The reaction window can sit anywhere in a video, so every crop of a fixed position loses it
# in some videos: only a crop that knows where the window is could keep all of it, and a
# model is not told that. Masked routing keeps every frame instead.

# %%
config = preset(_common.PRESET).data
fixed = (config.min_frames + config.max_frames) // 2
lost_from_start, lost_centre = [], []
for index in range(config.eval_videos):
    plan = video_plan(config, "val", index)[0]
    if plan.length < fixed:
        continue
    window = np.flatnonzero(plan.in_window)
    frames = torch.arange(plan.length, dtype=torch.float64).reshape(1, -1, 1)   # frame t holds the value t
    kept = fixed_length(frames, torch.tensor([plan.length]), fixed, "crop_repeat")[0].flatten().long().numpy()
    lost_from_start.append(np.mean(window >= fixed))
    lost_centre.append(np.mean(~np.isin(window, kept)))
print(f"{len(lost_centre)} videos of at least {fixed} frames lose on average {np.mean(lost_from_start):.1%} of "
      f"their reaction window to a crop from the start, {np.mean(lost_centre):.1%} to the centre crop")
checks.check_05_1(fixed, float(np.mean(lost_from_start)), float(np.mean(lost_centre)))

# %% [markdown]
# ## 2. The other videos do not notice
#
# out[b] = bias + sum_{t < L_b} W_t h[b, t] reads row b of h only: the change is exactly 0.

# %%
torch.manual_seed(0)
h = torch.randn(6, 12, 5, dtype=torch.float64)
lengths, weight = torch.tensor([12, 9, 5, 5, 1, 0]), torch.randn(4, 60, dtype=torch.float64)
changed = h.clone()
changed[0] = 100 * torch.randn(12, 5, dtype=torch.float64)
max_change = (masked_routing(changed, lengths, weight) - masked_routing(h, lengths, weight))[1:].abs().max().item()
print(f"largest change of videos 1..5 after changing video 0: {max_change}")
checks.check_05_2(max_change)

# %% [markdown]
# ## 3. How long plain Adam keeps moving a block that is no longer reached
#
# After step 1 the gradient is 0, so m_k = beta1^(k-1) m_1 and v_k = beta2^(k-1) v_1. The step
# is lr * m_hat / (sqrt(v_hat) + eps): m decays with beta1 = 0.9 per step, sqrt(v) only with
# sqrt(beta2) ~ 0.9995, so the ratio shrinks by about 0.9 per step, from lr = 0.01 down to
# 1e-6: dozens of steps, each of which moves a weight that no video asked to move.

# %%
weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
optimizer = torch.optim.Adam([weight], lr=0.01)
k = 0
while True:
    k += 1
    weight.grad = torch.ones_like(weight) if k == 1 else torch.zeros_like(weight)
    before = weight.item()
    optimizer.step()
    if abs(weight.item() - before) < 1e-6:
        break
print(f"the weight keeps moving until step {k}, having drifted {weight.item():.4f} in all")
checks.check_05_3(k)
