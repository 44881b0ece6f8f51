"""Test-wide settings. The tests use tiny tensors: one CPU thread runs them as fast as two and
keeps them from stalling on OpenMP barriers when another process holds a core."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh, empty cache (extensions, SynthAffect) for one test."""
    monkeypatch.setenv("MMARNN_CACHE", str(tmp_path))
    return tmp_path
