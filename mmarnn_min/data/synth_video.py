"""SynthAffect videos: 7 reaction intensities -> per-frame AU / VA trajectories -> frames.

Each video has 7 reaction intensities in [0, 1]; the reaction shows on the face only in some
frames (a window whose strength follows the intensities), the rest are near-neutral: the
video-level label is not in every frame (docs/design.md, section 6).

How a video of the "window" mode (``plan_video``) is made, all random draws from the video's
own seed (the Hume-like mode, synth_hume, reuses steps 1 and 3-6, one function each, and
places its windows and draws its labels its own way):
1. Reaction intensities y (7,): ``y = sigmoid(1.6 z - 1.2)``, z ~ N(0, C), where C correlates
   reactions that go together (Adoration-Amusement, Anxiety-Fear, Fear-Surprise,
   Anxiety-Empathic-Pain, Amusement-Surprise): mostly low intensities, a few high ones.
2. A reaction window [start, stop) covering 25-60 % of the video, anywhere in it.
3. Inside the window each reaction k has an *episode*: an onset, a duration and a ramp up
   and down typical of it (table below, as fractions of the window). Its amplitude is
   ``min(1, DISPLAY_GAIN * g * m_k * y_k)``: g in [0.3, 1] is the person's expressivity,
   m_k in [0.5, 1] how much of that reaction they let show (and 0 one time in ten: felt,
   not shown). Neither is in the label, so the face tells y only up to these factors: even
   the oracle is far from perfect (synth_baseline measures how far). The gain (2.5) makes
   typical reactions show at AU intensities of 0.2-0.8, where a face shows them: at gain
   1 most windows stayed below 0.3, faint enough that the oracle's MRNN reached a test
   Pearson of only 0.24 on the default data (0.46 at gain 2.5).
4. Each reaction's AU pattern (table) is scaled by its episode's envelope; the episodes
   combine as independent causes, ``a = 1 - prod_k (1 - amplitude_k * envelope_k(t) * P_k)``,
   on top of the person's resting face (faint AUs, 0-2 of them marked up to 0.35) and slow
   per-frame jitter. VA adds up the reactions' VA weighted the same way, plus noise.
5. Outside the window the face is near-neutral, apart from 0-3 short distractor twitches (a
   random reaction pattern at 0.2-0.6 of its strength, for 3-8 frames) that carry no label:
   a model that takes the maximum over frames is fooled by them, one that finds the
   sustained window is not.
6. Head motion, drift on the canvas and blinks vary over time; identity, light and backdrop
   are fixed per video.

Reaction -> facial display: AU intensities at full display, VA, and the episode's onset
and duration (fractions of the window) and ramp (fraction of the episode spent rising, and
again falling):

    reaction       AUs shown                                   VA            onset     duration  ramp
    Adoration      AU12 .6, AU6 .35, AU1 .25, AU25 .15         ( .60,  .15)  0.0-0.4   0.5-1.0   .40
    Amusement      AU12 1, AU6 .85, AU25 .8, AU26 .5, AU7 .25  ( .80,  .60)  0.1-0.6   0.3-0.6   .15
    Anxiety        AU4 .5, AU1 .45, AU24 .4, AU20 .35,         (-.45,  .35)  0.0-0.3   0.6-1.0   .60
                   AU7 .3, AU23 .25
    Disgust        AU9 .9, AU10 .7, AU17 .45, AU4 .45,         (-.60,  .30)  0.1-0.6   0.25-0.5  .25
                   AU15 .25, AU24 .2
    Empathic-Pain  AU1 .7, AU15 .7, AU4 .65, AU17 .45,         (-.50, -.15)  0.1-0.5   0.4-0.9   .40
                   AU11 .35, AU6 .2
    Fear           AU1 .85, AU5 .8, AU20 .75, AU2 .6, AU4 .6,  (-.60,  .80)  0.0-0.7   0.15-0.35 .10
                   AU25 .55, AU26 .35
    Surprise       AU1 .9, AU2 .9, AU26 .75, AU5 .65, AU25 .6  ( .20,  .80)  0.0-0.15  0.12-0.25 .05

The pairs that share AUs are meant to be confusable: Adoration and Amusement are both
smiles (strength, mouth opening and arousal differ), Fear and Anxiety share the brow and lip
stretch (Fear is stronger, shorter and adds the open mouth and raised lids), Fear and
Surprise share the raised brows and lids and open mouth (Fear adds AU4 and AU20).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmarnn_min.affect import AUS, NUM_AUS, NUM_REACTIONS, REACTIONS
from mmarnn_min.data.synth_labels import faint_aus

DISPLAY_GAIN = 2.5  # reaction intensity -> display amplitude (step 3 of the module docstring)


@dataclass(frozen=True)
class ReactionDisplay:
    """How one reaction shows on the face: AU intensities at full display, its VA, and its
    episode's onset and duration ranges (fractions of the window) and ramp (fraction of the
    episode spent rising, and again falling)."""

    aus: dict[int, float]
    va: tuple[float, float]
    onset: tuple[float, float]
    duration: tuple[float, float]
    ramp: float


REACTION_DISPLAY: dict[str, ReactionDisplay] = {
    "Adoration": ReactionDisplay({12: 0.6, 6: 0.35, 1: 0.25, 25: 0.15}, (0.6, 0.15),
                                 (0.0, 0.4), (0.5, 1.0), 0.4),
    "Amusement": ReactionDisplay({12: 1.0, 6: 0.85, 25: 0.8, 26: 0.5, 7: 0.25}, (0.8, 0.6),
                                 (0.1, 0.6), (0.3, 0.6), 0.15),
    "Anxiety": ReactionDisplay({4: 0.5, 1: 0.45, 24: 0.4, 20: 0.35, 7: 0.3, 23: 0.25}, (-0.45, 0.35),
                               (0.0, 0.3), (0.6, 1.0), 0.6),
    "Disgust": ReactionDisplay({9: 0.9, 10: 0.7, 17: 0.45, 4: 0.45, 15: 0.25, 24: 0.2}, (-0.6, 0.3),
                               (0.1, 0.6), (0.25, 0.5), 0.25),
    "Empathic-Pain": ReactionDisplay({1: 0.7, 15: 0.7, 4: 0.65, 17: 0.45, 11: 0.35, 6: 0.2},
                                     (-0.5, -0.15), (0.1, 0.5), (0.4, 0.9), 0.4),
    "Fear": ReactionDisplay({1: 0.85, 5: 0.8, 20: 0.75, 2: 0.6, 4: 0.6, 25: 0.55, 26: 0.35},
                            (-0.6, 0.8), (0.0, 0.7), (0.15, 0.35), 0.1),
    "Surprise": ReactionDisplay({1: 0.9, 2: 0.9, 26: 0.75, 5: 0.65, 25: 0.6}, (0.2, 0.8),
                                (0.0, 0.15), (0.12, 0.25), 0.05),
}


def _patterns() -> tuple[np.ndarray, np.ndarray]:
    """(7,17) AU pattern and (7,2) VA of each reaction, in REACTIONS order."""
    aus = np.zeros((NUM_REACTIONS, NUM_AUS))
    va = np.zeros((NUM_REACTIONS, 2))
    for k, name in enumerate(REACTIONS):
        for au, value in REACTION_DISPLAY[name].aus.items():
            aus[k, AUS.index(au)] = value
        va[k] = REACTION_DISPLAY[name].va
    return aus, va


REACTION_AUS, REACTION_VA = _patterns()


def _reaction_covariance() -> np.ndarray:
    """Covariance (7,7) of the latent z behind the reaction intensities."""
    pairs = {("Adoration", "Amusement"): 0.5, ("Anxiety", "Fear"): 0.5, ("Fear", "Surprise"): 0.3,
             ("Anxiety", "Empathic-Pain"): 0.3, ("Amusement", "Surprise"): 0.25}
    cov = np.eye(NUM_REACTIONS)
    for (a, b), rho in pairs.items():
        i, j = REACTIONS.index(a), REACTIONS.index(b)
        cov[i, j] = cov[j, i] = rho
    return cov


_REACTION_CHOLESKY = np.linalg.cholesky(_reaction_covariance())


@dataclass(frozen=True)
class VideoPlan:
    """Everything about one video but its pixels: labels and per-frame trajectories."""

    reactions: np.ndarray  # (7,) float32 labels in [0, 1]
    felt: np.ndarray  # (7,) float32 the reaction intensities behind the display, in [0, 1]
                      # (the labels themselves in the "window" mode; never for training)
    windows: tuple[tuple[int, int], ...]  # [start, stop) frames where the reaction shows, in order
    aus: np.ndarray  # (L,17) float32 true AU intensities
    va: np.ndarray  # (L,2) float32 true valence-arousal
    blink: np.ndarray  # (L,) float32 eye closure
    motion: np.ndarray  # (L,5) float32: yaw, pitch, roll offsets (radians), dx, dy (in iod)

    @property
    def length(self) -> int:
        return len(self.aus)

    @property
    def window(self) -> tuple[int, int]:
        """[start, stop) from the first window's start to the last one's stop (the window itself
        when there is one)."""
        return self.windows[0][0], self.windows[-1][1]

    @property
    def in_window(self) -> np.ndarray:
        """(L,) bool: the frames inside a reaction window."""
        inside = np.zeros(self.length, bool)
        for start, stop in self.windows:
            inside[start:stop] = True
        return inside


def smooth_noise(rng: np.random.Generator, length: int, width: int, channels: int = 1) -> np.ndarray:
    """Slowly varying noise (length, channels) with unit standard deviation: white noise
    smoothed by a Hann window of ``width`` frames."""
    window = np.hanning(width + 2)[1:-1]
    window /= np.sqrt((window ** 2).sum())
    white = rng.standard_normal((length + width - 1, channels))
    return np.stack([np.convolve(white[:, c], window, mode="valid") for c in range(channels)], 1)


def envelope(length: int, onset: int, duration: int, ramp: float) -> np.ndarray:
    """(length,) in [0, 1]: 0 before ``onset``, a raised-cosine rise over ``ramp`` of the
    episode, a plateau, a fall over ``ramp`` of it, 0 after ``onset + duration``."""
    t = np.arange(length) - onset + 0.5  # frame centres, from the episode's start
    ramp_frames = max(1.0, ramp * duration)
    rise = np.clip(t / ramp_frames, 0, 1)
    fall = np.clip((duration - t) / ramp_frames, 0, 1)
    return (0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))) * ((t > 0) & (t < duration))


def felt_reactions(rng: np.random.Generator) -> np.ndarray:
    """Step 1: reaction intensities (7,) in (0, 1), ``sigmoid(1.6 z - 1.2)`` with z ~ N(0, C)."""
    z = _REACTION_CHOLESKY @ rng.standard_normal(NUM_REACTIONS)
    return 1.0 / (1.0 + np.exp(-(1.6 * z - 1.2)))


def display_amplitudes(rng: np.random.Generator, felt: np.ndarray) -> np.ndarray:
    """Step 3: how strongly each reaction shows (7,): ``min(1, DISPLAY_GAIN g m_k y_k)``."""
    expressivity = rng.uniform(0.3, 1.0)
    shown_share = rng.uniform(0.5, 1.0, NUM_REACTIONS) * (rng.random(NUM_REACTIONS) > 0.1)
    return np.minimum(1.0, DISPLAY_GAIN * expressivity * shown_share * felt)


def episode(rng: np.random.Generator, reaction: str, window: tuple[int, int], length: int) -> np.ndarray:
    """Step 3: the (length,) envelope of one reaction's episode inside ``window``, with the
    onset, duration and ramp of its row of the table."""
    display = REACTION_DISPLAY[reaction]
    start, stop = window
    span = stop - start
    onset = start + int(rng.uniform(*display.onset) * span)
    duration = max(3, int(rng.uniform(*display.duration) * span))
    duration = min(duration, stop - onset)
    return envelope(length, onset, duration, display.ramp)


def twitches(rng: np.random.Generator, outside: np.ndarray, count: int, shortest: int, longest: int,
             ) -> np.ndarray:
    """Step 5: AU intensities (L,17) of ``count`` distractor twitches, each of ``shortest`` to
    ``longest`` frames lying wholly in the frames where ``outside`` (L,) is True (a twitch
    that fits nowhere is dropped)."""
    length = len(outside)
    twitch = np.zeros((length, NUM_AUS))
    outside_before = np.concatenate([[0], np.cumsum(outside)])  # (L+1,)
    for _ in range(count):
        duration = int(rng.integers(shortest, longest + 1))
        fits = outside_before[duration:] - outside_before[:-duration] == duration  # (L-duration+1,)
        onsets = np.flatnonzero(fits)
        if len(onsets) == 0:
            continue
        shape = envelope(length, int(rng.choice(onsets)), duration, 0.3)  # (L,)
        pattern = REACTION_AUS[rng.integers(NUM_REACTIONS)] * rng.uniform(0.2, 0.6)  # (17,)
        twitch = 1 - (1 - twitch) * (1 - shape[:, None] * pattern)
    return twitch


def affect_tracks(rng: np.random.Generator, envelopes: np.ndarray, twitch: np.ndarray, fps: float,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: per-frame AU intensities (L,17) and VA (L,2) from the reactions' envelopes
    (7,L) (amplitudes included) and the twitches (L,17), on the person's resting face."""
    length = envelopes.shape[1]
    shown = envelopes.T[:, :, None] * REACTION_AUS[None]  # (L,7,17)
    resting = faint_aus(rng, NUM_AUS)  # (17,) the person's resting face, with 0-2 marked AUs
    resting[rng.integers(0, NUM_AUS, rng.integers(0, 3))] = rng.uniform(0.1, 0.35)
    jitter = 0.03 * smooth_noise(rng, length, max(3, int(fps / 3)), NUM_AUS)  # (L,17)
    aus = 1 - (1 - resting) * np.prod(1 - shown, axis=1) * (1 - twitch)
    aus = np.clip(aus + jitter, 0, 1)

    va = envelopes.T @ REACTION_VA + 0.04 * smooth_noise(rng, length, max(3, int(fps / 2)), 2)
    va = np.clip(va + rng.normal(0, 0.05, 2), -1, 1)
    return aus, va


def head_motion(rng: np.random.Generator, length: int, fps: float) -> np.ndarray:
    """Step 6: (L,5) yaw, pitch, roll (radians), dx, dy (inter-ocular distances), slowly varying."""
    return smooth_noise(rng, length, max(3, int(fps)), 5) * np.array([0.08, 0.05, 0.05, 0.05, 0.05])


def plan_video(rng: np.random.Generator, length: int, fps: float) -> VideoPlan:
    """Draw one video's reactions and per-frame affect (steps 1-6 of the module docstring)."""
    reactions = felt_reactions(rng)  # (7,)
    span = int(round(rng.uniform(0.25, 0.6) * length))
    start = int(rng.integers(0, length - span + 1))
    window = (start, start + span)
    amplitude = display_amplitudes(rng, reactions)  # (7,)
    envelopes = np.stack([amplitude[k] * episode(rng, name, window, length)
                          for k, name in enumerate(REACTIONS)])  # (7,L)

    outside = np.ones(length, bool)
    outside[start:start + span] = False
    twitch = twitches(rng, outside, int(rng.integers(0, 4)), 3, 8)  # (L,17)
    aus, va = affect_tracks(rng, envelopes, twitch, fps)

    blink = np.zeros(length)
    t = rng.uniform(0, 3) * fps
    while t < length:
        for offset, closure in ((-1, 0.5), (0, 1.0), (1, 0.5)):
            if 0 <= int(t) + offset < length:
                blink[int(t) + offset] = closure
        t += rng.uniform(2.5, 5.0) * fps

    reactions = reactions.astype(np.float32)
    return VideoPlan(
        reactions=reactions, felt=reactions, windows=(window,), aus=aus.astype(np.float32),
        va=va.astype(np.float32), blink=blink.astype(np.float32),
        motion=head_motion(rng, length, fps).astype(np.float32),
    )
