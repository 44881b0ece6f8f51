"""Worked solutions to the exercises of lesson 4 (the GRU); each answer with a definite value is
passed to its check in ``tutorials/checks.py``. Run: ``python tutorials/solutions/04_gru.py``."""

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tutorials/: checks and _common

import torch

import _common
import checks
from mmarnn_min.affect import AFFECT_DIM
from mmarnn_min.config import preset
from mmarnn_min.data.synth_labels import oracle_features
from mmarnn_min.data.synth_make import video_plan
from mmarnn_min.gru import GRU

LESSON = "04_gru_solutions"
plt = _common.pyplot()

# the lesson's input: its first 4 validation videos, zero-padded
torch.manual_seed(0)
plans = [video_plan(preset(_common.PRESET).data, "val", index)[0] for index in range(4)]
lengths = torch.tensor([plan.length for plan in plans])
x = torch.zeros(len(plans), int(lengths.max()), AFFECT_DIM)
for b, plan in enumerate(plans):
    x[b, :plan.length] = torch.from_numpy(oracle_features(plan.aus, plan.va))
gru = GRU(AFFECT_DIM, 16)

# %% [markdown]
# ## 1. h_n is the state after the padding
#
# The GRU keeps stepping through the zero frames after a short video ends, so its final
# state has drifted away from the state at the video's last real frame. Only the longest
# videos (no padding) agree. MRNN reads the per-frame outputs and routes each video's real
# frames only, so padding never enters the prediction.

# %%
with torch.no_grad():
    out, last = gru(x)
differ = {b for b in range(len(plans)) if not torch.equal(last[0, b], out[b, lengths[b] - 1])}
print(f"lengths {lengths.tolist()}: h_n differs from the output at L_b - 1 for videos {sorted(differ)}")
checks.check_04_1(differ)

# %% [markdown]
# ## 2. How far back a GRU remembers (open)
#
# The norm of d out[b, L-1] / d x[b, t] for every t: it decays roughly geometrically into the
# past. Scaling the recurrent weights by 3 makes the state feed back on itself more strongly:
# compare how much of frame 0's influence survives to the last frame in the two curves.

# %%
b = int(lengths.argmax())
fig, ax = plt.subplots(figsize=(7, 3.5))
for scale in (1.0, 3.0):
    model = GRU(AFFECT_DIM, 16)
    model.load_state_dict(gru.state_dict())
    with torch.no_grad():
        model.weight_hh_l0.mul_(scale)
    inputs = x[b:b + 1].clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(inputs)[0][0, lengths[b] - 1].sum(), inputs)
    norms = gradient[0, :lengths[b]].norm(dim=1)                     # (L,)
    ax.semilogy(norms.numpy(), label=f"weight_hh x {scale:g}")
    print(f"weight_hh x {scale:g}: influence of frame 0 / influence of the last frame = "
          f"{(norms[0] / norms[-1]).item():.1e}")
ax.set(xlabel="frame t", ylabel="|d out[L-1] / d x[t]|", title="How much each frame moves the last output")
ax.legend()
_common.save(fig, LESSON, "memory.png")

# %% [markdown]
# ## 3. An LSTM layer from its equations
#
#     i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      f = sigmoid(W_if x + b_if + W_hf h + b_hf)
#     g = tanh   (W_ig x + b_ig + W_hg h + b_hg)      o = sigmoid(W_io x + b_io + W_ho h + b_ho)
#     c' = f * c + i * g                              h' = o * tanh(c')

# %%
def lstm_layer(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh):
    gates_from_x = x @ weight_ih.T + bias_ih                          # (B, T, 4H), every step at once
    h, c, outputs = h0, c0, []
    for gates_x in gates_from_x.unbind(1):
        i, f, g, o = (gates_x + h @ weight_hh.T + bias_hh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=1)                                # (B, T, H)


checks.check_04_3(lstm_layer)
