"""``python -m mmarnn_min.ablate``: the table, the orderings, resuming, the flags."""

import json

import pytest

from mmarnn_min.ablate import ORDERINGS, PAPER, VARIANTS, check_orderings, main

TINY = ["--data-train-videos", "16", "--data-eval-videos", "8", "--data-min-frames", "8", "--data-max-frames", "12",
        "--mrnn-max-frames", "12", "--mrnn-hidden-size", "6", "--mrnn-routed-size", "4", "--mrnn-fixed-frames", "6",
        "--mrnn-epochs", "1", "--mrnn-batch-size", "8", "--device", "cpu"]


def test_ablation_table_and_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MMARNN_BACKEND", "fallback")
    chosen = [PAPER, "padded", "au"]
    table = main(["--out", str(tmp_path), "--seeds", "2", "--variants", ",".join(chosen), *TINY])
    assert list(table) == chosen and all(len(row["per_seed"]) == 2 for row in table.values())
    printed = capsys.readouterr().out
    assert "mask > no mask: " in printed and "Pearson loss >= MSE" not in printed   # MSE was not run
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["variants"] == json.loads(json.dumps(table)) and saved["orderings"]["Pearson loss >= MSE"] is None

    # finished variants are read back, not retrained; another config gets its own runs
    runs = sorted(p.parent for p in tmp_path.glob("*/seed*/result.json"))
    assert len(runs) == 6
    assert main(["--out", str(tmp_path), "--seeds", "2", "--variants", ",".join(chosen), *TINY]) == table
    main(["--out", str(tmp_path), "--seeds", "1", "--variants", PAPER, *TINY, "--mrnn-lr", "0.01"])
    assert len(list(tmp_path.glob("*/seed*/result.json"))) == 7


def test_orderings_are_read_from_the_means():
    table = {name: {"pearson_mean": 0.5} for name in VARIANTS}
    table[PAPER] = {"pearson_mean": 0.6}
    assert all(holds for _, holds in check_orderings(table))
    table["va"] = {"pearson_mean": 0.7}
    verdicts = dict(check_orderings(table))
    assert verdicts["all three > any single task"] is False and verdicts["mask > no mask"] is True
    assert len(verdicts) == len(ORDERINGS)


def test_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        main(["--out", str(tmp_path), "--variants", "attention", *TINY])
