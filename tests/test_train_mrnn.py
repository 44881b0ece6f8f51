"""Stage mrnn: the planted data, padding into batches, training, checkpoints, resume, the CLI."""

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from mmarnn_min.affect import REACTIONS
from mmarnn_min.checkpoints import load_mrnn
from mmarnn_min.data.planted import PlantedConfig, make_planted, planted_splits
from mmarnn_min.data.sequences import SequenceDataset, oracle_sequences, pad_collate
from mmarnn_min.data.synth_config import SynthConfig
from mmarnn_min.mrnn import MRNN, MRNNConfig
from mmarnn_min.mrnn_variants import MRNNVariant
from mmarnn_min.stages.mrnn import MRNNTrainConfig, train_mrnn

TINY_MODEL = MRNNConfig(hidden_size=32, routed_size=16, max_frames=32)
TINY_DATA = PlantedConfig(num_train=512, num_val=128, window=8)


def test_planted_is_deterministic_and_well_formed():
    a, b = make_planted(20, 40, seed=3, window=5), make_planted(20, 40, seed=3, window=5)
    assert all(torch.equal(x, y) for x, y in zip(a.features, b.features)) and torch.equal(a.labels, b.labels)
    assert a.labels.shape == (20, 7) and ((0 <= a.labels) & (a.labels <= 1)).all()
    assert all(z.shape[1] == 26 for z in a.features)
    assert a.lengths.min() >= math.ceil(40 / 4) and a.lengths.max() <= 40
    val = make_planted(20, 40, split="val", seed=3, window=5)
    assert not torch.equal(val.labels, a.labels)
    other = make_planted(20, 40, seed=4, window=5)
    assert not torch.equal(other.labels, a.labels)
    with pytest.raises(ValueError, match="window"):
        make_planted(4, 40, window=11)


def test_the_signal_sits_in_one_window():
    """Without noise a video is zero but for one window of consecutive frames, each y @ A."""
    data = make_planted(20, 64, window=8, noise=0.0, seed=1)
    mixing = np.random.default_rng(1).normal(size=(7, 26))
    for z, y in zip(data.features, data.labels):
        frames = (z.abs().sum(dim=1) > 0).nonzero().flatten()
        assert len(frames) == 8 and (frames.diff() == 1).all()
        expected = torch.from_numpy(y.double().numpy() @ mixing).float().expand(8, 26)
        torch.testing.assert_close(z[frames], expected, rtol=1e-5, atol=1e-5)


def test_pad_collate_pads_to_the_longest_and_keeps_lengths():
    dataset = SequenceDataset([np.ones((3, 2)), 2 * np.ones((5, 2))], np.zeros((2, 7)))
    z, lengths, y = pad_collate([dataset[0], dataset[1]])
    assert z.shape == (2, 5, 2) and z.dtype == torch.float32 and lengths.tolist() == [3, 5] and y.shape == (2, 7)
    assert (z[0, 3:] == 0).all() and (z[0, :3] == 1).all() and (z[1] == 2).all()
    with pytest.raises(ValueError, match="one \\(C,\\) label row"):
        SequenceDataset([np.ones((3, 2))], np.zeros((2, 7)))
    with pytest.raises(ValueError, match="L >= 1"):
        SequenceDataset([np.ones((0, 2))], np.zeros((1, 7)))


def test_oracle_sequences_are_synthaffects_videos():
    config = SynthConfig(train_videos=6, eval_videos=3)
    train, val = oracle_sequences(config, "train"), oracle_sequences(config, "val")
    assert len(train) == 6 and len(val) == 3 and train.labels.shape == (6, 7)
    assert all(z.shape[1] == 26 for z in train.features)
    assert train.lengths.min() >= config.min_frames and train.lengths.max() <= config.max_frames
    assert torch.equal(oracle_sequences(config, "train").labels, train.labels)


def test_training_learns_the_planted_signal_and_writes_results(tmp_path):
    train_set, val_set = planted_splits(TINY_DATA, TINY_MODEL.max_frames)
    config = MRNNTrainConfig(model=TINY_MODEL, epochs=5, lr=1e-2)
    lines = []
    results = train_mrnn(config, train_set, val_set, tmp_path, log=lines.append)
    assert results["val_pearson_mean"] > 0.7                     # measured 0.84; untrained ~0
    assert list(results["val_pearson"]) == list(REACTIONS) and len(results["history"]) == 5
    assert results["val_pearson_mean"] == max(h["val_pearson_mean"] for h in results["history"])
    assert any("val pearson" in line for line in lines)
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(results))
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert type(load_mrnn(tmp_path / "best.pt")) is MRNN and best["variant"] == asdict(MRNNVariant())
    assert best["epoch"] == results["best_epoch"]


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    train_set, val_set = planted_splits(PlantedConfig(num_train=64, num_val=16, window=2), 16)
    model = MRNNConfig(hidden_size=8, routed_size=4, max_frames=16)
    quiet = lambda line: None
    straight = train_mrnn(MRNNTrainConfig(model=model, epochs=3, batch_size=16), train_set, val_set,
                          tmp_path / "straight", log=quiet)
    train_mrnn(MRNNTrainConfig(model=model, epochs=1, batch_size=16), train_set, val_set, tmp_path / "split", log=quiet)
    resumed = train_mrnn(MRNNTrainConfig(model=model, epochs=3, batch_size=16), train_set, val_set,
                         tmp_path / "split", resume=True, log=quiet)
    strip = lambda history: [{k: v for k, v in row.items() if k != "seconds"} for row in history]
    assert strip(resumed["history"]) == strip(straight["history"])
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mse_ablation_runs(tmp_path):
    train_set, val_set = planted_splits(PlantedConfig(num_train=32, num_val=8, window=2), 16)
    config = MRNNTrainConfig(model=MRNNConfig(hidden_size=8, routed_size=4, max_frames=16), epochs=1, batch_size=16, loss="mse")
    assert math.isfinite(train_mrnn(config, train_set, val_set, tmp_path, log=lambda line: None)["history"][0]["train_loss"])


def test_training_under_bfloat16_autocast_learns_the_planted_signal(tmp_path):
    """--amp: the forward pass in bfloat16 autocast (here on the CPU), the loss in float32."""
    train_set, val_set = planted_splits(TINY_DATA, TINY_MODEL.max_frames)
    results = train_mrnn(MRNNTrainConfig(model=TINY_MODEL, epochs=4, lr=1e-2), train_set, val_set, tmp_path,
                         log=lambda line: None, amp=True)
    assert results["val_pearson_mean"] > 0.5                      # untrained ~0
    assert all(math.isfinite(row["train_loss"]) for row in results["history"])
