"""SynthAffect's Hume-like videos (synth_hume): durations, reaction windows, self-report labels,
an oracle that sees only the drawn face, and determinism."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min.data import synth_hume
from mmarnn_min.data.synth import SynthConfig, make_videos
from mmarnn_min.data.synth_hume import blinks, draw_length, duration_rate, self_report
from mmarnn_min.data.synth_labels import oracle_features
from mmarnn_min.data.synth_make import make_video_arrays, video_plan
from mmarnn_min.data.synth_video import twitches

HUME = SynthConfig.hume(5.0)
TINY = SynthConfig(video_mode="hume", fps=1.0, min_frames=8, max_frames=16, image_size=32, canvas_size=96,
                   train_images_per_source=6, eval_images_per_source=3, train_videos=4, eval_videos=2)


@pytest.fixture(scope="module")
def plans():
    return [video_plan(HUME, "train", index)[0] for index in range(1500)]


def test_the_presets_are_hume_reactions_3_to_16_seconds():
    assert (HUME.min_frames, HUME.max_frames, HUME.fps) == (15, 80, 5.0)
    paper = SynthConfig.hume(30.0)
    assert (paper.min_frames, paper.max_frames) == (90, 480)  # the paper's T = 480
    with pytest.raises(ValueError, match="mean_seconds"):
        SynthConfig(video_mode="hume")  # 20-96 frames at 25 fps: 0.8-3.8 s cannot average 11 s
    with pytest.raises(ValueError, match="video_mode"):
        SynthConfig(video_mode="hume-like")


def test_durations_lie_in_the_range_with_the_mean_of_hume_reaction(plans):
    lengths = np.array([plan.length for plan in plans])
    assert lengths.min() >= 15 and lengths.max() <= 80
    assert lengths.min() <= 20 and lengths.max() >= 78  # the whole range is used
    assert abs(lengths.mean() / HUME.fps - 11.0) < 0.3


def test_duration_rate_gives_the_asked_mean():
    """Reference: the mean of the density exp(a u) on [0, width] by numerical integration."""
    u = np.linspace(0.0, 13.0, 200_001)
    for mean in (4.0, 6.5, 8.0, 12.5):
        density = np.exp(duration_rate(13.0, mean) * u)
        assert np.trapezoid(u * density, u) / np.trapezoid(density, u) == pytest.approx(mean, abs=1e-6)
    with pytest.raises(ValueError, match="inside"):
        duration_rate(13.0, 13.0)


def test_durations_follow_the_maximum_entropy_distribution():
    """Drawn at a high frame rate (no rounding to speak of), the durations' distribution is
    the truncated exponential's, F(d) = expm1(a (d - 3)) / expm1(13 a)."""
    rng = np.random.default_rng(0)
    seconds = np.array([draw_length(rng, 3000, 16000, 1000.0, 11.0) for _ in range(20_000)]) / 1000.0
    rate = duration_rate(13.0, 8.0)
    grid = np.linspace(3.0, 16.0, 200)
    expected = np.expm1(rate * (grid - 3.0)) / np.expm1(13.0 * rate)
    empirical = np.searchsorted(np.sort(seconds), grid, side="right") / len(seconds)
    assert np.abs(empirical - expected).max() < 0.02  # Kolmogorov-Smirnov distance


def test_labels_are_self_reports_scaled_by_their_maximum(plans):
    labels = np.stack([plan.reactions for plan in plans])  # (V,7)
    assert (labels.max(axis=1) == 1.0).all() and (labels >= 0).all()
    assert 0.09 < (labels == 0).mean() < 0.13  # Hume-Reaction: about 11%
    felt = np.stack([plan.felt for plan in plans])
    assert felt[labels == 0].mean() < felt[labels > 0].mean()  # a 0 is a reaction felt faintly


def test_a_noiseless_report_is_the_felt_intensities_over_their_maximum(monkeypatch):
    monkeypatch.setattr(synth_hume, "REPORT_NOISE", 0.0)
    felt = np.array([0.2, 0.5, 0.1, 0.0, 0.25, 0.05, 0.4])
    np.testing.assert_allclose(self_report(np.random.default_rng(0), felt), felt / 0.5)
    nothing = self_report(np.random.default_rng(0), np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    assert nothing.max() == 1.0 and nothing.sum() == 1.0  # every video reports something


def test_windows_lie_anywhere_and_do_not_overlap(plans):
    counts, relative = [], []
    for plan in plans:
        counts.append(len(plan.windows))
        edges = np.array(plan.windows).ravel()
        assert (np.diff(edges) >= 0).all() and edges[0] >= 0 and edges[-1] <= plan.length
        assert all(stop - start >= 2 for start, stop in plan.windows)
        assert plan.in_window.sum() == sum(stop - start for start, stop in plan.windows)
        assert plan.in_window.mean() <= synth_hume.MAX_WINDOW_SHARE
        relative.append((np.arange(plan.length) + 0.5) / plan.length)  # frame centres in [0, 1]
    assert set(counts) == {1, 2, 3}
    relative = np.concatenate(relative)
    inside = np.concatenate([plan.in_window for plan in plans])
    tenths = np.minimum((relative * 10).astype(int), 9)
    shown = np.bincount(tenths, weights=inside) / np.bincount(tenths)  # (10,) share in a window
    assert shown[0] > 0.2 and shown[-1] > 0.2  # the first and last tenths too, not only the middle
    assert abs(shown[0] - shown[-1]) < 0.05 and shown.max() < 0.7  # and no place is favoured
    starts = np.array([plan.windows[0][0] / plan.length for plan in plans])
    assert (starts < 0.05).mean() > 0.2 and (starts > 0.3).mean() > 0.1


def test_the_face_shows_the_felt_reaction_inside_the_windows(plans):
    inside, outside = [], []
    for plan in plans:
        if plan.felt.max() > 0.6 and (~plan.in_window).sum() >= 5:
            inside.append(plan.aus[plan.in_window].max(0).mean())
            outside.append(np.median(plan.aus[~plan.in_window], axis=0).mean())
    assert len(inside) > 100
    assert np.mean(outside) < 0.12 and np.mean(inside) > 2 * np.mean(outside)


def test_twitches_stay_outside_the_windows():
    outside = np.ones(40, bool)
    outside[5:30] = False
    twitch = twitches(np.random.default_rng(1), outside, 6, 2, 4)  # (40,17)
    assert twitch[~outside].max() == 0 and twitch[outside].max() > 0


def test_blinks_last_their_length_and_come_every_few_seconds():
    closure = blinks(np.random.default_rng(2), 6000, 100.0)  # 60 s at 100 fps
    closed = closure > 0
    starts = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
    stops = np.flatnonzero(closed[:-1] & ~closed[1:]) + 1
    durations = (stops - starts[:len(stops)]) / 100.0
    assert np.all(np.abs(durations - synth_hume.BLINK_SECONDS) <= 0.02)
    gaps = np.diff(starts) / 100.0
    assert 2.4 < gaps.min() and gaps.max() < 5.1 and closure.max() > 0.95


def test_the_oracle_sees_only_what_the_face_shows(cache_dir, monkeypatch):
    """z_t is the drawn AU intensities and VA through oracle_features, and what is drawn (and
    so the frames) does not depend on the self-reports: the labels change with the report
    noise, the face does not."""
    videos = make_videos(TINY, "train", workers=1, verbose=False)
    for video in videos:
        np.testing.assert_array_equal(video.oracle, oracle_features(video.aus, video.va))
        assert video.frames.shape == (len(video), 32, 32, 3) and video.in_window.shape == (len(video),)
    monkeypatch.setattr(synth_hume, "REPORT_NOISE", 0.3)
    louder = make_video_arrays(TINY, "train", workers=1)
    for key in ("frames", "aus", "va", "oracle", "felt", "in_window", "lengths"):
        np.testing.assert_array_equal(louder[key], getattr(videos, key) if key != "lengths" else videos.lengths)
    assert not np.array_equal(louder["reactions"], videos.reactions)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10 ** 6))
def test_a_hume_video_is_a_function_of_the_seed_and_not_of_the_workers(seed):
    config = replace(TINY, seed=seed, train_videos=5)
    one = make_video_arrays(config, "train", workers=1)
    two = make_video_arrays(config, "train", workers=2)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
    other = make_video_arrays(replace(config, seed=seed + 1), "train", workers=1)
    assert not np.array_equal(one["reactions"], other["reactions"])
