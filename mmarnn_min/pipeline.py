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
from mmarnn_min.data.sequences import oracle_sequences
from mmarnn_min.data.synth import (
    ImageSet,
    SynthConfig,
    make_videos,
    prefetch_videos,
    videos_cached,
)
from mmarnn_min.data.training_images import real_image_splits
from mmarnn_min.files import write_json
from mmarnn_min.rundir import (
    RunDirectory,
    RunDirectoryError,
    changed_fields,
    describe_changes,
    results_present,
)
from mmarnn_min.stages.e2e import (
    FrameVideos,
    evaluate_videos,
    predict_videos,
    train_e2e,
)
from mmarnn_min.stages.features import (
    load_run_features,
    record_run_features,
    run_features,
)
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
    """Hume-Reaction's videos under --hume; its train and val splits must have videos."""
    from mmarnn_min.data.hume import read_hume

    return read_hume(config.hume, need=("train", "val"))


def check_real_data(config: PipelineConfig) -> None:
    """Read the label files of every real data set given, now: a malformed one stops the
    command before anything is written (the stages read them again when they need them)."""
    from mmarnn_min.data.affectnet import read_affectnet
    from mmarnn_min.data.affwild2 import read_affwild2
    from mmarnn_min.data.emotionet import read_emotionet

    if config.hume:
        hume_videos(config)
    for split in ("train", "val"):
        if config.affectnet:
            read_affectnet(config.affectnet, split)
        if config.affwild2:
            read_affwild2(config.affwild2, split, config.affwild2_every)
    if config.emotionet:
        read_emotionet(config.emotionet, config.emotionet_images or ".")


def data_name(config: PipelineConfig) -> str:
    return f"Hume-Reaction ({config.hume})" if config.hume else "SynthAffect"


def run_mma(config: PipelineConfig, out: Path, device: torch.device, resume: bool, run_id: str) -> dict:
    return train_mma(config.mma, image_data(config), out / "mma", device, config.seed, resume, run_id=run_id,
                     amp=config.amp)


def run_features_stage(config: PipelineConfig, out: Path, device: torch.device, resume: bool, run_id: str) -> dict:
    if config.hume:
        paths = run_hume_features(hume_videos(config), out / "mma" / "best.pt", out / "features", device, config.detector,
                                  config.retinaface_weights or None, config.stride, config.features_batch_size)
    else:
        paths = run_features(config.data, out / "mma" / "best.pt", out / "features", device, config.features_batch_size)
    record_run_features(out, paths)
    return {split: str(path) for split, path in paths.items()}


def run_mrnn(config: PipelineConfig, out: Path, device: torch.device, resume: bool, run_id: str) -> dict:
    results = {"mrnn": train_and_test(config.mrnn, load_run_features(out), out / "mrnn", device, config.seed, resume,
                                      run_id=run_id, amp=config.amp)}
    if config.oracle and not config.hume:
        oracle = {split: oracle_sequences(config.data, split) for split in ("train", "val", "test")}
        print("oracle: the same MRNN on SynthAffect's true per-frame affect (the ceiling)")
        results["oracle"] = train_and_test(config.mrnn, oracle, out / "oracle", device, config.seed, resume,
                                           run_id=run_id, amp=config.amp)
    return results


def frame_videos(config: PipelineConfig, out: Path, split: str, image_size: int) -> FrameVideos:
    """The aligned crops of one split's videos, for stage e2e."""
    if not config.hume:
        videos = make_videos(config.data, split)
        offsets = videos.offsets
        return FrameVideos(lambda i: videos.frames[offsets[i]:offsets[i + 1]], videos.reactions)
    with np.load(json.loads((out / "features" / "latest.json").read_text())[split]) as cached:
        names, reactions = list(cached["crops"]), cached["reactions"]
    crops = hume_crops_dir(out / "features")
    return FrameVideos(lambda i: np.load(crops / names[i]), reactions)


def run_e2e(config: PipelineConfig, out: Path, device: torch.device, resume: bool, run_id: str) -> dict:
    trained = load_trained(out, device, e2e=False)
    splits = {split: frame_videos(config, out, split, trained.image_size) for split in ("train", "val", "test")}
    results = train_e2e(config.e2e, trained.mma, trained.mrnn, trained.image_size, splits["train"], splits["val"],
                        out / "e2e", device, config.seed, resume, run_id=run_id, amp=config.amp)
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
# stage -> the entries of OUT that hold its results
STAGE_RESULTS: dict[str, tuple[str, ...]] = {"mma": ("mma",), "features": ("features/latest.json",),
                                             "mrnn": ("mrnn", "oracle"), "e2e": ("e2e",)}
# stage -> the entries of OUT it reads (the results of the stages before it)
STAGE_NEEDS: dict[str, tuple[str, ...]] = {"mma": (), "features": ("mma/best.pt",),
                                           "mrnn": ("features/latest.json",), "e2e": ("mma/best.pt", "mrnn/best.pt")}
# stage -> the config fields (dotted paths, or their first parts) its results depend on
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "mma": ("data.", "mma.", "seed", "amp", "affwild2", "affwild2_every", "affectnet", "emotionet", "emotionet_images",
            "synth_images"),
    "features": ("data.", "hume", "detector", "retinaface_weights", "stride"),
    "mrnn": ("mrnn.", "seed", "oracle", "amp"),
    "e2e": ("e2e.", "seed", "amp"),
}


def clear_from(out: Path, stage: str) -> None:
    """A fresh run of ``stage`` makes the results of it and of every later stage stale: remove
    them, so no old checkpoint (an old e2e/best.pt, say) outlives the models it was made from,
    and the report, which the run writes anew from them. The cached feature files stay: their
    names hash what they were made from."""
    names = list(STAGES)
    for later in names[names.index(stage):]:
        for entry in STAGE_RESULTS[later]:
            path = out / entry
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    shutil.rmtree(out / "plots", ignore_errors=True)
    for report in ("report.json", "report.md"):
        (out / report).unlink(missing_ok=True)


def check_run(run: RunDirectory, config: PipelineConfig, stages: list[str], resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, a command that would lose or mix results (see
    ``mmarnn_min.rundir``): a resume with another config; a later stage built on earlier
    results made with other values of the fields they depend on; results replaced without
    ``--overwrite``; a first stage whose inputs are not there."""
    names = list(STAGES)
    first = min(stages, key=names.index)
    saved = run.saved_config()
    changes = changed_fields(saved, dataclasses.asdict(config)) if saved is not None else {}
    if resume and changes:
        raise RunDirectoryError(f"--resume continues the run in {run.path} with its own config, but this command "
                                f"changes it: {describe_changes(changes)}. Resume without those flags, or start a "
                                f"new run (another --out, or --overwrite)")
    if not resume:
        for stage in names[:names.index(first)]:
            if not any((run.path / entry).exists() for entry in STAGE_RESULTS[stage]):
                continue
            hit = {path: change for path, change in changes.items()
                   if any(path == field or path.startswith(field) for field in STAGE_INPUTS[stage])}
            if hit:
                raise RunDirectoryError(
                    f"stage {stage}'s results in {run.path} were made with other values of fields it depends on "
                    f"({describe_changes(hit)}): run stage {stage} again (`python -m mmarnn_min.train "
                    f"{' '.join(names[names.index(stage):names.index(first)] + stages)} --overwrite ...`), "
                    f"or leave those fields as the run has them")
        replaced = results_present(run, STAGE_RESULTS, names[names.index(first):])
        if replaced and not overwrite:
            raise RunDirectoryError(f"{run.path} already holds results this command would replace "
                                    f"({', '.join(replaced)}): --resume continues the run, --overwrite replaces "
                                    f"them (from stage {first} on), or choose another --out")
    missing = [entry for entry in STAGE_NEEDS[first] if not (run.path / entry).exists()]
    if missing:
        raise RunDirectoryError(f"stage {first} needs {', '.join(str(run.path / m) for m in missing)}: run the "
                                f"stages before it with --out {run.path} first")


def video_prefetch(config: PipelineConfig, stages: list[str]) -> BaseProcess | None:
    """When stage features follows stage mma on SynthAffect, its videos are not cached yet and
    PyTorch leaves a core idle (``--threads 1`` on 2 cores, say), render them on that core while
    MMA trains (``prefetch_videos``): the process to join before stage features, else None.
    (With torch's default threads, one per core, MMA's training gains more from the second core
    than the rendering would: docs/experiments.md.)"""
    idle_cores = (os.cpu_count() or 1) - torch.get_num_threads()
    if config.hume or idle_cores < 1 or stages[:2] != ["mma", "features"] or videos_cached(config.data):
        return None
    return prefetch_videos(config.data)


def run_stages(config: PipelineConfig, stages: list[str], out: Path, device: torch.device, resume: bool,
               overwrite: bool = False) -> dict:
    """Run ``stages`` (names of STAGES, in order) into the run directory ``out`` and write the
    report; returns each stage's results and the report. The directory is locked for the
    whole run and checked first (``check_run``): nothing is written before the checks pass."""
    run = RunDirectory(out)
    with run.lock():
        check_run(run, config, stages, resume, overwrite)
        first = min(stages, key=list(STAGES).index)
        if not resume:
            clear_from(out, first)
        run_id = run.run_id()
        if run_id is None or (first == "mma" and not resume):
            run_id = run.start_run()
        run.write_config(dataclasses.asdict(config))
        return _run_locked(config, stages, out, device, resume, run_id)


def _run_locked(config: PipelineConfig, stages: list[str], out: Path, device: torch.device, resume: bool,
                run_id: str) -> dict:
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
        results[stage] = STAGES[stage][0](config, out, device, resume, run_id)
        spent_before = timings.get(stage, 0.0) if resume else 0.0   # a killed attempt's share
        timings[stage] = round(spent_before + time.perf_counter() - start, 1)
        write_json(timings, timings_path)
    results["report"] = write_report(out, data_name(config), config.seed, torch.get_num_threads())
    return results
