"""Non-finite values never pass for results, and a run's files are written as a user expects:
valid JSON, the umask's permissions, training that stops at the first loss that is not a
number, a report that says "undefined"."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from mmarnn_min.affect import REACTIONS
from mmarnn_min.checks import DivergedError
from mmarnn_min.data.planted import PlantedConfig, planted_splits
from mmarnn_min.data.sequences import SequenceDataset
from mmarnn_min.files import json_text, write_json
from mmarnn_min.metrics import improves
from mmarnn_min.mrnn import MRNNConfig
from mmarnn_min.stages.mrnn import MRNNTrainConfig, train_mrnn
from mmarnn_min.stages.report import build_report, format_report, summary


def test_json_never_holds_nan(tmp_path):
    data = {"pearson_mean": float("nan"), "per_seed": [0.5, float("inf"), -float("inf")], "nested": {"r": math.nan}}
    write_json(data, tmp_path / "x.json")
    text = (tmp_path / "x.json").read_text()
    assert json.loads(text) == {"pearson_mean": None, "per_seed": [0.5, None, None], "nested": {"r": None}}
    assert "NaN" not in json_text(data) and "Infinity" not in json_text(data)


def test_run_files_get_the_umask_mode(tmp_path):
    previous = os.umask(0o027)
    try:
        import importlib

        from mmarnn_min import files
        importlib.reload(files)                     # FILE_MODE is read at import
        files.write_json({"a": 1}, tmp_path / "a.json")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)
        importlib.reload(files)


def test_training_stops_at_the_first_loss_that_is_not_a_number(tmp_path):
    train, val = planted_splits(PlantedConfig(num_train=32, num_val=8, window=2), 16)
    labels = train.labels.clone()
    labels[5, 2] = float("nan")                      # one blank label cell
    broken = SequenceDataset(train.features, labels)
    config = MRNNTrainConfig(model=MRNNConfig(hidden_size=8, routed_size=4, max_frames=16), epochs=2, batch_size=8)
    with pytest.raises(DivergedError, match=r"stage mrnn \(run\), epoch 1, step \d: the training loss is nan: check the "
                                            r"video labels"):
        train_mrnn(config, broken, val, tmp_path / "run", log=lambda line: None)
    with pytest.raises(DivergedError):
        train_mrnn(MRNNTrainConfig(model=config.model, epochs=1, batch_size=8, lr=1e30), train, val, tmp_path / "big",
                   log=lambda line: None)


def test_an_undefined_validation_score_never_wins():
    assert improves(0.1, float("nan")) and improves(0.2, 0.1)
    assert not improves(float("nan"), 0.1) and not improves(float("nan"), float("nan")) and not improves(0.1, 0.2)


def test_the_report_says_undefined_not_zero(tmp_path):
    nan_metrics = {"pearson_mean": float("nan"), "pearson": {name: 0.3 for name in REACTIONS} | {"Adoration": math.nan}}
    for name in ("mrnn", "oracle"):
        write_json({"test_split": "test", "test": nan_metrics, "history": []}, tmp_path / name / "metrics.json")
    report = build_report(tmp_path, "SynthAffect")
    assert report["pearson_mean"] is None and "fraction_of_oracle" not in report
    for text in (format_report(report), summary(report)):
        assert "undefined" in text and "nan" not in text.lower().replace("undefined", "")
    assert "0.0000" not in format_report(report)


def test_the_report_says_when_the_test_labels_are_withheld(tmp_path):
    metrics = {"pearson_mean": 0.4, "pearson": {name: 0.4 for name in REACTIONS}}
    write_json({"test_split": "val", "test": metrics, "history": []}, tmp_path / "mrnn" / "metrics.json")
    report = build_report(tmp_path, "Hume-Reaction")
    assert "labels are withheld" in summary(report) and "labels are withheld" in format_report(report)


def test_the_metrics_turn_an_undefined_correlation_into_nan_not_zero():
    from mmarnn_min.metrics import pearson

    r = pearson(np.stack([np.ones(5), np.arange(5.0)], 1), np.stack([np.arange(5.0), np.arange(5.0)], 1))
    assert math.isnan(r[0]) and r[1] == pytest.approx(1)
    assert torch.isnan(torch.tensor(r)).sum() == 1
