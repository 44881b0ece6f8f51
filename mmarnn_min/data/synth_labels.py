"""SynthAffect's labels: the image label rules and the oracle's per-frame affect vector.

Images (docs/design.md, section 6): an expression is drawn, AU intensities follow the Du
table (prototypical strong, observational sometimes, others faint noise), valence-arousal
follow the expression's place on the circumplex plus noise. Three sources mimic the real data
sets' partial labels:

    source     like        what it shows                    labels kept
    expr_va    AffectNet   a posed expression (Du rules)    expression + valence-arousal
    aus        EmotioNet   a posed expression (Du rules)    AUs
    all        Aff-Wild2   a frame of a reaction video      expression + valence-arousal + AUs

Aff-Wild2 is a set of videos, and so is the "all" source: one frame of a reaction video of
its own person (``synth_make.render_video_frame``), inside the reaction window half of the
time. Its expression label is the oracle's most probable expression (below). Posed images
alone teach the AUs only in the Du table's combinations, at poses without head motion or
blinks; an MMA trained on them read the video frames' AUs and expressions poorly (measured:
per-frame correlation with the oracle's features 0.49, against 0.60 with this source).

AU labels are binary, as in the real sets. They come from a simulated annotator who marks an
AU present when its intensity plus logistic noise (scale ``ANNOTATOR_SCALE``) exceeds
``AU_THRESHOLD``. So the probability that an AU of intensity a is labelled present is
``sigmoid((a - AU_THRESHOLD) / ANNOTATOR_SCALE)``: that is the oracle's "AU probability",
what a perfect AU classifier trained on these labels would output.

The oracle's expression probabilities come from the AU intensities alone (a frame has no
drawn expression in a video): ``softmax(EXPRESSION_SHARPNESS * score)`` where an expression's
score is the weighted mean intensity of its Du AUs (prototypical 1, observational 0.5) minus
the mean intensity of the AUs outside its row, and neutral's score is ``NEUTRAL_SCORE``.

The oracle feature of a frame is docs/design.md's z_t: [valence, arousal | 7 expression
probabilities | 17 AU probabilities], 26 values.
"""

from __future__ import annotations

import numpy as np

from mmarnn_min.affect import AUS, DU_TABLE, EXPRESSIONS, NUM_AUS, NUM_EXPRESSIONS

SOURCES: tuple[str, ...] = ("expr_va", "aus", "all")  # AffectNet-, EmotioNet-, Aff-Wild2-like

# Each expression's place on the valence-arousal circumplex at full strength (Russell 1980;
# the positions are the usual textbook ones, rounded).
EXPRESSION_VA: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "anger": (-0.55, 0.65),
    "disgust": (-0.65, 0.35),
    "fear": (-0.6, 0.75),
    "happiness": (0.8, 0.4),
    "sadness": (-0.65, -0.35),
    "surprise": (0.25, 0.8),
}

AU_THRESHOLD = 0.5      # intensity at which the annotator is undecided
ANNOTATOR_SCALE = 0.1   # logistic noise of the annotator
NEUTRAL_SCORE = 0.2     # expression score of neutral
EXPRESSION_SHARPNESS = 12.0
MIN_STRENGTH = 0.2      # weakest expression an image shows: video frames show weak ones too,
                        # and a network that never saw them misreads them (measured: with 0.5,
                        # MMA's features on video frames correlated only 0.35-0.55 with the oracle's)


def _du_weights() -> tuple[np.ndarray, np.ndarray]:
    """(7,17) weights of each expression's AUs (prototypical 1, observational 0.5, sums to
    1 per row; neutral all 0) and (7,17) the mask of the AUs outside each row."""
    weights = np.zeros((NUM_EXPRESSIONS, NUM_AUS))
    for expression, (prototypical, observational) in DU_TABLE.items():
        row = weights[EXPRESSIONS.index(expression)]
        for au in prototypical:
            row[AUS.index(au)] = 1.0
        for au in observational:
            row[AUS.index(au)] = 0.5
        row /= row.sum()
    return weights, (weights == 0).astype(float)


_DU_WEIGHTS, _OUTSIDE = _du_weights()
_OUTSIDE_MEAN = _OUTSIDE / _OUTSIDE.sum(axis=1, keepdims=True)


def faint_aus(rng: np.random.Generator, shape) -> np.ndarray:
    """Faint AU noise: mostly near 0, now and then up to 0.25 (mean 0.06)."""
    return 0.25 * rng.random(shape) ** 3


def sample_image_affect(rng: np.random.Generator, expression: int) -> tuple[np.ndarray, np.ndarray]:
    """AU intensities (17,) and valence-arousal (2,) of a picture showing ``expression``
    (index into EXPRESSIONS), by the Du rules at a strength s uniform in [MIN_STRENGTH, 1]:
    prototypical AUs at 0.7-1 s, observational ones half of the time at 0.3-0.8 s, the others
    faint; VA at the expression's circumplex place times s, plus noise."""
    aus = faint_aus(rng, NUM_AUS)
    name = EXPRESSIONS[expression]
    strength = 0.0
    if name != "neutral":
        strength = rng.uniform(MIN_STRENGTH, 1.0)
        prototypical, observational = DU_TABLE[name]
        for au in prototypical:
            aus[AUS.index(au)] = strength * rng.uniform(0.7, 1.0)
        for au in observational:
            if rng.random() < 0.5:
                aus[AUS.index(au)] = strength * rng.uniform(0.3, 0.8)
    va = strength * np.array(EXPRESSION_VA[name]) + rng.normal(0.0, 0.08, 2)
    return aus.astype(np.float32), np.clip(va, -1, 1).astype(np.float32)


def au_probabilities(aus: np.ndarray) -> np.ndarray:
    """P(annotator marks the AU present | intensity): (..., 17) -> (..., 17)."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(aus) - AU_THRESHOLD) / ANNOTATOR_SCALE))


def annotate_aus(rng: np.random.Generator, aus: np.ndarray) -> np.ndarray:
    """Binary AU labels (..., 17) float32 from the simulated annotator."""
    noise = rng.logistic(0.0, ANNOTATOR_SCALE, np.shape(aus))
    return (np.asarray(aus) + noise > AU_THRESHOLD).astype(np.float32)


def expression_probabilities(aus: np.ndarray) -> np.ndarray:
    """The oracle's expression distribution from AU intensities: (..., 17) -> (..., 7)."""
    aus = np.asarray(aus, dtype=np.float64)
    score = aus @ _DU_WEIGHTS.T - aus @ _OUTSIDE_MEAN.T  # (..., 7)
    score[..., EXPRESSIONS.index("neutral")] = NEUTRAL_SCORE
    logits = EXPRESSION_SHARPNESS * score
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=-1, keepdims=True)


def oracle_features(aus: np.ndarray, va: np.ndarray) -> np.ndarray:
    """z_t for every frame from the true AU intensities (L,17) and VA (L,2):
    [valence, arousal | 7 expression probabilities | 17 AU probabilities] -> (L,26) float32."""
    return np.concatenate(
        [np.asarray(va, np.float64), expression_probabilities(aus), au_probabilities(aus)], axis=-1,
    ).astype(np.float32)
