"""``python -m mmarnn_min.bench.faces``: how fast ``predict`` reads a video of a real face,
end to end (decode, detect, align, MMA, the per-frame table, MRNN) and part by part, on the
CPU (the targets: 30 frames/s with Haar and 10 frames/s with MTCNN on 2 cores).

The video: matplotlib's ``grace_hopper.jpg`` (its sample data; matplotlib comes with the dev
and plot extras) moved, scaled and tilted a little from frame to frame on a blurred
background, 10 s at 30 fps, 640 x 480, written with ``mmarnn_min.video.write_video`` (mp4v).
The networks are untrained, of the default preset's sizes (MMA at 64 x 64): their speed does
not depend on their weights.

Each part runs alone over the same frames, already decoded (except decode itself), and is
reported as wall-clock and CPU milliseconds per frame; the end-to-end rows time
``mmarnn_min.inference.analyse`` from the file to the table and the 7 intensities (the
networks loaded, MTCNN's weights read in each run), the median and the best of ``--repeat``
alternating turns. ``--cores N`` pins the process to N cores and uses N threads. A shared
machine makes every figure noisy (OpenMP threads that wait for a descheduled one burn CPU
time too): the load average is printed with them.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from mmarnn_min import cli
from mmarnn_min.checkpoints import TrainedPipeline
from mmarnn_min.detectors import (
    Downscaled,
    HaarDetector,
    MTCNNDetector,
    detect_batch,
    primary_face,
)
from mmarnn_min.errors import UserError
from mmarnn_min.faces import align_face
from mmarnn_min.inference import analyse
from mmarnn_min.media import probe_media
from mmarnn_min.mma import MMA, MMAConfig, predict_features
from mmarnn_min.mrnn import MRNN, MRNNConfig
from mmarnn_min.tables import format_table
from mmarnn_min.video import iter_frames, write_video
from mmarnn_min.video_faces import BATCH_FRAMES, DETECT_SIDE

SIZE = (640, 480)  # width, height of the video
CROP = 64          # the default preset's crop side


def grace_hopper() -> np.ndarray:
    """matplotlib's sample portrait (600 x 512) as (H,W,3) uint8 RGB."""
    try:
        from matplotlib import cbook
    except ImportError:
        raise UserError('this benchmark reads matplotlib\'s sample photo: pip install -e ".[plot]"') from None
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return np.asarray(image.convert("RGB"))


def face_video(path: str | Path, frames: int = 300, fps: float = 30.0) -> Path:
    """Write the benchmark's video (see the module docstring) to ``path``; returns the path."""
    photo = grace_hopper()
    width, height = SIZE
    background = cv2.GaussianBlur(cv2.resize(photo, SIZE), (0, 0), 25)
    centre = (photo.shape[1] / 2, photo.shape[0] / 2)
    video = np.empty((frames, height, width, 3), np.uint8)                 # (N,H,W,3)
    for t in range(frames):
        phase = 2 * np.pi * t / frames
        matrix = cv2.getRotationMatrix2D(centre, 4 * np.sin(phase), 0.75 + 0.05 * np.sin(2 * phase))
        matrix[:, 2] += (width / 2 + 30 * np.sin(phase) - centre[0], height / 2 + 10 * np.cos(3 * phase) - centre[1])
        video[t] = cv2.warpAffine(photo, matrix, SIZE, dst=background.copy(), borderMode=cv2.BORDER_TRANSPARENT)
    return write_video(path, video, fps)


def untrained_pipeline(max_frames: int) -> TrainedPipeline:
    """Networks of the default preset's sizes, untrained, the MRNN reading up to ``max_frames``
    frames (its routed layer grows with them)."""
    torch.manual_seed(0)
    mma = MMA(MMAConfig()).to(memory_format=torch.channels_last).eval()
    return TrainedPipeline(mma, MRNN(MRNNConfig(max_frames=max_frames)).eval(), CROP, ())


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def in_batches(run: Callable[[list[np.ndarray]], object], frames: list[np.ndarray]) -> Callable[[], None]:
    """A call running ``run`` over ``frames`` in batches of BATCH_FRAMES, as ``predict`` does."""
    def every_batch() -> None:
        for start in range(0, len(frames), BATCH_FRAMES):
            run(frames[start:start + BATCH_FRAMES])
    return every_batch


def parts(path: Path, detectors: dict[str, Callable[[], object]], part_frames: int) -> list[list[object]]:
    """One row per part: name, frames, wall ms/frame, CPU ms/frame, frames/s."""
    rows = []

    def row(name: str, count: int, seconds: tuple[float, float]) -> None:
        wall, cpu = seconds
        rows.append([name, count, 1e3 * wall / count, 1e3 * cpu / count, round(count / wall, 1)])

    frames: list[np.ndarray] = []
    seconds = timed(lambda: frames.extend(iter_frames(path)))                # N x (H,W,3)
    row("decode (OpenCV, mp4v 640x480)", len(frames), seconds)
    frames = frames[:part_frames]
    landmarks = None
    for name, make in detectors.items():
        for side in (DETECT_SIDE, 0):
            detector = make()
            detector = Downscaled(detector, side) if side else detector
            detect_batch(detector, frames[:1])  # warm up: first-call allocations
            row(f"detect {name} at {side or 'full'} px", len(frames),
                timed(in_batches(partial(detect_batch, detector), frames)))
        landmarks = landmarks or [primary_face(detector, frame).landmarks for frame in frames]
    row(f"align ({CROP} px)", len(frames),
        timed(lambda: [align_face(frame, points, CROP) for frame, points in zip(frames, landmarks)]))
    crops = np.stack([align_face(frame, points, CROP) for frame, points in zip(frames, landmarks)])
    pipeline = untrained_pipeline(len(crops))
    predict_features(pipeline.mma, crops[:BATCH_FRAMES], BATCH_FRAMES)
    row(f"MMA (default, {CROP} px, batches of {BATCH_FRAMES})", len(crops),
        timed(lambda: predict_features(pipeline.mma, crops, BATCH_FRAMES)))
    z = torch.from_numpy(predict_features(pipeline.mma, crops, BATCH_FRAMES))[None]  # (1,F,26)
    with torch.inference_mode():
        row("MRNN (default, the whole video at once)", z.shape[1],
            timed(lambda: pipeline.mrnn(z, torch.tensor([z.shape[1]]))))
    return rows


def end_to_end(path: Path, detectors: tuple[str, ...], repeat: int) -> list[list[object]]:
    """``analyse`` of the whole video with each detector, in ``repeat`` alternating turns (a
    load that comes and goes slows them alike): rows of the median and of the best turn."""
    frames = probe_media(path).num_frames
    pipeline = untrained_pipeline(frames)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in detectors}
    for _ in range(repeat):
        for name in detectors:
            samples[name].append(timed(partial(analyse, pipeline, path, name, device="cpu")))
    rows = []
    for name, turns in samples.items():
        for label, (wall, cpu) in ((f"median of {repeat}", (statistics.median(w for w, _ in turns),
                                                            statistics.median(c for _, c in turns))),
                                   (f"best of {repeat}", min(turns))):
            rows.append([f"end to end, {name} ({label})", frames, 1e3 * wall / frames, 1e3 * cpu / frames,
                         round(frames / wall, 1)])
    return rows


def run(frames: int = 300, part_frames: int = 96, repeat: int = 3, detectors: tuple[str, ...] = ("haar", "mtcnn")) -> str:
    """The benchmark's report: the parts on ``part_frames`` frames, then end to end on the
    whole ``frames``-frame video, ``repeat`` times per detector."""
    makers = {"haar": HaarDetector, "mtcnn": MTCNNDetector}
    with tempfile.TemporaryDirectory() as folder:
        path = face_video(Path(folder) / "grace_hopper.mp4", frames)
        load = os.getloadavg()
        rows = parts(path, {name: makers[name] for name in detectors}, part_frames)
        rows += end_to_end(path, detectors, repeat)
        load_after = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"predict on a {frames}-frame {SIZE[0]}x{SIZE[1]} video of a real face: {cores} cores, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, opencv {cv2.__version__}; "
            f"detectors at {DETECT_SIDE} px unless said; load average {load[0]:.1f} before, {load_after[0]:.1f} after\n"
            + format_table(["part", "frames", "wall ms/frame", "CPU ms/frame", "frames/s"], rows))


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser("python -m mmarnn_min.bench.faces", __doc__)
    parser.add_argument("--cores", type=int, default=2, help="pin to this many cores and use as many threads (default: 2)")
    parser.add_argument("--frames", type=int, default=300, help="the video's length (default: 300, 10 s at 30 fps)")
    parser.add_argument("--part-frames", type=int, default=96, help="frames each part is timed on (default: 96)")
    parser.add_argument("--repeat", type=int, default=3, help="end-to-end runs per detector (default: 3)")
    parser.add_argument("--detectors", default="haar,mtcnn", help="comma-separated, of haar and mtcnn (default: both)")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    torch.set_num_threads(args.cores)
    cv2.setNumThreads(args.cores)
    print(run(args.frames, args.part_frames, args.repeat, tuple(name for name in args.detectors.split(",") if name)))


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:], "python -m mmarnn_min.bench.faces"))
