"""The MRNN ablations of the paper (section 4), beside the model rather than inside it: the
paper's MRNN (``mmarnn_min.mrnn``) with one thing changed, chosen by ``MRNNVariant``.

* ``rnn``: the recurrent layer, the hand-written GRU of the paper (``"gru"``), PyTorch's
  ``nn.GRU`` (``"torch_gru"``, the same function computed by cuDNN / MKL) or an LSTM.
* ``inputs``: which parts of z the RNN reads (VA, expressions, AUs, or any subset).
* ``sequence``: how a video of any length meets a layer of fixed size.
  ``"masked"``      the paper's masked routing over every real frame;
  ``"padded"``      every video zero-padded to max_frames, all T*D outputs into a plain FC
                    layer (padding without the mask: padded frames get values and gradients);
  and the fixed-length strategies of the public attempts at this task, each making every
  video exactly N = ``fixed_frames`` frames, which a plain FC layer then reads in full:
  ``"sample"``      uniform temporal sampling: N frames evenly spaced over the whole video
                    (repeats frames of a video shorter than N);
  ``"truncate"``    the first N frames, zero frames after the end of a shorter video;
  ``"trim_last"``   the first N frames, the last frame repeated after the end of a shorter one;
  ``"crop_repeat"`` the centre N frames of a longer video, each frame of a shorter one repeated
                    about N / L times.

``build_mrnn(config, variant)`` gives the paper's ``MRNN`` for the default variant and an
``AblatedMRNN`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmarnn_min.affect import AFFECT_DIM, NUM_EXPRESSIONS, NUM_VA
from mmarnn_min.checks import ConfigError, at_least, one_of
from mmarnn_min.gru import GRU
from mmarnn_min.mrnn import MRNN, MRNNConfig, zero_padding
from mmarnn_min.routing import masked_routing

RNNS = ("gru", "torch_gru", "lstm")
FIXED_LENGTH = ("sample", "truncate", "trim_last", "crop_repeat")
SEQUENCES = ("masked", "padded", *FIXED_LENGTH)
INPUT_COLUMNS: dict[str, range] = {           # part of z -> its columns
    "va": range(0, NUM_VA),
    "expr": range(NUM_VA, NUM_VA + NUM_EXPRESSIONS),
    "au": range(NUM_VA + NUM_EXPRESSIONS, AFFECT_DIM),
}


@dataclass
class MRNNVariant:
    rnn: Literal["gru", "torch_gru", "lstm"] = "gru"  # hand-written GRU (paper) | torch.nn.GRU | torch.nn.LSTM
    inputs: str = "va,expr,au"                        # parts of z the RNN reads, comma-separated (paper: all three)
    sequence: Literal["masked", "padded", "sample", "truncate", "trim_last", "crop_repeat"] = "masked"  # masked routing (paper) | zero padding, no mask | a fixed-length strategy (module docstring)
    fixed_frames: int = 64                            # N, the length of the fixed-length strategies

    def __post_init__(self) -> None:
        one_of(self, "rnn", RNNS)
        one_of(self, "sequence", SEQUENCES)
        parts = self.input_parts
        if not parts or set(parts) - set(INPUT_COLUMNS) or len(set(parts)) != len(parts):
            raise ConfigError("inputs", f"must be a comma-separated subset of {', '.join(INPUT_COLUMNS)}, "
                                        f"got {self.inputs!r}")
        at_least(self, "fixed_frames", 1)

    @property
    def is_paper(self) -> bool:
        return self.rnn == "gru" and self.sequence == "masked" and self.input_columns is None

    @property
    def fixed_length(self) -> bool:
        """Whether every video is made exactly ``fixed_frames`` frames long."""
        return self.sequence in FIXED_LENGTH

    @property
    def input_parts(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.inputs.split(",") if part.strip())

    @property
    def input_columns(self) -> list[int] | None:
        """The columns of the 26-value z the RNN reads, in z's order; None: all of z."""
        if set(self.input_parts) == set(INPUT_COLUMNS):
            return None
        return sorted(c for part in self.input_parts for c in INPUT_COLUMNS[part])


def fixed_length(z: torch.Tensor, lengths: torch.Tensor, frames: int, strategy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every video of ``lengths[b]`` real frames made exactly ``frames`` frames long by one of
    the FIXED_LENGTH strategies (module docstring). z (B, T', I) -> (B, N, I), and the frames of
    it that hold a real frame (B, N) bool (all but the zero frames of "truncate")."""
    positions = torch.arange(frames, device=z.device)[None, :]                   # (1, N)
    lengths = lengths[:, None]                                                   # (B, 1)
    if strategy == "sample":
        index = (positions * (lengths - 1) + (frames - 1) // 2) // max(frames - 1, 1)   # rounded linspace(0, L-1, N)
    elif strategy in ("truncate", "trim_last"):
        index = torch.minimum(positions, lengths - 1)
    elif strategy == "crop_repeat":
        index = torch.where(lengths >= frames, (lengths - frames) // 2 + positions, positions * lengths // frames)
    else:
        raise ValueError(f"fixed_length: unknown strategy {strategy!r}; choose one of {', '.join(FIXED_LENGTH)}")
    real = positions < lengths if strategy == "truncate" else torch.ones_like(index, dtype=torch.bool)
    chosen = torch.gather(z, 1, index[:, :, None].expand(-1, -1, z.shape[2]))   # (B, N, I)
    return chosen, real.expand(len(index), frames)


class AblatedMRNN(MRNN):
    """The paper's MRNN with the change ``variant`` names; same call as ``MRNN``. With a
    fixed-length strategy videos may be longer than max_frames (they are cut to N)."""

    def __init__(self, config: MRNNConfig, variant: MRNNVariant) -> None:
        columns = variant.input_columns
        if columns is not None and config.input_size != AFFECT_DIM:
            raise ConfigError("inputs", f"selects parts of the {AFFECT_DIM}-value affect vector: "
                             f"input_size must be {AFFECT_DIM}, got {config.input_size}")
        super().__init__(config)
        self.variant = variant
        inputs = config.input_size if columns is None else len(columns)
        hidden, layers = config.hidden_size, config.num_layers
        if variant.rnn != "gru" or columns is not None:
            self.rnn = {"gru": lambda: GRU(inputs, hidden, layers),
                        "torch_gru": lambda: nn.GRU(inputs, hidden, layers, batch_first=True),
                        "lstm": lambda: nn.LSTM(inputs, hidden, layers, batch_first=True)}[variant.rnn]()
        if variant.fixed_length:
            self.routing_weight = nn.Parameter(torch.empty(config.routed_size, variant.fixed_frames * hidden))
            self.reset_routing_parameters()

    @property
    def frame_limit(self) -> int | None:
        """A fixed-length model crops longer videos: any length is read."""
        return None if self.variant.fixed_length else self.config.max_frames

    def frames_reached(self, lengths: torch.Tensor) -> int:
        """Masked routing trains the longest video's blocks; the unmasked layers train them all."""
        return int(lengths.max()) if self.variant.sequence == "masked" else self.routed_frames

    def forward(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        sequence = self.variant.sequence
        lengths, longest = self.checked_lengths(z, lengths)
        if self.variant.input_columns is not None:
            z = z[..., self.variant.input_columns]                           # (B, T', I)
        if self.variant.fixed_length:
            z, real = fixed_length(z, lengths, self.routed_frames, sequence)  # (B, N, I): every video N frames
            lengths, longest = real.sum(1), self.routed_frames               # "truncate" keeps its zero frames
        frames = longest if sequence == "masked" else self.routed_frames     # L
        z = zero_padding(F.pad(z[:, :frames], (0, 0, 0, max(0, frames - z.shape[1]))), lengths)  # (B, L, I)
        h = self.rnn(z)[0]                                                   # (B, L, D)
        weight = self.routing_weight[:, : frames * self.config.hidden_size]  # (F, L*D)
        if sequence == "masked":
            routed = masked_routing(h, lengths, weight, self.routing_bias)   # (B, F): real frames only
        else:
            routed = F.linear(h.flatten(1), weight, self.routing_bias)       # (B, F): every frame
        out = self.head(F.relu(routed))                                      # (B, 7)
        return torch.sigmoid(out) if self.config.sigmoid else out


def build_mrnn(config: MRNNConfig, variant: MRNNVariant | None = None) -> MRNN:
    """The paper's MRNN for the default variant, else the ablated one."""
    if variant is None or variant.is_paper:
        return MRNN(config)
    return AblatedMRNN(config, variant)


def variant_of(model: MRNN) -> MRNNVariant:
    """The variant a model built by ``build_mrnn`` implements (for its checkpoint)."""
    return model.variant if isinstance(model, AblatedMRNN) else MRNNVariant()
