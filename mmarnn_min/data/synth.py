"""SynthAffect: the embedded, procedural data set behind the first command and the tutorials
(docs/design.md, section 6). Nothing is downloaded: faces are drawn from AU intensities, so
learning from pixels is needed, and possible.

    images  three sources with partial labels: posed expressions drawn by the Du et al.
            rules, labelled with expression + VA or with AUs; frames of reaction videos of
            other people, labelled with all three                     -> ``make_images``
    videos  20..T frames, 7 reaction intensities per video, shown only inside a window of
            frames, with the oracle's per-frame z_t (26 values)      -> ``make_videos``
            or, with ``SynthConfig.hume(fps)``, Hume-Reaction-like videos of 3-16 s with
            1-3 reaction windows and per-video max-scaled self-reports as labels

The pieces, one file each: synth_face (AU-driven face geometry and drawing), synth_render
(canvas placement, light, blur, noise, alignment), synth_labels (label rules, oracle
features), synth_video (reactions -> per-frame trajectories; the reaction table is in its
docstring), synth_hume (the Hume-like videos, their parameters and why), synth_make
(rendering on all cores), synth_cache (the on-disk cache), synth_baseline (ridge on oracle
features), synth_preview (the contact sheet).

Command line (``python -m mmarnn_min.data.synth``; ``--hume [--fps F]`` for the Hume-like videos):
    --preview out.png   contact sheet: faces per expression, one face per AU, canvases with
                        their landmarks, one video's frames and trajectories
    --baseline          ridge regression on per-video oracle features (how hard the task is)
    --bench             rendering speed: crops/s through canvas + alignment and straight
    --generate          fill the cache for every split (prints how long it took)
    --export DIR        write canvas videos (.mp4) + landmarks + labels.csv in the MuSe layout
"""

from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Iterator

import numpy as np

from mmarnn_min import cli
from mmarnn_min.affect import REACTIONS
from mmarnn_min.data import synth_cache
from mmarnn_min.data.synth_config import RENDER_MODES, SPLITS, SynthConfig, split_index
from mmarnn_min.data.synth_labels import SOURCES, oracle_features
from mmarnn_min.data.synth_make import (
    make_image_arrays,
    make_video_arrays,
    process_context,
    render_video,
)
from mmarnn_min.video import write_video

__all__ = [
    "SOURCES", "SPLITS", "ImageSet", "SynthConfig", "SynthVideo", "VideoSet", "export_videos",
    "make_images", "make_videos", "oracle_features", "prefetch_videos", "video_id",
]


@dataclass(frozen=True)
class ImageSet:
    """Labelled face crops of one split, the three sources one after the other.
    Labels a source does not have are NaN (va, aus) or -1 (expression)."""

    images: np.ndarray           # (N,S,S,3) uint8 RGB, aligned
    va: np.ndarray               # (N,2) float32 valence, arousal in [-1, 1]; NaN: no label
    expression: np.ndarray       # (N,) int64 index into EXPRESSIONS; -1: no label
    aus: np.ndarray              # (N,17) float32 in {0, 1}; NaN: no label
    source: np.ndarray           # (N,) int64 index into SOURCES
    true_va: np.ndarray          # (N,2) float32: the truth behind every picture,
    true_expression: np.ndarray  # (N,) int64     for analysis (never for training)
    true_aus: np.ndarray         # (N,17) float32 AU intensities in [0, 1]
    landmarks: np.ndarray        # (N,5,2) float32 true landmarks, crop pixels

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class SynthVideo:
    """One video: aligned frames with their oracle features and the video's labels."""

    id: str
    frames: np.ndarray     # (L,S,S,3) uint8 RGB aligned crops
    landmarks: np.ndarray  # (L,5,2) float32 true landmarks, crop pixels
    oracle: np.ndarray     # (L,26) float32 [VA | expression probabilities | AU probabilities]
    aus: np.ndarray        # (L,17) float32 true AU intensities
    va: np.ndarray         # (L,2) float32 true valence-arousal
    in_window: np.ndarray  # (L,) bool: the frames inside a reaction window
    reactions: np.ndarray  # (7,) float32 labels in [0, 1], REACTIONS order
    felt: np.ndarray       # (7,) float32 the intensities the face shows (for analysis, never training)
    window: tuple[int, int]  # [start, stop): first reaction window's start, last one's stop
    fps: float

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class VideoSet:
    """The videos of one split, stored back to back along the frame axis: video v holds
    frames ``offsets[v]:offsets[v+1]`` of every per-frame array."""

    split: str
    fps: float
    frames: np.ndarray     # (sum L,S,S,3) uint8
    landmarks: np.ndarray  # (sum L,5,2) float32
    oracle: np.ndarray     # (sum L,26) float32
    aus: np.ndarray        # (sum L,17) float32
    va: np.ndarray         # (sum L,2) float32
    in_window: np.ndarray  # (sum L,) bool
    offsets: np.ndarray    # (V+1,) int64
    reactions: np.ndarray  # (V,7) float32 labels
    felt: np.ndarray       # (V,7) float32
    windows: np.ndarray    # (V,2) int64

    def __len__(self) -> int:
        return len(self.reactions)

    @property
    def lengths(self) -> np.ndarray:
        """(V,) int64 frames per video."""
        return np.diff(self.offsets)

    @property
    def ids(self) -> list[str]:
        return [video_id(self.split, v) for v in range(len(self))]

    def __getitem__(self, v: int) -> SynthVideo:
        if not -len(self) <= v < len(self):
            raise IndexError(f"video {v} of {len(self)}")
        v %= len(self)
        frames = slice(self.offsets[v], self.offsets[v + 1])
        return SynthVideo(
            id=video_id(self.split, v), frames=self.frames[frames], landmarks=self.landmarks[frames],
            oracle=self.oracle[frames], aus=self.aus[frames], va=self.va[frames],
            in_window=self.in_window[frames], reactions=self.reactions[v], felt=self.felt[v],
            window=(int(self.windows[v, 0]), int(self.windows[v, 1])), fps=self.fps,
        )

    def __iter__(self) -> Iterator[SynthVideo]:
        return (self[v] for v in range(len(self)))

    def padded_oracle(self, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Oracle features padded with zeros to ``length`` frames (default: the longest):
        z (V,T,26) float32 and lengths (V,) int64."""
        lengths = self.lengths
        length = int(lengths.max()) if length is None else length
        if lengths.max() > length:
            raise ValueError(f"a video has {lengths.max()} frames, more than length={length}")
        padded = np.zeros((len(self), length, self.oracle.shape[1]), np.float32)
        for v, (start, count) in enumerate(zip(self.offsets[:-1], lengths)):
            padded[v, :count] = self.oracle[start:start + count]
        return padded, lengths


def video_id(split: str, index: int) -> str:
    """A video's id: the split's digit and the index, e.g. test video 7 -> "200007"."""
    return f"{split_index(split)}{index:05d}"


def _cached(name: str, config: SynthConfig, make, cache: bool, verbose: bool) -> dict[str, np.ndarray]:
    """The arrays of cache entry ``name`` for ``config``, made with ``make()`` when missing."""
    path = synth_cache.entry_dir(name, config)
    arrays = synth_cache.load(path) if cache else None
    if arrays is None:
        started = time.perf_counter()
        if verbose:
            print(f"SynthAffect: generating {name} ...", file=sys.stderr, flush=True)
        arrays = make()
        if cache:
            synth_cache.save(path, arrays)
        if verbose:
            print(f"SynthAffect: {name} done in {time.perf_counter() - started:.1f} s"
                  + (f", cached in {path}" if cache else ""), file=sys.stderr, flush=True)
    return arrays


def make_images(config: SynthConfig = SynthConfig(), split: str = "train", workers: int | None = None,
                cache: bool = True, verbose: bool = True) -> ImageSet:
    """The labelled images of ``split`` (generated, or loaded from the cache)."""
    arrays = _cached(f"images-{split}", config, lambda: make_image_arrays(config, split, workers),
                     cache, verbose)
    source = arrays["source"]
    has_expression_va = np.isin(source, [SOURCES.index("expr_va"), SOURCES.index("all")])
    has_aus = np.isin(source, [SOURCES.index("aus"), SOURCES.index("all")])
    return ImageSet(
        images=arrays["images"],
        va=np.where(has_expression_va[:, None], arrays["true_va"], np.nan).astype(np.float32),
        expression=np.where(has_expression_va, arrays["true_expression"], -1).astype(np.int64),
        aus=np.where(has_aus[:, None], arrays["au_labels"], np.nan).astype(np.float32),
        source=source.astype(np.int64), true_va=arrays["true_va"],
        true_expression=arrays["true_expression"].astype(np.int64), true_aus=arrays["true_aus"],
        landmarks=arrays["landmarks"],
    )


def make_videos(config: SynthConfig = SynthConfig(), split: str = "train", workers: int | None = None,
                cache: bool = True, verbose: bool = True) -> VideoSet:
    """The videos of ``split`` as aligned crops with oracle features (generated, or loaded
    from the cache)."""
    arrays = _cached(f"videos-{split}", config, lambda: make_video_arrays(config, split, workers),
                     cache, verbose)
    return VideoSet(
        split=split, fps=config.fps, frames=arrays["frames"], landmarks=arrays["landmarks"],
        oracle=arrays["oracle"], aus=arrays["aus"], va=arrays["va"], in_window=arrays["in_window"],
        offsets=np.concatenate([[0], np.cumsum(arrays["lengths"])]).astype(np.int64),
        reactions=arrays["reactions"], felt=arrays["felt"], windows=arrays["windows"].astype(np.int64),
    )


def videos_cached(config: SynthConfig, splits: tuple[str, ...] = SPLITS) -> bool:
    """Whether the videos of every split of ``splits`` are in the cache (nothing to render)."""
    return all(synth_cache.is_complete(synth_cache.entry_dir(f"videos-{split}", config)) for split in splits)


def prefetch_videos(config: SynthConfig, splits: tuple[str, ...] = SPLITS) -> BaseProcess:
    """Render and cache the videos of ``splits`` in one background process, and return it
    (``join`` it before ``make_videos`` reads them). The train command starts it beside stage
    mma when PyTorch leaves a core idle (``--threads 1`` on 2 cores), so that stage features
    finds its videos cached instead of rendering them then. A cache entry is written
    atomically and is the same whoever renders it: a prefetch that dies or is killed costs
    only the time it would have saved."""
    process = process_context().Process(target=_render_videos, args=(config, splits), daemon=True)
    process.start()
    return process


def _render_videos(config: SynthConfig, splits: tuple[str, ...]) -> None:
    for split in splits:
        make_videos(config, split, workers=1, verbose=False)


def export_videos(config: SynthConfig, directory: str | Path, splits: tuple[str, ...] = SPLITS,
                  count: int | None = None) -> list[Path]:
    """Write SynthAffect videos as real files, in the MuSe 2022 Hume-Reaction layout:
    ``<id>.mp4`` (the canvas frames, before alignment), ``<id>.landmarks.npy`` (L,5,2) true
    landmarks in canvas pixels, ``labels.csv`` (File_ID as "[id]" and the 7 intensities) and
    ``partition.csv`` (id, train | devel | test). ``count``: at most that many per split."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written, labels, partition = [], [], []
    for split in splits:
        videos = config.num_videos(split) if count is None else min(count, config.num_videos(split))
        for index in range(videos):
            frames, landmarks, plan = render_video(config, split, index, canvas=True)
            name = video_id(split, index)
            written.append(write_video(directory / f"{name}.mp4", frames, config.fps))
            np.save(directory / f"{name}.landmarks.npy", landmarks)
            labels.append([f"[{name}]", *(f"{r:.4f}" for r in plan.reactions)])
            partition.append([name, "devel" if split == "val" else split])
    with open(directory / "labels.csv", "w", newline="") as file:
        csv.writer(file).writerows([["File_ID", *REACTIONS], *labels])
    with open(directory / "partition.csv", "w", newline="") as file:
        csv.writer(file).writerows([["Id", "Partition"], *partition])
    return written


def _bench(config: SynthConfig, workers: int | None) -> None:
    """Print crops/s (rendering + alignment) on one process and on ``workers``, and video
    frames/s, for both render modes. Best of 3 runs (the machine may be busy)."""
    from mmarnn_min.data.synth_make import render_image

    def best_rate(run, bench: SynthConfig) -> float:
        rates = []
        for _ in range(3):
            started = time.perf_counter()
            count = run(bench)
            rates.append(count / (time.perf_counter() - started))
        return max(rates)

    for mode in RENDER_MODES:
        bench = replace(config, render=mode, train_images_per_source=400, train_videos=48)
        single = best_rate(lambda c: len([render_image(c, "train", 0, i) for i in range(300)]), bench)
        images = best_rate(lambda c: len(make_image_arrays(c, "train", workers)["images"]), bench)
        frames = best_rate(lambda c: len(make_video_arrays(c, "train", workers)["frames"]), bench)
        print(f"render={mode:6s} {config.image_size}x{config.image_size} crops: "
              f"{single:5.0f} crops/s on 1 process; on {workers or os.cpu_count()} processes "
              f"{images:5.0f} crops/s, {frames:5.0f} video frames/s")


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser("python -m mmarnn_min.data.synth", __doc__)
    parser.add_argument("--preview", type=Path, metavar="PNG", help="write the contact sheet")
    parser.add_argument("--baseline", action="store_true", help="ridge on oracle features")
    parser.add_argument("--bench", action="store_true", help="measure rendering speed")
    parser.add_argument("--generate", action="store_true", help="generate and cache every split")
    parser.add_argument("--export", type=Path, metavar="DIR", help="write videos as files")
    parser.add_argument("--count", type=int, help="--export: videos per split")
    parser.add_argument("--videos", type=int, help="--baseline: train videos (val, test: a third)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render", choices=RENDER_MODES, default="canvas")
    parser.add_argument("--paper", action="store_true", help="the paper's sizes (112 px, T=480)")
    parser.add_argument("--hume", action="store_true", help="Hume-like videos (3-16 s, self-reports)")
    parser.add_argument("--fps", type=float, help="--hume: frames a second (default 5; 30 with --paper)")
    parser.add_argument("--workers", type=int, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    if args.fps is not None and not args.hume:
        parser.error("--fps sets the frame rate of the Hume-like videos: pass --hume too")
    if args.hume:
        fps = args.fps or (30.0 if args.paper else 5.0)
        base = SynthConfig.hume(fps, image_size=112, canvas_size=256) if args.paper else SynthConfig.hume(fps)
    else:
        base = SynthConfig.paper() if args.paper else SynthConfig()
    config = replace(base, seed=args.seed, render=args.render)
    if not (args.preview or args.baseline or args.bench or args.generate or args.export):
        parser.error("nothing to do: pass --preview, --baseline, --bench, --generate or --export")
    if args.preview:
        from mmarnn_min.data.synth_preview import write_preview

        print(f"wrote {write_preview(config, args.preview)}")
    if args.baseline:
        from mmarnn_min.data.synth_baseline import print_baseline

        print_baseline(config, args.videos)
    if args.bench:
        _bench(config, args.workers)
    if args.generate:
        started = time.perf_counter()
        for split in SPLITS:
            images = make_images(config, split, args.workers)
            videos = make_videos(config, split, args.workers)
            print(f"{split}: {len(images)} images, {len(videos)} videos, {len(videos.frames)} frames")
        print(f"all splits ready in {time.perf_counter() - started:.1f} s")
    if args.export:
        paths = export_videos(config, args.export, count=args.count)
        print(f"wrote {len(paths)} videos, labels.csv and partition.csv to {args.export}")


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:], "python -m mmarnn_min.data.synth"))
