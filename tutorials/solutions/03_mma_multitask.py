"""Worked solutions to the exercises of lesson 3 (MMA and its multi-task loss); each answer is
passed to its check in ``tutorials/checks.py``. Run: ``python tutorials/solutions/03_mma_multitask.py``."""

# %%
import math
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tutorials/: checks and _common

import torch
import torch.nn.functional as F

import _common
import checks
from mmarnn_min.affect import AUS, EXPRESSIONS, NUM_AUS, NUM_EXPRESSIONS, au_relation_matrix
from mmarnn_min.config import preset
from mmarnn_min.data.synth import make_images
from mmarnn_min.losses import au_soft_targets, mma_loss
from mmarnn_min.mma import MMA, images_to_tensor

relation = au_relation_matrix()
# the lesson's images (the same configuration, so the cache it filled serves here too)
config = preset(_common.PRESET)
synth = config.data if _common.QUICK else replace(config.data, train_images_per_source=1000, eval_images_per_source=200)
images = make_images(synth, "train")
n = len(images)

# %% [markdown]
# ## 1. The loss of a network that knows nothing
#
# * L_VA: a constant prediction has no covariance with the labels, so CCC = 0 and each
#   dimension contributes 1 - 0: L_VA = 1.
# * L_EXPR: softmax of equal logits is 1/7 for every class: -log(1/7) = log 7 whatever the label.
# * L_AU and L_DM: sigmoid(0) = 1/2 and the BCE of 1/2 against any target y is
#   -(y log 1/2 + (1 - y) log 1/2) = log 2: it does not depend on the target, so not on q.

# %%
l_va, l_expr, l_au, l_dm = 1.0, math.log(NUM_EXPRESSIONS), math.log(2), math.log(2)
labels = tuple(torch.from_numpy(a) for a in (images.va, images.expression, images.aus))
_, parts = mma_loss((torch.zeros(n, 2), torch.zeros(n, NUM_EXPRESSIONS), torch.zeros(n, NUM_AUS)), labels, relation)
print(f"on paper: L_VA {l_va}, L_EXPR {l_expr:.4f}, L_AU {l_au:.4f}, L_DM {l_dm:.4f}; mma_loss says {parts}")
checks.check_03_1(l_va, l_expr, l_au, l_dm)

# %% [markdown]
# ## 2. Detached soft targets
#
# With q detached, L_DM = BCE(sigmoid(u), q) depends on the expression logits only through
# q, and that path is cut: the expression head gets no gradient from it (exactly 0, on the
# unlabelled images and everywhere else). Only the AU head learns, towards the AUs of the
# expression the network currently predicts. Without the detach, the expression head is also
# pulled towards expressions whose Du rows match the AUs it sees: that is how an AU-only image
# teaches the expression head.

# %%
torch.manual_seed(0)
model = MMA(config.mma.model)
batch = torch.arange(0, n, max(1, n // 48))[:48].numpy()
_, expression_logits, au_logits = model(images_to_tensor(images.images[batch]))
q = au_soft_targets(expression_logits.softmax(dim=1), relation).detach()
l_dm_detached = F.binary_cross_entropy_with_logits(au_logits, q)
# allow_unused: autograd itself reports that the expression logits are no longer in L_DM's graph;
# materialize_grads turns that "no gradient" into zeros
grad_expression, grad_au = torch.autograd.grad(l_dm_detached, (expression_logits, au_logits),
                                               allow_unused=True, materialize_grads=True)
unlabelled = torch.from_numpy(images.expression[batch] < 0)
max_gradient = grad_expression[unlabelled].abs().max().item()
print(f"{int(unlabelled.sum())} images without an expression label: max |gradient| {max_gradient}; "
      f"AU head: max |gradient| {grad_au.abs().max().item():.2e}")
checks.check_03_2(max_gradient, "au")

# %% [markdown]
# ## 3. AU evidence pulls the expression
#
# AU12 (smile) and AU25 (lips part) are happiness's prototypical AUs, and happiness's row asks
# for little else (AU6, observational). Gradient descent moves each logit by -gradient, so the
# most negative gradient marks the expression raised the most.

# %%
logits = torch.zeros(1, NUM_EXPRESSIONS, requires_grad=True)
probabilities = torch.full((1, NUM_AUS), 0.05)
probabilities[0, [AUS.index(12), AUS.index(25)]] = 0.95
loss = F.binary_cross_entropy_with_logits(torch.logit(probabilities), au_soft_targets(logits.softmax(dim=1), relation))
(gradient,) = torch.autograd.grad(loss, logits)
raised = EXPRESSIONS[int(gradient.argmin())]
print("gradient per expression:", {name: round(g, 4) for name, g in zip(EXPRESSIONS, gradient[0].tolist())}, "->", raised)
checks.check_03_3(raised)
