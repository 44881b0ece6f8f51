"""Benchmark of MRNN's recurrent layer (paper, section 3.2): the hand-written GRU of
``mmarnn_min.gru`` against ``torch.nn.GRU`` (C++ loop on the CPU, cuDNN on a GPU), forward
(inference, no autograd graph) and forward+backward (gradients of the input and of every
weight), at the paper's shape: B=32 videos, T=480 frames, 26 -> 128 units, float32.
"""

from __future__ import annotations

import torch

from mmarnn_min.bench.timing import time_side_by_side
from mmarnn_min.gru import GRU
from mmarnn_min.tables import format_table

PAPER_SHAPE = {"batch": 32, "frames": 480, "input_size": 26, "hidden_size": 128}
QUICK_SHAPE = {"batch": 4, "frames": 12, "input_size": 5, "hidden_size": 8}


def measure(
    device: torch.device, batch: int = 32, frames: int = 480, input_size: int = 26, hidden_size: int = 128, turns: int = 7
) -> list[dict]:
    """Rows ``{"pass", "hand-written ms", "torch ms", "ratio"}`` (ratio = hand-written / torch)
    for the forward and the forward+backward pass, timed in alternating turns."""
    torch.manual_seed(0)
    reference = torch.nn.GRU(input_size, hidden_size, batch_first=True).to(device)
    ours = GRU(input_size, hidden_size).to(device)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(batch, frames, input_size, device=device, requires_grad=True)
    grad_out = torch.randn(batch, frames, hidden_size, device=device)

    def forward(gru):
        def run():
            with torch.no_grad():
                return gru(x)[0]
        return run

    def forward_backward(gru):
        return lambda: torch.autograd.grad(gru(x)[0], [x, *gru.parameters()], grad_out)

    rows = []
    for name, contender in (("forward", forward), ("fwd+bwd", forward_backward)):
        seconds = time_side_by_side({"ours": contender(ours), "torch": contender(reference)}, device, turns=turns)
        rows.append({"pass": name, "hand-written ms": 1e3 * seconds["ours"], "torch ms": 1e3 * seconds["torch"],
                     "ratio": seconds["ours"] / seconds["torch"]})
    return rows


def run(device: torch.device, turns: int = 7, **shape) -> str:
    """The table of ``measure`` under a title naming the shape; ``shape`` defaults to PAPER_SHAPE."""
    shape = PAPER_SHAPE | shape
    rows = measure(device, turns=turns, **shape)
    title = (f"GRU on {device}: hand-written (mmarnn_min.gru) vs torch.nn.GRU, B={shape['batch']}, "
             f"T={shape['frames']}, {shape['input_size']} -> {shape['hidden_size']}, float32, "
             f"median of {turns} alternating turns")
    return title + "\n" + format_table(list(rows[0]), [list(row.values()) for row in rows])
