"""Worked solutions to the exercises of lesson 9 (the pipeline and the ablations); the answers
with a definite value are passed to their checks in ``tutorials/checks.py``. It trains its own
run with the lesson's flags. Run: ``python tutorials/solutions/09_pipeline_and_ablations.py``."""

# %%
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tutorials/: checks and _common

import torch

import _common
import checks
from mmarnn_min.ablate import main as ablate
from mmarnn_min.checkpoints import load_mrnn, read_checkpoint
from mmarnn_min.config import load_config
from mmarnn_min.data.sequences import oracle_sequences
from mmarnn_min.metrics import pearson
from mmarnn_min.stages.features import load_run_features
from mmarnn_min.stages.mrnn import predict
from mmarnn_min.train import main as train

out = Path(tempfile.mkdtemp(prefix="lesson9-"))
run = out / "run"
train(["--config", "tiny", "--data-train-videos", str(_common.quick(160, 24)),
       "--data-eval-videos", str(_common.quick(60, 12)), "--data-train-images-per-source", str(_common.quick(400, 48)),
       "--mma-epochs", str(_common.quick(4, 2)), "--mrnn-epochs", str(_common.quick(6, 2)),
       "--out", str(run), "--device", "cpu"])
data = load_config(str(run / "config.json")).data

# %% [markdown]
# ## 1. MMA's per-frame errors
#
# Stack every validation frame of the cached MMA features and of the true vectors, and take
# the mean absolute error per column. The reactions that lose most against the oracle are
# those whose evidence lies in the values MMA estimates worst (compare the report's per-
# reaction Pearson of the pipeline and of the oracle).

# %%
estimated, truth = load_run_features(run)["val"], oracle_sequences(data, "val")
errors = torch.cat([(e - t).abs() for e, t in zip(estimated.features, truth.features)]).mean(0)   # (26,)
ranked = sorted(zip(checks.AFFECT_NAMES, errors.tolist()), key=lambda pair: -pair[1])
print("largest mean absolute errors:", ", ".join(f"{name} {error:.3f}" for name, error in ranked[:5]))
checks.check_09_1(ranked[0][0], run)

# %% [markdown]
# ## 2. The oracle's checkpoint, evaluated again
#
# `best.pt` is the epoch with the best mean validation Pearson, so its validation Pearson is
# `val_pearson_mean` in the stage's metrics.json. The report's `oracle_pearson_mean` is the
# same model on the *test* videos.

# %%
model = load_mrnn(run / "oracle" / "best.pt")
val_pearson = float(pearson(predict(model, truth, torch.device("cpu")), truth.labels).mean())
recorded = json.loads((run / "oracle" / "metrics.json").read_text())
print(f"oracle best.pt on the validation videos: {val_pearson:.6f}; metrics.json val_pearson_mean "
      f"{recorded['val_pearson_mean']:.6f} (best epoch {recorded['best_epoch']})")
checks.check_09_2(val_pearson, run)

# %% [markdown]
# ## 3. Stage e2e keeps MMA's batch-norm statistics
#
# e2e fine-tunes MMA's weights with MMA in eval mode: its batch-norm layers normalise with the
# statistics of the image training and do not update them (a batch of frames from a few
# videos is a poor sample of faces, and MRNN learned on features computed with those
# statistics). So every running mean and variance is unchanged: the largest change is 0.

# %%
train(["e2e", "--out", str(run), "--device", "cpu"])
before = read_checkpoint(run / "mma" / "best.pt")["model"]
after = read_checkpoint(run / "e2e" / "best.pt")["mma"]
statistics = [name for name in before if name.endswith(("running_mean", "running_var"))]
largest_change = max((after[name] - before[name]).abs().max().item() for name in statistics)
weights_moved = max((after[name] - before[name]).abs().max().item() for name in before if name.endswith("weight"))
print(f"{len(statistics)} batch-norm statistics, largest change {largest_change}; the weights moved by up to "
      f"{weights_moved:.2e}")
checks.check_09_3(largest_change, run)

# %% [markdown]
# ## 4. Reading an ablation (open)
#
# A smaller ablation than the full one: three seeds per variant. For each ordering, `ablate`
# compares the two variants seed by seed (same seed, same data) and prints the mean
# difference with its 95% interval: an ordering holds only when the interval lies above 0.

# %%
ablate(["--out", str(out / "ablation"), "--seeds", "3", "--variants", "paper,sample_public,padded,mse",
        "--data-train-videos", str(_common.quick(300, 24)), "--data-eval-videos", str(_common.quick(100, 12)),
        "--mrnn-epochs", str(_common.quick(4, 1)), "--mrnn-hidden-size", str(_common.quick(64, 8)),
        "--device", "cpu"])
orderings = json.loads((out / "ablation" / "ablation.json").read_text())["orderings"]
print("orderings and their verdicts:", {claim: result["verdict"] for claim, result in orderings.items()})
