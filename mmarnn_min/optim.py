"""Adam that keeps the routed weights of unreached frames still (paper, section 3.2: "the
weights not involved in the routing process remain constant"; docs/design.md, section 3).

With plain Adam a zero gradient still moves a weight: its moments remember earlier batches.
``LazyAdam`` cuts a frame-routed weight (F, T*D) into T column blocks, one per frame, and gives
a step only to the blocks t < ``frames_reached`` (the batch's longest video reaches frames
0 .. L-1, every shorter one a prefix of those). The other blocks keep their values, their
moments and their step count, bit for bit. Each block counts its own steps, so every block
follows exactly Adam's trajectory on the batches that reached it. Parameters in groups
without ``frames`` are ordinary Adam parameters (one block, reached by every step).

The update is torch.optim.Adam's (Kingma & Ba, with bias correction; no weight decay, no
amsgrad), per block with its own step count k:

    m = beta1 m + (1 - beta1) g          v = beta2 v + (1 - beta2) g^2
    w = w - lr / (1 - beta1^k) * m / (sqrt(v) / sqrt(1 - beta2^k) + eps)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


class LazyAdam(torch.optim.Optimizer):
    """``LazyAdam([{"params": [routing_weight], "frames": T}, {"params": others}], lr=...)``;
    ``step(frames_reached=int(lengths.max()))`` after each backward pass."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        frames: int | None = None,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, frames=frames))
        for group in self.param_groups:
            for p in group["params"]:
                if group["frames"] is not None and (p.dim() != 2 or p.shape[1] % group["frames"]):
                    raise ValueError(
                        f"LazyAdam: a parameter with frames={group['frames']} must be (F, T*D) with "
                        f"T = frames, got shape {tuple(p.shape)}"
                    )

    @torch.no_grad()
    def step(self, frames_reached: int | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            frames = group["frames"]
            if frames is not None and frames_reached is None:
                raise ValueError("LazyAdam.step: a group has frame blocks, pass frames_reached (the batch's longest length)")

            def reached_blocks(x: torch.Tensor) -> torch.Tensor:
                """A view of the blocks this step updates: (F, R, D), the frames t < frames_reached
                of a frame-routed weight; (1, 1, numel), the whole tensor, of any other."""
                if frames is None:
                    return x.view(1, 1, -1)
                return x.view(x.shape[0], frames, -1)[:, :frames_reached]

            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(frames or 1, dtype=torch.float64)   # one count per block
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                weight, grad = reached_blocks(p), reached_blocks(p.grad)              # (rows, R, width)
                exp_avg, exp_avg_sq = reached_blocks(state["exp_avg"]), reached_blocks(state["exp_avg_sq"])
                step = state["step"][: weight.shape[1]]                               # (R,), a view
                step += 1
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = (1 - beta1 ** step).to(p.device, p.dtype).view(1, -1, 1)  # (1, R, 1)
                bias_correction2 = (1 - beta2 ** step).to(p.device, p.dtype).view(1, -1, 1)
                denominator = (exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(group["eps"])
                weight.addcdiv_(exp_avg / bias_correction1, denominator, value=-group["lr"])


def mrnn_optimizer(model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> LazyAdam:
    """LazyAdam for an ``MRNN``: frame blocks for ``routing_weight``, plain Adam for the rest."""
    others = [p for name, p in model.named_parameters() if name != "routing_weight"]
    return LazyAdam(
        [{"params": [model.routing_weight], "frames": model.routed_frames}, {"params": others}],
        lr=lr, betas=betas, eps=eps,
    )


def warmup_cosine_lr(peak: float, step: int, total_steps: int, warmup: float = 0.05) -> float:
    """MMA's learning-rate schedule: a linear warm-up over the first ``warmup`` of the steps
    (Adam's early moments are poor estimates), then a half cosine down to 0."""
    warmup_steps = max(1, round(warmup * total_steps))
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
