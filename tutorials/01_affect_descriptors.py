# %% [markdown]
# # Lesson 1: three ways to describe a face's affect
#
# **Goal.** Meet the three descriptors that MMA predicts for every frame (paper, section 3.1)
# and the table that ties two of them together: valence-arousal (the *dimensional* model),
# the 7 basic expressions (the *categorical* model) and 17 facial action units (AUs, the
# *muscle* model of FACS). By the end you can read the 26 numbers of a frame's affect vector
# and draw the Du et al. relation matrix R that lesson 3 uses in the loss.
#
# The equations of this lesson:
#
#     z_t = [ v, a | p(e_1), ..., p(e_7) | p(AU1), ..., p(AU26) ]   in R^26      (per frame)
#     v, a in [-1, 1]            valence (unpleasant .. pleasant), arousal (calm .. excited)
#     sum_e p(e) = 1             one expression distribution over the 7 classes
#     p(AU_k) in [0, 1]          17 independent "is this muscle active?" probabilities
#
#     R[e, k] = 1  if AU_k is prototypical or observational for expression e   (Du et al. 2014)
#             = 0  otherwise (the neutral row is all zeros)

# %%
import numpy as np

import _common
from mmarnn_min import affect
from mmarnn_min.config import preset
from mmarnn_min.data.synth_labels import EXPRESSION_VA, sample_image_affect
from mmarnn_min.data.synth_preview import au_row, expression_grid

LESSON = "01_affect_descriptors"
plt = _common.pyplot()
_common.banner("Lesson 1: affect descriptors")

# %% [markdown]
# ## The vocabularies
#
# The package fixes the order of everything once, in `mmarnn_min.affect`: the 7 expressions
# in Aff-Wild2's order, the 17 AUs (the union of the AUs that Du et al. relate to the six
# basic expressions) and, for later, the 7 emotional *reactions* of Hume-Reaction that the
# full model (MRNN, section 3.2) estimates per video.

# %%
print("expressions:", affect.EXPRESSIONS)
print("AUs        :", affect.AUS)
print("reactions  :", affect.REACTIONS)
print(f"affect vector: {affect.NUM_VA} (VA) + {affect.NUM_EXPRESSIONS} (expressions) + "
      f"{affect.NUM_AUS} (AUs) = {affect.AFFECT_DIM} numbers per frame")

# %% [markdown]
# ## Valence and arousal: the circumplex
#
# Russell's circumplex places every affective state on a disc: valence runs left to right,
# arousal bottom to top. The basic expressions sit at typical places on it (happiness:
# pleasant and fairly excited; sadness: unpleasant and calm). SynthAffect, the data set that
# ships with the package, draws each labelled face's VA at its expression's place, scaled by
# how strongly the expression shows, plus noise. We draw some labels (no pixels needed) and
# look at them.

# %%
per_expression = _common.quick(80, 20)
rng = np.random.default_rng(0)
samples = {name: np.array([sample_image_affect(rng, e)[1] for _ in range(per_expression)])
           for e, name in enumerate(affect.EXPRESSIONS)}                       # name -> (n, 2)

fig, ax = plt.subplots(figsize=(5.5, 5.5))
ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="grey", lw=1))
ax.axhline(0, color="grey", lw=0.5)
ax.axvline(0, color="grey", lw=0.5)
for name, va in samples.items():
    dots = ax.scatter(va[:, 0], va[:, 1], s=8, alpha=0.5, label=name)
    centre = EXPRESSION_VA[name]
    ax.scatter(*centre, s=120, marker="*", color=dots.get_facecolor()[0], edgecolor="black")
    ax.annotate(name, centre, xytext=(5, 5), textcoords="offset points", fontsize=9)
ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), xlabel="valence", ylabel="arousal",
       title="The circumplex: SynthAffect's VA labels per expression", aspect="equal")
ax.legend(fontsize=7, loc="lower right")
_common.save(fig, LESSON, "circumplex.png")

# %% [markdown]
# Two things to notice. Neutral sits at the centre, and every other expression fans out from
# it along a ray: a weak expression is close to neutral in VA too. And some expressions crowd
# together (anger, fear and disgust are all unpleasant and aroused): VA alone cannot tell them
# apart, which is why MMA predicts all three descriptors.
#
# ## Expressions and action units, as faces
#
# An AU is one visible muscle movement (AU12, lip corner puller: the smile; AU4, brow lowerer:
# the frown). SynthAffect draws faces whose geometry is driven by the 17 AU intensities, so
# expressions arise from AUs exactly as the Du et al. table says. First, faces per expression
# (VA under each), then the same face with each AU alone at full strength.

# %%
config = preset(_common.PRESET).data                     # SynthAffect's sizes (the tiny preset in quick mode)
grid = expression_grid(config, per_row=_common.quick(6, 3))
aus_alone = au_row(config)

fig, ax = plt.subplots(figsize=(grid.shape[1] / 90, grid.shape[0] / 90))
ax.imshow(grid)
ax.set_title("SynthAffect faces per expression (v = valence, a = arousal)")
ax.axis("off")
_common.save(fig, LESSON, "faces_per_expression.png")

fig, ax = plt.subplots(figsize=(aus_alone.shape[1] / 90, aus_alone.shape[0] / 90))
ax.imshow(aus_alone)
ax.set_title("One face: neutral, then each AU alone at intensity 1")
ax.axis("off")
_common.save(fig, LESSON, "aus_alone.png")

# %% [markdown]
# ## The Du et al. table, and the matrix R
#
# Du, Tao and Martinez (2014) list, for each basic expression, the AUs that *prototypically*
# occur (most people show them) and those that are *observational* (many people show them).
# The paper's distribution-matching loss (section 3.1) treats both as "belonging" to the
# expression: R[e, k] = 1 for either kind. Here is the table as the package stores it:

# %%
for name in affect.EXPRESSIONS:
    prototypical, observational = affect.DU_TABLE.get(name, ((), ()))
    print(f"{name:10s} prototypical {str(list(prototypical)):16s} observational {list(observational)}")

relation = affect.au_relation_matrix()                     # R, (7, 17) float32
print("R shape:", tuple(relation.shape), " AUs per expression:", relation.sum(1).int().tolist())

# %% [markdown]
# The same matrix as a picture: a dark cell is an AU that belongs to the expression, marked
# P (prototypical) or O (observational).

# %%
fig, ax = plt.subplots(figsize=(9, 3.6))
ax.imshow(relation.numpy(), cmap="Blues", vmin=0, vmax=1.4)
for e, name in enumerate(affect.EXPRESSIONS):
    prototypical, observational = affect.DU_TABLE.get(name, ((), ()))
    for k, au in enumerate(affect.AUS):
        mark = "P" if au in prototypical else "O" if au in observational else ""
        ax.text(k, e, mark, ha="center", va="center", fontsize=9, color="white" if mark else "black")
ax.set_xticks(range(affect.NUM_AUS), [f"AU{au}" for au in affect.AUS], rotation=60, fontsize=8)
ax.set_yticks(range(affect.NUM_EXPRESSIONS), affect.EXPRESSIONS)
ax.set_title("R = au_relation_matrix(): Du et al. 2014 (P prototypical, O observational)")
_common.save(fig, LESSON, "au_relation_matrix.png")

# %% [markdown]
# ## Check: every row of R is the Du et al. row
#
# We rebuild each row's AU set from the table by hand and compare it with the AUs where R is
# 1; the neutral row must be empty, and the 17 AUs must be exactly the union of the table's.

# %%
for e, name in enumerate(affect.EXPRESSIONS):
    from_matrix = {au for k, au in enumerate(affect.AUS) if relation[e, k] == 1}
    prototypical, observational = affect.DU_TABLE.get(name, ((), ()))
    assert from_matrix == set(prototypical) | set(observational), (name, from_matrix)
assert set(relation.unique().tolist()) <= {0.0, 1.0}
assert relation[affect.EXPRESSIONS.index("neutral")].sum() == 0
union = set().union(*(set(p) | set(o) for p, o in affect.DU_TABLE.values()))
assert union == set(affect.AUS) and len(affect.AUS) == affect.NUM_AUS == 17
print(f"matched: all {affect.NUM_EXPRESSIONS} rows of R equal DU_TABLE "
      f"({int(relation.sum())} ones), neutral is empty, and AUS is the table's union of 17 AUs")

# %% [markdown]
# ## One frame's affect vector
#
# Put together, a frame is described by 26 numbers, and that vector z_t is what MMA hands to
# MRNN for every frame of a video (section 3.2). Here are the true values behind one happy
# face that SynthAffect's label rules draw: VA from the circumplex, the expression as a
# one-hot, and the AUs of its Du row switched on (AU12 and AU25 strongly, AU6 maybe) over
# faint noise. The AU part holds intensities here; MMA outputs, in their place, the
# probability that an annotator would mark each AU present.

# %%
happy = affect.EXPRESSIONS.index("happiness")
aus, va = sample_image_affect(np.random.default_rng(3), happy)
z = np.concatenate([va, np.eye(affect.NUM_EXPRESSIONS)[happy], aus])          # (26,)
names = ["valence", "arousal", *affect.EXPRESSIONS, *(f"AU{au}" for au in affect.AUS)]
assert z.shape == (affect.AFFECT_DIM,)

fig, ax = plt.subplots(figsize=(10, 3))
colours = ["tab:red"] * affect.NUM_VA + ["tab:green"] * affect.NUM_EXPRESSIONS + ["tab:blue"] * affect.NUM_AUS
ax.bar(range(len(z)), z, color=colours)
ax.set_xticks(range(len(z)), names, rotation=70, fontsize=8)
ax.set_title("z for one happy face: VA (red) | expression (green) | AU intensities (blue)")
_common.save(fig, LESSON, "affect_vector.png")

# %% [markdown]
# ## Exercises
#
# Check an answer with `tutorials/checks.py`: in a cell (or a script in `tutorials/`) run
# `import checks`, then the check named after the exercise; it prints "correct" or fails with
# a hint. Worked solutions: `tutorials/solutions/01_affect_descriptors.py`.
#
# 1. Compute `relation @ relation.T`: entry (e, e') counts the AUs two expressions share.
#    Which two different expressions share the most, and how many? Look at their faces above:
#    do they look alike? Check: `checks.check_01_1(("name", "name"), count)`.
# 2. Valence-arousal alone: give each VA sample the expression of the nearest centroid (the
#    mean VA of each expression's `samples`) and measure the accuracy on fresh samples of
#    `sample_image_affect`, averaged over the 7 expressions. Which expression is recognised
#    worst, and which one is it most often taken for? Does the circumplex predict it?
#    Check: `checks.check_01_2(accuracy, worst, mistaken_for)`.
# 3. Du et al. also describe *compound* expressions (happily surprised, sadly angry, ...).
#    Write the set of AUs you expect for "happily surprised" as the union of two rows of the
#    table. Check: `checks.check_01_3(aus)` with the AU numbers, e.g. `{1, 2}`.
