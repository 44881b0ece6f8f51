"""The three affect descriptors the paper's MMA predicts, and the reactions MRNN estimates.

Section 3.1 of the paper uses the dimensional model (valence-arousal), the 7 basic
expressions and facial action units (AUs). The distribution-matching loss couples expressions
and AUs through the relation table of Du et al. 2014 ("Compound facial expressions of
emotion", PNAS), reproduced here as ``DU_TABLE`` and turned into the matrix R of
``au_relation_matrix``: R[e, au] = 1 when the AU is prototypical or observational for e.
"""

from __future__ import annotations

import torch

# The 7 basic expressions, in the order used by Aff-Wild2 (indices 0..6).
EXPRESSIONS: tuple[str, ...] = (
    "neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise",
)

# The 7 emotional reactions of Hume-Reaction, in the order of its label files.
REACTIONS: tuple[str, ...] = (
    "Adoration", "Amusement", "Anxiety", "Disgust", "Empathic-Pain", "Fear", "Surprise",
)

# The 17 AUs: the union of those Du et al. relate to the six basic expressions.
AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 15, 17, 20, 23, 24, 25, 26)

# Du et al. 2014, Table 1: expression -> (prototypical AUs, observational AUs).
# Neutral has no AU.
DU_TABLE: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "happiness": ((12, 25), (6,)),
    "sadness": ((4, 15), (1, 6, 11, 17)),
    "fear": ((1, 4, 20, 25), (2, 5, 26)),
    "anger": ((4, 7, 24), (10, 17, 23)),
    "surprise": ((1, 2, 25, 26), (5,)),
    "disgust": ((9, 10, 17), (4, 24)),
}

# Sizes of the per-frame affect vector z_t = [valence, arousal | 7 expr probs | 17 AU probs].
NUM_VA = 2
NUM_EXPRESSIONS = len(EXPRESSIONS)
NUM_AUS = len(AUS)
NUM_REACTIONS = len(REACTIONS)
AFFECT_DIM = NUM_VA + NUM_EXPRESSIONS + NUM_AUS  # 26
# The names of z_t's 26 values, in order (column names of tables and plots).
AFFECT_NAMES: tuple[str, ...] = ("valence", "arousal", *EXPRESSIONS, *(f"AU{au}" for au in AUS))


def au_relation_matrix(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """R (7, 17): R[e, a] = 1 if AU ``AUS[a]`` is prototypical or observational for
    expression ``EXPRESSIONS[e]`` in Du et al. 2014, else 0 (the neutral row is all zero)."""
    relation = torch.zeros(NUM_EXPRESSIONS, NUM_AUS, dtype=dtype)
    for expression, (prototypical, observational) in DU_TABLE.items():
        e = EXPRESSIONS.index(expression)
        for au in prototypical + observational:
            relation[e, AUS.index(au)] = 1.0
    return relation
