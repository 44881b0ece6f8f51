"""``python -m mmarnn_min.predict VIDEO``: the 7 reaction intensities of one video, with the
models a training run saved (DESIGN section 1, read left to right):

    video file --decode (mmarnn_min.video.iter_frames, one frame at a time)--> RGB frame (H,W,3)
      --detect (the video's own landmarks | RetinaFace | Haar)--> 5 landmarks (5,2), or no face
      --align (mmarnn_min.faces.align_face)--> crop (S,S,3); frames without a face are dropped
      --MMA (paper section 3.1, per frame)--> z (L,26) = [VA | 7 expressions | 17 AUs]
      --MRNN (paper section 3.2: GRU, masked routing over the L real frames, FC, FC)--> (7,)

Only the crops are kept while the video streams by, so a long video costs S*S*3 bytes per
frame with a face. MRNN reads at most ``max_frames`` frames; a video with more face frames is
refused with the smallest ``--stride`` that fits rather than cut: reading every frame of a
video of any length is what the masked RNN is for.

Checkpoints, in the run directory a training run writes (``--checkpoint DIR``, default
runs/latest): ``e2e/best.pt`` when the end-to-end fine-tuning stage ran, else ``mma/best.pt``
and ``mrnn/best.pt``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmarnn_min.affect import REACTIONS
from mmarnn_min.bench.timing import format_table
from mmarnn_min.faces import (
    Detector, HaarDetector, RetinaFaceDetector, align_face, default_retinaface_weights, primary_face,
)
from mmarnn_min.mma import MMA, predict_features
from mmarnn_min.mrnn import MRNN
from mmarnn_min.stages import resolve_device
from mmarnn_min.stages.features import progress_line
from mmarnn_min.stages.mma import build_mma
from mmarnn_min.stages.mrnn import build_mrnn
from mmarnn_min.video import iter_frames, probe_video

DETECTORS = ("auto", "landmarks", "haar", "retinaface")
PROGRESS_EVERY = 50  # frames between two progress reports on stderr


# ---- the trained models ----------------------------------------------------------------------

@dataclass
class TrainedPipeline:
    """The two trained models, in eval mode, and what they were trained on."""

    mma: MMA
    mrnn: MRNN
    image_size: int             # S, the side of the crops the MMA was trained on
    source: tuple[Path, ...]    # the checkpoint file(s) read: (e2e,) or (mma, mrnn)


def _load_checkpoint(path: Path, run_dir: Path, device: str | torch.device) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no trained model at {path}: train one with "
                                f"`python -m mmarnn_min.train --out {run_dir}`")
    return torch.load(path, map_location=device, weights_only=False)


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu", e2e: bool = True) -> TrainedPipeline:
    """The models of a training run in ``run_dir``: ``e2e/best.pt`` when the end-to-end stage
    ran (and ``e2e``), else ``mma/best.pt`` and ``mrnn/best.pt``. A missing file raises
    FileNotFoundError naming it and the command that writes it."""
    run_dir = Path(run_dir)
    e2e_path = run_dir / "e2e" / "best.pt"
    if e2e and e2e_path.is_file():
        both = _load_checkpoint(e2e_path, run_dir, device)
        return TrainedPipeline(build_mma(both["mma"], both["mma_config"], device),
                               build_mrnn(both["mrnn"], both["mrnn_config"], device),
                               int(both["image_size"]), (e2e_path,))
    mma_path, mrnn_path = run_dir / "mma" / "best.pt", run_dir / "mrnn" / "best.pt"
    mma, mrnn = _load_checkpoint(mma_path, run_dir, device), _load_checkpoint(mrnn_path, run_dir, device)
    return TrainedPipeline(build_mma(mma["model"], mma["config"], device),
                           build_mrnn(mrnn["model"], mrnn["config"], device),
                           int(mma["image_size"]), (mma_path, mrnn_path))


# ---- detect and align ------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameDetector:
    """Finds the face in each frame of one video: from the landmarks that come with it
    (``track`` (N,5,2) in frame pixels, NaN where there is no face) or by running ``detector``
    on the pixels. ``name`` says which: "landmarks", "haar" or "retinaface"."""

    name: str
    track: np.ndarray | None = None
    detector: Detector | None = None

    def landmarks(self, index: int, frame: np.ndarray) -> np.ndarray | None:
        """The 5 landmarks (5,2) of the face in frame ``index`` (H,W,3), or None if it has none."""
        if self.track is not None:
            points = self.track[index]
            return points if np.isfinite(points).all() else None
        face = primary_face(self.detector, frame)
        return None if face is None else face.landmarks


def landmarks_path(video_path: str | Path) -> Path:
    """Where a video's own landmarks live: ``<stem>.landmarks.npy`` beside it (SynthAffect's export)."""
    video_path = Path(video_path)
    return video_path.parent / f"{video_path.stem}.landmarks.npy"


def load_landmark_track(video_path: str | Path) -> np.ndarray:
    """The landmarks file of ``video_path``, checked: (N,5,2) with N its number of frames."""
    frames = probe_video(video_path).num_frames
    path = landmarks_path(video_path)
    if not path.is_file():
        raise FileNotFoundError(f"--detector landmarks needs {path} beside the video: one (5,2) "
                                f"set per frame, NaN where there is no face")
    track = np.load(path)
    if track.shape != (frames, 5, 2):
        raise ValueError(f"{path}: expected ({frames}, 5, 2) landmarks, one set per frame of "
                         f"{video_path} ({frames} frames), got {track.shape}")
    return track


def retinaface_available(weights: str | Path | None = None) -> bool:
    """Whether RetinaFace can run here without a download: its package and the weights file."""
    weights = default_retinaface_weights() if weights is None else Path(weights)
    return importlib.util.find_spec("retinaface") is not None and weights.is_file()


def make_detector(
    name: str, video_path: str | Path, retinaface_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> FrameDetector:
    """The face finder ``name`` for the video at ``video_path``. "auto": the video's own
    landmarks when ``<stem>.landmarks.npy`` lies beside it, else RetinaFace when its package
    and local weights are there, else OpenCV's Haar cascade."""
    if name == "auto":
        if landmarks_path(video_path).is_file():
            name = "landmarks"
        else:
            name = "retinaface" if retinaface_available(retinaface_weights) else "haar"
    if name == "landmarks":
        return FrameDetector(name, track=load_landmark_track(video_path))
    if name == "haar":
        return FrameDetector(name, detector=HaarDetector())
    if name == "retinaface":
        return FrameDetector(name, detector=RetinaFaceDetector(retinaface_weights, device=str(device)))
    raise ValueError(f"unknown detector {name!r}: choose one of {', '.join(DETECTORS)}")


def video_crops(
    path: str | Path, detector_name: str | FrameDetector = "auto", size: int = 64, stride: int = 1,
    retinaface_weights: str | Path | None = None, device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every ``stride``-th frame of the video, find its face and align it.
    ``detector_name``: a name for ``make_detector``, or a detector it made.
    Returns the crops (L,size,size,3) uint8 of the frames where a face was found, in order,
    and their frame indices in the video (L,) int64; the other frames are dropped."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    total = probe_video(path).num_frames  # also a clear error, early, for a missing or corrupt file
    faces = detector_name if isinstance(detector_name, FrameDetector) else \
        make_detector(detector_name, path, retinaface_weights, device)
    progress = progress_line(f"{Path(path).name}: detect ({faces.name}) and align")
    crops, indices = [], []
    for index, frame in enumerate(iter_frames(path)):                  # frame (H,W,3) uint8 RGB
        if index % stride == 0:
            points = faces.landmarks(index, frame)                     # (5,2) or None
            if points is not None:
                crops.append(align_face(frame, points, size))          # (S,S,3)
                indices.append(index)
        done = index + 1
        if total >= PROGRESS_EVERY and (done % PROGRESS_EVERY == 0 or done == total):
            progress(done, total)
    crops_array = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)  # (L,S,S,3)
    return crops_array, np.array(indices, dtype=np.int64)


def smallest_fitting_stride(indices: np.ndarray, stride: int, max_frames: int) -> int:
    """The smallest multiple s of ``stride`` for which at most ``max_frames`` of the face
    frames ``indices`` (all multiples of ``stride``) are read, i.e. have index % s == 0.
    With stride 1 this is the smallest stride of all that fits."""
    fit = stride
    while np.count_nonzero(indices % fit == 0) > max_frames:
        fit += stride
    return fit


# ---- predict ---------------------------------------------------------------------------------

def predict_video(
    pipeline: TrainedPipeline, path: str | Path, detector: str = "auto", stride: int = 1,
    device: str | torch.device = "cpu", retinaface_weights: str | Path | None = None,
) -> dict:
    """The 7 reaction intensities of the video at ``path``, computed on ``device`` (the
    pipeline's models move there): ``{"video", "detector" (the one used), "frames" (read: every
    ``stride``-th), "frames_with_face" (L), "intensities" {reaction: float, in REACTIONS order}}``.
    Raises ValueError when no frame read holds a face or when more than MRNN's ``max_frames`` do."""
    faces = make_detector(detector, path, retinaface_weights, device)
    crops, indices = video_crops(path, faces, pipeline.image_size, stride)  # (L,S,S,3), (L,)
    frames = len(range(0, probe_video(path).num_frames, stride))
    if len(crops) == 0:
        raise ValueError(f"no face found in any of the {frames} frames of {path}: "
                         f"try --detector retinaface / check the video")
    max_frames = pipeline.mrnn.config.max_frames
    if len(crops) > max_frames and pipeline.mrnn.config.sequence != "fixed":   # "fixed" crops by design
        fit = smallest_fitting_stride(indices, stride, max_frames)
        hint = (f"the smallest --stride that fits is {fit}" if stride == 1 else
                f"--stride {fit} fits (the smallest multiple of {stride} that does)")
        raise ValueError(f"{path}: {len(crops)} of its {frames} frames read hold a face but the "
                         f"MRNN reads at most max_frames = {max_frames}: {hint}")
    mma, mrnn = pipeline.mma.to(device), pipeline.mrnn.to(device)
    z = torch.from_numpy(predict_features(mma, crops, device=device)).to(device)  # (L,26)
    with torch.inference_mode():
        intensities = mrnn(z[None], torch.tensor([len(z)]))[0]             # (1,L,26) -> (7,)
    return {"video": str(path), "detector": faces.name, "frames": frames, "frames_with_face": len(crops),
            "intensities": dict(zip(REACTIONS, intensities.tolist()))}


def format_prediction(result: dict) -> str:
    """A header line and the table of the 7 intensities."""
    header = (f"{result['video']}: {result['frames_with_face']} of {result['frames']} frames read hold "
              f"a face (detector: {result['detector']})")
    rows = [[reaction, f"{value:.4f}"] for reaction, value in result["intensities"].items()]
    return header + "\n" + format_table(["reaction", "intensity"], rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmarnn_min.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path, metavar="VIDEO", help="the video file")
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/latest"), metavar="DIR",
                        help="the training run's directory (default: runs/latest)")
    parser.add_argument("--detector", choices=DETECTORS, default="auto",
                        help="auto: VIDEO's <stem>.landmarks.npy if beside it, else RetinaFace when "
                             "installed with local weights, else Haar (default: auto)")
    parser.add_argument("--retinaface-weights", type=Path, metavar="FILE",
                        help="RetinaFace weights (default: the torch hub cache)")
    parser.add_argument("--stride", type=int, default=1, metavar="K", help="read every K-th frame (default: 1)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:N] (default: auto)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stride < 1:
        parser.error(f"--stride must be >= 1, got {args.stride}")
    try:
        device = resolve_device(args.device)
    except RuntimeError as error:  # torch's message for a device string it cannot read
        parser.error(f"--device: {error}")
    try:
        pipeline = load_trained(args.checkpoint, device)
        result = predict_video(pipeline, args.video, args.detector, args.stride, device, args.retinaface_weights)
    except (FileNotFoundError, ValueError, ImportError) as error:  # user errors: one line, exit code 2
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(json.dumps(result, indent=2) if args.json else format_prediction(result))
    return result


if __name__ == "__main__":
    main()
