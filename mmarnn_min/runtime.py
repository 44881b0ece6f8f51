"""Where the computation runs: the device and the CPU threads a command was asked for."""

from __future__ import annotations

import torch

from mmarnn_min.errors import UserError


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; anything else as torch reads it, checked
    to exist here (a UserError naming the flag otherwise)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise UserError(f"--device {device}: not a device name ({error}); use auto, cpu or cuda[:N]") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available here; use --device cpu")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif chosen.type != "cpu":
        raise UserError(f"--device {device}: only cpu and cuda are supported")
    return chosen


def mixed_precision(device: torch.device, enabled: bool):
    """The context a training step's forward pass runs in: bfloat16 autocast on ``device`` when
    ``enabled`` (matrix products in bfloat16, sums and the recurrent state in float32; no loss
    scaling is needed, bfloat16 has float32's range), else full precision."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when autocast left it in a 16-bit float (losses are summed in float32);
    float32 and float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for PyTorch (None: torch's default, one per core)."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads} (leave it out for one per core)")
    torch.set_num_threads(threads)
