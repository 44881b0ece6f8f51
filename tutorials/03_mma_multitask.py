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
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

import _common
from mmarnn_min.affect import AUS, EXPRESSIONS, au_relation_matrix
from mmarnn_min.config import preset
from mmarnn_min.data.synth import SOURCES, make_images
from mmarnn_min.losses import au_soft_targets, ccc, mma_loss
from mmarnn_min.mma import MMA, images_to_tensor
from mmarnn_min.stages.mma import train_mma

LESSON = "03_mma_multitask"
plt = _common.pyplot()
_common.banner("Lesson 3: MMA and multi-task learning")
torch.manual_seed(0)

# %% [markdown]
# ## Three sources, three label sets
#
# The data and the network come from the `default` preset of `mmarnn_min.config` (`tiny` in
# quick mode), with fewer images than the preset's at full size so that the lesson takes a
# couple of minutes on a laptop CPU. `make_images` renders (or loads from the cache) the
# images of a split; the three sources follow each other. A missing label is NaN (VA, AUs) or
# -1 (expression).

# %%
config = preset(_common.PRESET)
synth = config.data if _common.QUICK else replace(config.data, train_images_per_source=1000,
                                                  eval_images_per_source=200)
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
# MMA is a small residual CNN (the `paper` preset's is ResNet-18 sized) with one shared
# embedding and three heads. `MMA.features` gives the 26 numbers per frame that MRNN reads
# later.

# %%
model_config = config.mma.model                                              # MMAConfig of the preset
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
# ## The loss, assembled from its four terms
#
# Now the loss of the top of this lesson, term by term, on the batch of real SynthAffect
# images above (48 images from all three sources, so every kind of missing label occurs),
# with the network's outputs and the torch functions each term names. The masks are the
# whole trick of partial labels: each supervised term looks at the samples that carry its
# label and nothing else; L_DM looks at every sample.

# %%
va_labels, expression_labels, au_labels = (torch.from_numpy(train.va[batch.numpy()]),          # (N, 2), NaN: absent
                                           torch.from_numpy(train.expression[batch.numpy()]),  # (N,), -1: absent
                                           torch.from_numpy(train.aus[batch.numpy()]))         # (N, 17), NaN: absent
dm_weight = config.mma.dm_weight                                             # lambda of the preset's mma stage

# L_VA: 1 - CCC over the samples labelled with each dimension, then the mean of valence and arousal
va_terms = []
for dimension in range(2):
    labelled = ~torch.isnan(va_labels[:, dimension])
    va_terms.append(1 - ccc(va[labelled, dimension], va_labels[labelled, dimension]))
l_va = torch.stack(va_terms).mean()

# L_EXPR: cross-entropy over the samples with an expression label
has_expression = expression_labels >= 0                                      # (N,)
l_expr = F.cross_entropy(expression_logits[has_expression], expression_labels[has_expression])

# L_AU: binary cross-entropy over the (sample, AU) pairs that are coded
has_au = ~torch.isnan(au_labels)                                             # (N, 17)
l_au = F.binary_cross_entropy_with_logits(au_logits[has_au], au_labels[has_au])

# L_DM: binary cross-entropy against the soft targets q = softmax(e) @ R, on every sample
q = au_soft_targets(expression_logits.softmax(dim=1), relation)              # (N, 17)
l_dm = F.binary_cross_entropy_with_logits(au_logits, q)

by_hand = l_va + l_expr + l_au + dm_weight * l_dm
print(f"labelled in this batch: VA {[int((~torch.isnan(va_labels[:, d])).sum()) for d in range(2)]}, "
      f"expression {int(has_expression.sum())}, AU codes {int(has_au.sum())} of {has_au.numel()}")
print(f"L_VA {l_va.item():.4f} + L_EXPR {l_expr.item():.4f} + L_AU {l_au.item():.4f} + "
      f"{dm_weight} x L_DM {l_dm.item():.4f} = {by_hand.item():.4f}")

# %% [markdown]
# ## Check: the assembled loss is `mma_loss`
#
# The package's `mma_loss` must give the same total, the same four parts and the same
# gradients with respect to the network's three outputs.

# %%
outputs = (va, expression_logits, au_logits)
labels = (va_labels, expression_labels, au_labels)
total, parts = mma_loss(outputs, labels, relation, dm_weight=dm_weight)
print("mma_loss parts:", {name: round(value, 4) for name, value in parts.items()})
for name, term in (("va", l_va), ("expr", l_expr), ("au", l_au), ("dm", l_dm), ("total", by_hand)):
    assert abs(term.item() - parts[name]) < 1e-5, (name, term.item(), parts[name])
gradients = torch.autograd.grad(total, outputs, retain_graph=True)
gradients_by_hand = torch.autograd.grad(by_hand, outputs, retain_graph=True)
gradient_gap = max((a - b).abs().max().item() for a, b in zip(gradients, gradients_by_hand))
assert gradient_gap < 1e-6, gradient_gap
print(f"matched: the four terms assembled here equal mma_loss's parts and total ({parts['total']:.6f}), "
      f"and their gradients on the three outputs agree to {gradient_gap:.1e}")

# %% [markdown]
# ## What distribution matching adds: gradient where no label is
#
# An image of the AU-only source (EmotioNet-like) has no expression label, so L_EXPR gives its
# expression logits no gradient at all. L_DM does: q depends on p (it is not detached), so
# the AUs the network sees pull the expression towards those whose Du rows contain them.

# %%
no_expression = ~has_expression
for weight in (0.0, 1.0):
    logits = expression_logits.detach().requires_grad_()
    loss, _ = mma_loss((va.detach(), logits, au_logits.detach()), labels, relation, weight)
    (grad,) = torch.autograd.grad(loss, logits)
    print(f"lambda = {weight}: gradient on the expression logits of the {int(no_expression.sum())} "
          f"images without an expression label: max |g| = {grad[no_expression].abs().max():.2e}")
    if weight == 0.0:
        assert grad[no_expression].abs().max() == 0

# %% [markdown]
# ## Train briefly, with and without L_DM
#
# Now that the loss holds no secret, the `mma` stage can compute it for us:
# `train_mma` (the `mma` stage of `python -m mmarnn_min.train`) mixes the three sources in
# every batch, evaluates on the validation images after each epoch, keeps the best epoch and
# reports its test metrics with the chance levels: CCC 0 for VA, a uniform guess for the
# expressions, "every AU present" for the AUs (`chance_levels`). We train twice, lambda = 1
# and lambda = 0, with the same seed. (The `mma` stage's default is lambda = 0.3: at 1, L_DM
# pulled the weak, partial AU patterns of video frames towards whole Du rows; the measurements
# are in the comment above `MMATrainConfig`.)

# %%
epochs = _common.quick(8, config.mma.epochs)                                 # 8: a couple of minutes here
runs = {}
for name, weight in (("with L_DM", 1.0), ("without L_DM", 0.0)):
    train_config = replace(config.mma, epochs=epochs, dm_weight=weight)
    runs[name] = train_mma(train_config, synth, _common.output_dir(LESSON) / f"mma_dm{weight:g}",
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
# Read the numbers with care: one seed, a few short epochs, and the curves are still rising.
# The AU F1 is the slowest to move: an AU counts as detected only once its probability passes
# 0.5, most AUs are absent from most faces, and "call every AU present" is a strong chance
# baseline. That is also where L_DM can matter most, since the expression labels reach the AU
# head through q; compare the two rows of the table, and remember that only several seeds and
# longer runs would make a difference between them a finding. `python -m mmarnn_min.train mma`
# trains longer on more images (`docs/experiments.md` keeps its measured numbers). What a short
# run must show is that the model beats chance on the expressions and carries real VA signal:

# %%
if not _common.QUICK:
    best = runs["with L_DM"]["test"]
    assert best["expr_f1"] > chance["expr_f1"] + 0.1 and best["va_ccc_mean"] > 0.3, best
    print(f"matched: expression F1 {best['expr_f1']:.3f} > chance {chance['expr_f1']:.3f} + 0.1, "
          f"VA CCC {best['va_ccc_mean']:.3f} > 0.3")
else:
    print("quick mode: a tiny model trained briefly, no claim about beating chance")
print("metrics of each run:", [str(_common.output_dir(LESSON) / f"mma_dm{w:g}" / "metrics.json") for w in (1.0, 0.0)])

# %% [markdown]
# ## Exercises
#
# Check an answer with `tutorials/checks.py`: in a cell (or a script in `tutorials/`) run
# `import checks`, then the check named after the exercise; it prints "correct" or fails with
# a hint. Worked solutions: `tutorials/solutions/03_mma_multitask.py`.
#
# 1. A network that knows nothing outputs VA = 0 for every face, equal logits for the 7
#    expressions and AU logits of 0. Work out L_VA, L_EXPR, L_AU and L_DM for it on paper
#    (whatever the labels), then confirm with `mma_loss`. Why does L_DM not depend on q here?
#    Check: `checks.check_03_1(l_va, l_expr, l_au, l_dm)`.
# 2. Detach the soft targets: compute L_DM with `q.detach()` on the batch above and take its
#    gradient on the expression logits of the images without an expression label. What is
#    its largest magnitude, and which head ("expression" or "au") does the detached L_DM
#    still train? Check: `checks.check_03_2(max_gradient, head)`.
# 3. AU evidence teaching the expression head: with equal expression logits and AU
#    probabilities of 0.95 for AU12 and AU25 and 0.05 for every other AU, which expression's
#    logit does a gradient-descent step on L_DM raise the most? Check it against the Du
#    table. Check: `checks.check_03_3(expression)`.
