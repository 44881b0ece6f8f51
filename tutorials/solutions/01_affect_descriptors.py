"""Worked solutions to the exercises of lesson 1 (affect descriptors); each answer is passed to
its check in ``tutorials/checks.py``. Run: ``python tutorials/solutions/01_affect_descriptors.py``."""

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tutorials/: checks and _common

import numpy as np

import checks
from mmarnn_min import affect
from mmarnn_min.data.synth_labels import sample_image_affect

relation = affect.au_relation_matrix()                          # R (7, 17)

# %% [markdown]
# ## 1. The two expressions that share the most AUs
#
# The diagonal of R R^T counts each expression's own AUs; blank it out and take the largest
# entry. Fear and surprise both raise the brows and open the mouth; in the Du table only fear's
# AU4 (brow lowerer) and AU20 (lip stretcher) set them apart, so their faces look alike.

# %%
shared = (relation @ relation.T).numpy()
np.fill_diagonal(shared, -1)
i, j = np.unravel_index(np.argmax(shared), shared.shape)
pair, count = (affect.EXPRESSIONS[i], affect.EXPRESSIONS[j]), int(shared[i, j])
print(f"{pair[0]} and {pair[1]} share {count} AUs:",
      [au for k, au in enumerate(affect.AUS) if relation[i, k] and relation[j, k]])
checks.check_01_1(pair, count)

# %% [markdown]
# ## 2. Valence-arousal alone: a nearest-centroid classifier
#
# Centroids from 300 samples per expression, accuracy on 300 fresh ones per expression. The
# expressions that crowd together in the unpleasant, aroused quarter of the circumplex (anger,
# disgust, fear) are the ones VA cannot separate, and a weak expression lands near neutral.

# %%
rng = np.random.default_rng(0)
classes = range(affect.NUM_EXPRESSIONS)
centroids = np.array([np.mean([sample_image_affect(rng, e)[1] for _ in range(300)], axis=0) for e in classes])
confusion = np.zeros((affect.NUM_EXPRESSIONS, affect.NUM_EXPRESSIONS))
for e in classes:
    for _ in range(300):
        va = sample_image_affect(rng, e)[1]
        confusion[e, np.argmin(((centroids - va) ** 2).sum(axis=1))] += 1 / 300
accuracy = float(np.diag(confusion).mean())
worst = int(np.argmin(np.diag(confusion)))
row = confusion[worst].copy()
row[worst] = -1
print(f"accuracy {accuracy:.3f}; recognised worst: {affect.EXPRESSIONS[worst]} "
      f"({confusion[worst, worst]:.0%}), most often taken for {affect.EXPRESSIONS[int(np.argmax(row))]}")
checks.check_01_2(accuracy, affect.EXPRESSIONS[worst], affect.EXPRESSIONS[int(np.argmax(row))])

# %% [markdown]
# ## 3. "Happily surprised" as the union of two rows

# %%
happily_surprised = set()
for name in ("happiness", "surprise"):
    prototypical, observational = affect.DU_TABLE[name]
    happily_surprised |= set(prototypical) | set(observational)
print("happily surprised:", sorted(happily_surprised))
checks.check_01_3(happily_surprised)
