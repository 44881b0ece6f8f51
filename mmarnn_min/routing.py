"""Masked routing: the layer that lets MRNN read videos of any length (paper, section 3.2).

The GRU runs over a batch padded to T frames. The Mask layer keeps the outputs of the real
frames of each video and routes only those into the next fully-connected layer; padded
frames get no value and no gradient (definitions and laws in ``docs/design.md``):

    out[b] = bias + sum_{t < lengths[b]} weight[:, t*D:(t+1)*D] @ h[b, t]

which equals ``linear(route(h, lengths), weight, bias)``. ``masked_routing_reference`` below
is that sum written as a loop: the definition, against which the tests hold every other
implementation. ``masked_routing(..., backend=...)`` runs one of them:

* ``"extension"``: the fused C++/CUDA operator ``torch.ops.mmarnn_min.masked_routing``
  (``mmarnn_min/csrc``), built on first use by ``mmarnn_min.extension``. It never builds the
  masked copy of ``h``, skips the frames past each video's length, and writes exact zeros
  there in the backward pass.
* ``"fallback"``: plain PyTorch, ``linear(route(h, lengths), weight, bias)``.
* ``"cuda_emulator"``: the CUDA kernels' own source executed on the CPU by an emulation of
  CUDA's execution model (``mmarnn_min/csrc/cuda_emulator.h``), for CPU tensors. Slow; it
  proves the GPU kernels on machines without a GPU.

``backend=None`` (or ``"auto"``) picks the extension when it works for the tensors' device and
the fallback otherwise; the environment variable ``MMARNN_BACKEND`` chooses the same way.

No host synchronisation: lengths on a GPU are never read by the host (the kernels clamp them
and assert on the device that each lies in [0, T]), so the op can be captured in a CUDA graph
or compiled with ``torch.compile(fullgraph=True)``. Lengths in host memory are checked before
anything else, with a message naming the bad value (under torch.compile, by the kernels).

dtypes: float64, float32, float16 and bfloat16; the two 16-bit ones are summed in float32 and
the output has the input's dtype. Under ``torch.autocast`` the op runs in the autocast dtype,
as ``torch.nn.functional.linear`` does.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from mmarnn_min import extension


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


BACKENDS = ("extension", "fallback", "cuda_emulator")
SUPPORTED_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_OPERATORS = {"extension": "masked_routing", "cuda_emulator": "masked_routing_emulated"}


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
    """Plain PyTorch: ``linear(route(h, lengths), weight, bias)``, (B, T, D) -> (B, F); in
    float32 for float16 and bfloat16 inputs, rounded back to their dtype."""
    if h.dtype not in _LOW_PRECISION:
        return F.linear(route(h, lengths), weight, bias)
    with torch.autocast(h.device.type, enabled=False):
        out = F.linear(route(h, lengths).float(), weight.float(), None if bias is None else bias.float())
    return out.to(h.dtype)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype ``torch.autocast`` runs ops like linear in on this device, None when it is off."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def check_routing_inputs(
    h: torch.Tensor, lengths: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> None:
    """Raise a ValueError / TypeError naming the argument when the shapes, dtypes or devices do
    not fit the definition (the C++ operators repeat these checks before they touch memory).
    Looks at no tensor's values: see ``check_lengths``. Under autocast, floating arguments may
    differ in dtype (autocast casts them all)."""
    if not isinstance(h, torch.Tensor) or h.dim() != 3:
        raise ValueError(f"masked_routing: h must be a (B, T, D) tensor, got shape {_shape(h)}")
    batch, frames, width = h.shape
    if h.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"masked_routing: h must be float64, float32, float16 or bfloat16, got {h.dtype}")
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
    same_dtype_needed = _autocast_dtype(h.device.type) is None
    if weight.dtype != h.dtype and (same_dtype_needed or not weight.is_floating_point()):
        raise TypeError(f"masked_routing: weight dtype {weight.dtype} differs from h dtype {h.dtype}")
    if weight.device != h.device:
        raise ValueError(f"masked_routing: weight is on {weight.device} but h is on {h.device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],):
            raise ValueError(
                f"masked_routing: bias must be ({weight.shape[0]},) to match weight, got shape {_shape(bias)}"
            )
        if bias.dtype != h.dtype and (same_dtype_needed or not bias.is_floating_point()):
            raise TypeError(f"masked_routing: bias dtype {bias.dtype} differs from h dtype {h.dtype}")
        if bias.device != h.device:
            raise ValueError(f"masked_routing: bias is on {bias.device} but h is on {h.device}")


def check_lengths(lengths: torch.Tensor, frames: int) -> None:
    """Raise a ValueError naming the first length outside [0, T]. Reads the values: call it
    only on lengths in host memory (for a GPU's, the kernels check on the device)."""
    bad = ((lengths < 0) | (lengths > frames)).nonzero()
    if len(bad):
        raise ValueError(
            f"masked_routing: every length must lie in [0, T] = [0, {frames}], got {int(lengths[bad[0, 0]])}"
        )


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """The backends that work for tensors on ``device`` (default: the CPU), in the order
    ``backend=None`` prefers them: the fused extension when its library for that device builds
    and loads (and, for CUDA, a GPU is there), the fallback, and on the CPU the emulated CUDA
    kernels (they come with the CPU library)."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        return []
    names = ["extension"] if extension.load(device) else []
    names.append("fallback")
    if device.type == "cpu" and "extension" in names:
        names.append("cuda_emulator")
    return names


@torch._dynamo.assume_constant_result
def _choose_backend(requested: str | None, device_type: str) -> str:
    """The backend a call runs on. A compiled graph asks once, when it is traced."""
    choice = requested if requested is not None else os.environ.get("MMARNN_BACKEND", "auto")
    if choice in ("", "auto"):
        return "extension" if extension.load(device_type) else "fallback"
    if choice not in BACKENDS:
        raise ValueError(f"masked_routing: backend must be one of auto, {', '.join(BACKENDS)}; got {choice!r}")
    if choice == "cuda_emulator" and device_type != "cpu":
        raise ValueError(f"masked_routing: the cuda_emulator backend runs on CPU tensors, not {device_type} ones")
    if choice != "fallback" and not extension.load(device_type, required=True):
        raise RuntimeError(f"masked_routing: the extension has no kernel for {device_type}")
    return choice


def masked_routing(
    h: torch.Tensor,
    lengths: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Route the real frames of ``h`` (B, T, D) into a linear layer: returns (B, F).

    ``lengths`` (B,) int64 holds each sample's true number of frames, 0 <= lengths[b] <= T; keep
    it on h's device (lengths in host memory for GPU tensors are copied over, which waits for
    the GPU). ``weight`` is (F, T*D), and may be a column slice of a wider matrix (its rows are
    read where they lie, not copied); ``bias`` (F,) or None.
    """
    check_routing_inputs(h, lengths, weight, bias)
    compiling = torch.compiler.is_compiling()
    if lengths.device.type == "cpu" and not compiling:
        check_lengths(lengths, h.shape[1])  # host memory: reading it waits for nothing
    lengths = lengths.to(h.device)
    autocast_dtype = _autocast_dtype(h.device.type)
    if autocast_dtype is not None:  # as autocast does for linear: every floating argument in its dtype
        h, weight = h.to(autocast_dtype), weight.to(autocast_dtype)
        bias = None if bias is None else bias.to(autocast_dtype)
    choice = _choose_backend(backend, h.device.type)
    if choice == "fallback":
        if h.device.type != "cpu" or compiling:  # checked on the device, never read back here
            torch._assert_async(((lengths >= 0) & (lengths <= h.shape[1])).all(),
                                "masked_routing: every length must lie in [0, T]")
        return masked_routing_fallback(h, lengths, weight, bias)
    operator = getattr(torch.ops.mmarnn_min, _OPERATORS[choice])
    return operator(h.contiguous(), lengths.contiguous(), _with_contiguous_rows(weight),
                    None if bias is None else bias.contiguous())


def _with_contiguous_rows(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` itself when each row is contiguous and the rows do not overlap (a column slice
    of a wider matrix, as MRNN passes, qualifies), else a contiguous copy."""
    rows, columns = weight.shape
    if columns <= 1 or (weight.stride(1) == 1 and (rows <= 1 or weight.stride(0) >= columns)):
        return weight
    return weight.contiguous()
