"""SynthAffect videos: labels, the reaction window, oracle features, the baseline targets, and
videos written to real files."""

from __future__ import annotations

import csv
import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min.affect import REACTIONS
from mmarnn_min.data import synth_cache, synth_video
from mmarnn_min.data.synth import (
    SynthConfig,
    export_videos,
    make_videos,
    prefetch_videos,
    video_id,
)
from mmarnn_min.data.synth_baseline import SUMMARIES, ridge_baseline, summarise
from mmarnn_min.data.synth_labels import oracle_features
from mmarnn_min.data.synth_make import make_video_arrays, video_plan
from mmarnn_min.data.synth_video import envelope
from mmarnn_min.faces import align_faces
from mmarnn_min.video import read_video

TINY = SynthConfig(image_size=32, canvas_size=96, train_images_per_source=6, eval_images_per_source=3,
                   train_videos=3, eval_videos=2, min_frames=8, max_frames=16)


def test_video_set_shapes_and_labels(cache_dir):
    videos = make_videos(TINY, "train", workers=1, verbose=False)
    assert len(videos) == 3 and videos.ids == [video_id("train", v) for v in range(3)]
    assert ((videos.lengths >= 8) & (videos.lengths <= 16)).all()
    assert videos.frames.shape == (videos.lengths.sum(), 32, 32, 3)
    assert videos.reactions.shape == (3, 7) and ((videos.reactions >= 0) & (videos.reactions <= 1)).all()
    for video in videos:
        assert video.oracle.shape == (len(video), 26) and video.landmarks.shape == (len(video), 5, 2)
        np.testing.assert_array_equal(video.oracle, oracle_features(video.aus, video.va))
        assert 0 <= video.window[0] < video.window[1] <= len(video)
    padded, lengths = videos.padded_oracle(TINY.max_frames)
    assert padded.shape == (3, 16, 26)
    for v in range(3):
        np.testing.assert_array_equal(padded[v, :lengths[v]], videos[v].oracle)
        assert not padded[v, lengths[v]:].any()


def test_prefetched_videos_are_cached_and_equal_to_rendered_ones(cache_dir):
    process = prefetch_videos(TINY, ("val", "test"))
    process.join(timeout=120)
    assert process.exitcode == 0
    for split in ("val", "test"):
        cached = synth_cache.load(synth_cache.entry_dir(f"videos-{split}", TINY))
        assert cached is not None, split
        fresh = make_videos(TINY, split, workers=1, cache=False, verbose=False)
        np.testing.assert_array_equal(cached["frames"], fresh.frames)
        np.testing.assert_array_equal(cached["reactions"], fresh.reactions)
    assert synth_cache.load(synth_cache.entry_dir("videos-train", TINY)) is None   # only the splits asked for


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10 ** 6))
def test_a_video_is_a_function_of_the_seed_and_not_of_the_workers(seed):
    config = replace(TINY, seed=seed, train_videos=5)
    one = make_video_arrays(config, "train", workers=1)
    two = make_video_arrays(config, "train", workers=2)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])


def test_lengths_cover_the_range():
    config = SynthConfig()
    lengths = [video_plan(config, "train", i)[0].length for i in range(300)]
    assert min(lengths) < config.min_frames + 10 and max(lengths) > config.max_frames - 10 and max(lengths) <= config.max_frames


def test_the_reaction_shows_only_in_its_window():
    config = SynthConfig()
    inside, outside = [], []
    for index in range(200):
        plan, _ = video_plan(config, "val", index)
        start, stop = plan.window
        if plan.reactions.max() > 0.6 and start >= 5:
            inside.append(plan.aus[start:stop].max(0).mean())
            outside.append(np.median(plan.aus[:start], axis=0).mean())
    assert len(inside) > 30
    assert np.mean(outside) < 0.12  # near-neutral
    assert np.mean(inside) > 2 * np.mean(outside)


def test_a_window_video_has_one_window_and_is_labelled_with_what_was_felt():
    for index in range(20):
        plan, _ = video_plan(SynthConfig(), "val", index)
        (start, stop), = plan.windows
        assert plan.window == (start, stop) and plan.in_window[start:stop].all()
        assert plan.in_window.sum() == stop - start
        np.testing.assert_array_equal(plan.felt, plan.reactions)
        oracle = oracle_features(plan.aus, plan.va)
        for summary in SUMMARIES:  # a window as [start, stop) or as a mask: the same summary
            np.testing.assert_array_equal(summarise(oracle, plan.window, summary),
                                          summarise(oracle, plan.in_window, summary))


def test_envelope_rises_holds_and_falls():
    shape = envelope(40, onset=10, duration=20, ramp=0.25)
    assert (shape[:10] == 0).all() and (shape[30:] == 0).all()
    assert shape.max() == pytest.approx(1.0) and (shape[15:25] == 1.0).all()
    assert (np.diff(shape[10:16]) > 0).all() and (np.diff(shape[24:31]) < 0).all()


def test_baseline_is_positive_far_from_perfect_and_rewards_the_window():
    """The targets of issue 5 on the default sizes (labels only, no pixels)."""
    results = {summary: values.mean() for summary, values in ridge_baseline(SynthConfig()).items()}
    assert 0.2 < results["mean"] < 0.6
    assert results["window mean"] > results["mean"] + 0.05
    assert results["mean+max"] > results["mean"]
    assert results["window mean+max"] < 0.85


def test_exported_videos_read_back_and_align(tmp_path, cache_dir):
    paths = export_videos(TINY, tmp_path / "export", count=1)
    assert [p.name for p in paths] == [f"{video_id(s, 0)}.mp4" for s in ("train", "val", "test")]
    with open(tmp_path / "export" / "labels.csv") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["File_ID", *REACTIONS] and rows[1][0] == f"[{video_id('train', 0)}]"
    with open(tmp_path / "export" / "partition.csv") as file:
        assert [row[1] for row in csv.reader(file)][1:] == ["train", "devel", "test"]
    video = read_video(paths[0])
    plan, _ = video_plan(TINY, "train", 0)
    assert video.frames.shape == (plan.length, 96, 96, 3) and video.fps == pytest.approx(TINY.fps)
    np.testing.assert_allclose([float(x) for x in rows[1][1:]], plan.reactions, atol=1e-4)
    landmarks = np.load(tmp_path / "export" / f"{video_id('train', 0)}.landmarks.npy")
    crops = align_faces(video.frames, landmarks, TINY.image_size)  # (L,32,32,3)
    cached = make_videos(TINY, "train", workers=1, verbose=False)[0].frames
    assert np.abs(crops.astype(int) - cached).mean() < 20  # the same faces, through a lossy codec


def test_the_documented_reaction_table_is_the_one_used():
    """The table in synth_video's docstring states the code's numbers, row by row."""
    doc = synth_video.__doc__
    table = doc[doc.index("    reaction       AUs shown"):].split("\n\n")[0].splitlines()[1:]
    rows: dict[str, list[str]] = {}  # reaction -> its first line and continuation lines
    for line in table:
        name = line.split()[0]
        if name in REACTIONS:
            rows[name] = [line]
            current = name
        else:
            rows[current].append(line)
    assert sorted(rows) == sorted(REACTIONS)
    for name, lines in rows.items():
        display = synth_video.REACTION_DISPLAY[name]
        aus = re.findall(r"AU(\d+) (\d*\.?\d+)", " ".join(lines))
        assert {int(au): float(value) for au, value in aus} == display.aus, name
        va, timing = lines[0].split("(")[1].split(")")
        assert [float(x) for x in va.split(",")] == list(display.va), name
        assert [float(x) for x in re.findall(r"\d*\.\d+|\d+", timing)] == \
            [*display.onset, *display.duration, display.ramp], name
