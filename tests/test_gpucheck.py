"""python -m mmarnn_min.gpucheck: without a GPU it says what it skipped and exits 0; its small
CUDA case is a working script; a train command without --amp is reported as such."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mmarnn_min import gpucheck
from mmarnn_min.routing import available_backends


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the path without a GPU")
def test_without_a_gpu_every_gpu_step_is_skipped_clearly():
    result = subprocess.run([sys.executable, "-m", "mmarnn_min.gpucheck"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.split()}
    assert " ok " in lines["environment"]
    for step in gpucheck.STEPS[1:]:
        assert "skipped: no CUDA device" in lines[step], result.stdout


def test_the_small_case_runs(capsys):
    """The script the sanitizers run, on the CPU (the same calls, the extension's CPU kernels)."""
    assert "extension" in available_backends("cpu")
    script = gpucheck.SMALL_CASE.replace('device="cuda"', 'device="cpu"').replace("torch.cuda.synchronize()", "")
    exec(compile(script, "small_case", "exec"), {})
    assert "small case done" in capsys.readouterr().out


def test_a_train_command_without_amp_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpucheck, "run_step", lambda command, timeout: (
        2, "usage: python -m mmarnn_min.train ...\ntrain: error: unrecognized arguments: --amp", 1.5))
    result = gpucheck.check("train", 300, tmp_path)
    assert result.status == "FAILED" and "does not accept a flag yet" in result.detail and "--amp" in result.detail
