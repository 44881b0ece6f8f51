"""Stage ``mma`` (paper section 3.1): train MMA from pixels on images with partial labels,
the sources mixed in every batch, with the multi-task loss ``L_VA + L_EXPR + L_AU + lambda
L_DM`` (``mmarnn_min.losses.mma_loss``).

Every epoch is evaluated on the validation images (``mmarnn_min.stages.mma_eval``) and writes
``last.pt`` (model, optimizer, shuffling state: everything needed to resume) and
``metrics.json``; the epoch with the best validation score (the mean of the trained tasks'
metrics) also writes ``best.pt``, which the ``features`` stage reads and on which the test
images are evaluated at the end. Writes are atomic; a resumed run ends bit for bit where an
unbroken one would (on the CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mmarnn_min.affect import au_relation_matrix
from mmarnn_min.checkpoints import (
    load_training_state,
    read_checkpoint,
    save_training_state,
)
from mmarnn_min.checks import ConfigError, at_least, finite_loss, positive
from mmarnn_min.data.synth import ImageSet, SynthConfig
from mmarnn_min.data.training_images import image_splits
from mmarnn_min.files import save_torch, write_json
from mmarnn_min.losses import mma_loss
from mmarnn_min.metrics import improves
from mmarnn_min.mma import MMA, MMAConfig, images_to_tensor
from mmarnn_min.optim import warmup_cosine_lr
from mmarnn_min.progress import ProgressLine
from mmarnn_min.runtime import full_precision, mixed_precision
from mmarnn_min.stages.mma_eval import TASKS, chance_levels, describe, evaluate

# Why lambda = 0.3 and not 1. L_DM's soft target q = p(e) @ R marks *every* AU of the Du row of
# each expression as present with the expression's probability, so a weak smile that the
# expression head calls happy with p = 0.6 is pushed towards AU6, AU12 (and the row's
# observational AUs) at 0.6, where an annotator marks an AU12 of intensity 0.3 only now and
# then. Posed images show a Du row whole, so there q and the labels roughly agree; the frames
# of reaction videos show weak, partial AU patterns, and there they do not. A smaller weight
# keeps the coupling of the partially labelled sources and loses less of the video frames'
# accuracy (the measurements: docs/experiments.md).


@dataclass
class MMATrainConfig:
    model: MMAConfig = field(default_factory=MMAConfig)
    epochs: int = 10                  # passes over the training images
    batch_size: int = 64              # images per step, the three sources mixed
    lr: float = 3e-3                  # AdamW's peak learning rate: 5% linear warm-up, then cosine to 0
    weight_decay: float = 5e-4        # AdamW's decoupled weight decay
    dm_weight: float = 0.3            # lambda, the weight of the distribution-matching term L_DM (0: off; why 0.3: above)
    tasks: str = "va,expr,au"         # tasks trained, comma-separated (ablation: one alone)
    flip: bool = True                 # mirror a random half of each batch left-right (the faces are symmetric)

    def __post_init__(self) -> None:
        unknown = set(self.task_list) - set(TASKS)
        if unknown or not self.task_list:
            raise ConfigError("tasks", f"must be a comma-separated subset of {', '.join(TASKS)}, got {self.tasks!r}")
        at_least(self, "epochs", 1)
        at_least(self, "batch_size", 2, "batch norm and the CCC of L_VA need two images")
        positive(self, "lr")
        at_least(self, "weight_decay", 0.0)
        at_least(self, "dm_weight", 0.0)

    @property
    def task_list(self) -> tuple[str, ...]:
        return tuple(task.strip() for task in self.tasks.split(",") if task.strip())


def training_labels(images: ImageSet, tasks: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(va (N, 2), expression (N,), aus (N, 17)) tensors, with the labels of tasks not
    trained removed (NaN / -1), as if no sample carried them."""
    va, expression, aus = (torch.from_numpy(a) for a in (images.va, images.expression, images.aus))
    return (va if "va" in tasks else torch.full_like(va, math.nan),
            expression if "expr" in tasks else torch.full_like(expression, -1),
            aus if "au" in tasks else torch.full_like(aus, math.nan))


def train_mma(
    config: MMATrainConfig,
    data: SynthConfig | Mapping[str, ImageSet],
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    seed: int = 0,
    resume: bool = False,
    log: Callable[[str], None] = print,
    run_id: str | None = None,
    amp: bool = False,
) -> dict:
    """Train MMA on the images of ``data`` (SynthAffect's of a SynthConfig, or a mapping
    split -> ImageSet, see ``image_splits``) for ``config.epochs`` epochs
    (continuing ``out_dir/last.pt`` when ``resume``), then evaluate ``best.pt`` on the test
    images. Returns what is also written to ``out_dir/metrics.json``: the untrained (epoch 0)
    and per-epoch validation metrics, the best epoch, its test metrics and the test chance
    levels. The learning rate follows the schedule of ``config.epochs``: resuming with the
    same config is exact; resuming with more epochs stretches the rest of the schedule."""
    out_dir, device = Path(out_dir), torch.device(device)
    tasks = config.task_list
    dm_weight = config.dm_weight if {"expr", "au"} <= set(tasks) else 0.0
    splits = image_splits(data)
    train_set, val_set = splits["train"], splits["val"]
    images = train_set.images                         # (N, S, S, 3) uint8, maybe a memmap: read by batch
    labels = training_labels(train_set, tasks)
    relation = au_relation_matrix().to(device)                                # (7, 17)

    torch.manual_seed(seed)
    model = MMA(config.model).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)                          # shuffling and flips
    steps_per_epoch = len(train_set) // config.batch_size                     # the last partial batch is dropped
    if steps_per_epoch == 0:
        raise ValueError(f"mma: {len(train_set)} training images, fewer than one batch of {config.batch_size}")
    total_steps = steps_per_epoch * config.epochs
    results = {"stage": "mma", "config": asdict(config), "best_epoch": 0, "val": {}, "history": []}

    log(f"mma: {len(train_set)} training images (3 sources mixed), {steps_per_epoch} steps of {config.batch_size} "
        f"per epoch, tasks {'+'.join(tasks)}, lambda_DM {dm_weight}, {sum(p.numel() for p in model.parameters()):,} "
        f"weights, device {device}, {torch.get_num_threads()} CPU threads")
    checkpoint_path = out_dir / "last.pt"
    if resume and checkpoint_path.exists():
        results = load_training_state(checkpoint_path, device, model=model, optimizer=optimizer,
                                      generator=generator) | {"config": asdict(config)}
        log(f"resuming {checkpoint_path} after epoch {results['history'][-1]['epoch']}")
    else:
        if resume:
            log(f"nothing to resume in {out_dir}: starting afresh")
        untrained = evaluate(model, val_set, device, tasks)
        results["history"].append({"epoch": 0, "val": untrained, "seconds": 0.0})
        log(f"mma untrained: val {describe(untrained)}")

    elapsed = results["history"][-1]["seconds"]
    first_epoch = results["history"][-1]["epoch"] + 1
    progress = ProgressLine("mma", (config.epochs - first_epoch + 1) * steps_per_epoch)
    for epoch in range(first_epoch, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_set), generator=generator)
        flips = torch.rand(len(train_set), generator=generator) < 0.5
        parts_sum: dict[str, float] = {}
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            x = images_to_tensor(images[batch.numpy()], device)                  # (B, 3, S, S)
            if config.flip:
                x = torch.where(flips[batch].to(device)[:, None, None, None], x.flip(3), x)
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine_lr(config.lr, (epoch - 1) * steps_per_epoch + step, total_steps)
            with mixed_precision(device, amp):                                 # amp: bfloat16 convolutions
                outputs = model(x)
            outputs = type(outputs)(*map(full_precision, outputs))             # the loss in float32 at least
            loss, parts = mma_loss(outputs, [label[batch].to(device) for label in labels], relation, dm_weight)
            finite_loss(parts["total"], f"stage mma, epoch {epoch}, step {step + 1}",
                        "check the image labels and the learning rate (--mma-lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            parts_sum = {name: parts_sum.get(name, 0.0) + value for name, value in parts.items()}
            progress.update((epoch - first_epoch) * steps_per_epoch + step + 1, f"epoch {epoch}, loss {parts['total']:.3f}")
        validation = evaluate(model, val_set, device, tasks)
        elapsed += time.perf_counter() - start
        train_loss = {name: value / steps_per_epoch for name, value in parts_sum.items()}
        results["history"].append({"epoch": epoch, "train_loss": train_loss, "val": validation,
                                   "seconds": round(elapsed, 3)})
        if epoch == 1 or improves(validation["score"], results["val"]["score"]):
            results.update(best_epoch=epoch, val=validation)
            save_torch({"model": model.state_dict(), "config": asdict(config.model), "epoch": epoch, "run_id": run_id,
                             "image_size": train_set.images.shape[1], "val": validation}, out_dir / "best.pt")
        save_training_state(checkpoint_path, results, model=model, optimizer=optimizer, generator=generator)
        write_json(results, out_dir / "metrics.json")
        eta = (time.perf_counter() - progress.start) / (epoch - first_epoch + 1) * (config.epochs - epoch)
        log(f"mma epoch {epoch:3d}/{config.epochs}  loss {train_loss['total']:.3f} (va {train_loss['va']:.3f} "
            f"expr {train_loss['expr']:.3f} au {train_loss['au']:.3f} dm {train_loss['dm']:.3f})  "
            f"val {describe(validation)}  {elapsed:6.1f} s, ETA {eta:4.0f} s")

    test_set = splits["test"]
    model.load_state_dict(read_checkpoint(out_dir / "best.pt", device)["model"])
    results.update(test=evaluate(model, test_set, device, tasks), test_chance=chance_levels(test_set))
    write_json(results, out_dir / "metrics.json")
    log(f"mma test (best epoch {results['best_epoch']}): {describe(results['test'])}; chance: "
        f"expr F1 {results['test_chance']['expr_f1']:.3f}, AU F1 {results['test_chance']['au_f1']:.3f}, VA CCC 0")
    return results
