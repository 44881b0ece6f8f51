"""``python -m mmarnn_min.ceiling``: MMA regressed on the oracle's values of video frames, then
the MRNN on its values against the oracle's."""

import json

import numpy as np
import pytest
import torch

from mmarnn_min.ceiling import main, train_on_oracle
from mmarnn_min.config import preset
from mmarnn_min.data.synth import make_videos
from mmarnn_min.mma import MMA, MMAConfig, predict_features

TINY = preset("tiny")


def mse(model: MMA, videos) -> float:
    return float(((predict_features(model, videos.frames) - videos.oracle) ** 2).mean())


def test_the_regression_learns_the_oracle_values_of_the_frames(cache_dir):
    videos = make_videos(TINY.data, "train")                     # 24 videos, about 290 frames of 24 px
    torch.manual_seed(0)
    untrained = mse(MMA(MMAConfig.tiny()), videos)
    model = train_on_oracle(MMAConfig.tiny(), videos, frames=10_000, epochs=30, batch_size=32, lr=1e-2,
                            weight_decay=0.0, seed=0, device=torch.device("cpu"))
    trained = mse(model, videos)
    spread = float(((videos.oracle - videos.oracle.mean(0)) ** 2).mean())   # a constant guess's error
    # measured: untrained 0.155, spread 0.024, trained 0.48-0.60 of the spread over seeds 0-2
    # (one epoch: 3.7 times the spread)
    assert trained < 0.2 * untrained and trained < 0.75 * spread, (untrained, trained, spread)


def test_too_few_frames_for_a_batch_is_a_clear_error(cache_dir):
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_on_oracle(MMAConfig.tiny(), make_videos(TINY.data, "train"), frames=10, epochs=1, batch_size=32,
                        lr=1e-2, weight_decay=0.0, seed=0, device=torch.device("cpu"))


def test_the_command_reports_both_pearsons_and_their_ratio(cache_dir, tmp_path, capsys):
    results = main(["--config", "tiny", "--frames", "128", "--epochs", "1", "--out", str(tmp_path / "run"),
                    "--device", "cpu"])
    assert json.loads((tmp_path / "run" / "ceiling.json").read_text()) == json.loads(json.dumps(results))
    assert results["frames"] == 128 and len(results["frame_r_per_value"]) == 26
    assert np.isfinite(results["frame_r_per_value"]).all()
    assert results["frame_r"] == pytest.approx(np.mean(results["frame_r_per_value"]))
    assert results["fraction_of_oracle"] == pytest.approx(results["pearson_mean"] / results["oracle_pearson_mean"])
    assert (tmp_path / "run" / "mrnn" / "best.pt").exists() and (tmp_path / "run" / "oracle" / "best.pt").exists()
    assert "of the oracle" in capsys.readouterr().out
