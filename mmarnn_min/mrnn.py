"""MRNN, the dynamic masked RNN of the paper (section 3.2): per-frame affect vectors of a video
of any length -> its 7 reaction intensities.

    z (B, T, 26) --GRU (1 layer, 128 units)--> h (B, T, 128)
      --masked routing: the frames t < length of each video, flattened, into FC(T*128 -> 32)--> (B, 32)
      --ReLU--> FC(32 -> 7) --sigmoid--> (B, 7)

The routed layer's weight is (32, T*128): column block t (``routing_weight[:, t*D:(t+1)*D]``)
reads frame t, so a video of L frames uses the first L blocks and the others get no gradient
(``mmarnn_min.optim.LazyAdam`` then also keeps them and their Adam state still).

Two ablations of the paper (``mmarnn_min.ablate``) are config fields:
* ``inputs``: which parts of z the RNN reads (VA, expressions, AUs, or any pair);
* ``sequence``: how a video of any length meets a fixed-size layer. ``"masked"`` is the
  paper's masked routing. ``"padded"`` pads every video with zero frames to max_frames and
  feeds all T*D outputs to a plain FC layer (padding without the mask: padded frames get
  values and gradients). ``"fixed"`` is the usual fixed-length strategy of public attempts
  at this task: each video is cropped (centre) or stretched by repeating frames to exactly
  ``fixed_frames`` frames, then a plain FC reads them all.

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

from mmarnn_min.affect import AFFECT_DIM, NUM_EXPRESSIONS, NUM_REACTIONS, NUM_VA
from mmarnn_min.gru import GRU
from mmarnn_min.routing import masked_routing

RNNS = ("gru", "torch_gru", "lstm")
SEQUENCES = ("masked", "padded", "fixed")
INPUT_COLUMNS: dict[str, range] = {           # part of z -> its columns
    "va": range(0, NUM_VA),
    "expr": range(NUM_VA, NUM_VA + NUM_EXPRESSIONS),
    "au": range(NUM_VA + NUM_EXPRESSIONS, AFFECT_DIM),
}


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
    inputs: str = "va,expr,au"                    # parts of z the RNN reads, comma-separated (ablation: a subset)
    sequence: Literal["masked", "padded", "fixed"] = "masked"  # masked routing | zero padding, no mask | crop/repeat to fixed_frames (ablations)
    fixed_frames: int = 64                        # the fixed length of sequence="fixed"

    def __post_init__(self) -> None:
        if self.rnn not in RNNS:
            raise ValueError(f"MRNNConfig.rnn must be one of {', '.join(RNNS)}, got {self.rnn!r}")
        if self.sequence not in SEQUENCES:
            raise ValueError(f"MRNNConfig.sequence must be one of {', '.join(SEQUENCES)}, got {self.sequence!r}")
        parts = self.input_parts
        if not parts or set(parts) - set(INPUT_COLUMNS):
            raise ValueError(f"MRNNConfig.inputs: a comma-separated subset of {', '.join(INPUT_COLUMNS)}, got {self.inputs!r}")
        if set(parts) != set(INPUT_COLUMNS) and self.input_size != AFFECT_DIM:
            raise ValueError(f"MRNNConfig.inputs selects parts of the {AFFECT_DIM}-value affect vector: "
                             f"input_size must be {AFFECT_DIM}, got {self.input_size}")
        if min(self.hidden_size, self.num_layers, self.routed_size, self.max_frames, self.fixed_frames) < 1:
            raise ValueError(f"MRNNConfig: sizes must be >= 1, got {self}")

    @property
    def input_parts(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.inputs.split(",") if part.strip())

    @property
    def input_columns(self) -> list[int]:
        """The columns of z the RNN reads, in z's order."""
        if set(self.input_parts) == set(INPUT_COLUMNS):
            return list(range(self.input_size))
        return sorted(c for part in self.input_parts for c in INPUT_COLUMNS[part])

    @property
    def routed_frames(self) -> int:
        """Frames the routed layer has weights for: fixed_frames for "fixed", else max_frames."""
        return self.fixed_frames if self.sequence == "fixed" else self.max_frames


class MRNN(nn.Module):
    """``forward(z (B, T', input_size), lengths (B,) int)`` -> (B, num_reactions), where
    1 <= lengths[b] <= min(T', max_frames) and frames t >= lengths[b] are padding."""

    def __init__(self, config: MRNNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MRNNConfig()
        rnn_inputs = len(config.input_columns)
        if config.rnn == "gru":
            self.rnn = GRU(rnn_inputs, config.hidden_size, config.num_layers)
        elif config.rnn == "torch_gru":
            self.rnn = nn.GRU(rnn_inputs, config.hidden_size, config.num_layers, batch_first=True)
        else:
            self.rnn = nn.LSTM(rnn_inputs, config.hidden_size, config.num_layers, batch_first=True)
        routed_inputs = config.routed_frames * config.hidden_size                        # T * D
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
        if config.sequence != "fixed" and int(lengths.max()) > config.max_frames:
            raise ValueError(
                f"MRNN: a video has {int(lengths.max())} frames but the model reads at most "
                f"max_frames = {config.max_frames}; subsample its frames (predict --stride), or build the model "
                f"with a larger max_frames"
            )
        if int(lengths.max()) > z.shape[1] or int(lengths.min()) < 1:
            raise ValueError(f"MRNN: every length must lie in [1, {z.shape[1]}] (the frames in z), got {lengths.tolist()}")

    def frames_reached(self, lengths: torch.Tensor) -> int:
        """How many frame blocks of ``routing_weight`` a batch with these lengths trains (what
        ``LazyAdam.step`` needs): the longest video's for masked routing, all of them else."""
        return int(lengths.max()) if self.config.sequence == "masked" else self.config.routed_frames

    def forward(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.check_lengths(z, lengths)
        config = self.config
        lengths = lengths.to(device=z.device, dtype=torch.int64)
        z = z[..., config.input_columns]                                      # (B, T', I)
        if config.sequence == "fixed":
            z = fixed_length(z, lengths, config.fixed_frames)                 # (B, T_fixed, I)
            lengths = torch.full_like(lengths, config.fixed_frames)
        frames = int(lengths.max()) if config.sequence == "masked" else config.routed_frames  # L
        is_real = torch.arange(frames, device=z.device) < lengths[:, None]    # (B, L)
        z = F.pad(z[:, :frames], (0, 0, 0, max(0, frames - z.shape[1])))     # (B, L, I)
        z = torch.where(is_real[:, :, None], z, 0.0)                          # padding -> 0
        h = self.rnn(z)[0]                                                    # (B, L, D)
        weight = self.routing_weight[:, : frames * config.hidden_size]       # (F, L*D): frames t < L
        if config.sequence == "masked":
            routed = masked_routing(h, lengths, weight, self.routing_bias)    # (B, F): real frames only
        else:
            routed = F.linear(h.flatten(1), weight, self.routing_bias)        # (B, F): every frame
        out = self.head(F.relu(routed))                                       # (B, 7)
        return torch.sigmoid(out) if config.sigmoid else out


def fixed_length(z: torch.Tensor, lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """The fixed-length strategy of the ablation: each video of ``lengths[b]`` real frames
    becomes exactly ``frames`` frames, the centre ones of a longer video (crop) or a shorter
    one's frames each repeated about frames / L times (duplicate, nearest neighbour in time).
    z (B, T', I) -> (B, frames, I)."""
    positions = torch.arange(frames, device=z.device)                            # (frames,)
    lengths = lengths[:, None]                                                   # (B, 1)
    crop = (lengths - frames) // 2 + positions                                   # (B, frames)
    repeat = positions * lengths // frames
    index = torch.where(lengths >= frames, crop, repeat)                         # (B, frames)
    return torch.gather(z, 1, index[:, :, None].expand(-1, -1, z.shape[2]))
