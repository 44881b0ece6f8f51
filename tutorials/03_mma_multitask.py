# %% [markdown]
# # Lesson 3: MMA, one network for three tasks with partial labels
#
# **Goal.** Train MMA, the multi-task CNN of section 3.1, from face crops whose labels are
# incomplete: like AffectNet, EmotioNet and Aff-Wild2, each SynthAffect source annotates only
# some of valence-arousal, expression and AUs. You will see how each loss term looks only at
# the labels present, how *distribution matching* turns the Du et al. table of lesson 1 into
# soft AU targets for every image, and what a short training reaches against chance.
#
# The loss (section 3.1; `mmarnn_min.losses.mma_loss`), each supervised term averaged over
# the samples that carry its label:
#
#     L = L_VA + L_EXPR + L_AU + lambda * L_DM
#     L_VA   = 1 - (CCC(valence) + CCC(arousal)) / 2
#              CCC(x, y) = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2)
#     L_EXPR = -mean_i log softmax(e_i)[label_i]                     cross-entropy, 7 classes
#     L_AU   = mean_{i,k} BCE(sigmoid(u_ik), y_ik)                      17 binary AUs
#
# and distribution matching, on *every* sample, labelled or not:
#
#     p_i  = softmax(e_i)                           predicted expression distribution (7,)
#     q_ik = sum_e p_ie R[e, k]                     soft AU targets: q = p @ R   (17,)
#     L_DM = -mean_{i,k} [ q_ik log sigmoid(u_ik) + (1 - q_ik) log(1 - sigmoid(u_ik)) ]

# %%
import numpy as np
import torch

import _common
from mmarnn_min.affect import AUS, EXPRESSIONS, au_relation_matrix
from mmarnn_min.data.synth import SOURCES, SynthConfig, make_images
from mmarnn_min.losses import au_soft_targets, mma_loss
from mmarnn_min.mma import MMA, MMAConfig, images_to_tensor
from mmarnn_min.stages.mma import MMATrainConfig, train_mma

LESSON = "03_mma_multitask"
plt = _common.pyplot()
_common.banner("Lesson 3: MMA and multi-task learning")
torch.manual_seed(0)

# %% [markdown]
# ## Three sources, three label sets
#
# A small SynthAffect configuration keeps this lesson to a couple of minutes on a laptop CPU.
# `make_images` renders (or loads from the cache) the images of a split; the three sources
# follow each other. A missing label is NaN (VA, AUs) or -1 (expression).

# %%
synth = SynthConfig(train_images_per_source=_common.quick(1000, 160),
                    eval_images_per_source=_common.quick(200, 48))
train = make_images(synth, "train")
print(f"{len(train)} training crops of {train.images.shape[1:]}")
for s, name in enumerate(SOURCES):
    rows = train.source == s
    print(f"source {name:8s}: {rows.sum():5d} images, with VA {(~np.isnan(train.va[rows, 0])).mean():.0%}, "
          f"expression {(train.expression[rows] >= 0).mean():.0%}, AUs {(~np.isnan(train.aus[rows, 0])).mean():.0%}")

# %% [markdown]
# The label masks of a few images of each source, as a picture: a column per image (the face
# on top), a row per label (valence, arousal, the expression, the 17 AUs); dark means "this
# label is given".

# %%
per_source = 4
first = np.concatenate([np.flatnonzero(train.source == s)[:per_source] for s in range(len(SOURCES))])
mask = np.concatenate([~np.isnan(train.va[first]), (train.expression[first] >= 0)[:, None],
                       ~np.isnan(train.aus[first])], axis=1)                     # (12, 20)
columns = len(first)

fig, (faces_ax, mask_ax) = plt.subplots(2, 1, figsize=(0.75 * columns + 1, 6.2), sharex=True,
                                        gridspec_kw={"height_ratios": [0.75, 5]})
faces_ax.imshow(np.concatenate(list(train.images[first]), axis=1), extent=(-0.5, columns - 0.5, 1, 0), aspect="auto")
faces_ax.axis("off")
mask_ax.imshow(mask.T, cmap="Greys", vmin=0, vmax=1.3, aspect="auto", extent=(-0.5, columns - 0.5, mask.shape[1] - 0.5, -0.5))
mask_ax.set_yticks(range(mask.shape[1]), ["valence", "arousal", "expression", *(f"AU{au}" for au in AUS)], fontsize=8)
mask_ax.set_xticks(range(columns), [SOURCES[s] for s in train.source[first]], rotation=45, fontsize=8)
faces_ax.set_title("which labels each image carries (dark = given)")
_common.save(fig, LESSON, "label_masks.png")

# %% [markdown]
# ## The network
#
# MMA is a small residual CNN (`MMAConfig()`: about 0.3 M weights at 64 x 64; `.paper()` is
# ResNet-18 sized) with one shared embedding and three heads. `MMA.features` gives the 26
# numbers per frame that MRNN reads later.

# %%
model_config = _common.quick(MMAConfig(), MMAConfig.tiny())
model = MMA(model_config)
batch = torch.arange(0, len(train), len(train) // 48)[:48]                 # a mix of all three sources
x = images_to_tensor(train.images[batch.numpy()])                           # (48, 3, S, S) in [0, 1]
va, expression_logits, au_logits = model(x)
print(f"MMA: {sum(p.numel() for p in model.parameters()):,} weights; va {tuple(va.shape)}, "
      f"expression {tuple(expression_logits.shape)}, AUs {tuple(au_logits.shape)}, "
      f"features {tuple(model.features(x).shape)}")

# %% [markdown]
# ## Soft AU targets from an expression distribution
#
# Distribution matching asks: given what the network believes about the expression, which AUs
# should it see? With R from lesson 1, q = p @ R (`au_soft_targets`). For a sure "fear" q is
# fear's row of R; for a face the network finds 60% happy and 40% surprised, AU25 (lips part)
# belongs to both and gets q = 1, AU12 (smile) only to happiness and gets 0.6.
# An untrained network, unsure of the expression, asks a little of every AU, most of those
# that many expressions share (AU4, the frown, is in four rows of R).

# %%
relation = au_relation_matrix()                                              # R (7, 17)
examples = {"sure fear": {"fear": 1.0},
            "60% happiness, 40% surprise": {"happiness": 0.6, "surprise": 0.4},
            "untrained model (batch mean)": None}
fig, axes = plt.subplots(len(examples), 1, figsize=(9, 6), sharex=True)
for ax, (title, mix) in zip(axes, examples.items()):
    if mix is None:
        p = expression_logits.detach().softmax(dim=1).mean(0, keepdim=True)  # (1, 7)
    else:
        p = torch.zeros(1, len(EXPRESSIONS))
        for name, weight in mix.items():
            p[0, EXPRESSIONS.index(name)] = weight
    q = au_soft_targets(p, relation)[0]                                      # (17,)
    ax.bar(range(len(AUS)), q.numpy(), color="tab:blue")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"q = p @ R for p = {title}", fontsize=9)
axes[-1].set_xticks(range(len(AUS)), [f"AU{au}" for au in AUS], rotation=60, fontsize=8)
_common.save(fig, LESSON, "soft_targets.png")

# %% [markdown]
# ## Check: L_DM is BCE with soft targets, computed by hand
#
# We evaluate `mma_loss` on the batch, then recompute L_DM in NumPy (float64) straight from
# the formula above and compare. We also recompute L_EXPR over the labelled samples only.

# %%
labels = (torch.from_numpy(train.va[batch.numpy()]), torch.from_numpy(train.expression[batch.numpy()]),
          torch.from_numpy(train.aus[batch.numpy()]))
total, parts = mma_loss((va, expression_logits, au_logits), labels, relation, dm_weight=1.0)
print("mma_loss parts:", {name: round(value, 4) for name, value in parts.items()})

logits_e = expression_logits.detach().double().numpy()
p = np.exp(logits_e - logits_e.max(1, keepdims=True))
p /= p.sum(1, keepdims=True)                                                 # softmax, (N, 7)
q = p @ relation.double().numpy()                                            # (N, 17)
s = 1 / (1 + np.exp(-au_logits.detach().double().numpy()))                   # sigmoid, (N, 17)
dm_by_hand = -np.mean(q * np.log(s) + (1 - q) * np.log(1 - s))

has_expression = labels[1].numpy() >= 0
expr_by_hand = -np.mean(np.log(p[has_expression, labels[1].numpy()[has_expression]]))

assert abs(dm_by_hand - parts["dm"]) < 1e-5, (dm_by_hand, parts["dm"])
assert abs(expr_by_hand - parts["expr"]) < 1e-5, (expr_by_hand, parts["expr"])
print(f"matched: L_DM = {parts['dm']:.6f} (by hand {dm_by_hand:.6f}) and L_EXPR = {parts['expr']:.6f} "
      f"over the {has_expression.sum()} labelled of {len(has_expression)} samples (by hand {expr_by_hand:.6f})")

# %% [markdown]
# ## What distribution matching adds: gradient where no label is
#
# An image of the AU-only source (EmotioNet-like) has no expression label, so L_EXPR gives its
# expression logits no gradient at all. L_DM does: q depends on p (it is not detached), so
# the AUs the network sees pull the expression towards those whose Du rows contain them.

# %%
no_expression = torch.from_numpy(~has_expression)
for dm_weight in (0.0, 1.0):
    logits = expression_logits.detach().requires_grad_()
    loss, _ = mma_loss((va.detach(), logits, au_logits.detach()), labels, relation, dm_weight)
    (grad,) = torch.autograd.grad(loss, logits)
    print(f"lambda = {dm_weight}: gradient on the expression logits of the {int(no_expression.sum())} "
          f"images without an expression label: max |g| = {grad[no_expression].abs().max():.2e}")
    if dm_weight == 0.0:
        assert grad[no_expression].abs().max() == 0

# %% [markdown]
# ## Train briefly, with and without L_DM
#
# `train_mma` (the `mma` stage of `python -m mmarnn_min.train`) mixes the three sources in
# every batch, evaluates on the validation images after each epoch, keeps the best epoch and
# reports its test metrics with the chance levels: CCC 0 for VA, a uniform guess for the
# expressions, "every AU present" for the AUs (`chance_levels`). We train twice, lambda = 1
# and lambda = 0, with the same seed. (The `mma` stage's default is lambda = 0.3: at 1, L_DM
# pulled the weak, partial AU patterns of video frames towards whole Du rows; the measurements
# are in the comment above `MMATrainConfig`.)

# %%
epochs = _common.quick(8, 1)
runs = {}
for name, dm_weight in (("with L_DM", 1.0), ("without L_DM", 0.0)):
    train_config = MMATrainConfig(model=model_config, epochs=epochs, dm_weight=dm_weight)
    runs[name] = train_mma(train_config, synth, _common.output_dir(LESSON) / f"mma_dm{dm_weight:g}",
                           log=lambda line: print("   ", line))
chance = runs["with L_DM"]["test_chance"]                                   # chance_levels(test images)

# %%
metrics = {"va_ccc_mean": "VA CCC", "expr_f1": "expression F1", "au_f1": "AU F1"}
print(f"{'test':14s}" + "".join(f"{label:>15s}" for label in metrics.values()))
for name, result in runs.items():
    print(f"{name:14s}" + "".join(f"{result['test'][key]:15.3f}" for key in metrics))
print(f"{'chance':14s}" + "".join(f"{chance[key]:15.3f}" for key in metrics))

fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
for ax, (key, label) in zip(axes, metrics.items()):
    for name, result in runs.items():
        history = result["history"]
        ax.plot([h["epoch"] for h in history], [h["val"][key] for h in history], marker="o", label=name)
    ax.axhline(chance[key], color="grey", ls="--", label="chance")
    ax.set(title=f"validation {label}", xlabel="epoch")
axes[0].legend(fontsize=8)
_common.save(fig, LESSON, "training_curves.png")

# %% [markdown]
# Read the numbers with care: one seed, 8 short epochs, and every curve is still rising. The
# AU F1 is the slowest to move: an AU counts as detected only once its probability passes
# 0.5, most AUs are absent from most faces, and "call every AU present" is a strong chance
# baseline. In our runs L_DM made the clearest difference there (the expression labels reach
# the AU head through q), while VA and the expressions were about even; only several seeds
# and longer runs would make that a finding. `python -m mmarnn_min.train mma` trains longer on
# more images and goes much further (the main README has its numbers). What a short run must
# show is that the model beats chance on the expressions and carries real VA signal:

# %%
if not _common.QUICK:
    best = runs["with L_DM"]["test"]
    assert best["expr_f1"] > chance["expr_f1"] + 0.1 and best["va_ccc_mean"] > 0.3, best
    print(f"matched: expression F1 {best['expr_f1']:.3f} > chance {chance['expr_f1']:.3f} + 0.1, "
          f"VA CCC {best['va_ccc_mean']:.3f} > 0.3")
else:
    print("quick mode: one epoch of a tiny model, no claim about beating chance")
print("metrics of each run:", [str(_common.output_dir(LESSON) / f"mma_dm{w:g}" / "metrics.json") for w in (1.0, 0.0)])

# %% [markdown]
# ## Exercises
#
# 1. Run the full ablation of the paper's Table: `run_ablation(MMATrainConfig(epochs=5),
#    synth, "runs/ablation")` from `mmarnn_min.stages.mma` (five trainings: all tasks with
#    and without L_DM, each task alone; about 3-4 minutes here) and print it with
#    `format_ablation`. Which task gains most from being trained with the others?
# 2. Detach the soft targets: recompute L_DM by hand with `q.detach()` in torch and compare
#    the gradient on the expression logits of the AU-only images with the one above. What
#    does each version teach the expression head?
# 3. Change lambda (`dm_weight` = 0.1, 0.3, 3) and plot the validation AU F1 after 5 epochs.
#    Is there a value past which the expression F1 starts to suffer?
