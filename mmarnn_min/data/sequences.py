"""Video-level data for MRNN (paper, section 3.2): one sequence of per-frame affect vectors
Z_i (L_i, 26) and one label vector (7 reaction intensities) per video, padded into batches.

The same container holds cached MMA features, SynthAffect's oracle features
(``oracle_sequences``) and the planted data set of ``mmarnn_min.data.planted``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mmarnn_min.data.synth_config import SynthConfig
from mmarnn_min.data.synth_labels import oracle_features
from mmarnn_min.data.synth_make import video_plan


class SequenceDataset(Dataset):
    """Item i: ``(features (L_i, D) float32, labels (C,) float32)``, with L_i >= 1."""

    def __init__(self, features: Sequence[np.ndarray | torch.Tensor], labels: np.ndarray | torch.Tensor) -> None:
        self.features = [torch.as_tensor(z, dtype=torch.float32) for z in features]
        self.labels = torch.as_tensor(labels, dtype=torch.float32)                   # (N, C)
        if self.labels.dim() != 2 or len(self.features) != self.labels.shape[0]:
            raise ValueError(
                f"SequenceDataset: need one (C,) label row per sequence, got {len(self.features)} sequences "
                f"and labels of shape {tuple(self.labels.shape)}"
            )
        for i, z in enumerate(self.features):
            if z.dim() != 2 or z.shape[0] < 1 or z.shape[1] != self.features[0].shape[1]:
                raise ValueError(
                    f"SequenceDataset: sequence {i} has shape {tuple(z.shape)}; every sequence must be "
                    f"(L >= 1, {self.features[0].shape[1]})"
                )

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[i], self.labels[i]

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) int64: each sequence's number of frames."""
        return torch.tensor([z.shape[0] for z in self.features], dtype=torch.int64)


def pad_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[(z_i (L_i, D), y_i (C,))] -> z (B, T, D) zero-padded to T = max L_i, lengths (B,) int64, y (B, C)."""
    features, labels = zip(*batch)
    lengths = torch.tensor([z.shape[0] for z in features], dtype=torch.int64)       # (B,)
    padded = torch.nn.utils.rnn.pad_sequence(list(features), batch_first=True)      # (B, T, D)
    return padded, lengths, torch.stack(labels)                                     # ..., (B, C)


def oracle_sequences(config: SynthConfig, split: str) -> SequenceDataset:
    """SynthAffect's videos of ``split`` as the oracle sees them: the true per-frame affect
    vectors (VA, expression and AU probabilities; docs/design.md, section 6) with each
    video's 7 labels (self-reports in the Hume-like videos of ``SynthConfig.hume``). Only the
    labels are drawn, no pixels: a few tenths of a second."""
    plans = [video_plan(config, split, index)[0] for index in range(config.num_videos(split))]
    return SequenceDataset([oracle_features(plan.aus, plan.va) for plan in plans],
                           np.stack([plan.reactions for plan in plans]))
