"""``python -m mmarnn_min.ablate``: every variant in quick mode, the JSON, resuming, the paired
orderings, the summary baseline, the public N scaled to the frame rate."""

import json
import math

import numpy as np
import pytest

from mmarnn_min.ablate import (
    ORDERINGS,
    PAPER,
    SUMMARY,
    VARIANT_NAMES,
    check_orderings,
    main,
    paired,
    variants,
)
from mmarnn_min.baselines import fit_summary_ridge, video_summary
from mmarnn_min.checks import ConfigError
from mmarnn_min.data.synth_config import SynthConfig


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    return out, main(["--quick", "--out", str(out), "--device", "cpu"])


def test_every_variant_runs_with_every_seed_and_is_written(quick_run):
    out, result = quick_run
    table = result["variants"]
    assert list(table) == list(VARIANT_NAMES)
    assert all(len(row["pearson"]) == 2 and len(row["epochs"]) == 2 for row in table.values())
    saved = json.loads((out / "ablation.json").read_text())
    assert set(saved["variants"]) == set(VARIANT_NAMES) and saved["variants"][PAPER]["pearson"] == table[PAPER]["pearson"]
    assert set(saved["orderings"]) == {claim for claim, _, _ in ORDERINGS}
    assert table[SUMMARY]["pearson"][0] == table[SUMMARY]["pearson"][1]          # ridge: no seed
    assert "orderings, paired over seeds" in (out / "ablation.md").read_text()


def test_finished_results_are_read_back_and_another_config_gets_its_own(quick_run):
    out, result = quick_run
    assert main(["--quick", "--out", str(out), "--device", "cpu"])["variants"] == result["variants"]
    before = len(list(out.glob("*/seed*/result.json")))
    main(["--quick", "--out", str(out), "--device", "cpu", "--variants", PAPER, "--mrnn-lr", "0.01"])
    assert len(list(out.glob("*/seed*/result.json"))) == before + 2


def test_paired_comparison():
    holds = paired([0.50, 0.52, 0.51], [0.40, 0.41, 0.40])
    assert holds["holds"] is True and holds["mean"] == pytest.approx(0.1066666, abs=1e-6)
    low, high = holds["ci95"]                         # mean +- 4.303 * sd / sqrt(3)
    half = 4.303 * np.std([0.10, 0.11, 0.11], ddof=1) / math.sqrt(3)
    assert (low, high) == pytest.approx((holds["mean"] - half, holds["mean"] + half))
    assert paired([0.5, 0.4, 0.6], [0.45, 0.5, 0.5])["holds"] is None      # the sign changes: not decided
    assert paired([0.3, 0.31, 0.3], [0.5, 0.52, 0.5])["holds"] is False


def test_an_ordering_holds_only_against_every_variant_it_should_beat():
    table = {name: {"pearson": [0.5, 0.5, 0.51]} for name in VARIANT_NAMES}
    table[PAPER] = {"pearson": [0.6, 0.61, 0.6]}
    verdicts = check_orderings(table)
    assert all(result["verdict"] == "holds" for result in verdicts.values())
    table["va"] = {"pearson": [0.7, 0.7, 0.71]}
    verdicts = check_orderings(table)
    assert verdicts["all three inputs > any single one"]["verdict"] == "does not hold"
    assert verdicts["mask > padding without the mask"]["verdict"] == "holds"


def test_the_public_fixed_lengths_are_scaled_to_the_frame_rate():
    at_5 = variants(SynthConfig.hume(5.0))
    assert at_5["sample_public"].changes["fixed_frames"] == 17          # 100 frames at 30 fps
    assert at_5["truncate_public"].changes["fixed_frames"] == 5          # 30 frames at 30 fps
    assert at_5["sample_mean"].changes["fixed_frames"] == 55             # 11 s at 5 fps
    assert variants(SynthConfig.hume(30.0))["sample_public"].changes["fixed_frames"] == 100


def test_the_summary_baseline_reads_mean_max_and_std():
    z = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    np.testing.assert_allclose(video_summary(z), [2.0, 1.0, 4.0, 1.0, np.std([0, 2, 4]), 0.0])
    rng = np.random.default_rng(0)
    videos = [rng.normal(size=(rng.integers(5, 20), 3)) for _ in range(60)]
    labels = np.stack([[v[:, 0].mean(), v[:, 1].max()] for v in videos])   # what the summary holds
    predict, _ = fit_summary_ridge(videos[:40], labels[:40], videos[40:50], labels[40:50])
    prediction = predict(videos[50:])
    assert all(np.corrcoef(prediction[:, c], labels[50:, c])[0, 1] > 0.9 for c in range(2))


@pytest.mark.parametrize("argv, message", [(["--seeds", "0"], "seeds"), (["--variants", "paper,attention"], "attention")])
def test_bad_settings_are_refused(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=message):
        main(["--quick", "--out", str(tmp_path), *argv])
    assert not any(tmp_path.iterdir())
