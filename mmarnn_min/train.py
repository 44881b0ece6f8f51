"""``python -m mmarnn_min.train [STAGE ...] [flags]``: the whole method, stage by stage (DESIGN
section 1), and the report.

    mma       paper section 3.1: the multi-task CNN on face images (VA, expressions, AUs)
    features  the frozen MMA over every frame of every video, cached: z (L, 26) per video
    mrnn      paper section 3.2: GRU + masked routing + FC(32) + FC(7) on the cached z, with
              the Pearson loss; on SynthAffect also the same MRNN on the true per-frame affect
              (the oracle: the ceiling the report compares with)
    e2e       both networks fine-tuned together from pixels, from the weights above

With no stage, ``mma features mrnn`` run on the embedded SynthAffect data and the report is
printed and written to OUT/report.json and OUT/report.md (with plots when matplotlib is
installed). Every stage is resumable (``--resume`` continues a killed run where it stopped
and ends as an unbroken run would) and writes atomically into OUT:

    OUT/config.json   the full config of the run        OUT/mma/       MMA checkpoints, metrics
    OUT/features/     cached per-frame vectors          OUT/mrnn/      MRNN checkpoints, metrics
    OUT/oracle/       the oracle MRNN                   OUT/e2e/       the fine-tuned pair
    OUT/report.json, OUT/report.md, OUT/plots/

``--config tiny | default | paper | FILE.json`` picks the starting config (tiny: seconds, for
tests; default: minutes on a laptop CPU; paper: the paper's sizes, for one GPU); every field
is also a flag (``--mma-epochs``, ``--mrnn-hidden-size``, ``--data-train-videos``, ...: see
``--help``). Real data (``mmarnn_min.data``, formats in DATA_FORMATS.md): ``--hume ROOT``
replaces SynthAffect's videos; ``--affwild2``, ``--affectnet``, ``--emotionet`` add image
sets to MMA's training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from mmarnn_min.cli_config import add_config_flags, apply_flags, config_from_dict
from mmarnn_min.data.sequences import SequenceDataset, oracle_sequences
from mmarnn_min.data.synth import ImageSet, SynthConfig, make_images, make_videos, prefetch_videos
from mmarnn_min.mma import MMAConfig
from mmarnn_min.mrnn import MRNNConfig
from mmarnn_min.stages import resolve_device, write_json
from mmarnn_min.stages.e2e import E2ETrainConfig, FrameVideos, evaluate_videos, predict_videos, train_e2e
from mmarnn_min.stages.features import hume_crops_dir, load_features, run_features, run_hume_features
from mmarnn_min.stages.mma import MMATrainConfig, train_mma
from mmarnn_min.stages.mrnn import MRNNTrainConfig, evaluate, load_mrnn, predict, train_mrnn

DETECTORS = ("auto", "landmarks", "haar", "retinaface")


@dataclass
class PipelineConfig:
    data: SynthConfig = field(default_factory=lambda: SynthConfig(train_videos=1000, min_frames=16, max_frames=64))
    mma: MMATrainConfig = field(default_factory=MMATrainConfig)
    mrnn: MRNNTrainConfig = field(default_factory=lambda: MRNNTrainConfig(model=MRNNConfig(max_frames=64)))
    e2e: E2ETrainConfig = field(default_factory=E2ETrainConfig)
    seed: int = 0                    # training seed (initialisation, shuffling)
    oracle: bool = True              # on SynthAffect, also train the MRNN on the true per-frame affect (the ceiling)
    features_batch_size: int = 512   # frames per forward pass of the frozen MMA
    hume: str = ""                   # Hume-Reaction root (MuSe 2022 or ABAW5 layout): its videos replace SynthAffect's
    detector: Literal["auto", "landmarks", "haar", "retinaface"] = "auto"  # face detector for --hume videos
    retinaface_weights: str = ""     # local RetinaFace weights file for --detector retinaface
    stride: int = 1                  # read every stride-th frame of --hume videos
    affwild2: str = ""               # Aff-Wild2 root: its annotated frames join MMA's training images
    affwild2_every: int = 10         # keep every n-th Aff-Wild2 frame (neighbouring frames are near copies)
    affectnet: str = ""              # AffectNet root (either release): joins MMA's training images
    emotionet: str = ""              # EmotioNet label CSV: joins MMA's training images
    emotionet_images: str = ""       # the folder holding the EmotioNet images the CSV names
    synth_images: bool = True        # with real image sets given, train MMA on SynthAffect's images as well

    @classmethod
    def tiny(cls) -> PipelineConfig:
        """Seconds on a CPU: for tests and for trying the commands."""
        return cls(
            data=SynthConfig(train_images_per_source=48, eval_images_per_source=16, train_videos=24, eval_videos=12,
                             min_frames=8, max_frames=16, image_size=24, canvas_size=48),
            mma=MMATrainConfig(model=MMAConfig.tiny(), epochs=2, batch_size=32),
            mrnn=MRNNTrainConfig(model=MRNNConfig(hidden_size=16, routed_size=8, max_frames=16, fixed_frames=12),
                                 epochs=2, batch_size=8),
            e2e=E2ETrainConfig(epochs=1, batch_size=8),
        )

    @classmethod
    def default(cls) -> PipelineConfig:
        """A few minutes on a laptop CPU: 64 x 64 crops, 1,000 training videos of 16-64 frames,
        T = 64. The MRNN learns from videos, so their number matters (measured with one older
        MMA: 300 videos of 20-96 frames gave a test Pearson of 0.10, oracle 0.46; 1,000 of
        16-64 frames 0.32, oracle 0.60; 1,500 0.35, oracle 0.63); past 1,000 what limits the
        pipeline is how well MMA reads the video frames (README, "Read the two Pearson
        numbers together")."""
        return cls()

    @classmethod
    def paper(cls) -> PipelineConfig:
        """The paper's sizes, for one GPU: 112 x 112 crops, MMA with ResNet-18's widths and
        depth, T = 480, batch 4, a 1-layer GRU of 128 units, FC 32."""
        return cls(
            data=SynthConfig.paper(),
            mma=MMATrainConfig(model=MMAConfig.paper(), epochs=10, batch_size=64, lr=1e-3),
            mrnn=MRNNTrainConfig(model=MRNNConfig(hidden_size=128, num_layers=1, routed_size=32, max_frames=480),
                                 epochs=20, batch_size=4, lr=1e-3),
            e2e=E2ETrainConfig(epochs=2, batch_size=4, mma_lr=1e-4, mrnn_lr=1e-4),
        )

    @property
    def real_images(self) -> bool:
        return bool(self.affwild2 or self.affectnet or self.emotionet)


PRESETS: dict[str, Callable[[], PipelineConfig]] = {"tiny": PipelineConfig.tiny, "default": PipelineConfig.default,
                                                    "paper": PipelineConfig.paper}


# ---- where the data come from ---------------------------------------------------------------

def image_data(config: PipelineConfig) -> SynthConfig | dict[str, ImageSet]:
    """MMA's training images: SynthAffect's, or the real image sets given (plus SynthAffect's
    unless --no-synth-images), split into train / val / test. The real sets' validation parts
    serve as both val and test (their test labels are not public); EmotioNet, which has no
    split, gives every tenth image to val."""
    if not config.real_images:
        return config.data
    from mmarnn_min.data.affectnet import read_affectnet
    from mmarnn_min.data.affwild2 import read_affwild2
    from mmarnn_min.data.emotionet import read_emotionet
    from mmarnn_min.data.real_images import load_image_set

    size = config.data.image_size
    sets: dict[str, list[ImageSet]] = {"train": [], "val": []}
    if config.affectnet:
        for split in sets:
            sets[split].append(load_image_set(read_affectnet(config.affectnet, split), size, source=0))
    if config.emotionet:
        everything = load_image_set(read_emotionet(config.emotionet, config.emotionet_images or "."), size, source=1)
        is_val = np.arange(len(everything)) % 10 == 9
        sets["train"].append(select_images(everything, ~is_val))
        sets["val"].append(select_images(everything, is_val))
    if config.affwild2:
        for split in sets:
            sets[split].append(load_image_set(read_affwild2(config.affwild2, split, config.affwild2_every), size, source=2))
    if config.synth_images:
        for split in sets:
            sets[split].append(make_images(config.data, split))
    train, val = concat_images(sets["train"]), concat_images(sets["val"])
    return {"train": train, "val": val, "test": val}


def select_images(images: ImageSet, keep: np.ndarray) -> ImageSet:
    return ImageSet(**{f.name: getattr(images, f.name)[keep] for f in dataclasses.fields(ImageSet)})


def concat_images(sets: list[ImageSet]) -> ImageSet:
    """One ImageSet of several (held in memory: N * S * S * 3 bytes)."""
    return ImageSet(**{f.name: np.concatenate([getattr(s, f.name) for s in sets]) for f in dataclasses.fields(ImageSet)})


def hume_videos(config: PipelineConfig) -> list:
    from mmarnn_min.data.hume import read_hume

    return read_hume(config.hume)


def data_name(config: PipelineConfig) -> str:
    return f"Hume-Reaction ({config.hume})" if config.hume else "SynthAffect"


# ---- the stages -------------------------------------------------------------------------------

def run_mma(config: PipelineConfig, out: Path, device: torch.device, seed: int, resume: bool) -> dict:
    return train_mma(config.mma, image_data(config), out / "mma", device, seed, resume)


def mma_checkpoint(out: Path) -> Path:
    checkpoint = out / "mma" / "best.pt"
    if not checkpoint.exists():
        raise FileNotFoundError(f"this stage needs a trained MMA at {checkpoint}: run stage mma with --out {out}")
    return checkpoint


def run_features_stage(config: PipelineConfig, out: Path, device: torch.device, seed: int, resume: bool) -> dict:
    if config.hume:
        paths = run_hume_features(hume_videos(config), mma_checkpoint(out), out / "features", device, config.detector,
                                  config.retinaface_weights or None, config.stride, config.features_batch_size)
    else:
        paths = run_features(config.data, mma_checkpoint(out), out / "features", device, config.features_batch_size)
    write_json({split: str(path) for split, path in paths.items()}, out / "features" / "latest.json")
    return {split: str(path) for split, path in paths.items()}


def feature_splits(out: Path) -> dict[str, SequenceDataset]:
    """The features the last run of stage ``features`` cached in ``out``, per split."""
    index = out / "features" / "latest.json"
    if not index.exists():
        raise FileNotFoundError(f"this stage needs cached features ({index}): run stage features with --out {out}")
    return {split: load_features(path) for split, path in json.loads(index.read_text()).items()}


def check_fits(config: MRNNConfig, sets: dict[str, SequenceDataset]) -> None:
    """A clear error, before training, when a video is longer than the routed layer reads."""
    longest = max(int(s.lengths.max()) for s in sets.values())
    if config.sequence != "fixed" and longest > config.max_frames:
        raise ValueError(f"a video has {longest} frames but the MRNN reads at most {config.max_frames}: "
                         f"raise --mrnn-max-frames (the paper: 480) or read fewer frames (--stride)")


def has_labels(dataset: SequenceDataset) -> bool:
    return bool(torch.isfinite(dataset.labels).all())


def train_and_test(config: MRNNTrainConfig, sets: dict[str, SequenceDataset], out_dir: Path, device: torch.device,
                   seed: int, resume: bool) -> dict:
    """Train an MRNN on sets["train"], pick its epoch on sets["val"] and evaluate that epoch on
    sets["test"] (on val when the test labels are withheld); test predictions go to
    ``out_dir/test_predictions.npz``."""
    check_fits(config.model, sets)
    results = train_mrnn(config, sets["train"], sets["val"], out_dir, device, seed, resume)
    model = load_mrnn(out_dir / "best.pt", device)
    test = sets.get("test")
    split = "test" if test is not None and has_labels(test) else "val"
    results["test_split"] = split
    results["test"] = evaluate(model, sets[split], device)
    if test is not None:
        np.savez(out_dir / "test_predictions.npz", predictions=predict(model, test, device).numpy(),
                 labels=test.labels.numpy())
    write_json(results, out_dir / "metrics.json")
    print(f"{out_dir.name}: {split} Pearson {results['test']['pearson_mean']:.4f} (best epoch {results['best_epoch']})")
    return results


def run_mrnn(config: PipelineConfig, out: Path, device: torch.device, seed: int, resume: bool) -> dict:
    results = {"mrnn": train_and_test(config.mrnn, feature_splits(out), out / "mrnn", device, seed, resume)}
    if config.oracle and not config.hume:
        oracle = {split: oracle_sequences(config.data, split) for split in ("train", "val", "test")}
        print("oracle: the same MRNN on SynthAffect's true per-frame affect (the ceiling)")
        results["oracle"] = train_and_test(config.mrnn, oracle, out / "oracle", device, seed, resume)
    return results


def frame_videos(config: PipelineConfig, out: Path, split: str, image_size: int) -> FrameVideos:
    """The aligned crops of one split's videos, for stage e2e."""
    if not config.hume:
        videos = make_videos(config.data, split)
        offsets = videos.offsets
        return FrameVideos(lambda i: videos.frames[offsets[i]:offsets[i + 1]], videos.reactions)
    with np.load(json.loads((out / "features" / "latest.json").read_text())[split]) as cached:
        ids, reactions = list(cached["ids"]), cached["reactions"]
    crops = hume_crops_dir(out / "features", config.detector, image_size, config.stride)
    return FrameVideos(lambda i: np.load(crops / f"{ids[i]}.npy"), reactions)


def run_e2e(config: PipelineConfig, out: Path, device: torch.device, seed: int, resume: bool) -> dict:
    from mmarnn_min.predict import load_trained

    mrnn_checkpoint = out / "mrnn" / "best.pt"
    if not mrnn_checkpoint.exists():
        raise FileNotFoundError(f"stage e2e needs a trained MRNN at {mrnn_checkpoint}: run stage mrnn with --out {out}")
    mma_checkpoint(out)
    trained = load_trained(out, device, e2e=False)
    splits = {split: frame_videos(config, out, split, trained.image_size) for split in ("train", "val", "test")}
    results = train_e2e(config.e2e, trained.mma, trained.mrnn, trained.image_size, splits["train"], splits["val"],
                        out / "e2e", device, seed, resume)
    best = load_trained(out, device)
    split = "test" if np.isfinite(splits["test"].reactions).all() else "val"
    results["test_split"] = split
    results["test"] = evaluate_videos(best.mma, best.mrnn, splits[split], device)
    np.savez(out / "e2e" / "test_predictions.npz", labels=splits["test"].reactions,
             predictions=predict_videos(best.mma, best.mrnn, splits["test"], device).numpy())
    write_json(results, out / "e2e" / "metrics.json")
    print(f"e2e: {split} Pearson {results['test']['pearson_mean']:.4f} (best epoch {results['best_epoch']})")
    return results


# stage name -> (runner, one-line description)
STAGES: dict[str, tuple[Callable[..., dict], str]] = {
    "mma": (run_mma, "train MMA (residual multi-task CNN, paper 3.1) on face images"),
    "features": (run_features_stage, "cache the frozen MMA's per-frame features of every video"),
    "mrnn": (run_mrnn, "train MRNN (GRU + masked routing, paper 3.2) on the cached features, and the oracle"),
    "e2e": (run_e2e, "fine-tune MMA and MRNN together from pixels"),
}
DEFAULT_STAGES = ("mma", "features", "mrnn")


# ---- the command line ---------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmarnn_min.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="*", metavar="STAGE",
                        help=f"stages to run, in order: {', '.join(STAGES)} (default: {' '.join(DEFAULT_STAGES)})")
    parser.add_argument("--config", default=None,
                        help="starting config: tiny | default | paper | a JSON file such as a run's config.json "
                             "(default: OUT/config.json with --resume or when the first stage is not mma, else default)")
    parser.add_argument("--out", type=Path, default=Path("runs/latest"), help="run directory (default: runs/latest)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:N] (default: auto)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for PyTorch (default: one per core). On a machine other jobs share, 1 "
                             "can be several times faster: every small parallel region waits for all threads")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    add_config_flags(parser, PipelineConfig)
    return parser


def starting_config(name: str | None, out: Path, continues: bool) -> PipelineConfig:
    """The preset or file ``name``; without one, the run's own OUT/config.json when this
    invocation ``continues`` it (--resume, or a first stage after mma), else the default."""
    if name is None:
        if continues and (out / "config.json").exists():
            print(f"config: {out / 'config.json'} (the run's own; --config picks another)")
            return config_from_dict(PipelineConfig, json.loads((out / "config.json").read_text()))
        name = "default"
    if name in PRESETS:
        return PRESETS[name]()
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"python -m mmarnn_min.train: --config {name}: neither {', '.join(PRESETS)} nor a file")
    return config_from_dict(PipelineConfig, json.loads(path.read_text()))


STAGE_OUTPUTS = {"mma": ("mma",), "features": (), "mrnn": ("mrnn", "oracle"), "e2e": ("e2e",)}  # stage -> its dirs


def clear_from(out: Path, stage: str) -> None:
    """A fresh run of ``stage`` makes the results of it and of every later stage stale: remove
    them, so no old checkpoint (an old e2e/best.pt, say) outlives the models it was made from.
    The cached features stay: their file names hash the MMA checkpoint they came from."""
    names = list(STAGES)
    for later in names[names.index(stage):]:
        for directory in STAGE_OUTPUTS[later]:
            shutil.rmtree(out / directory, ignore_errors=True)
    if names.index(stage) <= names.index("features"):
        (out / "features" / "latest.json").unlink(missing_ok=True)   # which cached file is current
    shutil.rmtree(out / "plots", ignore_errors=True)
    for report in ("report.json", "report.md"):
        (out / report).unlink(missing_ok=True)


def video_prefetch(config: PipelineConfig, stages: list[str]) -> BaseProcess | None:
    """When stage features follows stage mma on SynthAffect and PyTorch leaves a core idle
    (``--threads 1`` on 2 cores), render the videos on that core while MMA trains
    (``prefetch_videos``): the process to join before stage features, else None."""
    idle_cores = (os.cpu_count() or 1) - torch.get_num_threads()
    if config.hume or idle_cores < 1 or stages[:2] != ["mma", "features"]:
        return None
    return prefetch_videos(config.data)


def main(argv: list[str] | None = None) -> dict:
    args = vars(build_parser().parse_args(argv))
    stages = args["stages"] or list(DEFAULT_STAGES)
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        build_parser().error(f"unknown stage(s) {', '.join(unknown)}: choose from {', '.join(STAGES)}")
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    out, resume = args["out"], args["resume"]
    continues = resume or stages[0] != "mma"
    config = apply_flags(starting_config(args["config"], out, continues), args)
    device = resolve_device(args["device"])
    if not resume:
        clear_from(out, min(stages, key=list(STAGES).index))
    write_json(dataclasses.asdict(config), out / "config.json")
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}  # seconds per stage

    results = {}
    prefetch = video_prefetch(config, stages)
    for stage in stages:
        print(f"== stage {stage}: {STAGES[stage][1]}")
        start = time.perf_counter()
        if stage == "features" and prefetch is not None:
            if prefetch.is_alive():
                print("features: waiting for the videos being rendered in the background")
            prefetch.join()
        results[stage] = STAGES[stage][0](config, out, device, config.seed, resume)
        spent_before = timings.get(stage, 0.0) if resume else 0.0   # a killed attempt's share
        timings[stage] = round(spent_before + time.perf_counter() - start, 1)
        write_json(timings, timings_path)

    from mmarnn_min.stages.report import write_report

    report = write_report(out, data_name(config))
    results["report"] = report
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
