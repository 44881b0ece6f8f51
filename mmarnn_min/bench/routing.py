"""Benchmark of masked routing (docs/design.md; paper section 3.2).

The fused operator against the pure-PyTorch fallback and the reference loop
(``masked_routing_reference``: one matrix-vector product per video, straight off the
definition), forward and forward+backward, at the paper's shape (B=4, T=480, D=128, F=32) and at
B=64 and B=256, lengths uniform in [T/4, T]. Every figure is a ratio measured side by side in
one run. On a GPU it also prints the fused op's achieved memory bandwidth, counted from the
bytes it must move at least, against the device's peak.
"""

from __future__ import annotations

import torch

from mmarnn_min.bench.timing import time_side_by_side
from mmarnn_min.routing import (
    available_backends,
    masked_routing,
    masked_routing_reference,
)
from mmarnn_min.tables import format_table

PAPER_SHAPE = {"frames": 480, "width": 128, "features": 32}  # T, D (GRU units), F
BATCHES = (4, 64, 256)
REFERENCE_BACKWARD_UP_TO = 64  # the reference loop's backward takes seconds past this B


def make_inputs(batch: int, frames: int, width: int, features: int, device: torch.device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, frames, width, generator=gen)
    lengths = torch.randint(frames // 4, frames + 1, (batch,), generator=gen)
    weight = torch.randn(features, frames * width, generator=gen) / (frames * width) ** 0.5
    bias = torch.zeros(features)
    tensors = [t.to(device).requires_grad_(t.dtype.is_floating_point) for t in (h, weight, bias)]
    return tensors[0], lengths.to(device), tensors[1], tensors[2]


def minimum_bytes(lengths: torch.Tensor, frames: int, width: int, features: int, backward: bool) -> int:
    """Bytes any implementation must move (float32): the real frames of h and the weight
    columns up to the longest video, read once; the outputs (and gradients) written once."""
    real = int(lengths.sum()) * width
    used_columns = int(lengths.max()) * width
    forward = real + features * used_columns + lengths.numel() * features
    if not backward:
        return 4 * forward
    grads = real + features * used_columns + lengths.numel() * frames * width + features * frames * width
    return 4 * (forward + grads)


def peak_bandwidth(device: torch.device) -> float | None:
    """Theoretical HBM bandwidth in bytes/s: 2 transfers per memory clock over the bus."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    return 2 * clock_khz * 1e3 * bus_bits / 8 if clock_khz and bus_bits else None


def run(device: torch.device, batches=BATCHES, shape=PAPER_SHAPE, turns: int = 7) -> str:
    have_extension = "extension" in available_backends(device)  # builds (or loads) the library for device
    implementations = {"fallback": lambda *a: masked_routing(*a, backend="fallback"), "reference": masked_routing_reference}
    if have_extension:
        implementations = {"fused": lambda *a: masked_routing(*a, backend="extension"), **implementations}
    peak = peak_bandwidth(device)
    rows = []
    for batch in batches:
        h, lengths, weight, bias = make_inputs(batch, device=device, **shape)
        grad_out = torch.ones(batch, shape["features"], device=device)
        for backward in (False, True):
            def contender(fn):
                if not backward:
                    return lambda: fn(h.detach(), lengths, weight.detach(), bias.detach())
                return lambda: torch.autograd.grad(fn(h, lengths, weight, bias), (h, weight, bias), grad_out)

            timed = {name: fn for name, fn in implementations.items()
                     if not (name == "reference" and backward and batch > REFERENCE_BACKWARD_UP_TO)}
            seconds = time_side_by_side({name: contender(fn) for name, fn in timed.items()}, device, turns=turns)
            row = [batch, "fwd+bwd" if backward else "forward"]
            row += [1e3 * seconds[name] if name in seconds else "-" for name in implementations]
            if have_extension:
                row += [seconds["fallback"] / seconds["fused"],
                        seconds["reference"] / seconds["fused"] if "reference" in seconds else "-"]
                if peak:
                    achieved = minimum_bytes(lengths, backward=backward, **shape) / seconds["fused"]
                    row += [achieved / 1e9, 100 * achieved / peak]
            rows.append(row)
    header = ["B", "pass"] + [f"{name} ms" for name in implementations]
    if have_extension:
        header += ["fallback/fused", "reference/fused"] + (["fused GB/s", "% of peak"] if peak else [])
    threads = ""
    if device.type == "cpu":
        threads = f", {torch.get_num_threads()} CPU threads"
        if have_extension:
            threads += f", {torch.ops.mmarnn_min.cpu_kernels()} kernels"
    title = (f"masked routing on {device} (T={shape['frames']}, D={shape['width']}, F={shape['features']}, "
             f"lengths uniform in [T/4, T], float32{threads}, median of {turns} alternating turns)")
    if peak:
        title += f"; peak memory bandwidth {peak / 1e9:.0f} GB/s"
    if not have_extension:
        title += "; the fused extension is unavailable here"
    return title + "\n" + format_table(header, rows)
