"""A GRU written out from its equations: the recurrent layer of MRNN (paper, section 3.2).

PyTorch's conventions (``torch.nn.GRU``: gate order r, z, n; the reset gate multiplies the
recurrent part of the candidate *after* its bias). For each layer and time step t:

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))     candidate state
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

with the weights stacked as torch stacks them: ``weight_ih_l{k}`` = [W_ir; W_iz; W_in]
(3H, I), ``weight_hh_l{k}`` = [W_hr; W_hz; W_hn] (3H, H), ``bias_ih_l{k}`` = [b_ir; b_iz; b_in]
(3H,), ``bias_hh_l{k}`` likewise; layer k > 0 reads layer k-1's outputs. Names and shapes equal
``torch.nn.GRU(input_size, hidden_size, num_layers, batch_first=True)``'s, so state dicts load
both ways.

Two choices make the loop fast without hiding the equations:

* the input projections ``W_i* x_t + b_i*`` do not depend on h, so one matrix product
  computes them for every time step at once; only ``W_h* h_{t-1} + b_h*`` (one (B, H) x (H, 3H)
  product) stays inside the loop;
* the loop walks over ``gi.unbind(1)``, not ``gi[:, t]``: autograd's backward of an indexing
  op allocates a gradient the size of all of ``gi``, once per step (quadratic in T), while the
  backward of ``unbind`` stacks the T step gradients once (docs/experiments.md has the times).

``python -m mmarnn_min.bench`` times it against torch.nn.GRU's C++ loop, side by side.

Autograd differentiates the loop. ``h_n`` is the state after the last of the T steps, as
torch's: with padded batches it is *not* each sequence's state at its true length (MRNN reads
the per-frame outputs instead). A unidirectional GRU's output at step t does not depend on
steps after t, so outputs at t < length are exact whatever the padding holds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gru_layer(
    x: torch.Tensor,
    h: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
) -> torch.Tensor:
    """One GRU layer over a batch-first sequence: x (B, T, I), h (B, H) -> outputs (B, T, H)."""
    gi = F.linear(x, weight_ih, bias_ih)                 # (B, T, 3H): input projections, all steps
    outputs = []
    for gi_t in gi.unbind(1):                            # gi_t (B, 3H)
        gh_t = F.linear(h, weight_hh, bias_hh)           # (B, 3H): recurrent projections
        i_r, i_z, i_n = gi_t.chunk(3, dim=1)             # (B, H) each
        h_r, h_z, h_n = gh_t.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h                          # (B, H)
        outputs.append(h)
    return torch.stack(outputs, dim=1)                   # (B, T, H)


class GRU(nn.Module):
    """Batch-first GRU: ``forward(x (B, T, I), h0 (num_layers, B, H) or None)`` ->
    ``(out (B, T, H), h_n (num_layers, B, H))``; h0 = None means zeros, as in torch."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        for k in range(num_layers):
            layer_input = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(3 * hidden_size, layer_input)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(3 * hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(3 * hidden_size)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(3 * hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn.GRU's initialisation: every parameter uniform in +-1/sqrt(H)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def layer_parameters(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of layer k."""
        return tuple(getattr(self, f"{name}_l{k}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[2] != self.input_size or x.shape[1] == 0:
            raise ValueError(
                f"GRU: x must be (B, T, {self.input_size}) with T >= 1, got shape {tuple(x.shape)}"
            )
        batch = x.shape[0]
        if h0 is None:
            h0 = x.new_zeros(self.num_layers, batch, self.hidden_size)
        elif h0.shape != (self.num_layers, batch, self.hidden_size):
            raise ValueError(
                f"GRU: h0 must be ({self.num_layers}, {batch}, {self.hidden_size}), got shape {tuple(h0.shape)}"
            )
        out, last_states = x, []
        for k in range(self.num_layers):
            out = gru_layer(out, h0[k], *self.layer_parameters(k))   # (B, T, H)
            last_states.append(out[:, -1])
        return out, torch.stack(last_states)                       # (B, T, H), (num_layers, B, H)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
