"""MRNN, the dynamic masked RNN of the paper (section 3.2): the per-frame affect vectors of a
video of any length -> its 7 reaction intensities.

    z (B, T, 26) --GRU (1 layer, 128 units)--> h (B, T, 128)
      --masked routing: the frames t < length of each video, into FC(T*128 -> 32)--> (B, 32)
      --ReLU--> FC(32 -> 7) --sigmoid--> (B, 7)

The routed layer's weight is (32, T*128): column block t (``routing_weight[:, t*D:(t+1)*D]``)
reads frame t only, so a video of L frames uses the first L blocks and the others get no
value and no gradient (``mmarnn_min.routing``); ``mmarnn_min.optim.LazyAdam`` then keeps those
blocks and their Adam state still, as the paper asks ("the weights not involved in the
routing process remain constant").

Two choices made here, beyond the paper's text:
* the output goes through a sigmoid: intensities lie in [0, 1], so an MSE-trained model
  compares like with like and predictions are readable; the Pearson loss, invariant to shift
  and scale, does not need it (``sigmoid=False`` reads the raw linear outputs);
* the GRU runs over the first max(lengths) frames of the batch only, and padded frames are
  set to 0 before it: a video's output then depends neither on what its padding holds (NaN
  included, forward and backward) nor on the other videos of the batch. A unidirectional
  GRU's output at step t does not depend on later steps, so no packing is needed.

The ablations of section 4 (other RNNs, fixed-length strategies, subsets of z) are in
``mmarnn_min.mrnn_variants``, beside this model rather than inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmarnn_min.affect import AFFECT_DIM, NUM_REACTIONS
from mmarnn_min.checks import at_least
from mmarnn_min.gru import GRU
from mmarnn_min.routing import masked_routing


@dataclass
class MRNNConfig:
    input_size: int = AFFECT_DIM          # per-frame features: [VA | 7 expressions | 17 AUs] = 26
    hidden_size: int = 128                # GRU units (paper: 128)
    num_layers: int = 1                   # GRU layers (paper: 1)
    routed_size: int = 32                 # width of the masked-routing FC layer (paper: 32)
    num_reactions: int = NUM_REACTIONS    # outputs: the 7 reaction intensities
    max_frames: int = 480                 # T, the longest video the routed layer reads (paper: 480)
    sigmoid: bool = True                  # squash the outputs into [0, 1]

    def __post_init__(self) -> None:
        for size in ("input_size", "hidden_size", "num_layers", "routed_size", "num_reactions", "max_frames"):
            at_least(self, size, 1)


def zero_padding(z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """z (B, L, I) with every frame t >= lengths[b] set to exactly 0 (``where``, so that NaN or
    inf in the padding cannot leak into the GRU or its gradient)."""
    is_real = torch.arange(z.shape[1], device=z.device) < lengths[:, None]     # (B, L)
    return torch.where(is_real[:, :, None], z, 0.0)


class MRNN(nn.Module):
    """``forward(z (B, T', input_size), lengths (B,) int)`` -> (B, num_reactions), where
    1 <= lengths[b] <= min(T', max_frames) and frames t >= lengths[b] are padding."""

    def __init__(self, config: MRNNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MRNNConfig()
        self.rnn = GRU(config.input_size, config.hidden_size, config.num_layers)
        self.routing_weight = nn.Parameter(torch.empty(config.routed_size, config.max_frames * config.hidden_size))
        self.routing_bias = nn.Parameter(torch.empty(config.routed_size))                  # (F,)
        self.head = nn.Linear(config.routed_size, config.num_reactions)                    # FC(F -> 7)
        self.reset_routing_parameters()

    def reset_routing_parameters(self) -> None:
        """nn.Linear's initialisation for the routed layer's fan-in T*D."""
        bound = 1.0 / math.sqrt(self.routing_weight.shape[1])
        nn.init.uniform_(self.routing_weight, -bound, bound)
        nn.init.uniform_(self.routing_bias, -bound, bound)

    def forward(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths, longest = self.checked_lengths(z, lengths)                  # L = longest: frames any video reaches
        z = zero_padding(z[:, :longest], lengths)                            # (B, L, 26)
        h, _ = self.rnn(z)                                                   # (B, L, D)
        weight = self.routing_weight[:, : longest * self.config.hidden_size]  # (F, L*D): frames t < L
        routed = masked_routing(h, lengths, weight, self.routing_bias)       # (B, F): real frames only
        out = self.head(F.relu(routed))                                      # (B, 7)
        return torch.sigmoid(out) if self.config.sigmoid else out

    @property
    def routed_frames(self) -> int:
        """Frames the routed layer has a weight block for (max_frames)."""
        return self.routing_weight.shape[1] // self.config.hidden_size

    def frames_reached(self, lengths: torch.Tensor) -> int:
        """How many frame blocks of ``routing_weight`` a batch with these lengths trains: the
        longest video's (what ``LazyAdam.step`` needs)."""
        return int(lengths.max())

    @property
    def frame_limit(self) -> int | None:
        """The most frames a video may have: max_frames (None: any number)."""
        return self.config.max_frames

    def checked_lengths(self, z: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``lengths`` as int64 on z's device and the longest of them, after a clear error unless
        z is (B, T', input_size) with B >= 1 and 1 <= lengths[b] <= T' and <= ``frame_limit``.
        The checks read the lengths where they are, before they move to z's device."""
        width = self.config.input_size
        if z.dim() != 3 or z.shape[2] != width:
            raise ValueError(f"MRNN: z must be (B, T, {width}), got shape {tuple(z.shape)}")
        if lengths.shape != (z.shape[0],) or lengths.dtype.is_floating_point:
            raise ValueError(f"MRNN: lengths must be ({z.shape[0]},) integers, got {lengths.dtype} "
                             f"of shape {tuple(lengths.shape)}")
        if z.shape[0] == 0:
            raise ValueError("MRNN: the batch holds no video")
        limit = self.frame_limit
        longest, shortest = int(lengths.max()), int(lengths.min())
        if limit is not None and longest > limit:
            raise ValueError(f"MRNN: a video has {longest} frames but the model reads at most max_frames = "
                             f"{limit}; subsample its frames (predict --stride), or build the model with a "
                             f"larger max_frames")
        if longest > z.shape[1] or shortest < 1:
            raise ValueError(f"MRNN: every length must lie in [1, {z.shape[1]}] (the frames in z), "
                             f"got {lengths.tolist()}")
        return lengths.to(device=z.device, dtype=torch.int64), longest
