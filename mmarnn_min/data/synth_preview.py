"""A contact sheet of SynthAffect, so a person can look at the data before trusting it.

Four panels, top to bottom: faces per expression (the posed "expr_va" source, with their VA); one
face with each AU alone at full intensity; canvases with their 5 true landmarks next to the
aligned crops; one video's frames (window marked) with its reaction labels and its oracle
trajectories (valence, arousal and a few AU probabilities) over time.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mmarnn_min.affect import AUS, EXPRESSIONS, NUM_AUS, REACTIONS
from mmarnn_min.data.synth_config import SynthConfig
from mmarnn_min.data.synth_face import Identity, au_displacements
from mmarnn_min.data.synth_labels import SOURCES, au_probabilities
from mmarnn_min.data.synth_make import render_image, render_video, video_plan
from mmarnn_min.data.synth_render import Shot, background, render_canvas, render_crop
from mmarnn_min.faces import align_face

_WHITE, _BLACK, _GREY, _RED = (255, 255, 255), (0, 0, 0), (120, 120, 120), (220, 30, 30)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_ZOOM = 2  # crops are shown twice their size
_LANDMARK_COLOURS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 200, 0), (0, 220, 220)]


def _text(image: np.ndarray, text: str, x: int, y: int, scale: float = 0.4, colour=_BLACK) -> None:
    cv2.putText(image, text, (x, y), _FONT, scale, colour, 1, cv2.LINE_AA)


def _zoom(crop: np.ndarray) -> np.ndarray:
    return cv2.resize(crop, None, fx=_ZOOM, fy=_ZOOM, interpolation=cv2.INTER_NEAREST)


def _titled(title: str, body: np.ndarray, width: int) -> np.ndarray:
    """``body`` under a title bar, padded to ``width``."""
    panel = np.full((body.shape[0] + 28, width, 3), 255, np.uint8)
    _text(panel, title, 6, 19, 0.55)
    panel[28:, :body.shape[1]] = body
    return panel


def expression_grid(config: SynthConfig, per_row: int = 8) -> np.ndarray:
    """Rows of faces per expression from the posed "expr_va" source, VA under each."""
    cell = config.image_size * _ZOOM
    grid = np.full((len(EXPRESSIONS) * (cell + 16), 90 + per_row * cell, 3), 255, np.uint8)
    filled = [0] * len(EXPRESSIONS)
    index = 0
    while min(filled) < per_row:
        sample = render_image(config, "val", SOURCES.index("expr_va"), index)
        index += 1
        e = sample["true_expression"]
        if filled[e] == per_row:
            continue
        y, x = e * (cell + 16), 90 + filled[e] * cell
        grid[y:y + cell, x:x + cell] = _zoom(sample["images"])
        _text(grid, "v{:+.1f} a{:+.1f}".format(*sample["true_va"]), x + 4, y + cell + 12, 0.35)
        filled[e] += 1
    for e, name in enumerate(EXPRESSIONS):
        _text(grid, name, 4, e * (cell + 16) + cell // 2, 0.45)
    return grid


def au_row(config: SynthConfig) -> np.ndarray:
    """The same frontal face neutral, then with each AU alone at intensity 1, at the crop
    size the models see (shown zoomed), each with how far the AU moves the face (pixels of
    the crop, ``au_displacements``)."""
    identity = Identity.sample(np.random.default_rng(config.seed))
    moved = au_displacements(identity, config.image_size)
    shot = Shot(0.0, 0.0, 0.0, (0.0, 0.0), 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, (1.0, 1.0, 1.0))
    backdrop = np.full((config.image_size, config.image_size, 3), 225, np.uint8)
    rng = np.random.default_rng(0)
    faces = []
    for k in range(-1, NUM_AUS):
        aus = np.zeros(NUM_AUS)
        if k >= 0:
            aus[k] = 1.0
        face = _zoom(render_crop(identity, aus, shot, backdrop, rng)[0])
        _text(face, "neutral" if k < 0 else f"AU{AUS[k]} {moved[k]:.1f}px", 4, 14, 0.45)
        faces.append(face)
    rows = [np.concatenate(faces[i:i + 9], axis=1) for i in (0, 9)]
    return np.concatenate(rows, axis=0)


def canvas_row(config: SynthConfig, count: int = 4) -> np.ndarray:
    """Canvases with their true landmarks, each followed by its aligned crop."""
    tiles = []
    for index in range(count):
        rng = np.random.default_rng([config.seed, 99, index])
        identity, shot = Identity.sample(rng), Shot.sample(rng, config.canvas_size)
        backdrop = background(rng, config.canvas_size, config.canvas_size)
        canvas, landmarks = render_canvas(identity, rng.uniform(0, 0.6, NUM_AUS), shot, backdrop, rng)
        crop = align_face(canvas, landmarks, config.image_size)
        marked = canvas.copy()
        for point, colour in zip(landmarks, _LANDMARK_COLOURS):
            cv2.circle(marked, (int(round(point[0])), int(round(point[1]))), 2, colour, -1, cv2.LINE_AA)
        zoomed = _zoom(crop)
        height = max(marked.shape[0], zoomed.shape[0])
        tile = np.full((height, marked.shape[1] + zoomed.shape[1] + 12, 3), 255, np.uint8)
        tile[:marked.shape[0], :marked.shape[1]] = marked
        tile[:zoomed.shape[0], marked.shape[1] + 6:marked.shape[1] + 6 + zoomed.shape[1]] = zoomed
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def video_strip(config: SynthConfig, frames_shown: int = 12) -> np.ndarray:
    """The video of val with the strongest felt reaction: frames evenly spaced (red border
    inside a reaction window), its labels, and its oracle trajectories."""
    index = max(range(min(40, config.num_videos("val"))),
                key=lambda i: video_plan(config, "val", i)[0].felt.max())
    frames, _, plan = render_video(config, "val", index)
    cell = config.image_size * _ZOOM
    picks = np.linspace(0, plan.length - 1, frames_shown).round().astype(int)
    strip = np.full((cell + 18, frames_shown * (cell + 4), 3), 255, np.uint8)
    for j, t in enumerate(picks):
        x = j * (cell + 4)
        strip[:cell, x:x + cell] = _zoom(frames[t])
        inside = plan.in_window[t]
        if inside:
            cv2.rectangle(strip, (x, 0), (x + cell - 1, cell - 1), _RED, 3)
        _text(strip, f"t={t}" + (" window" if inside else ""), x + 2, cell + 13, 0.38,
              _RED if inside else _BLACK)
    header = np.full((22, strip.shape[1], 3), 255, np.uint8)
    windows = ", ".join(f"{start}-{stop}" for start, stop in plan.windows)
    _text(header, f"video {index}: {plan.length} frames at {config.fps:g} fps, window {windows}   " +
          "  ".join(f"{r} {v:.2f}" for r, v in zip(REACTIONS, plan.reactions)), 4, 15, 0.42)
    return np.concatenate([header, strip, _trajectories(plan, strip.shape[1])], axis=0)


def _trajectories(plan, width: int, height: int = 150) -> np.ndarray:
    """Valence, arousal and the three strongest AU probabilities over time; windows shaded."""
    plot = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 40, width - 160, 10, height - 20
    xs = left + (right - left) * np.arange(plan.length) / max(1, plan.length - 1)

    def y_of(values: np.ndarray, low: float, high: float) -> np.ndarray:
        return bottom - (bottom - top) * (values - low) / (high - low)

    for start, stop in plan.windows:
        cv2.rectangle(plot, (int(xs[start]), top), (int(xs[stop - 1]), bottom), (255, 225, 225), -1)
    zero = int(y_of(np.array(0.0), -1, 1))
    cv2.line(plot, (left, zero), (right, zero), _GREY, 1)
    probabilities = au_probabilities(plan.aus)  # (L,17)
    strongest = np.argsort(probabilities.max(0))[::-1][:3]
    curves = [("valence", plan.va[:, 0], -1, 1, (200, 0, 0)),
              ("arousal", plan.va[:, 1], -1, 1, (0, 0, 200))]
    curves += [(f"P(AU{AUS[k]})", probabilities[:, k], 0, 1, colour)
               for k, colour in zip(strongest, [(0, 150, 0), (200, 120, 0), (150, 0, 150)])]
    for row, (name, values, low, high, colour) in enumerate(curves):
        points = np.stack([xs, y_of(values, low, high)], axis=1).round().astype(np.int32)
        cv2.polylines(plot, [points], False, colour, 1, cv2.LINE_AA)
        _text(plot, name, right + 10, top + 12 + 18 * row, 0.4, colour)
    _text(plot, "frame", left, height - 5, 0.35, _GREY)
    return plot


def contact_sheet(config: SynthConfig = SynthConfig()) -> np.ndarray:
    """The whole sheet (H,W,3) uint8 RGB."""
    panels = [("Faces per expression (source 'expr_va'); valence / arousal under each",
               expression_grid(config)),
              ("One face per AU at intensity 1, at the crop size (drawn straight into the crop), and "
               "how far it moves the face (crop pixels)",
               au_row(config)),
              ("Canvases with their 5 true landmarks, and the aligned crops", canvas_row(config)),
              ("One val video: frames (red: inside a reaction window) and its oracle trajectories",
               video_strip(config))]
    width = max(body.shape[1] for _, body in panels)
    return np.concatenate([_titled(title, body, width) for title, body in panels], axis=0)


def write_preview(config: SynthConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet = contact_sheet(config)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"cannot write an image to {path}")
    return path
