"""Stages ``mma`` and ``features`` on a small SynthAffect: learning, checkpoints, exact resume,
the metrics' chance levels, the feature cache, the ablation runner and the benchmark."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from mmarnn_min.bench import mma as bench_mma
from mmarnn_min.checkpoints import load_mma, restore_mma
from mmarnn_min.data.sequences import SequenceDataset
from mmarnn_min.data.synth import SynthConfig, make_images, make_videos
from mmarnn_min.metrics import au_f1
from mmarnn_min.mma import MMA, MMAConfig
from mmarnn_min.optim import warmup_cosine_lr
from mmarnn_min.stages.features import extract_features, load_features, run_features
from mmarnn_min.stages.mma import MMATrainConfig, train_mma, training_labels
from mmarnn_min.stages.mma_ablation import ABLATIONS, format_ablation, run_ablation
from mmarnn_min.stages.mma_eval import affect_metrics, chance_levels

SMALL = SynthConfig(image_size=32, canvas_size=96, render="crop", train_images_per_source=400,
                    eval_images_per_source=100, train_videos=3, eval_videos=2, min_frames=8, max_frames=16)
TINY = MMATrainConfig(model=MMAConfig.tiny(), epochs=2, batch_size=32, lr=1e-2)
quiet = lambda line: None


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """SynthAffect's cache in a fresh directory, filled once for the module (about 5 s)."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("cache")
        patch.setenv("MMARNN_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MMA trained for 20 epochs (about 10 s on one core), its results and lines.
    lambda_DM = 1, not the default 0.3: for a network this small on these few images the
    expression labels reaching the AU head through L_DM are much of what it learns about AUs
    (measured: val AU F1 0.36 at lambda 1, 0.22 at 0.3)."""
    out, lines = tmp_path_factory.mktemp("mma"), []
    config = MMATrainConfig(model=MMAConfig.tiny(), epochs=20, batch_size=32, lr=1e-2, dm_weight=1.0)
    return out, train_mma(config, SMALL, out, log=lines.append), lines


def test_training_beats_the_untrained_network_on_every_task(trained):
    out, results, lines = trained
    untrained, best = results["history"][0]["val"], results["val"]
    for metric in ("va_ccc_mean", "expr_f1", "au_f1"):       # measured: 0.00 -> 0.69, 0.05 -> 0.58, 0.11 -> 0.36
        assert best[metric] > untrained[metric] + 0.1, metric
        assert results["test"][metric] > results["test_chance"][metric] + 0.05, metric
    assert best["score"] == max(row["val"]["score"] for row in results["history"][1:])
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(results))
    assert any("ETA" in line for line in lines) and "mma test" in lines[-1]
    model = load_mma(out / "best.pt")
    assert isinstance(model, MMA) and not model.training


def test_resume_ends_bit_for_bit_where_an_unbroken_run_does(tmp_path):
    straight = train_mma(TINY, SMALL, tmp_path / "straight", log=quiet)

    def killed_after_epoch_1(line):
        if line.startswith("mma epoch   1/"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_mma(TINY, SMALL, tmp_path / "split", log=killed_after_epoch_1)
    resumed = train_mma(TINY, SMALL, tmp_path / "split", resume=True, log=quiet)

    strip = lambda history: [{k: v for k, v in row.items() if k != "seconds"} for row in history]
    assert strip(resumed["history"]) == strip(straight["history"]) and resumed["test"] == straight["test"]
    a, b = (torch.load(tmp_path / run / "last.pt", weights_only=False) for run in ("straight", "split"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["generator"], b["generator"])
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_training_config_and_schedule():
    with pytest.raises(ValueError, match="subset"):
        MMATrainConfig(tasks="va,faces")
    assert MMATrainConfig(tasks=" au , va").task_list == ("au", "va")
    peak, total = 1e-2, 200
    rates = [warmup_cosine_lr(peak, step, total) for step in range(total)]
    assert rates[0] == pytest.approx(peak / 10) and max(rates) == pytest.approx(peak)
    assert rates[-1] < 1e-3 * peak and all(a >= b for a, b in zip(rates[10:], rates[11:]))


def test_a_task_left_out_has_no_labels():
    images = make_images(SMALL, "val", verbose=False)
    va, expression, aus = training_labels(images, ("au",))
    assert torch.isnan(va).all() and (expression == -1).all()
    np.testing.assert_array_equal(aus.numpy(), images.aus)
    all_va, all_expression, _ = training_labels(images, ("va", "expr", "au"))
    assert torch.equal(all_expression, torch.from_numpy(images.expression))
    assert (all_expression >= 0).sum() == 2 * 100 and (~torch.isnan(all_va[:, 0])).sum() == 2 * 100  # 2 of 3 sources


def test_metrics_of_the_truth_are_perfect_and_chance_levels_are_what_guessing_scores():
    images = make_images(SMALL, "test", verbose=False)
    expression = np.eye(7)[np.maximum(images.expression, 0)]
    truth = np.concatenate([np.nan_to_num(images.va), expression, np.nan_to_num(images.aus)], axis=1)
    perfect = affect_metrics(truth, images)
    assert perfect["va_ccc_mean"] == pytest.approx(1) and perfect["expr_f1"] == 1 and perfect["au_f1"] == 1

    chance = chance_levels(images)
    labelled = images.aus[~np.isnan(images.aus).any(axis=1)]
    assert chance["au_f1"] == pytest.approx(au_f1(np.ones_like(labelled), labelled))   # call every AU present
    rng = np.random.default_rng(0)
    guesses = [affect_metrics(np.concatenate([rng.normal(size=(len(images), 2)), rng.random((len(images), 24))], 1),
                              images) for _ in range(200)]
    assert np.mean([g["expr_f1"] for g in guesses]) == pytest.approx(chance["expr_f1"], abs=0.02)
    assert abs(np.mean([g["va_ccc_mean"] for g in guesses])) < 0.02


def test_features_are_cached_per_checkpoint_and_read_back_as_sequences(trained, tmp_path):
    out, _, _ = trained
    model = load_mma(out / "best.pt")
    videos = make_videos(SMALL, "val", verbose=False)
    per_video = extract_features(model, videos, batch_size=5)               # batches cross videos
    assert [len(z) for z in per_video] == videos.lengths.tolist()
    for video, z in zip(videos, per_video):
        with torch.inference_mode():
            alone = model.features(torch.from_numpy(video.frames).permute(0, 3, 1, 2).float() / 255).numpy()
        np.testing.assert_allclose(z, alone, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate(extract_features(model, [v.frames for v in videos], 5)),
                                  np.concatenate(per_video))

    lines = []
    paths = run_features(SMALL, out / "best.pt", tmp_path, log=lines.append)
    assert set(paths) == {"train", "val", "test"} and all(p.exists() for p in paths.values())
    dataset = load_features(paths["val"])
    assert isinstance(dataset, SequenceDataset) and dataset.lengths.tolist() == videos.lengths.tolist()
    torch.testing.assert_close(dataset.labels, torch.from_numpy(videos.reactions))
    np.testing.assert_allclose(np.concatenate([z.numpy() for z in dataset.features]), np.concatenate(per_video),
                               rtol=1e-5, atol=1e-6)
    with np.load(paths["val"]) as cached:
        assert cached["ids"].tolist() == videos.ids and cached["features"].shape == (videos.lengths.sum(), 26)

    lines.clear()
    assert run_features(SMALL, out / "best.pt", tmp_path, log=lines.append) == paths    # reused
    assert all("cached" in line for line in lines)
    other = tmp_path / "other.pt"
    state = torch.load(out / "best.pt", weights_only=False)
    state["model"]["va_head.bias"] += 1
    torch.save(state, other)
    assert run_features(SMALL, other, tmp_path, splits=["val"], log=quiet)["val"] != paths["val"]  # new weights, new file


def test_ablation_runs_every_variant(tmp_path):
    config = MMATrainConfig(model=MMAConfig.tiny(), epochs=1, batch_size=64)
    table = run_ablation(config, SMALL, tmp_path, log=quiet)
    assert list(table) == list(ABLATIONS) and (tmp_path / "ablation.json").exists()
    assert all(math.isfinite(row["au_f1"]) for row in table.values())
    text = format_ablation(table)
    assert all(name in text for name in ABLATIONS)
    only_va = json.loads((tmp_path / "2" / "metrics.json").read_text())
    assert only_va["config"]["tasks"] == "va" and only_va["history"][1]["train_loss"]["expr"] == 0.0


def test_benchmark_runs():
    text = bench_mma.run(torch.device("cpu"), quick=True)
    assert "crops/s" in text and "channels_last" in text


def test_a_checkpoint_from_before_the_grid_loads_with_the_global_pool():
    """Checkpoints written before ``MMAConfig.grid`` existed hold a globally pooled MMA."""
    old = MMA(MMAConfig(grid=1))
    config = dataclasses.asdict(old.config)
    del config["grid"]
    model = restore_mma(old.state_dict(), config)
    assert model.config.grid == 1
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(model(images).aus, old.eval()(images).aus)
