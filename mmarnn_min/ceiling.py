"""``python -m mmarnn_min.ceiling``: how far the pipeline can get at a given size when MMA is
told exactly what to read (a diagnostic of the gap between the report's two Pearson numbers).

The report reads the trained pipeline against the oracle, the same MRNN on SynthAffect's true
per-frame affect z_t. Between the two sits MMA (paper section 3.1):
how well it reads z_t from the pixels. This command bounds that from above for one network
size, crop size and video set. It trains an MMA of the config's size by least squares straight
on the oracle's 26 values of ``--frames`` frames drawn from the training videos, a supervision
no real data set offers (they give binary AUs, one expression, VA; the method's MMA learns from
those), then trains the config's MRNN on this MMA's per-frame values, and the oracle's MRNN as
the report does. It prints:

    frame r    correlation over all test video frames between this MMA's values and the
               oracle's, per value, averaged over the 26
    Pearson    test Pearson of the MRNN on this MMA's values and on the oracle's, and their ratio

Results go to ``OUT/ceiling.json``; the MRNNs' checkpoints to ``OUT/mrnn`` and ``OUT/oracle``.
What it measured: docs/experiments.md.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from mmarnn_min import cli
from mmarnn_min.checks import finite_loss
from mmarnn_min.config import PipelineConfig, check_pipeline, load_config
from mmarnn_min.data.sequences import SequenceDataset, oracle_sequences
from mmarnn_min.data.synth import SPLITS, VideoSet, make_videos
from mmarnn_min.errors import UserError
from mmarnn_min.files import write_json
from mmarnn_min.metrics import pearson
from mmarnn_min.mma import MMA, MMAConfig, images_to_tensor
from mmarnn_min.optim import warmup_cosine_lr
from mmarnn_min.progress import ProgressLine
from mmarnn_min.rundir import LOCK_NAME, OutputDirectory, RunDirectoryError
from mmarnn_min.runtime import resolve_device, set_threads
from mmarnn_min.stages.features import extract_features
from mmarnn_min.stages.mrnn import train_and_test
from mmarnn_min.tables import number


def train_on_oracle(model_config: MMAConfig, videos: VideoSet, frames: int, epochs: int, batch_size: int,
                    lr: float, weight_decay: float, seed: int, device: torch.device) -> MMA:
    """An MMA trained for ``epochs`` passes over ``frames`` frames drawn (without replacement,
    at most all of them) from ``videos``, by mean squared error between ``MMA.features`` and the
    oracle's values; AdamW with the mma stage's schedule, a random half of each batch mirrored."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    chosen = torch.randperm(len(videos.frames), generator=generator)[:frames].sort().values.numpy()
    images, targets = videos.frames[chosen], torch.from_numpy(videos.oracle[chosen])  # (F,S,S,3), (F,26)
    steps_per_epoch = len(chosen) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"ceiling: {len(chosen)} frames, fewer than one batch of {batch_size}")
    model = MMA(model_config).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    progress = ProgressLine("ceiling mma", steps_per_epoch * epochs)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(chosen), generator=generator)
        flips = torch.rand(len(chosen), generator=generator) < 0.5
        for step in range(steps_per_epoch):
            batch = order[step * batch_size:(step + 1) * batch_size]
            x = images_to_tensor(images[batch.numpy()], device)                       # (B, 3, S, S)
            x = torch.where(flips[batch].to(device)[:, None, None, None], x.flip(3), x)
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine_lr(lr, epoch * steps_per_epoch + step, steps_per_epoch * epochs)
            loss = (model.features(x) - targets[batch].to(device)).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = finite_loss(loss.item(), f"ceiling, epoch {epoch + 1}, step {step + 1}",
                                "check the learning rate (--config's mma.lr)")
            progress.update(epoch * steps_per_epoch + step + 1, f"epoch {epoch + 1}, loss {value:.4f}")
    return model


class CeilingDirectory(OutputDirectory):
    kind = "ceiling run"
    own_entries = (LOCK_NAME, "ceiling.json", "mrnn", "oracle")


def main(argv: list[str] | None = None) -> dict:
    parser = cli.Parser("python -m mmarnn_min.ceiling", __doc__)
    parser.add_argument("--config", default="default", help="tiny | default | paper | a run's config.json")
    parser.add_argument("--frames", type=int, default=20000, help="training-video frames MMA learns from")
    parser.add_argument("--epochs", type=int, default=4, help="passes over those frames")
    parser.add_argument("--out", type=cli.directory, default=Path("runs/ceiling"), help="output directory (default: runs/ceiling)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:N] (default: auto)")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: one per core)")
    args = parser.parse_args(argv)
    for flag in ("frames", "epochs"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    config = load_config(args.config)
    check_pipeline(config)
    if config.hume:
        raise UserError("the ceiling needs SynthAffect's true per-frame affect: drop hume from the config")
    device = resolve_device(args.device)
    set_threads(args.threads)
    out = CeilingDirectory(args.out)
    with out.lock():
        if (args.out / "ceiling.json").exists() and not args.overwrite:
            raise RunDirectoryError(f"{args.out} already holds a ceiling run: --overwrite replaces it, or choose "
                                    f"another --out")
        return measure_ceiling(config, args.frames, args.epochs, args.out, device)


def measure_ceiling(config: PipelineConfig, frames: int, epochs: int, out: Path, device: torch.device) -> dict:
    """Train the MMA on the oracle's values, then both MRNNs; write and return the numbers."""
    videos = {split: make_videos(config.data, split) for split in SPLITS}
    model = train_on_oracle(config.mma.model, videos["train"], frames, epochs, config.mma.batch_size,
                            config.mma.lr, config.mma.weight_decay, config.seed, device)

    features, oracle = {}, {}
    for split, split_videos in videos.items():
        per_video = extract_features(model, split_videos, config.features_batch_size, device)  # [(L_i, 26)]
        features[split] = SequenceDataset(per_video, split_videos.reactions)
        oracle[split] = oracle_sequences(config.data, split)
    frame_r = pearson(np.concatenate(features["test"].features), videos["test"].oracle)    # (26,)
    pipeline = train_and_test(config.mrnn, features, out / "mrnn", device, config.seed, resume=False)
    ceiling = train_and_test(config.mrnn, oracle, out / "oracle", device, config.seed, resume=False)

    results = {"config": dataclasses.asdict(config), "frames": min(frames, len(videos["train"].frames)),
               "epochs": epochs, "frame_r": float(np.nanmean(frame_r)), "frame_r_per_value": frame_r.tolist(),
               "pearson_mean": pipeline["test"]["pearson_mean"],
               "oracle_pearson_mean": ceiling["test"]["pearson_mean"]}
    results["fraction_of_oracle"] = results["pearson_mean"] / results["oracle_pearson_mean"]
    write_json(results, out / "ceiling.json")
    print(f"MMA regressed on the oracle's values of {results['frames']} training-video frames, "
          f"{epochs} epochs: frame r {results['frame_r']:.3f}; test Pearson {number(results['pearson_mean'], '.3f')}, "
          f"oracle {number(results['oracle_pearson_mean'], '.3f')}: {number(results['fraction_of_oracle'], '.0%')} "
          f"of the oracle")
    print(f"wrote {out / 'ceiling.json'}")
    return results


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:], "python -m mmarnn_min.ceiling"))
