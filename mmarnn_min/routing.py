"""Masked routing: the layer that lets MRNN read videos of any length (paper, section 3.2).

The GRU runs over a batch padded to T frames. The Mask layer keeps the outputs of the real
frames of each video and routes only those into the next fully-connected layer; padded
frames get no value and no gradient:

    out[b] = bias + sum_{t < lengths[b]} weight[:, t*D:(t+1)*D] @ h[b, t]          (DESIGN s.2)

which equals ``linear(route(h, lengths), weight, bias)``. Two implementations compute it:

* ``"extension"``: the fused C++/CUDA operator ``torch.ops.mmarnn_min.masked_routing``
  (``mmarnn_min/csrc``), built on first use by ``mmarnn_min.extension``. It never builds the
  masked copy of ``h``, skips the frames past each video's length and the weight columns past
  the batch's longest video, and writes exact zeros there in the backward pass.
* ``"fallback"``: plain PyTorch, ``linear(route(h, lengths), weight, bias)``.

``masked_routing(..., backend=None)`` picks the extension when it works for the tensors'
device and the fallback otherwise; ``backend="extension" | "fallback"`` (or the environment
variable ``MMARNN_BACKEND``) forces one.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from mmarnn_min import extension

BACKENDS = ("extension", "fallback")
_SUPPORTED_DTYPES = (torch.float32, torch.float64)


def masked_routing_reference(
    h: torch.Tensor, lengths: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """The definition of masked routing, written as the loop it is; every other implementation
    (the fallback, the C++ and CUDA kernels) is tested against this one, and the benchmark
    times it as the naive contender. (B, T, D) -> (B, F).

    For each video b, the sum over its real frames t < lengths[b] of W_t @ h[b, t], where
    W_t = weight[:, t*D:(t+1)*D], is one product of the first lengths[b]*D columns of weight
    with those frames flattened; padded frames are never read. Slow (one product per video),
    and kept that way: it is the op read straight off ``docs/design.md``."""
    batch, _, width = h.shape
    rows = []
    for b in range(batch):
        real = int(lengths[b]) * width                                        # L_b * D values
        row = weight[:, :real] @ h[b].reshape(-1)[:real]                      # (F,) = sum_t W_t h[b, t]
        rows.append(row if bias is None else bias + row)
    return torch.stack(rows) if rows else h.new_zeros(0, weight.shape[0])   # (B, F)


def route(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The Mask layer: (B, T, D) -> (B, T*D) with every value of a frame t >= lengths[b] set
    to exactly 0 (``where``, not a product, so that NaN or inf in the padding cannot leak)."""
    batch, frames, width = h.shape
    frame_index = torch.arange(frames, device=h.device)                       # (T,)
    is_real = frame_index.unsqueeze(0) < lengths.to(h.device).unsqueeze(1)    # (B, T)
    routed = torch.where(is_real.unsqueeze(2), h, torch.zeros((), dtype=h.dtype, device=h.device))
    return routed.reshape(batch, frames * width)                              # (B, T*D)


def masked_routing_fallback(
    h: torch.Tensor, lengths: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """The reference implementation in plain PyTorch: (B, T, D) -> (B, F)."""
    return F.linear(route(h, lengths), weight, bias)


def check_routing_inputs(
    h: torch.Tensor, lengths: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> None:
    """Raise a ValueError / TypeError naming the argument when the inputs do not fit
    DESIGN section 2 (the C++ operator repeats these checks before it touches memory)."""
    if not isinstance(h, torch.Tensor) or h.dim() != 3:
        raise ValueError(f"masked_routing: h must be a (B, T, D) tensor, got shape {_shape(h)}")
    batch, frames, width = h.shape
    if h.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"masked_routing: h must be float32 or float64, got {h.dtype}")
    if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(
            f"masked_routing: lengths must be a ({batch},) tensor (one length per sample of h), "
            f"got shape {_shape(lengths)}"
        )
    if lengths.dtype != torch.int64:
        raise TypeError(f"masked_routing: lengths must be int64, got {lengths.dtype}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != frames * width:
        raise ValueError(
            f"masked_routing: weight must be (F, T*D) = (F, {frames * width}) for h of shape "
            f"{tuple(h.shape)}, got shape {_shape(weight)}"
        )
    if weight.dtype != h.dtype:
        raise TypeError(f"masked_routing: weight dtype {weight.dtype} differs from h dtype {h.dtype}")
    if weight.device != h.device:
        raise ValueError(f"masked_routing: weight is on {weight.device} but h is on {h.device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],):
            raise ValueError(
                f"masked_routing: bias must be ({weight.shape[0]},) to match weight, got shape {_shape(bias)}"
            )
        if bias.dtype != h.dtype:
            raise TypeError(f"masked_routing: bias dtype {bias.dtype} differs from h dtype {h.dtype}")
        if bias.device != h.device:
            raise ValueError(f"masked_routing: bias is on {bias.device} but h is on {h.device}")
    if batch > 0:
        shortest, longest = torch.aminmax(lengths)
        if shortest.item() < 0 or longest.item() > frames:
            bad = lengths[(lengths < 0) | (lengths > frames)][0].item()
            raise ValueError(
                f"masked_routing: every length must lie in [0, T] = [0, {frames}], got {bad}"
            )


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def available_backends() -> list[str]:
    """The backends that work on this machine, the fused extension first when it builds."""
    return ["extension", "fallback"] if extension.load() else ["fallback"]


def _choose_backend(requested: str | None, device: torch.device) -> str:
    choice = requested if requested is not None else os.environ.get("MMARNN_BACKEND", "auto")
    if choice in (None, "", "auto"):
        return "extension" if extension.load(device) else "fallback"
    if choice not in BACKENDS:
        raise ValueError(f"masked_routing: backend must be one of auto, {', '.join(BACKENDS)}; got {choice!r}")
    if choice == "extension" and not extension.load(device, required=True):
        raise RuntimeError(f"masked_routing: the extension has no kernel for {device}")
    return choice


def masked_routing(
    h: torch.Tensor,
    lengths: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Route the real frames of ``h`` (B, T, D) into a linear layer: returns (B, F).

    ``lengths`` (B,) int64 holds each sample's true number of frames, 0 <= lengths[b] <= T;
    it may live on the CPU or on h's device. ``weight`` is (F, T*D), ``bias`` (F,) or None.
    """
    if isinstance(lengths, torch.Tensor) and isinstance(h, torch.Tensor) and lengths.device != h.device:
        lengths = lengths.to(h.device)
    check_routing_inputs(h, lengths, weight, bias)
    if _choose_backend(backend, h.device) == "fallback":
        return masked_routing_fallback(h, lengths, weight, bias)
    return torch.ops.mmarnn_min.masked_routing(h.contiguous(), lengths.contiguous(), weight.contiguous(),
                                               None if bias is None else bias.contiguous())
