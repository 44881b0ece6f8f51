"""The pipeline: the stages of ``mmarnn_min.stages`` run in order in one run directory, each
reading what the one before wrote there (the data flow of docs/design.md):

    mma       paper section 3.1: the multi-task CNN on face images  -> OUT/mma/
    features  the frozen MMA over every frame of every video         -> OUT/features/
    mrnn      paper section 3.2: GRU + masked routing + FC(32) + FC(7) on the cached vectors,
              with the Pearson loss; on SynthAffect also the same MRNN on the true per-frame
              affect (the oracle: the ceiling the report compares with) -> OUT/mrnn/, OUT/oracle/
    e2e       both networks fine-tuned together from pixels, from the weights above -> OUT/e2e/

``run_stages`` runs a list of them and writes the report (``mmarnn_min.stages.report``).
Every stage is resumable: with ``resume`` it continues a killed run where it stopped and ends
as an unbroken run would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np
import torch

from mmarnn_min.checkpoints import load_trained
from mmarnn_min.config import PipelineConfig
from mmarnn_min.data.sequences import SequenceDataset, oracle_sequences
from mmarnn_min.data.synth import ImageSet, SynthConfig, make_videos, prefetch_videos
from mmarnn_min.data.training_images import real_image_splits
from mmarnn_min.errors import UserError
from mmarnn_min.files import write_json
from mmarnn_min.stages.e2e import FrameVideos, evaluate_videos, predict_videos, train_e2e
from mmarnn_min.stages.features import load_run_features, record_run_features, run_features
from mmarnn_min.stages.features_hume import hume_crops_dir, run_hume_features
from mmarnn_min.stages.mma import train_mma
from mmarnn_min.stages.mrnn import train_and_test
from mmarnn_min.stages.report import write_report


def image_data(config: PipelineConfig) -> SynthConfig | dict[str, ImageSet]:
    """MMA's training images: SynthAffect's, or the real image sets given (plus SynthAffect's
    unless --no-synth-images)."""
    if not config.real_images:
        return config.data
    return real_image_splits(config.data.image_size, config.data if config.synth_images else None,
                             config.affectnet, config.emotionet, config.emotionet_images, config.affwild2,
                             config.affwild2_every)


def hume_videos(config: PipelineConfig) -> list:
    from mmarnn_min.data.hume import read_hume

    return read_hume(config.hume)


def data_name(config: PipelineConfig) -> str:
    return f"Hume-Reaction ({config.hume})" if config.hume else "SynthAffect"


def mma_checkpoint(out: Path) -> Path:
    checkpoint = out / "mma" / "best.pt"
    if not checkpoint.exists():
        raise UserError(f"this stage needs a trained MMA at {checkpoint}: run stage mma with --out {out}")
    return checkpoint


def run_mma(config: PipelineConfig, out: Path, device: torch.device, resume: bool) -> dict:
    return train_mma(config.mma, image_data(config), out / "mma", device, config.seed, resume)


def run_features_stage(config: PipelineConfig, out: Path, device: torch.device, resume: bool) -> dict:
    if config.hume:
        paths = run_hume_features(hume_videos(config), mma_checkpoint(out), out / "features", device, config.detector,
                                  config.retinaface_weights or None, config.stride, config.features_batch_size)
    else:
        paths = run_features(config.data, mma_checkpoint(out), out / "features", device, config.features_batch_size)
    record_run_features(out, paths)
    return {split: str(path) for split, path in paths.items()}


def run_mrnn(config: PipelineConfig, out: Path, device: torch.device, resume: bool) -> dict:
    results = {"mrnn": train_and_test(config.mrnn, load_run_features(out), out / "mrnn", device, config.seed, resume)}
    if config.oracle and not config.hume:
        oracle = {split: oracle_sequences(config.data, split) for split in ("train", "val", "test")}
        print("oracle: the same MRNN on SynthAffect's true per-frame affect (the ceiling)")
        results["oracle"] = train_and_test(config.mrnn, oracle, out / "oracle", device, config.seed, resume)
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


def run_e2e(config: PipelineConfig, out: Path, device: torch.device, resume: bool) -> dict:
    mrnn_checkpoint = out / "mrnn" / "best.pt"
    if not mrnn_checkpoint.exists():
        raise UserError(f"stage e2e needs a trained MRNN at {mrnn_checkpoint}: run stage mrnn with --out {out}")
    mma_checkpoint(out)
    trained = load_trained(out, device, e2e=False)
    splits = {split: frame_videos(config, out, split, trained.image_size) for split in ("train", "val", "test")}
    results = train_e2e(config.e2e, trained.mma, trained.mrnn, trained.image_size, splits["train"], splits["val"],
                        out / "e2e", device, config.seed, resume)
    best = load_trained(out, device)
    split = "test" if np.isfinite(splits["test"].reactions).all() else "val"
    results["test_split"] = split
    results["test"] = evaluate_videos(best.mma, best.mrnn, splits[split], device)
    np.savez(out / "e2e" / "test_predictions.npz", labels=splits["test"].reactions,
             predictions=predict_videos(best.mma, best.mrnn, splits["test"], device).numpy())
    write_json(results, out / "e2e" / "metrics.json")
    print(f"e2e: {split} Pearson {results['test']['pearson_mean']:.4f} (best epoch {results['best_epoch']})")
    return results


# stage name -> (runner, one-line description, the directories of OUT it writes)
STAGES: dict[str, tuple[Callable[..., dict], str, tuple[str, ...]]] = {
    "mma": (run_mma, "train MMA (residual multi-task CNN, paper 3.1) on face images", ("mma",)),
    "features": (run_features_stage, "cache the frozen MMA's per-frame features of every video", ()),
    "mrnn": (run_mrnn, "train MRNN (GRU + masked routing, paper 3.2) on the cached features, and the oracle",
             ("mrnn", "oracle")),
    "e2e": (run_e2e, "fine-tune MMA and MRNN together from pixels", ("e2e",)),
}
DEFAULT_STAGES = ("mma", "features", "mrnn")


def clear_from(out: Path, stage: str) -> None:
    """A fresh run of ``stage`` makes the results of it and of every later stage stale: remove
    them, so no old checkpoint (an old e2e/best.pt, say) outlives the models it was made from.
    The cached features stay: their file names hash the MMA checkpoint they came from."""
    names = list(STAGES)
    for later in names[names.index(stage):]:
        for directory in STAGES[later][2]:
            shutil.rmtree(out / directory, ignore_errors=True)
    if names.index(stage) <= names.index("features"):
        (out / "features" / "latest.json").unlink(missing_ok=True)   # which cached file is current
    shutil.rmtree(out / "plots", ignore_errors=True)
    for report in ("report.json", "report.md"):
        (out / report).unlink(missing_ok=True)


def video_prefetch(config: PipelineConfig, stages: list[str]) -> BaseProcess | None:
    """When stage features follows stage mma on SynthAffect and PyTorch leaves a core idle
    (one thread on 2 cores, say), render the videos on that core while MMA trains
    (``prefetch_videos``): the process to join before stage features, else None."""
    idle_cores = (os.cpu_count() or 1) - torch.get_num_threads()
    if config.hume or idle_cores < 1 or stages[:2] != ["mma", "features"]:
        return None
    return prefetch_videos(config.data)


def run_stages(config: PipelineConfig, stages: list[str], out: Path, device: torch.device, resume: bool) -> dict:
    """Run ``stages`` (names of STAGES, in order) into ``out`` and write the report; returns
    each stage's results and the report."""
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
        results[stage] = STAGES[stage][0](config, out, device, resume)
        spent_before = timings.get(stage, 0.0) if resume else 0.0   # a killed attempt's share
        timings[stage] = round(spent_before + time.perf_counter() - start, 1)
        write_json(timings, timings_path)
    results["report"] = write_report(out, data_name(config))
    return results
