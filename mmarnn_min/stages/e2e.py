"""Stage ``e2e``: fine-tune MMA (paper section 3.1) and MRNN
(section 3.2) together, from the weights the ``mma`` and ``mrnn`` stages trained, as the paper
does after initialising each part: pixels of every frame -> MMA -> z (L, 26) -> MRNN -> 7
intensities, one Pearson loss, gradients into both networks.

A step takes ``batch_size`` videos, runs MMA over all their frames at once, pads the
per-frame vectors into (B, T, 26) and trains with the Pearson loss across the batch. MMA's
batch norm layers keep the statistics of their image training (eval mode): a batch of frames
from a few videos is a poor sample of faces, and the routed features MRNN learned on were
computed with those statistics. MRNN's routed weights keep LazyAdam's guarantee: blocks of
frames no video of the batch reached stay still.

Every epoch writes ``last.pt`` (both models, both optimizers, the shuffling state) and
``metrics.json``; the best epoch by validation Pearson writes ``best.pt`` in the layout
``mmarnn_min.checkpoints.load_trained`` reads. Writes are atomic; a killed run resumes exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mmarnn_min.affect import REACTIONS
from mmarnn_min.checkpoints import load_training_state, save_training_state
from mmarnn_min.checks import at_least, finite_loss, positive
from mmarnn_min.files import save_torch, write_json
from mmarnn_min.losses import pearson_loss
from mmarnn_min.metrics import improves, pearson
from mmarnn_min.mma import MMA, images_to_tensor
from mmarnn_min.mrnn import MRNN
from mmarnn_min.mrnn_variants import variant_of
from mmarnn_min.optim import mrnn_optimizer
from mmarnn_min.progress import ProgressLine
from mmarnn_min.runtime import full_precision, mixed_precision


@dataclass
class E2ETrainConfig:
    epochs: int = 2             # passes over the training videos
    batch_size: int = 16        # videos per step (the Pearson loss is taken across them)
    mma_lr: float = 1e-4        # Adam learning rate of MMA (small: it starts trained)
    mrnn_lr: float = 1e-3       # LazyAdam learning rate of MRNN

    def __post_init__(self) -> None:
        at_least(self, "epochs", 1)
        at_least(self, "batch_size", 2, "the Pearson loss correlates across the videos of a batch")
        positive(self, "mma_lr")
        positive(self, "mrnn_lr")


@dataclass(frozen=True)
class FrameVideos:
    """Videos as aligned crops: ``frames(i)`` -> (L_i, S, S, 3) uint8, ``reactions`` (N, 7)."""

    frames: Callable[[int], np.ndarray]
    reactions: np.ndarray

    def __len__(self) -> int:
        return len(self.reactions)


def video_features(mma: MMA, frames: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MMA's affect vectors of B videos, padded: [(L_i, S, S, 3)] -> z (B, max L, 26), lengths (B,)."""
    lengths = torch.tensor([len(f) for f in frames], dtype=torch.int64)           # (B,)
    z = mma.features(images_to_tensor(np.concatenate(frames), device))             # (sum L, 26)
    return torch.nn.utils.rnn.pad_sequence(list(z.split(lengths.tolist())), batch_first=True), lengths


@torch.no_grad()
def predict_videos(mma: MMA, mrnn: MRNN, videos: FrameVideos, device: torch.device, batch_size: int = 16) -> torch.Tensor:
    """(N, 7) predictions from pixels for every video, in order."""
    mma.eval()
    mrnn.eval()
    predictions = []
    for start in range(0, len(videos), batch_size):
        z, lengths = video_features(mma, [videos.frames(i) for i in range(start, min(start + batch_size, len(videos)))], device)
        predictions.append(mrnn(z, lengths).cpu())
    return torch.cat(predictions)


def evaluate_videos(mma: MMA, mrnn: MRNN, videos: FrameVideos, device: torch.device) -> dict:
    per_reaction = pearson(predict_videos(mma, mrnn, videos, device), videos.reactions)
    return {"pearson_mean": float(per_reaction.mean()), "pearson": dict(zip(REACTIONS, map(float, per_reaction)))}


def train_e2e(
    config: E2ETrainConfig,
    mma: MMA,
    mrnn: MRNN,
    image_size: int,
    train_videos: FrameVideos,
    val_videos: FrameVideos,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    seed: int = 0,
    resume: bool = False,
    log: Callable[[str], None] = print,
    run_id: str | None = None,
    amp: bool = False,
) -> dict:
    """Fine-tune ``mma`` and ``mrnn`` (already trained, on ``device``) for ``config.epochs``
    epochs; returns what is also written to ``out_dir/metrics.json``: the validation Pearson
    before fine-tuning (epoch 0), per epoch, and the best epoch's."""
    out_dir, device = Path(out_dir), torch.device(device)
    mma_optimizer = torch.optim.Adam(mma.parameters(), lr=config.mma_lr)
    mrnn_opt = mrnn_optimizer(mrnn, lr=config.mrnn_lr)
    generator = torch.Generator().manual_seed(seed)
    steps = len(train_videos) // config.batch_size                      # the last partial batch is dropped
    if steps == 0:
        raise ValueError(f"e2e: {len(train_videos)} training videos, fewer than one batch of {config.batch_size}")
    results = {"stage": "e2e", "config": asdict(config), "best_epoch": 0, "val_pearson_mean": float("-inf"),
               "val_pearson": {}, "history": []}

    checkpoint_path = out_dir / "last.pt"
    if resume and checkpoint_path.exists():
        results = load_training_state(checkpoint_path, device, mma=mma, mrnn=mrnn, mma_optimizer=mma_optimizer,
                                      mrnn_optimizer=mrnn_opt, generator=generator) | {"config": asdict(config)}
        log(f"resuming {checkpoint_path} after epoch {results['history'][-1]['epoch']}")
    else:
        before = evaluate_videos(mma, mrnn, val_videos, device)
        results["history"].append({"epoch": 0, "val_pearson_mean": before["pearson_mean"], "seconds": 0.0})
        log(f"e2e: {len(train_videos)} videos, {steps} steps of {config.batch_size} per epoch; "
            f"val Pearson before fine-tuning {before['pearson_mean']:.4f}")

    def save_best(epoch: int, validation: dict) -> None:
        save_torch({"mma": mma.state_dict(), "mma_config": asdict(mma.config), "image_size": image_size,
                    "mrnn": mrnn.state_dict(), "mrnn_config": asdict(mrnn.config),
                    "mrnn_variant": asdict(variant_of(mrnn)), "epoch": epoch, "run_id": run_id,
                    "val_pearson": validation["pearson"]}, out_dir / "best.pt")

    elapsed = results["history"][-1]["seconds"]
    first_epoch = results["history"][-1]["epoch"] + 1
    progress = ProgressLine("e2e", (config.epochs - first_epoch + 1) * steps)
    for epoch in range(first_epoch, config.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(train_videos), generator=generator)
        losses = []
        for step in range(steps):
            mma.eval()                     # batch norm keeps its image statistics; weights train
            mrnn.train()
            batch = order[step * config.batch_size:(step + 1) * config.batch_size].tolist()
            target = torch.as_tensor(train_videos.reactions[batch], device=device)             # (B, 7)
            with mixed_precision(device, amp):
                z, lengths = video_features(mma, [train_videos.frames(i) for i in batch], device)  # (B, T, 26)
                prediction = mrnn(z, lengths)                                                  # (B, 7)
            loss = pearson_loss(full_precision(prediction), target)
            finite_loss(loss.item(), f"stage e2e, epoch {epoch}, step {step + 1}",
                        "check the video labels and the learning rates (--e2e-mma-lr, --e2e-mrnn-lr)")
            mma_optimizer.zero_grad(set_to_none=True)
            mrnn_opt.zero_grad(set_to_none=True)
            loss.backward()
            mma_optimizer.step()
            mrnn_opt.step(frames_reached=mrnn.frames_reached(lengths))
            losses.append(loss.item())
            progress.update((epoch - first_epoch) * steps + step + 1, f"epoch {epoch}, loss {loss.item():.4f}")
        validation = evaluate_videos(mma, mrnn, val_videos, device)
        elapsed += time.perf_counter() - start
        results["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                                   "val_pearson_mean": validation["pearson_mean"],
                                   "val_pearson": validation["pearson"], "seconds": round(elapsed, 3)})
        if results["best_epoch"] == 0 or improves(validation["pearson_mean"], results["val_pearson_mean"]):
            results.update(best_epoch=epoch, val_pearson_mean=validation["pearson_mean"],
                           val_pearson=validation["pearson"])
            save_best(epoch, validation)
        save_training_state(checkpoint_path, results, mma=mma, mrnn=mrnn, mma_optimizer=mma_optimizer,
                            mrnn_optimizer=mrnn_opt, generator=generator)
        write_json(results, out_dir / "metrics.json")
        log(f"e2e epoch {epoch:3d}/{config.epochs}  train loss {results['history'][-1]['train_loss']:.4f}  "
            f"val pearson {validation['pearson_mean']:.4f}  best {results['val_pearson_mean']:.4f} "
            f"(epoch {results['best_epoch']})  {elapsed:6.1f} s")
    return results
