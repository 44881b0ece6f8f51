"""Stages mma and features through the command line, on a tiny SynthAffect."""

import numpy as np

from mmarnn_min.train import main

TINY_DATA = ["--train-images-per-source", "24", "--eval-images-per-source", "8", "--train-videos", "3",
             "--eval-videos", "2", "--min-frames", "8", "--max-frames", "10", "--image-size", "16",
             "--canvas-size", "32", "--data-seed", "3"]
TINY_MMA = ["--epochs", "1", "--stem-channels", "8", "--width", "8", "--stages", "2", "--embedding-size", "16"]


def test_stages_mma_then_features(cache_dir):
    out = cache_dir / "run"
    common = ["--out", str(out), "--device", "cpu", "--threads", "1"]
    results = main(["mma", *common, *TINY_MMA, *TINY_DATA])
    assert (out / "mma" / "best.pt").exists() and "test" in results
    paths = main(["features", *common, *TINY_DATA])
    with np.load(paths["test"]) as cached:
        assert any(cached[key].ndim == 2 and cached[key].shape[1] == 26 for key in cached.files)


def test_features_without_a_trained_mma_names_the_missing_checkpoint(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="needs a trained MMA at .*best.pt"):
        main(["features", "--out", str(tmp_path), "--device", "cpu", *TINY_DATA])
