"""Stage ``mrnn`` (paper section 3.2): train MRNN on per-frame feature sequences (cached MMA
features, SynthAffect's oracle features or planted data) with the Pearson loss, or MSE for
the ablation, and report the Pearson per reaction.

Every epoch writes ``last.pt`` (everything needed to resume) and ``metrics.json``; the epoch
with the best mean validation Pearson so far also writes ``best.pt``. All writes are atomic.
``train_and_test`` then evaluates the best epoch on the test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mmarnn_min.affect import REACTIONS
from mmarnn_min.checkpoints import load_mrnn, load_training_state, save_training_state
from mmarnn_min.checks import at_least, finite_loss, one_of, positive
from mmarnn_min.data.sequences import SequenceDataset, pad_collate
from mmarnn_min.errors import UserError
from mmarnn_min.files import save_torch, write_json
from mmarnn_min.losses import pearson_loss
from mmarnn_min.metrics import improves, pearson
from mmarnn_min.mrnn import MRNN, MRNNConfig
from mmarnn_min.mrnn_variants import MRNNVariant, build_mrnn
from mmarnn_min.optim import LazyAdam, mrnn_optimizer
from mmarnn_min.routing import available_backends
from mmarnn_min.runtime import full_precision, mixed_precision

LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "pearson": pearson_loss,     # the paper's: 1 - mean Pearson over the 7 reactions, across the batch
    "mse": F.mse_loss,           # ablation
}


@dataclass
class MRNNTrainConfig:
    model: MRNNConfig = field(default_factory=MRNNConfig)
    variant: MRNNVariant = field(default_factory=MRNNVariant)  # the paper's MRNN, or an ablation of it
    epochs: int = 30                                  # at most this many passes over the training set
    patience: int = 4                                 # stop after this many epochs without a better validation Pearson (0: never)
    batch_size: int = 32                              # videos per step (the Pearson loss is taken across them)
    lr: float = 3e-3                                  # Adam learning rate
    loss: Literal["pearson", "mse"] = "pearson"       # training loss: the paper's Pearson loss, or MSE (ablation)

    def __post_init__(self) -> None:
        one_of(self, "loss", tuple(LOSSES))
        at_least(self, "epochs", 1)
        at_least(self, "patience", 0)
        at_least(self, "batch_size", 2 if self.loss == "pearson" else 1,
                 "the Pearson loss correlates across the videos of a batch" if self.loss == "pearson" else "")
        positive(self, "lr")


def train_step(
    model: MRNN,
    optimizer: LazyAdam,
    z: torch.Tensor,
    lengths: torch.Tensor,
    target: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = pearson_loss,
    amp: bool = False,
) -> float:
    """One optimisation step on a padded batch z (B, T, D), lengths (B,), target (B, C). The
    routed-weight blocks of frames t >= max(lengths), which no video of the batch reached, and
    their Adam state stay exactly as they were; every other weight takes an Adam step. (The
    ablations without the mask train every block: ``MRNN.frames_reached``.) ``amp``: the
    forward pass in bfloat16 autocast, the loss in float32."""
    optimizer.zero_grad(set_to_none=True)
    with mixed_precision(z.device, amp):
        prediction = model(z, lengths)                                   # (B, C)
    loss = loss_fn(full_precision(prediction), target)
    loss.backward()
    optimizer.step(frames_reached=model.frames_reached(lengths))
    return loss.item()


@torch.no_grad()
def predict(model: MRNN, dataset: SequenceDataset, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """(N, C) predictions for every sequence of ``dataset``, in order."""
    model.eval()
    predictions = [
        model(z.to(device), lengths).cpu()
        for z, lengths, _ in DataLoader(dataset, batch_size=batch_size, collate_fn=pad_collate)
    ]
    return torch.cat(predictions)


def evaluate(model: MRNN, dataset: SequenceDataset, device: torch.device) -> dict:
    """Pearson per reaction (metrics.pearson over the whole set) and its mean, the paper's number."""
    per_reaction = pearson(predict(model, dataset, device), dataset.labels)
    return {"pearson_mean": float(per_reaction.mean()),
            "pearson": dict(zip(REACTIONS, map(float, per_reaction)))}


def train_mrnn(
    config: MRNNTrainConfig,
    train_set: SequenceDataset,
    val_set: SequenceDataset,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    seed: int = 0,
    resume: bool = False,
    log: Callable[[str], None] = print,
    run_id: str | None = None,
    amp: bool = False,
) -> dict:
    """Train until the validation Pearson has not improved for ``config.patience`` epochs, or
    for ``config.epochs`` epochs (continuing ``out_dir/last.pt`` when ``resume``), and return
    the results also written to ``out_dir/metrics.json``: the best epoch's validation Pearson
    per reaction and mean, and one history row per epoch (with the seconds spent training and
    validating so far). ``best.pt`` holds the best epoch's model."""
    out_dir, device = Path(out_dir), torch.device(device)
    torch.manual_seed(seed)
    model = build_mrnn(config.model, config.variant).to(device)
    optimizer = mrnn_optimizer(model, lr=config.lr)
    shuffle = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=shuffle,
                        collate_fn=pad_collate, drop_last=len(train_set) >= config.batch_size)
    loss_fn = LOSSES[config.loss]
    results = {"stage": "mrnn", "config": asdict(config), "best_epoch": 0, "val_pearson_mean": float("-inf"),
               "val_pearson": {}, "history": []}

    checkpoint_path = out_dir / "last.pt"
    if resume and checkpoint_path.exists():
        results = load_training_state(checkpoint_path, device, model=model, optimizer=optimizer,
                                      shuffle=shuffle) | {"config": asdict(config)}
        log(f"resuming {checkpoint_path} after epoch {len(results['history'])}")
    elif resume:
        log(f"nothing to resume in {out_dir}: starting afresh")

    backend = "fused extension" if "extension" in available_backends(device) else "PyTorch fallback"  # builds it now
    log(f"mrnn: {len(train_set)} training and {len(val_set)} validation videos, masked routing: {backend}, device {device}")
    elapsed = results["history"][-1]["seconds"] if results["history"] else 0.0
    first_epoch = len(results["history"]) + 1
    started = time.perf_counter()
    for epoch in range(first_epoch, config.epochs + 1):
        if converged(results, config.patience):
            break
        start = time.perf_counter()
        model.train()
        losses = [
            finite_loss(train_step(model, optimizer, z.to(device), lengths, y.to(device), loss_fn, amp),
                        f"stage mrnn ({out_dir.name}), epoch {epoch}, step {step}",
                        "check the video labels and the learning rate (--mrnn-lr)")
            for step, (z, lengths, y) in enumerate(loader, 1)
        ]
        validation = evaluate(model, val_set, device)
        elapsed += time.perf_counter() - start
        results["history"].append({"epoch": epoch, "train_loss": sum(losses) / len(losses),
                                   "val_pearson_mean": validation["pearson_mean"],
                                   "val_pearson": validation["pearson"], "seconds": round(elapsed, 3)})
        if results["best_epoch"] == 0 or improves(validation["pearson_mean"], results["val_pearson_mean"]):
            results.update(best_epoch=epoch, val_pearson_mean=validation["pearson_mean"],
                           val_pearson=validation["pearson"])
            save_torch({"model": model.state_dict(), "config": asdict(config.model),
                        "variant": asdict(config.variant), "epoch": epoch, "val_pearson": validation["pearson"],
                        "run_id": run_id},
                       out_dir / "best.pt")
        save_training_state(checkpoint_path, results, model=model, optimizer=optimizer, shuffle=shuffle)
        write_json(results, out_dir / "metrics.json")
        log(f"mrnn epoch {epoch:3d}/{config.epochs}  train loss {results['history'][-1]['train_loss']:.4f}  "
            f"val pearson {validation['pearson_mean']:.4f}  best {results['val_pearson_mean']:.4f} "
            f"(epoch {results['best_epoch']})  {elapsed:6.1f} s, ETA "
            f"{(time.perf_counter() - started) / (epoch - first_epoch + 1) * (config.epochs - epoch):4.0f} s at most")
    if converged(results, config.patience):
        log(f"mrnn: stopped after epoch {len(results['history'])}: no better validation Pearson for "
            f"{config.patience} epochs (best: epoch {results['best_epoch']})")
    return results


def converged(results: dict, patience: int) -> bool:
    """Early stopping: the last ``patience`` epochs brought no better validation Pearson."""
    return patience > 0 and len(results["history"]) - results["best_epoch"] >= patience


def check_fits(config: MRNNTrainConfig, sets: dict[str, SequenceDataset]) -> None:
    """A clear error, before training, when a video is longer than the routed layer reads (a
    fixed-length variant crops long videos instead)."""
    longest = max(int(s.lengths.max()) for s in sets.values())
    if not config.variant.fixed_length and longest > config.model.max_frames:
        raise UserError(f"a video has {longest} frames but the MRNN reads at most {config.model.max_frames}: "
                        f"raise --mrnn-max-frames (the paper: 480) or read fewer frames (--stride)")


def has_labels(dataset: SequenceDataset) -> bool:
    return bool(torch.isfinite(dataset.labels).all())


def train_and_test(config: MRNNTrainConfig, sets: dict[str, SequenceDataset], out_dir: Path, device: torch.device,
                   seed: int, resume: bool, log: Callable[[str], None] = print, run_id: str | None = None,
                   amp: bool = False) -> dict:
    """Train an MRNN on sets["train"], pick its epoch on sets["val"] and evaluate that epoch on
    sets["test"] (on val when the test labels are withheld); test predictions go to
    ``out_dir/test_predictions.npz``."""
    check_fits(config, sets)
    results = train_mrnn(config, sets["train"], sets["val"], out_dir, device, seed, resume, log, run_id, amp)
    model = load_mrnn(out_dir / "best.pt", device)
    test = sets.get("test")
    split = "test" if test is not None and has_labels(test) else "val"
    results["test_split"] = split
    results["test"] = evaluate(model, sets[split], device)
    if test is not None:
        np.savez(out_dir / "test_predictions.npz", predictions=predict(model, test, device).numpy(),
                 labels=test.labels.numpy())
    write_json(results, out_dir / "metrics.json")
    log(f"{out_dir.name}: {split} Pearson {results['test']['pearson_mean']:.4f} (best epoch {results['best_epoch']})")
    return results
