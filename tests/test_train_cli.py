"""``python -m mmarnn_min.train``: the stages end to end on the tiny config, the report, the
flags generated from the config, resuming a killed run, and the errors a user meets."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmarnn_min.affect import REACTIONS
from mmarnn_min.checkpoints import load_trained
from mmarnn_min.cli_config import config_from_dict
from mmarnn_min.config import PipelineConfig, preset
from mmarnn_min.errors import UserError
from mmarnn_min.pipeline import video_prefetch
from mmarnn_min.train import build_parser, main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache (extension, SynthAffect) for every run of this module: they share the data."""
    cache = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("MMARNN_CACHE")
    os.environ["MMARNN_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("MMARNN_CACHE")
    else:
        os.environ["MMARNN_CACHE"] = previous


@pytest.fixture(scope="module")
def unbroken(shared_cache, tmp_path_factory):
    """The tiny config run with every stage, once, without interruption."""
    out = tmp_path_factory.mktemp("unbroken")
    main(["mma", "features", "mrnn", "e2e", "--config", "tiny", "--e2e-epochs", "2", "--out", str(out),
          "--device", "cpu"])
    return out


def test_all_stages_write_the_report(unbroken):
    report = json.loads((unbroken / "report.json").read_text())
    for key in ("pearson_mean", "oracle_pearson_mean", "mrnn_pearson_mean", "e2e_pearson_mean", "mma", "timings"):
        assert key in report
    assert set(report["pearson"]) == set(REACTIONS) and report["split"] == "test"
    assert report["seed"] == 0 and report["threads"] >= 1                 # what reproduces it on this machine
    assert report["pearson_mean"] == report["e2e_pearson_mean"]           # e2e ran: it is the pipeline
    assert {"va_ccc_mean", "expr_f1", "au_f1"} <= set(report["mma"])
    assert set(report["timings"]) == {"mma", "features", "mrnn", "e2e", "total"}
    markdown = (unbroken / "report.md").read_text()
    assert "oracle (true per-frame affect)" in markdown and "| Adoration |" in markdown
    pytest.importorskip("matplotlib")
    assert (unbroken / "plots" / "losses.png").stat().st_size > 0
    assert (unbroken / "plots" / "predictions.png").stat().st_size > 0


def test_the_trained_models_load_for_predict(unbroken):
    trained = load_trained(unbroken)
    assert trained.source == (unbroken / "e2e" / "best.pt",)
    assert trained.image_size == preset("tiny").data.image_size
    assert load_trained(unbroken, e2e=False).source == (unbroken / "mma" / "best.pt", unbroken / "mrnn" / "best.pt")


def numbers(report: dict) -> dict:
    """What a resumed run must reproduce exactly: everything but the timings."""
    return {key: value for key, value in report.items() if key != "timings"}


@pytest.mark.parametrize("kill_when", ["mma/last.pt", "features/latest.json", "mrnn/last.pt", "oracle/last.pt",
                                       "e2e/last.pt"])
def test_a_killed_run_resumes_to_the_same_result(unbroken, shared_cache, tmp_path, kill_when):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mmarnn_min.train", "mma", "features", "mrnn", "e2e", "--config", "tiny",
               "--e2e-epochs", "2", "--out", str(out), "--device", "cpu", "--threads", "1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=os.environ | {"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    while not (out / kill_when).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    stderr = process.communicate()[1].decode()
    assert process.returncode == -signal.SIGKILL, f"the run ended before it was killed: {stderr[-2000:]}"
    assert not (out / "report.json").exists()

    main(["mma", "features", "mrnn", "e2e", "--out", str(out), "--resume", "--device", "cpu"])
    resumed = json.loads((out / "report.json").read_text())
    assert numbers(resumed) == numbers(json.loads((unbroken / "report.json").read_text()))


def test_flags_come_from_the_config_and_are_saved(shared_cache, tmp_path, capsys):
    help_text = build_parser().format_help()
    for flag in ("--mma-epochs", "--mma-width", "--mrnn-hidden-size", "--mrnn-max-frames", "--mrnn-rnn",
                 "--mrnn-sequence", "--mrnn-inputs", "--data-train-videos", "--data-seed", "--e2e-mma-lr", "--seed",
                 "--hume", "--affwild2", "--affectnet", "--emotionet", "--detector", "--no-oracle"):
        assert flag in help_text
    assert "GRU units (paper: 128)" in help_text

    out = tmp_path / "run"
    main(["mma", "--config", "tiny", "--out", str(out), "--device", "cpu", "--mma-epochs", "1",
          "--mrnn-rnn", "lstm", "--data-seed", "5"])
    saved = config_from_dict(PipelineConfig, json.loads((out / "config.json").read_text()))
    assert saved.mma.epochs == 1 and saved.mrnn.variant.rnn == "lstm" and saved.data.seed == 5
    assert saved.mma.model == preset("tiny").mma.model                # the rest is tiny's
    assert "MMA (test images)" in capsys.readouterr().out

    # a later stage without --config continues the run's own config
    main(["features", "--out", str(out), "--device", "cpu"])
    assert "the run's own" in capsys.readouterr().out


def test_videos_render_beside_stage_mma_only_on_an_idle_core(cache_dir, monkeypatch):
    import torch

    from mmarnn_min.data.synth import videos_cached

    tiny = preset("tiny")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setattr(os, "cpu_count", lambda: 1)          # PyTorch's one thread takes the only core
        assert video_prefetch(tiny, ["mma", "features", "mrnn"]) is None
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        assert video_prefetch(tiny, ["features", "mrnn"]) is None          # no training to overlap with
        assert video_prefetch(PipelineConfig(hume="/data/hume"), ["mma", "features"]) is None   # real videos
        process = video_prefetch(tiny, ["mma", "features", "mrnn"])
        process.join(timeout=120)
        assert process.exitcode == 0 and videos_cached(tiny.data)
        assert video_prefetch(tiny, ["mma", "features"]) is None           # rendered already: nothing to do
    finally:
        torch.set_num_threads(threads)


def test_presets():
    paper = preset("paper")
    assert (paper.mrnn.model.max_frames, paper.mrnn.batch_size, paper.mrnn.model.hidden_size,
            paper.mrnn.model.num_layers, paper.mrnn.model.routed_size) == (480, 4, 128, 1, 32)
    assert paper.data.image_size == 112 and paper.data.max_frames == 480
    default = preset("default")
    assert default.mrnn.model.max_frames >= default.data.max_frames   # every SynthAffect video fits


def test_user_errors(shared_cache, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train-everything", "--out", str(tmp_path)])
    assert "unknown stage" in capsys.readouterr().err
    with pytest.raises(UserError, match="stage features needs .*mma/best.pt"):
        main(["features", "--config", "tiny", "--out", str(tmp_path / "empty"), "--device", "cpu"])
    with pytest.raises(UserError, match="stage e2e needs .*mma/best.pt, .*mrnn/best.pt"):
        main(["e2e", "--config", "tiny", "--out", str(tmp_path / "empty"), "--device", "cpu"])
    with pytest.raises(UserError, match=r"neither a preset \(tiny, default, paper\) nor a file"):
        main(["--config", "huge", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--config", "tiny", "--mrnn-sequence", "cropped"])


def test_videos_longer_than_the_mrnn_reads_are_refused_before_anything_runs(shared_cache, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="--mrnn-max-frames.*reads at most 8: raise it to 16"):
        main(["--config", "tiny", "--out", str(out), "--device", "cpu", "--mrnn-max-frames", "8"])
    assert not out.exists()


def write_affectnet_newer(root: Path, count: int = 8) -> None:
    """A small AffectNet in the 8-label release's layout: images and per-image .npy labels."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for split in ("train_set", "val_set"):
        (root / split / "annotations").mkdir(parents=True)
        (root / split / "images").mkdir(parents=True)
        for i in range(count):
            cv2.imwrite(str(root / split / "images" / f"{i}.jpg"), rng.integers(0, 255, (40, 40, 3), np.uint8))
            for kind, value in (("exp", str(i % 7)), ("val", "0.25"), ("aro", "-0.5")):
                np.save(root / split / "annotations" / f"{i}_{kind}.npy", np.array(value))
            np.save(root / split / "annotations" / f"{i}_lnd.npy", rng.uniform(10, 30, (68, 2)))


def test_real_data_flags_reach_the_stages(shared_cache, tmp_path):
    """--hume: a Hume-Reaction directory (MuSe layout, written by SynthAffect's export) replaces
    SynthAffect's videos; --affectnet joins MMA's training images. No oracle on real data."""
    from mmarnn_min.data.synth import SynthConfig, export_videos

    hume = tmp_path / "hume"
    export_videos(SynthConfig(train_videos=8, eval_videos=4, min_frames=8, max_frames=12, image_size=24, canvas_size=48), hume)
    affectnet = tmp_path / "affectnet"
    write_affectnet_newer(affectnet)
    out = tmp_path / "run"
    results = main(["--config", "tiny", "--hume", str(hume), "--affectnet", str(affectnet), "--out", str(out),
                    "--device", "cpu", "--mma-epochs", "1", "--mrnn-batch-size", "4"])
    report = json.loads((out / "report.json").read_text())
    assert report["data"].startswith("Hume-Reaction") and "oracle_pearson_mean" not in report
    assert report["split"] == "test" and len(report["pearson"]) == 7
    assert results["mma"]["history"][0]["epoch"] == 0
    assert len(list((out / "features" / "crops").glob("*.npy"))) == 16   # one per video, kept for e2e
