"""Stage ``mma`` (DESIGN section 1, stage 1; paper section 3.1): train MMA from pixels on
SynthAffect's three image sources, mixed in every batch, with the multi-task loss
``L_VA + L_EXPR + L_AU + lambda L_DM`` (``mmarnn_min.losses.mma_loss``).

Every epoch is evaluated on the validation images (CCC of valence and arousal, macro F1 over
the 7 expressions, macro F1 over the AUs at 0.5) and writes ``last.pt`` (model, optimizer,
shuffling state: everything needed to resume) and ``metrics.json``; the epoch with the best
validation score (the mean of the trained tasks' metrics) also writes ``best.pt``, which the
``features`` stage reads and on which the test images are evaluated at the end. Writes are
atomic; a resumed run ends bit for bit where an unbroken one would (on the CPU).

Ablations (``run_ablation``): without L_DM; each task alone. Training a task alone drops the
other tasks' labels (they then only appear in the evaluation) and L_DM, which couples two
tasks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from mmarnn_min.affect import NUM_EXPRESSIONS, au_relation_matrix
from mmarnn_min.bench.timing import format_table
from mmarnn_min.data.synth import ImageSet, SynthConfig, make_images
from mmarnn_min.losses import mma_loss
from mmarnn_min.metrics import au_f1, ccc, expression_f1
from mmarnn_min.mma import MMA, MMAConfig, images_to_tensor, predict_features
from mmarnn_min.stages import ProgressLine, load_training_state, save_checkpoint, save_training_state, write_json

TASKS: tuple[str, ...] = ("va", "expr", "au")
METRICS: dict[str, str] = {"va": "va_ccc_mean", "expr": "expr_f1", "au": "au_f1"}  # task -> its metric

# Why lambda = 0.3 and not 1. L_DM's soft target q = p(e) @ R marks *every* AU of the Du row of
# each expression as present with the expression's probability, so a weak smile that the
# expression head calls happy with p = 0.6 is pushed towards AU6, AU12 (and the row's
# observational AUs) at 0.6, where the annotator marks an AU12 of intensity 0.3 about one time
# in eight. Posed images show a Du row whole, so there q and the labels roughly agree; the
# frames of reaction videos show weak, partial AU patterns, and there they do not. Measured
# on the default SynthAffect run, as (frame r: correlation over all test video frames between
# MMA's 26 values and the oracle's, averaged over the 26; pipeline test Pearson):
#     lambda 1: 0.647, 0.442    0.3: 0.682, 0.483    0.1: 0.689, 0.427    0: 0.693, 0.456
# The Pearson of 100 test videos moves by about +-0.03 between such runs; frame r is the
# steadier number. 0.3 keeps the coupling of the partially labelled sources (its AU F1 on the
# test images was the best of the four: 0.480, against 0.478 at 1 and 0.448 at 0) and loses
# little of the video frames' accuracy.


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
            raise ValueError(f"MMATrainConfig.tasks: a comma-separated subset of {TASKS}, got {self.tasks!r}")

    @property
    def task_list(self) -> tuple[str, ...]:
        return tuple(task.strip() for task in self.tasks.split(",") if task.strip())


def learning_rate(peak: float, step: int, total_steps: int, warmup: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of the steps, then a half cosine down to 0."""
    warmup_steps = max(1, round(warmup * total_steps))
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def training_labels(images: ImageSet, tasks: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(va (N, 2), expression (N,), aus (N, 17)) tensors, with the labels of tasks not
    trained removed (NaN / -1), as if no sample carried them."""
    va, expression, aus = (torch.from_numpy(a) for a in (images.va, images.expression, images.aus))
    return (va if "va" in tasks else torch.full_like(va, math.nan),
            expression if "expr" in tasks else torch.full_like(expression, -1),
            aus if "au" in tasks else torch.full_like(aus, math.nan))


def affect_metrics(z: np.ndarray, images: ImageSet) -> dict:
    """The ABAW metrics of per-image affect vectors z (N, 26) against ``images``' labels, each
    over the images that carry the label: CCC of valence and arousal and their mean, macro F1
    over the 7 expressions (argmax), macro F1 over the AUs at 0.5 (each AU over the images
    that code it)."""
    va_pred, expression_probs, au_probs = z[:, :2], z[:, 2:2 + NUM_EXPRESSIONS], z[:, 2 + NUM_EXPRESSIONS:]
    has_va = ~np.isnan(images.va).any(axis=1)
    has_expression = images.expression >= 0
    has_aus = ~np.isnan(images.aus).all(axis=1)                      # some AU coded (NaN: not coded)
    valence, arousal = ccc(va_pred[has_va], images.va[has_va])
    return {"va_ccc_mean": float(valence + arousal) / 2, "valence_ccc": float(valence), "arousal_ccc": float(arousal),
            "expr_f1": expression_f1(expression_probs[has_expression].argmax(axis=1), images.expression[has_expression]),
            "au_f1": au_f1(au_probs[has_aus], images.aus[has_aus])}


def chance_levels(images: ImageSet) -> dict:
    """What guessing scores on ``images``, for reading the metrics: VA CCC 0 (a prediction
    independent of the truth); expression F1 of a uniform random guess (class k: precision
    = its frequency b_k, recall 1/7); AU F1 of calling every AU present, the best guess that
    ignores the image (AU k: F1 = 2 b_k / (1 + b_k))."""
    expression = images.expression[images.expression >= 0]
    b = np.bincount(expression, minlength=NUM_EXPRESSIONS) / len(expression)
    r = 1 / NUM_EXPRESSIONS
    coded = ~np.isnan(images.aus).all(axis=0)                                 # AUs some image codes
    au_rate = np.nanmean(images.aus[:, coded], axis=0)
    return {"va_ccc_mean": 0.0, "expr_f1": float(np.mean(2 * b * r / (b + r))),
            "au_f1": float(np.mean(2 * au_rate / (1 + au_rate)))}


def evaluate(model: MMA, images: ImageSet, device: torch.device, tasks: tuple[str, ...] = TASKS) -> dict:
    """``affect_metrics`` of the model on ``images``, plus ``score``: the mean of the metrics of
    the trained ``tasks`` (what picks the best epoch)."""
    metrics = affect_metrics(predict_features(model, images.images, device=device), images)
    return metrics | {"score": float(np.mean([metrics[METRICS[task]] for task in tasks]))}


def describe(metrics: dict) -> str:
    return (f"VA CCC {metrics['va_ccc_mean']:.3f} (v {metrics['valence_ccc']:.3f}, a {metrics['arousal_ccc']:.3f})  "
            f"expr F1 {metrics['expr_f1']:.3f}  AU F1 {metrics['au_f1']:.3f}")


def image_splits(data: SynthConfig | Mapping[str, ImageSet]) -> Mapping[str, ImageSet]:
    """The train, val and test images: SynthAffect's for a SynthConfig, else ``data`` itself
    (e.g. real data sets read by ``mmarnn_min.data``), which must hold those three splits."""
    if isinstance(data, SynthConfig):
        return {split: make_images(data, split) for split in ("train", "val", "test")}
    missing = {"train", "val", "test"} - set(data)
    if missing:
        raise ValueError(f"mma: the image data lack the split(s) {', '.join(sorted(missing))}")
    return data


def train_mma(
    config: MMATrainConfig,
    data: SynthConfig | Mapping[str, ImageSet],
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    seed: int = 0,
    resume: bool = False,
    log: Callable[[str], None] = print,
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
                group["lr"] = learning_rate(config.lr, (epoch - 1) * steps_per_epoch + step, total_steps)
            loss, parts = mma_loss(model(x), [label[batch].to(device) for label in labels], relation, dm_weight)
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
        if epoch == 1 or validation["score"] > results["val"]["score"]:
            results.update(best_epoch=epoch, val=validation)
            save_checkpoint({"model": model.state_dict(), "config": asdict(config.model), "epoch": epoch,
                             "image_size": train_set.images.shape[1], "val": validation}, out_dir / "best.pt")
        save_training_state(checkpoint_path, results, model=model, optimizer=optimizer, generator=generator)
        write_json(results, out_dir / "metrics.json")
        eta = (time.perf_counter() - progress.start) / (epoch - first_epoch + 1) * (config.epochs - epoch)
        log(f"mma epoch {epoch:3d}/{config.epochs}  loss {train_loss['total']:.3f} (va {train_loss['va']:.3f} "
            f"expr {train_loss['expr']:.3f} au {train_loss['au']:.3f} dm {train_loss['dm']:.3f})  "
            f"val {describe(validation)}  {elapsed:6.1f} s, ETA {eta:4.0f} s")

    test_set = splits["test"]
    best = torch.load(out_dir / "best.pt", map_location=device, weights_only=False)
    model.load_state_dict(best["model"])
    results.update(test=evaluate(model, test_set, device, tasks), test_chance=chance_levels(test_set))
    write_json(results, out_dir / "metrics.json")
    log(f"mma test (best epoch {results['best_epoch']}): {describe(results['test'])}; chance: "
        f"expr F1 {results['test_chance']['expr_f1']:.3f}, AU F1 {results['test_chance']['au_f1']:.3f}, VA CCC 0")
    return results


def build_mma(state_dict: dict, config: dict, device: str | torch.device = "cpu") -> MMA:
    """An MMA of ``config`` (an MMAConfig as a dict) holding ``state_dict``, in eval mode, on
    ``device``. A config without ``grid`` comes from before the grid existed: global pool."""
    model = MMA(MMAConfig(**{"grid": 1, **config})).to(device, memory_format=torch.channels_last)
    model.load_state_dict(state_dict)
    return model.eval()


def load_mma(checkpoint: str | Path, device: str | torch.device = "cpu") -> MMA:
    """The model saved in a ``best.pt`` of this stage, in eval mode, on ``device``."""
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    return build_mma(state["model"], state["config"], device)


ABLATIONS: dict[str, dict] = {       # variant -> changes to the config
    "all three + L_DM": {},
    "all three, no L_DM": {"dm_weight": 0.0},
    "VA alone": {"tasks": "va"},
    "expression alone": {"tasks": "expr"},
    "AUs alone": {"tasks": "au"},
}


def run_ablation(
    config: MMATrainConfig,
    synth_config: SynthConfig,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Train every variant of ``ABLATIONS`` (in ``out_dir/<n>``, resumable) and return each
    one's test metrics; ``format_ablation`` prints them as a table."""
    table = {}
    for index, (name, changes) in enumerate(ABLATIONS.items()):
        log(f"ablation {index + 1}/{len(ABLATIONS)}: {name}")
        results = train_mma(replace(config, **changes), synth_config, Path(out_dir) / str(index), device, seed,
                            resume=True, log=log)
        table[name] = results["test"] | {"seconds": results["history"][-1]["seconds"]}
    write_json(table, Path(out_dir) / "ablation.json")
    return table


def format_ablation(table: dict[str, dict]) -> str:
    header = ["variant", "VA CCC", "valence", "arousal", "expr F1", "AU F1", "train s"]
    rows = [[name, m["va_ccc_mean"], m["valence_ccc"], m["arousal_ccc"], m["expr_f1"], m["au_f1"], round(m["seconds"])]
            for name, m in table.items()]
    return format_table(header, rows)
