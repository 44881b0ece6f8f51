"""Worked solutions to the exercises of lesson 7 (correlation losses); the answers with a
definite value are passed to their checks in ``tutorials/checks.py``.
Run: ``python tutorials/solutions/07_correlation_losses.py``."""

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tutorials/: checks and _common

import numpy as np
import torch
import torch.nn.functional as F

import _common
import checks
from mmarnn_min.affect import NUM_REACTIONS
from mmarnn_min.config import ablation_data
from mmarnn_min.data.synth_baseline import summarise
from mmarnn_min.data.synth_labels import oracle_features
from mmarnn_min.data.synth_make import video_plan
from mmarnn_min.losses import ccc, pearson_loss
from mmarnn_min.metrics import pearson

config = ablation_data(_common.PRESET)                          # the lesson's videos
LOSSES = {"Pearson loss": pearson_loss, "MSE": F.mse_loss, "1 - CCC": lambda p, t: 1 - ccc(p, t).mean()}


def video_summaries(split: str, count: int, summary: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = [], []
    for index in range(count):
        plan, _ = video_plan(config, split, index)
        x.append(summarise(oracle_features(plan.aus, plan.va), plan.in_window, summary))
        y.append(plan.reactions)
    return torch.tensor(np.array(x), dtype=torch.float32), torch.tensor(np.array(y))


def standardised_data(summary: str):
    x_train, y_train = video_summaries("train", config.train_videos, summary)
    x_test, y_test = video_summaries("test", config.eval_videos, summary)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def fit(loss_fn, x, y, batch: int = 64, epochs: int = _common.quick(150, 20)) -> torch.nn.Linear:
    """The lesson's linear model and training loop."""
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], NUM_REACTIONS)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for rows in torch.randperm(len(x)).split(batch):
            if len(rows) < 2:
                continue
            loss = loss_fn(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


x_train, y_train, x_test, y_test = standardised_data("mean+max")

# %% [markdown]
# ## 1. Calibrating the Pearson-trained model
#
# The least-squares line per reaction: a = cov(P, Y) / var(P), b = mean Y - a mean P. With
# a > 0 the calibrated prediction is an increasing linear map of the old one, so its Pearson
# is exactly the same, while its values now sit on the labels' scale and the MSE drops. a < 0
# would mean the training predictions are *anti*-correlated with the labels; the fit would
# then flip the prediction, and its test Pearson would change sign.

# %%
def calibrate(predictions, labels):
    predictions, labels = np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    centred = predictions - predictions.mean(0)
    a = (centred * (labels - labels.mean(0))).mean(0) / (centred ** 2).mean(0)
    return a, labels.mean(0) - a * predictions.mean(0)


model = fit(pearson_loss, x_train, y_train)
with torch.no_grad():
    train_prediction, test_prediction = model(x_train).numpy(), model(x_test).numpy()
a, b = calibrate(train_prediction, y_train.numpy())
calibrated = a * test_prediction + b
print(f"test Pearson {pearson(test_prediction, y_test).mean():.4f} -> {pearson(calibrated, y_test).mean():.4f}; "
      f"test MSE {np.mean((test_prediction - y_test.numpy()) ** 2):.4f} -> "
      f"{np.mean((calibrated - y_test.numpy()) ** 2):.4f}; a = {np.round(a, 3)}")
checks.check_07_1(calibrate)

# %% [markdown]
# ## 2. Two videos make a line
#
# Two points with different x and different y always lie on a straight line, rising or
# falling: their correlation is +1 or -1, and the loss 0 or 2. Such a batch says nothing about
# *how well* the predictions follow the labels, only a sign; with 4 videos the estimate is
# still very noisy. Whether training suffers is then a question for measurement: many noisy
# steps can still average out. The test Pearson per batch size below shows how much it
# matters for this linear model.

# %%
generator = torch.Generator().manual_seed(1)
pairs = [torch.randn(2, 2, 1, generator=generator, dtype=torch.float64) for _ in range(100)]   # (prediction, label)
values = {round(pearson_loss(prediction, label).item(), 3) for prediction, label in pairs}
print("Pearson loss on batches of 2:", sorted(values))
checks.check_07_2(values)

for batch in _common.quick((4, 16, 256), (4, 16)):
    model = fit(pearson_loss, x_train, y_train, batch=batch)
    with torch.no_grad():
        prediction = model(x_test)
    print(f"batches of {batch:3d}: test Pearson {pearson(prediction, y_test).mean():.3f}")

# %% [markdown]
# ## 3. Knowing the window (open)
#
# With the true reaction window the summaries hold the reaction's evidence undiluted: every
# loss gains. A real model must find the window itself, which is what MRNN's per-frame
# reading and the routed layer are for.

# %%
for summary in ("mean+max", "window mean+max"):
    x_train, y_train, x_test, y_test = standardised_data(summary)
    row = []
    for name, loss_fn in LOSSES.items():
        model = fit(loss_fn, x_train, y_train)
        with torch.no_grad():
            row.append(f"{name} {pearson(model(x_test), y_test).mean():.3f}")
    print(f"{summary:16s} test Pearson: " + ", ".join(row))
