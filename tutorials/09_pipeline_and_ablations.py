# %% [markdown]
# # Lesson 9: the whole pipeline, the ablations, and how to read the report
#
# **Goal.** Run MMA-MRNNet end to end the way `python -m mmarnn_min.train` does (stages
# `mma`, `features`, `mrnn`), read every number of the report it writes, check the headline
# number against its definition, predict the intensities of one video file, and run the
# paper's ablations on a small scale.
#
# The headline number is the paper's metric (section 4): the Pearson correlation between the
# predicted and the true intensity of each reaction over the videos of the test split,
# averaged over the 7 reactions,
#
#     P = (1/7) sum_c  cov(p_c, y_c) / (sigma(p_c) sigma(y_c))
#
# and next to it the **oracle**: the same MRNN trained on SynthAffect's *true* per-frame affect
# vectors instead of MMA's estimates. The oracle is the ceiling of the video half of the model:
# the gap between the two measures what MMA's per-frame errors cost.
#
# This lesson starts from the `tiny` preset with a little more data, so that it runs in a
# minute or two on a laptop CPU; `python -m mmarnn_min.train` with no flags runs the
# `default` preset.

# %%
import json

import numpy as np

import _common
from mmarnn_min.affect import REACTIONS
from mmarnn_min.metrics import pearson
from mmarnn_min.config import preset
from mmarnn_min.train import main as train

LESSON = "09_pipeline_and_ablations"
plt = _common.pyplot()
_common.banner("Lesson 9: the whole pipeline, the ablations and the report")
out = _common.output_dir(LESSON)

# %% [markdown]
# ## One config for the whole run
#
# Every setting of every stage is one field of `PipelineConfig` (a dataclass with commented
# defaults) and therefore one command-line flag: `data.train_videos` is
# `--data-train-videos`, `mrnn.model.hidden_size` is `--mrnn-hidden-size`. Three presets
# exist in `mmarnn_min.config`: `tiny` (seconds, for tests), `default` (minutes on a CPU) and `paper` (the paper's
# sizes, T = 480, for a GPU). We start from `tiny` and enlarge the data a little.

# %%
paper = preset("paper")
print("paper preset: T =", paper.mrnn.model.max_frames, " batch", paper.mrnn.batch_size,
      " GRU", paper.mrnn.model.hidden_size, " FC", paper.mrnn.model.routed_size)
flags = ["--config", "tiny",
         "--data-train-videos", str(_common.quick(160, 24)),
         "--data-eval-videos", str(_common.quick(60, 12)),
         "--data-train-images-per-source", str(_common.quick(400, 48)),
         "--mma-epochs", str(_common.quick(4, 2)),
         "--mrnn-epochs", str(_common.quick(6, 2))]
run = out / "run"
results = train([*flags, "--out", str(run), "--device", "cpu"])

# %% [markdown]
# ## Reading the report
#
# `report.json` holds the numbers, `report.md` the same as tables, `plots/` the training
# curves and the predicted-vs-true scatter per reaction. Its keys:
#
# * `pearson_mean`, `pearson`: the trained pipeline on the test split (the paper's number);
# * `oracle_pearson_mean`, `oracle_pearson`: the same MRNN on the true per-frame affect;
# * `fraction_of_oracle`: their ratio, when the oracle's is positive;
# * `mma`, `mma_chance`: MMA on the test images (VA CCC, expression and AU macro F1) and what
#   guessing scores, so that 0.5 means something;
# * `timings`: seconds per stage.

# %%
report = json.loads((run / "report.json").read_text())
for key in ("pearson_mean", "oracle_pearson_mean", "fraction_of_oracle"):
    if key in report:
        print(f"{key:22s} {report[key]:.4f}")
print("MMA:", {key: round(value, 3) for key, value in report["mma"].items()})
print("chance:", {key: round(value, 3) for key, value in report["mma_chance"].items()})

# %% [markdown]
# **Check.** The report's number must be the textbook Pearson of the saved test predictions,
# reaction by reaction, then averaged. `mmarnn_min.metrics.pearson` is itself tested against
# `np.corrcoef`; here we recompute from the predictions the `mrnn` stage saved.

# %%
with np.load(run / "mrnn" / "test_predictions.npz") as saved:
    predictions, labels = saved["predictions"], saved["labels"]
recomputed = [np.corrcoef(predictions[:, c], labels[:, c])[0, 1] for c in range(len(REACTIONS))]
assert np.allclose(recomputed, list(report["pearson"].values()), atol=1e-6)
assert np.allclose(pearson(predictions, labels).mean(), report["pearson_mean"], atol=1e-6)
print("matched: report.json's Pearson per reaction = np.corrcoef of the saved test predictions (to 1e-6)")

# %%
figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for axis, name in zip(axes, ("losses.png", "predictions.png")):
    path = run / "plots" / name
    if path.exists():
        axis.imshow(plt.imread(path))
    axis.set_axis_off()
    axis.set_title(name)
figure.tight_layout()
_common.save(figure, LESSON, "report_plots.png")

# %% [markdown]
# ## Predicting one video file
#
# `python -m mmarnn_min.predict VIDEO --checkpoint DIR` decodes a video, finds the face in every
# frame, aligns it, runs MMA and MRNN and prints the 7 intensities. We write two SynthAffect
# test videos as real `.mp4` files (with their landmarks beside them, which the `auto`
# detector uses) and predict the first.

# %%
from mmarnn_min.config import load_config
from mmarnn_min.data.synth import export_videos
from mmarnn_min.predict import main as predict

data = load_config(str(run / "config.json")).data                     # the run's SynthConfig
videos = export_videos(data, out / "videos", splits=("test",), count=2)
result = predict([str(videos[0]), "--checkpoint", str(run), "--json", "--device", "cpu"])
assert set(result["intensities"]) == set(REACTIONS)
assert all(0.0 <= value <= 1.0 for value in result["intensities"].values())

# %% [markdown]
# ## The ablations
#
# `python -m mmarnn_min.ablate` trains the MRNN with one thing changed at a time (masked
# routing vs the public fixed-length strategies vs zero padding without the mask; Pearson vs
# MSE loss; each subset of VA / expressions / AUs as input; GRU vs LSTM; and a per-video
# summary baseline without any RNN), several seeds each, on the true per-frame affect so that
# MMA's errors do not blur the comparison. Each of the paper's orderings is tested seed by
# seed: the difference between two variants trained with the same seed, and its 95%
# interval. Here three variants, two seeds, a small data set: read the intervals before the
# means.

# %%
from mmarnn_min.ablate import main as ablate

table = ablate(["--out", str(out / "ablation"), "--seeds", "2", "--variants", "paper,sample_public,au",
                "--data-train-videos", str(_common.quick(300, 24)), "--data-eval-videos", str(_common.quick(100, 12)),
                "--mrnn-epochs", str(_common.quick(4, 1)), "--mrnn-hidden-size", str(_common.quick(64, 8)),
                "--device", "cpu"])
assert set(table["variants"]) == {"paper", "sample_public", "au"}

# %% [markdown]
# ## Exercises
#
# Check an answer with `tutorials/checks.py`: in a cell (or a script in `tutorials/`) run
# `import checks`, then the check named after the exercise; it prints "correct" or fails with
# a hint. Worked solutions: `tutorials/solutions/09_pipeline_and_ablations.py`.
#
# 1. How far are MMA's per-frame vectors from the true ones? Compare this run's cached
#    validation features (`load_run_features(run)["val"]`, `mmarnn_min.stages.features`) with
#    the true vectors (`oracle_sequences(data, "val")`): which of the 26 values has the largest
#    mean absolute error over all frames? Does it explain which reactions lose most against
#    the oracle? Check: `checks.check_09_1(name, run)`, the name as in `checks.AFFECT_NAMES`.
# 2. Load the oracle's best MRNN (`load_mrnn(run / "oracle" / "best.pt")`,
#    `mmarnn_min.checkpoints`) and compute its mean validation Pearson on the true per-frame
#    vectors. Which number of `run / "oracle" / "metrics.json"` must it equal, and why is it
#    not the report's `oracle_pearson_mean`? Check: `checks.check_09_2(val_pearson, run)`.
# 3. Run stage `e2e` on this run (`train(["e2e", "--out", str(run), "--device", "cpu"])`) and
#    measure the largest change of any of MMA's batch-norm running statistics between
#    `mma/best.pt` and `e2e/best.pt`. Explain it from the docstring of
#    `mmarnn_min/stages/e2e.py`. Check: `checks.check_09_3(largest_change, run)`.
# 4. Run the full ablation (`python -m mmarnn_min.ablate`: minutes, as every variant trains
#    several seeds) and state, for each of the paper's orderings it prints, whether its paired
#    95% interval lies above zero. (Open: the worked solution runs a smaller one and reads it.)
