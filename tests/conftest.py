"""Test-wide settings. The tests use tiny tensors: one CPU thread runs them as fast as two and
keeps them from stalling on OpenMP barriers when another process holds a core."""

import torch

torch.set_num_threads(1)
