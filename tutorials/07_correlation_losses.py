# %% [markdown]
# # Lesson 7: training for correlation, the Pearson loss
#
# **Goal.** The paper's metric for reaction intensities is the Pearson correlation per
# reaction, averaged over the 7 (section 4); MRNN is trained by minimising one minus that very
# quantity over each batch (section 3.2). This lesson compares the Pearson loss with the mean
# squared error and the concordance correlation coefficient (CCC): what each one is blind to,
# what it rewards, and what happens when you fit the same linear model with each.
#
# For predictions P and labels Y of shape (B, C), per column c over the batch:
#
#     rho_c    = cov(P_c, Y_c) / (sigma(P_c) sigma(Y_c))                  Pearson
#     L_P      = 1 - (1/C) sum_c cov(P_c, Y_c) / (sigma(P_c) sigma(Y_c) + eps)
#     MSE      = (1/(B C)) sum_{b,c} (P_bc - Y_bc)^2
#     CCC_c    = 2 cov(P_c, Y_c) / (var P_c + var Y_c + (mean P_c - mean Y_c)^2)
#
# and the property that sets Pearson apart: for a > 0 and any b,
#
#     rho(a P + b, Y) = rho(P, Y)          (and rho(-P, Y) = -rho(P, Y))

# %%
import numpy as np
import torch
import torch.nn.functional as F

import _common
from mmarnn_min.affect import REACTIONS
from mmarnn_min.config import ablation_data
from mmarnn_min.data.synth_baseline import summarise
from mmarnn_min.data.synth_labels import oracle_features
from mmarnn_min.data.synth_make import video_plan
from mmarnn_min.losses import ccc, pearson_loss
from mmarnn_min.metrics import ccc as ccc_metric
from mmarnn_min.metrics import pearson

LESSON = "07_correlation_losses"
plt = _common.pyplot()
_common.banner("Lesson 7: correlation losses")
torch.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## Check: the Pearson loss is one minus the mean correlation
#
# First the definition, against NumPy's `corrcoef` column by column (float64, so the `eps`
# in the denominator is far below the tolerance).

# %%
Y = torch.from_numpy(rng.random((64, 7)))
P = 0.6 * Y + 0.4 * torch.from_numpy(rng.standard_normal((64, 7)))
by_numpy = 1 - np.mean([np.corrcoef(P[:, c], Y[:, c])[0, 1] for c in range(7)])
loss = pearson_loss(P, Y).item()
assert abs(loss - by_numpy) < 1e-6, (loss, by_numpy)
assert np.allclose(pearson(P, Y), [np.corrcoef(P[:, c], Y[:, c])[0, 1] for c in range(7)])
assert torch.allclose(ccc(P, Y), torch.from_numpy(ccc_metric(P, Y)))
print(f"matched: pearson_loss = {loss:.10f} = 1 - mean np.corrcoef = {by_numpy:.10f}; "
      "metrics.pearson and both CCCs agree too")

# %% [markdown]
# ## What each loss is blind to
#
# Take one set of predictions and transform it: scale it, shift it, flip its sign. The
# Pearson loss does not move under a positive scale or any shift; MSE and CCC do, because
# they ask the predictions to *equal* the labels, not just to rise and fall with them.

# %%
variants = {"P": P, "3 P + 2": 3 * P + 2, "0.1 P - 5": 0.1 * P - 5, "-P": -P, "Y (perfect)": Y, "2 Y + 1": 2 * Y + 1}
print(f"{'predictions':14s} {'Pearson loss':>13s} {'MSE':>10s} {'1 - CCC':>10s}")
for name, values in variants.items():
    print(f"{name:14s} {pearson_loss(values, Y).item():13.4f} {F.mse_loss(values, Y).item():10.4f} "
          f"{1 - ccc(values, Y).mean().item():10.4f}")

# %% [markdown]
# The same as curves: predictions a * Y_c + b for one column, the loss as a function of the
# scale a (b = 0) and of the shift b (a = 1). Pearson is flat for every a > 0 and every b:
# any increasing linear recalibration of a prediction is equally good to it. MSE and CCC
# have a single best point, a = 1, b = 0.

# %%
y = Y[:, :1]
scales, shifts = np.linspace(-2, 3, 101), np.linspace(-2, 2, 101)
curves = {"Pearson loss": lambda p: pearson_loss(p, y).item(),
          "MSE": lambda p: F.mse_loss(p, y).item(),
          "1 - CCC": lambda p: 1 - ccc(p, y).item()}
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
for name, loss_of in curves.items():
    left.plot(scales, [loss_of(a * y) for a in scales], label=name)
    right.plot(shifts, [loss_of(y + b) for b in shifts], label=name)
left.set(xlabel="scale a (prediction = a * y)", ylabel="loss", ylim=(-0.05, 2.5))
right.set(xlabel="shift b (prediction = y + b)")
left.legend()
fig.suptitle("What each loss rewards: only the shape (Pearson), or the values too (MSE, CCC)")
_common.save(fig, LESSON, "loss_vs_scale_and_shift.png")

# %% [markdown]
# Note the jump of the Pearson loss at a = 0: a constant prediction has no correlation (the
# `eps` in the denominator makes the loss 1 there, with a finite gradient), and every
# negative scale is as bad as it gets, 2.
#
# ## An experiment: one linear model, three losses
#
# SynthAffect's videos carry 7 reaction intensities. As input we give each video a 52-number
# summary of its true per-frame affect vectors (their mean and maximum over all frames,
# `synth_baseline.summarise`): no pixels, no GRU, just a linear layer 52 -> 7. We fit it three
# times, with the Pearson loss, MSE and 1 - CCC, on mini-batches of 64 videos (the Pearson
# loss is a *batch* statistic, as in MRNN), then read Pearson and MSE of each on test videos.
# The videos are the preset's with 300 test videos (`ablation_data`, the data of the
# ablations), so that the three losses' differences stand out of the noise.

# %%
config = ablation_data(_common.PRESET)                     # SynthConfig: default (tiny in quick mode), 300 test videos


def video_summaries(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = [], []
    for index in range(count):
        plan, _ = video_plan(config, split, index)
        x.append(summarise(oracle_features(plan.aus, plan.va), plan.in_window, "mean+max"))
        y.append(plan.reactions)
    return torch.tensor(np.array(x), dtype=torch.float32), torch.tensor(np.array(y))


x_train, y_train = video_summaries("train", config.train_videos)
x_test, y_test = video_summaries("test", config.eval_videos)
mean, std = x_train.mean(0), x_train.std(0) + 1e-6
x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
print(f"{len(x_train)} train and {len(x_test)} test videos, {x_train.shape[1]} features each; "
      f"label mean {y_train.mean():.2f}, std {y_train.std():.2f}")

# %%
losses = {"Pearson loss": pearson_loss,
          "MSE": F.mse_loss,
          "1 - CCC": lambda p, t: 1 - ccc(p, t).mean()}
epochs, batch = _common.quick(150, 20), 64
models = {}
for name, loss_fn in losses.items():
    torch.manual_seed(0)
    model = torch.nn.Linear(x_train.shape[1], len(REACTIONS))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        for rows in torch.randperm(len(x_train)).split(batch):
            if len(rows) < 2:
                continue                                     # a correlation needs two samples
            loss = loss_fn(model(x_train[rows]), y_train[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    models[name] = model

results = {}
print(f"{'trained with':14s} {'test Pearson':>13s} {'test MSE':>10s} {'test CCC':>10s} {'pred mean':>10s} {'pred std':>9s}")
for name, model in models.items():
    with torch.no_grad():
        prediction = model(x_test)
    results[name] = prediction
    print(f"{name:14s} {pearson(prediction, y_test).mean():13.3f} {F.mse_loss(prediction, y_test).item():10.4f} "
          f"{ccc_metric(prediction, y_test).mean():10.3f} {prediction.mean().item():10.3f} {prediction.std().item():9.3f}")
print(f"{'(labels)':14s} {'':13s} {'':10s} {'':10s} {y_test.mean().item():10.3f} {y_test.std().item():9.3f}")

# %% [markdown]
# Predictions against the truth, all 7 reactions pooled (each colour a reaction); the
# dashed line is prediction = truth.

# %%
fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 4), sharex=True)
for ax, (name, prediction) in zip(axes, results.items()):
    for c, reaction in enumerate(REACTIONS):
        ax.scatter(y_test[:, c], prediction[:, c], s=5, alpha=0.5, label=reaction)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(title=f"{name}\nPearson {pearson(prediction, y_test).mean():.3f}, MSE {F.mse_loss(prediction, y_test).item():.3f}",
           xlabel="true intensity", ylabel="prediction")
axes[0].legend(fontsize=6, markerscale=2)
_common.save(fig, LESSON, "predictions_vs_truth.png")

# %% [markdown]
# How to read this. The three models find nearly the same *direction* in feature space, so
# their Pearson correlations are close; the Pearson-trained one tends to be best on the
# metric it was trained for. But nothing tied its outputs to the labels' scale or offset, so
# its values are off (look at the prediction mean and std against the labels', and at its
# MSE). MSE and CCC both pin the values down; CCC additionally rewards matching the labels'
# spread, where MSE shrinks hard cases towards the mean. For the paper's metric only the
# correlation counts, which is why MRNN trains with L_P; if you need calibrated intensities,
# a per-reaction linear fit on training data (a, b for each c) fixes the scale afterwards
# without changing the correlation.
#
# ## Exercises
#
# Check an answer with `tutorials/checks.py`: in a cell (or a script in `tutorials/`) run
# `import checks`, then the check named after the exercise; it prints "correct" or fails with
# a hint. Worked solutions: `tutorials/solutions/07_correlation_losses.py`.
#
# 1. Calibrate the Pearson-trained model: write `calibrate(predictions, labels) -> (a, b)`,
#    the least-squares fit labels ~ a * predictions + b of each reaction, fit it on the
#    *training* predictions, apply it to the test predictions and confirm that the test
#    Pearson is unchanged while the MSE drops. When could a < 0 happen, and what then?
#    Check: `checks.check_07_1(calibrate)`.
# 2. The Pearson loss is a batch statistic. Which values can it take on a batch of 2 videos
#    (one reaction, two different predictions, two different labels)? What does that tell
#    you about training with very small batches? Check: `checks.check_07_2(values)`; the
#    worked solution then retrains with batches of 4, 16 and 256.
# 3. Replace the "mean+max" summary by "window mean+max" (the true reaction window, which a
#    real model must find by itself). How much higher does each loss's test Pearson go?
#    Compare with `python -m mmarnn_min.data.synth --baseline`. (Open: the worked solution
#    prints both tables.)
