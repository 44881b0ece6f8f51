"""Benchmark of MMA inference (paper section 3.1): face crops per second through
``MMA.features``, the work of the ``features`` stage.

On the CPU: the default network at 64 x 64, float32, memory laid out NCHW or channels_last.
On a GPU: the paper-sized network (ResNet-18-like) at 112 x 112, float32 against mixed
precision (``torch.autocast`` bfloat16 / float16) with channels_last; the goal is >= 5000
crops/s. Inputs are already on the device, as float in [0, 1]; a last row times the whole
path of ``predict_features`` from uint8 crops in host memory.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import numpy as np
import torch

from mmarnn_min.bench.timing import time_side_by_side
from mmarnn_min.mma import MMA, MMAConfig, predict_features
from mmarnn_min.tables import format_table

GPU_GOAL = 5000  # crops/s, paper config at 112 x 112, mixed precision


def contender(model: MMA, images: torch.Tensor, channels_last: bool, dtype: torch.dtype | None):
    """A call running ``model.features`` on ``images`` in the given layout and autocast dtype
    (on its own copy of the model: ``Module.to`` converts in place)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).to(memory_format=layout)
    images = images.contiguous(memory_format=layout)
    autocast = torch.autocast(images.device.type, dtype=dtype) if dtype else nullcontext()

    def run():
        with torch.inference_mode(), autocast:
            return model.features(images)
    return run


def run(device: torch.device, quick: bool = False) -> str:
    if device.type == "cuda":
        config, side, batch = MMAConfig.paper(), 112, 1024
        variants = {"fp32 NCHW": (False, None), "fp32 channels_last": (True, None),
                    "bf16 channels_last": (True, torch.bfloat16), "fp16 channels_last": (True, torch.float16)}
        torch.backends.cudnn.benchmark = True
    else:
        config, side, batch = MMAConfig(), 64, 256
        variants = {"fp32 NCHW": (False, None), "fp32 channels_last": (True, None)}
    turns, calls = 7, 3
    if quick:
        config, side, batch, turns, calls = MMAConfig.tiny(), 16, 8, 2, 1

    torch.manual_seed(0)
    model = MMA(config).to(device).eval()
    images = torch.rand(batch, 3, side, side, device=device)
    crops = np.random.default_rng(0).integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    contenders = {name: contender(model, images, *variant) for name, variant in variants.items()}
    stage_model = copy.deepcopy(model).to(memory_format=torch.channels_last)       # as the features stage runs it
    contenders["predict_features (uint8 from host, fp32)"] = lambda: predict_features(stage_model, crops, batch, device)
    seconds = time_side_by_side(contenders, device, turns=turns, calls_per_turn=calls)
    rows = [[name, 1e3 * s, round(batch / s)] for name, s in seconds.items()]
    weights = sum(p.numel() for p in model.parameters())
    title = (f"MMA inference on {device}: features() of {batch} crops {side}x{side}, {weights:,} weights, "
             f"median of {turns} alternating turns")
    if device.type == "cuda":
        title += f"; goal >= {GPU_GOAL} crops/s with mixed precision"
    return title + "\n" + format_table(["variant", "ms / batch", "crops/s"], rows)
