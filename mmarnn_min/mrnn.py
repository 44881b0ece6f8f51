"""MRNN, the dynamic masked RNN of the paper (section 3.2): per-frame affect vectors of a video
of any length -> its 7 reaction intensities.

    z (B, T, 26) --GRU (1 layer, 128 units)--> h (B, T, 128)
      --masked routing: the frames t < length of each video, flattened, into FC(T*128 -> 32)--> (B, 32)
      --ReLU--> FC(32 -> 7) --sigmoid--> (B, 7)

The routed layer's weight is (32, T*128): column block t (``routing_weight[:, t*D:(t+1)*D]``)
reads frame t, so a video of L frames uses the first L blocks and the others get no gradient
(``mmarnn_min.optim.LazyAdam`` then also keeps them and their Adam state still).

Choices made here:
* the output goes through a sigmoid: intensities lie in [0, 1], so the MSE ablation compares
  like with like and predictions are readable; the Pearson loss, invariant to shift and
  scale, does not need it (set ``sigmoid=False`` to read the raw linear outputs);
* the GRU runs only over the first max(lengths) frames of the batch, and padded frames are
  set to 0 before it: a video's output then depends neither on what its padding holds
  (NaN included, in the forward and the backward pass) nor on the other videos of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmarnn_min.affect import AFFECT_DIM, NUM_REACTIONS
from mmarnn_min.gru import GRU
from mmarnn_min.routing import masked_routing

RNNS = ("gru", "torch_gru", "lstm")


@dataclass
class MRNNConfig:
    input_size: int = AFFECT_DIM                  # per-frame features: [VA | 7 expressions | 17 AUs] = 26
    hidden_size: int = 128                        # GRU units (paper: 128)
    num_layers: int = 1                           # GRU layers (paper: 1)
    routed_size: int = 32                         # width of the masked-routing FC layer (paper: 32)
    num_reactions: int = NUM_REACTIONS            # outputs: the 7 reaction intensities
    max_frames: int = 128                         # T, the longest video the routed layer reads (paper: 480; 128 keeps CPU runs short)
    rnn: Literal["gru", "torch_gru", "lstm"] = "gru"  # hand-written GRU | torch.nn.GRU | torch.nn.LSTM (ablation)
    sigmoid: bool = True                          # squash the outputs into [0, 1]


class MRNN(nn.Module):
    """``forward(z (B, T', input_size), lengths (B,) int)`` -> (B, num_reactions), where
    1 <= lengths[b] <= min(T', max_frames) and frames t >= lengths[b] are padding."""

    def __init__(self, config: MRNNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MRNNConfig()
        if config.rnn == "gru":
            self.rnn = GRU(config.input_size, config.hidden_size, config.num_layers)
        elif config.rnn == "torch_gru":
            self.rnn = nn.GRU(config.input_size, config.hidden_size, config.num_layers, batch_first=True)
        elif config.rnn == "lstm":
            self.rnn = nn.LSTM(config.input_size, config.hidden_size, config.num_layers, batch_first=True)
        else:
            raise ValueError(f"MRNN: rnn must be one of {', '.join(RNNS)}, got {config.rnn!r}")
        routed_inputs = config.max_frames * config.hidden_size                           # T * D
        self.routing_weight = nn.Parameter(torch.empty(config.routed_size, routed_inputs))  # (F, T*D)
        self.routing_bias = nn.Parameter(torch.empty(config.routed_size))                   # (F,)
        self.head = nn.Linear(config.routed_size, config.num_reactions)                     # FC(F -> 7)
        bound = 1.0 / math.sqrt(routed_inputs)             # nn.Linear's initialisation for fan-in T*D
        nn.init.uniform_(self.routing_weight, -bound, bound)
        nn.init.uniform_(self.routing_bias, -bound, bound)

    def check_lengths(self, z: torch.Tensor, lengths: torch.Tensor) -> None:
        """Raise a clear error unless z is (B, T', input_size) and 1 <= lengths <= min(T', max_frames)."""
        config = self.config
        if z.dim() != 3 or z.shape[2] != config.input_size:
            raise ValueError(f"MRNN: z must be (B, T, {config.input_size}), got shape {tuple(z.shape)}")
        if lengths.shape != (z.shape[0],) or lengths.dtype.is_floating_point:
            raise ValueError(f"MRNN: lengths must be ({z.shape[0]},) integers, got {lengths.dtype} of shape {tuple(lengths.shape)}")
        if z.shape[0] == 0:
            raise ValueError("MRNN: the batch holds no video")
        if int(lengths.max()) > config.max_frames:
            raise ValueError(
                f"MRNN: a video has {int(lengths.max())} frames but the model reads at most "
                f"max_frames = {config.max_frames}; trim or subsample the video, or build the model "
                f"with a larger max_frames"
            )
        if int(lengths.max()) > z.shape[1] or int(lengths.min()) < 1:
            raise ValueError(f"MRNN: every length must lie in [1, {z.shape[1]}] (the frames in z), got {lengths.tolist()}")

    def forward(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.check_lengths(z, lengths)
        lengths = lengths.to(device=z.device, dtype=torch.int64)
        frames = int(lengths.max())                                           # L, the longest video
        is_real = torch.arange(frames, device=z.device) < lengths[:, None]    # (B, L)
        z = torch.where(is_real[:, :, None], z[:, :frames], 0.0)              # (B, L, 26), padding -> 0
        h = self.rnn(z)[0]                                                    # (B, L, D)
        weight = self.routing_weight[:, : frames * self.config.hidden_size]  # (F, L*D): frames t < L
        routed = masked_routing(h, lengths, weight, self.routing_bias)        # (B, F)
        out = self.head(F.relu(routed))                                       # (B, 7)
        return torch.sigmoid(out) if self.config.sigmoid else out
