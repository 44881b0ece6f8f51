"""Rendering SynthAffect's images and videos into arrays, on several processes.

Every image and video draws from its own random stream, seeded by (config seed, split, kind,
source, index): the result does not depend on how the work is split between processes, and
the splits never share a person (each sample draws its own identity from its own stream).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import numpy as np

from mmarnn_min.affect import NUM_EXPRESSIONS
from mmarnn_min.data.synth_config import SynthConfig, split_index
from mmarnn_min.data.synth_face import Identity
from mmarnn_min.data.synth_hume import draw_length, plan_hume_video
from mmarnn_min.data.synth_labels import (
    SOURCES,
    annotate_aus,
    expression_probabilities,
    oracle_features,
    sample_image_affect,
)
from mmarnn_min.data.synth_render import Shot, background, render_aligned, render_canvas
from mmarnn_min.data.synth_video import VideoPlan, plan_video

_IMAGES, _VIDEOS, _VIDEO_FRAMES = 0, 1, 2  # kinds, in the seeds
WINDOW_SHARE = 0.5  # share of the "all" source's frames drawn from inside the reaction window
_IMAGE_CHUNK = 64  # images per task
_VIDEO_CHUNK = 4  # videos per task


def sample_rng(config: SynthConfig, split: str, kind: int, *index: int) -> np.random.Generator:
    """The random stream of one image (kind 0, source, index) or video (kind 1, index)."""
    return np.random.default_rng([config.seed, split_index(split), kind, *index])


def render_image(config: SynthConfig, split: str, source: int, index: int) -> dict[str, np.ndarray]:
    """One labelled image: the aligned crop (S,S,3) uint8, its landmarks (5,2) in crop pixels,
    the true expression, AUs and VA, and the binary AU labels of the annotator. The "all"
    source (like Aff-Wild2, a set of videos) gives a frame of a reaction video
    (``render_video_frame``); the others a posed expression drawn by the Du rules."""
    if SOURCES[source] == "all":
        return render_video_frame(config, split, index)
    rng = sample_rng(config, split, _IMAGES, source, index)
    identity = Identity.sample(rng)
    shot = Shot.sample(rng, config.canvas_size)
    expression = int(rng.integers(NUM_EXPRESSIONS))
    aus, va = sample_image_affect(rng, expression)
    au_labels = annotate_aus(rng, aus)
    blink = rng.uniform(0.6, 1.0) if rng.random() < 0.03 else 0.0
    side = config.canvas_size if config.render == "canvas" else config.image_size
    backdrop = background(rng, side, side)
    crop, landmarks = render_aligned(identity, aus, shot, backdrop, rng, config.image_size,
                                     config.render, blink)
    return {"images": crop, "landmarks": landmarks.astype(np.float32), "true_expression": expression,
            "true_aus": aus, "true_va": va, "au_labels": au_labels}


def render_video_frame(config: SynthConfig, split: str, index: int) -> dict[str, np.ndarray]:
    """One labelled frame of a reaction video, keyed as ``render_image``: a person of its own
    (no video set holds them), a video planned as those of the video sets are, and one frame
    of it, from inside a reaction window with probability ``WINDOW_SHARE``, else from
    anywhere. Its labels are the frame's true VA, the annotator's AUs and, as its expression,
    the oracle's most probable one (a frame has no drawn expression)."""
    plan, rng = video_plan(config, split, index, _VIDEO_FRAMES)
    identity, shot, backdrop = video_scene(config, rng, config.render == "canvas")
    inside = np.flatnonzero(plan.in_window)  # (frames in a window,)
    if rng.random() < WINDOW_SHARE:
        t = int(inside[rng.integers(len(inside))])
    else:
        t = int(rng.integers(plan.length))
    crop, landmarks = render_aligned(identity, plan.aus[t], moved_shot(shot, plan.motion[t]), backdrop, rng,
                                     config.image_size, config.render, plan.blink[t])
    aus = plan.aus[t]
    return {"images": crop, "landmarks": landmarks.astype(np.float32),
            "true_expression": int(expression_probabilities(aus).argmax()), "true_aus": aus,
            "true_va": plan.va[t], "au_labels": annotate_aus(rng, aus)}


def moved_shot(shot: Shot, motion: np.ndarray) -> Shot:
    """The shot of one frame: ``motion`` (5,) is the plan's yaw, pitch, roll (radians) and
    dx, dy (in inter-ocular distances) at that frame."""
    yaw, pitch, roll, dx, dy = motion
    return shot.moved(yaw, pitch, roll, dx * shot.iod, dy * shot.iod)


def video_plan(config: SynthConfig, split: str, index: int, kind: int = _VIDEOS,
               ) -> tuple[VideoPlan, np.random.Generator]:
    """A video's labels and trajectories, and the random stream that goes on to render it
    (``kind``: a video of the video sets, or one that an image of the "all" source is a frame of)."""
    rng = sample_rng(config, split, kind, index)
    if config.video_mode == "hume":
        length = draw_length(rng, config.min_frames, config.max_frames, config.fps, config.mean_seconds)
        return plan_hume_video(rng, length, config.fps), rng
    length = int(rng.integers(config.min_frames, config.max_frames + 1))
    return plan_video(rng, length, config.fps), rng


def video_scene(config: SynthConfig, rng: np.random.Generator, on_canvas: bool,
                ) -> tuple[Identity, Shot, np.ndarray]:
    """What stays fixed over a video: the person, the shot, and the backdrop (canvas-sized
    when the frames are drawn on the canvas, else crop-sized)."""
    side = config.canvas_size if on_canvas else config.image_size
    return Identity.sample(rng), Shot.sample(rng, config.canvas_size), background(rng, side, side)


def render_video(config: SynthConfig, split: str, index: int, canvas: bool = False,
                 ) -> tuple[np.ndarray, np.ndarray, VideoPlan]:
    """The frames of one video and their true landmarks, with its plan. ``canvas=False``:
    aligned crops (L,S,S,3) and landmarks in crop pixels (L,5,2), made as ``config.render``
    says; ``canvas=True``: the canvas frames (L,C,C,3) and landmarks in canvas pixels."""
    plan, rng = video_plan(config, split, index)
    identity, shot, backdrop = video_scene(config, rng, canvas or config.render == "canvas")
    size = config.canvas_size if canvas else config.image_size
    frames = np.empty((plan.length, size, size, 3), np.uint8)
    landmarks = np.empty((plan.length, 5, 2), np.float32)
    for t in range(plan.length):
        shot_t = moved_shot(shot, plan.motion[t])
        if canvas:
            frames[t], landmarks[t] = render_canvas(identity, plan.aus[t], shot_t, backdrop, rng,
                                                    plan.blink[t])
        else:
            frames[t], landmarks[t] = render_aligned(identity, plan.aus[t], shot_t, backdrop, rng,
                                                     config.image_size, config.render, plan.blink[t])
    return frames, landmarks, plan


def _image_chunk(config: SynthConfig, split: str, source: int, start: int, stop: int,
                 ) -> dict[str, np.ndarray]:
    samples = [render_image(config, split, source, i) for i in range(start, stop)]
    return {key: np.stack([np.asarray(s[key]) for s in samples]) for key in samples[0]}


def _video_chunk(config: SynthConfig, split: str, start: int, stop: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {key: [] for key in
                                          ("frames", "landmarks", "aus", "va", "oracle", "in_window",
                                           "lengths", "reactions", "felt", "windows")}
    for index in range(start, stop):
        frames, landmarks, plan = render_video(config, split, index)
        parts["frames"].append(frames)
        parts["landmarks"].append(landmarks)
        parts["aus"].append(plan.aus)
        parts["va"].append(plan.va)
        parts["oracle"].append(oracle_features(plan.aus, plan.va))  # from what is drawn, only
        parts["in_window"].append(plan.in_window)
        parts["lengths"].append(np.array([plan.length]))
        parts["reactions"].append(plan.reactions[None])
        parts["felt"].append(plan.felt[None])
        parts["windows"].append(np.array([plan.window]))
    return {key: np.concatenate(value) for key, value in parts.items()}


def process_context() -> multiprocessing.context.BaseContext:
    """fork on Linux: workers start at once and the caller's script needs no
    ``if __name__ == "__main__":`` guard. The workers run numpy and OpenCV only, which was
    checked to be safe after torch's and OpenCV's thread pools ran in the parent (Python 3.12+
    warns about forking a threaded process in general; that warning is silenced). Elsewhere
    spawn, which re-imports the caller's main module: guard your script."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _run(tasks: list[tuple], job: Callable[..., dict[str, np.ndarray]], workers: int | None,
         ) -> dict[str, np.ndarray]:
    """Run ``job(*task)`` for every task, on ``workers`` processes (None: all cores; 1: here),
    and concatenate the resulting arrays in task order."""
    if workers is None:
        workers = os.cpu_count() or 1
    if workers <= 1 or len(tasks) <= 1:
        results = [job(*task) for task in tasks]
    else:
        with warnings.catch_warnings(), ProcessPoolExecutor(min(workers, len(tasks)),
                                                             mp_context=process_context()) as pool:
            warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
            results = list(pool.map(job, *zip(*tasks)))
    return {key: np.concatenate([r[key] for r in results]) for key in results[0]}


def make_image_arrays(config: SynthConfig, split: str, workers: int | None = None,
                      ) -> dict[str, np.ndarray]:
    """Render a split's images, source after source: arrays keyed as in ``render_image`` plus
    "source" (N,) int64."""
    count = config.images_per_source(split)
    tasks = [(config, split, source, start, min(start + _IMAGE_CHUNK, count))
             for source in range(len(SOURCES)) for start in range(0, count, _IMAGE_CHUNK)]
    if not tasks:
        raise ValueError(f"the config asks for no {split} images")
    arrays = _run(tasks, _image_chunk, workers)
    arrays["source"] = np.repeat(np.arange(len(SOURCES)), count)
    return arrays


def make_video_arrays(config: SynthConfig, split: str, workers: int | None = None,
                      ) -> dict[str, np.ndarray]:
    """Render a split's videos, concatenated along frames: frames (sum L,S,S,3), landmarks,
    aus, va, oracle, in_window (sum L, ...), and per video lengths (V,), reactions (V,7), felt
    (V,7), windows (V,2) (first window's start, last one's stop)."""
    count = config.num_videos(split)
    if count == 0:
        raise ValueError(f"the config asks for no {split} videos")
    tasks = [(config, split, start, min(start + _VIDEO_CHUNK, count))
             for start in range(0, count, _VIDEO_CHUNK)]
    return _run(tasks, _video_chunk, workers)

