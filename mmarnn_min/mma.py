"""MMA, the multi-task affect network of the paper (section 3.1): one aligned face crop ->
valence-arousal, the 7 basic expressions and 17 action units, from one shared residual CNN.

    image (N, 3, S, S) in [0, 1] --normalise--> stem: conv 3x3 (stride 2) - BN - ReLU
      --> stage 1 .. stage K: residual units, the first of each halving the side and
          (stages > 1) doubling the width
      --> average pool to a G x G grid (N, C G^2) --> shared embedding: FC (C G^2 -> E) - ReLU
      --> three heads:  FC (E -> 2) - tanh    valence, arousal in [-1, 1]
                        FC (E -> 7)           expression logits
                        FC (E -> 17)          AU logits

A residual unit (He et al. 2016) computes ``ReLU(F(x) + shortcut(x))`` with
``F = conv 3x3 - BN - ReLU - conv 3x3 - BN``; the shortcut is the identity when the shape is
kept and a projection (conv 1x1 with the unit's stride - BN) when it changes.

The grid (``MMAConfig.grid``: 4 by default, 1 in ``paper``) keeps *where* on the aligned
face a feature was found: a raised brow and a raised lip corner are the same edge at
different places. With G = 1 (ResNet's global average pool) the network must carry the
place in its channels; at the default size it then learned more slowly
(docs/experiments.md).

``MMA.features`` gives the per-frame affect vector that MRNN reads (the data flow in docs/design.md),
``z = [valence, arousal | 7 expression probabilities | 17 AU probabilities]`` (26 values).
Width and depth come from ``MMAConfig``, which names three sizes: ``tiny`` (tests), the
default (a CPU-sized network for 64 x 64 crops) and ``paper`` (ResNet-18's widths and depth,
for the paper's 112 x 112 crops on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmarnn_min.affect import AFFECT_DIM, NUM_AUS, NUM_EXPRESSIONS, NUM_VA
from mmarnn_min.checks import at_least


@dataclass
class MMAConfig:
    stem_channels: int = 24      # channels of the stem convolution
    width: int = 32              # channels of stage 1; each later stage doubles them
    stages: int = 3              # residual stages, each halving the side: 64 px -> 32 (stem) -> 16, 8, 4
    units_per_stage: int = 1     # residual units per stage
    embedding_size: int = 128    # width of the shared FC embedding the three heads read
    grid: int = 4                # the last feature map is average-pooled to grid x grid cells (1: global pool)

    def __post_init__(self) -> None:
        for size in ("stem_channels", "width", "stages", "units_per_stage", "embedding_size", "grid"):
            at_least(self, size, 1)

    @classmethod
    def tiny(cls) -> MMAConfig:
        """A few thousand weights: for tests."""
        return cls(stem_channels=8, width=8, stages=2, units_per_stage=1, embedding_size=16)

    @classmethod
    def paper(cls) -> MMAConfig:
        """ResNet-18's widths, depth and global average pool (64..512 channels, 2 units per
        stage, G = 1), for 112 x 112 crops: 56 px after the stem, then 28, 14, 7, 4."""
        return cls(stem_channels=64, width=64, stages=4, units_per_stage=2, embedding_size=512, grid=1)


class MMAOutput(NamedTuple):
    va: torch.Tensor          # (N, 2) valence, arousal in [-1, 1]
    expression: torch.Tensor  # (N, 7) logits
    aus: torch.Tensor         # (N, 17) logits


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    """Convolution (no bias: the batch norm that follows has one) then batch norm; 'same'
    padding, so the side is divided by ``stride`` (rounded up)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ResidualUnit(nn.Module):
    """``ReLU(F(x) + shortcut(x))``: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            conv_bn(in_channels, out_channels, 3, stride),
            nn.ReLU(inplace=True),
            conv_bn(out_channels, out_channels, 3, 1),
        )
        # The unit starts as its shortcut (the last BN scales F by 0; Goyal et al. 2017):
        # a deep stack then trains from the first step like a shallow one.
        nn.init.zeros_(self.residual[-1][1].weight)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = conv_bn(in_channels, out_channels, 1, stride)  # projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class MMA(nn.Module):
    """``forward(images (N, 3, S, S) float in [0, 1])`` -> ``MMAOutput``; any S >= 8."""

    # Pixel statistics of face crops, roughly: inputs become about zero-mean, unit-variance.
    PIXEL_MEAN, PIXEL_STD = 0.5, 0.25

    def __init__(self, config: MMAConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MMAConfig()
        self.stem = nn.Sequential(conv_bn(3, config.stem_channels, 3, 2), nn.ReLU(inplace=True))
        units, channels = [], config.stem_channels
        for stage in range(config.stages):
            width = config.width * 2 ** stage
            for unit in range(config.units_per_stage):
                units.append(ResidualUnit(channels, width, stride=2 if unit == 0 else 1))
                channels = width
        self.units = nn.Sequential(*units)
        self.embedding = nn.Sequential(nn.Linear(channels * config.grid ** 2, config.embedding_size),
                                       nn.ReLU(inplace=True))
        self.va_head = nn.Linear(config.embedding_size, NUM_VA)
        self.expression_head = nn.Linear(config.embedding_size, NUM_EXPRESSIONS)
        self.au_head = nn.Linear(config.embedding_size, NUM_AUS)

    def forward(self, images: torch.Tensor) -> MMAOutput:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"MMA: images must be (N, 3, S, S), got shape {tuple(images.shape)}")
        x = (images - self.PIXEL_MEAN) / self.PIXEL_STD      # (N, 3, S, S)
        x = self.units(self.stem(x))                         # (N, C, S / 2^(K+1), S / 2^(K+1))
        x = F.adaptive_avg_pool2d(x, self.config.grid).flatten(1)  # (N, C * grid^2)
        x = self.embedding(x)                                # (N, E)
        return MMAOutput(torch.tanh(self.va_head(x)), self.expression_head(x), self.au_head(x))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The affect vector z per image: (N, 3, S, S) -> (N, 26) =
        [valence, arousal | expression probabilities (sum to 1) | AU probabilities]."""
        va, expression, aus = self(images)
        return torch.cat([va, expression.softmax(dim=1), aus.sigmoid()], dim=1)


def images_to_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Crops as stored, (N, S, S, 3) uint8 RGB, -> MMA's input (N, 3, S, S) float32 in [0, 1]
    on ``device`` (moved as uint8, a quarter of the bytes, then converted there). The result
    keeps the channels_last memory layout of the pixels, the faster one for convolutions."""
    images = torch.as_tensor(images).to(device, non_blocking=True)
    return images.permute(0, 3, 1, 2).float().div_(255)


def predict_features(
    model: MMA,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``model.features`` of stored crops (N, S, S, 3) uint8, in batches, without autograd, in
    eval mode (batch norm uses its running statistics): -> (N, 26) float32 NumPy.
    ``progress(done, total)`` is called after each batch."""
    model.eval()
    out = np.empty((len(images), AFFECT_DIM), np.float32)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images_to_tensor(images[start:start + batch_size], device)    # (b, 3, S, S)
            out[start:start + len(batch)] = model.features(batch).float().cpu().numpy()
            if progress is not None:
                progress(start + len(batch), len(images))
    return out
