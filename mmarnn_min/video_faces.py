"""A video file -> the aligned face crops of its frames: decode, find the face, align (the
front of the data flow in docs/design.md, before MMA):

    video file --decode (mmarnn_min.video.iter_frames, one frame at a time)--> RGB frame (H,W,3)
      --detect (the video's own landmarks | RetinaFace | Haar)--> 5 landmarks (5,2), or no face
      --align (mmarnn_min.faces.align_face)--> crop (S,S,3); frames without a face are dropped

Only the crops are kept while the video streams by, so a long video costs S*S*3 bytes per
frame with a face.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmarnn_min.detectors import (
    Detector,
    HaarDetector,
    RetinaFaceDetector,
    default_retinaface_weights,
    primary_face,
)
from mmarnn_min.errors import UserError
from mmarnn_min.faces import align_face
from mmarnn_min.progress import frame_progress
from mmarnn_min.video import iter_frames, probe_video

DETECTORS = ("auto", "landmarks", "haar", "retinaface")
PROGRESS_EVERY = 50  # frames between two progress reports on stderr


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
    """The landmarks file of ``video_path``, checked: (N,5,2) numbers with N its number of
    frames (NaN where a frame has no face)."""
    frames = probe_video(video_path).num_frames
    path = landmarks_path(video_path)
    if not path.is_file():
        raise UserError(f"--detector landmarks needs {path} beside the video: one (5,2) "
                        f"set per frame, NaN where there is no face")
    try:
        track = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UserError(f"{path} cannot be read as a .npy array of landmarks ({error})") from None
    if track.shape != (frames, 5, 2) or not np.issubdtype(track.dtype, np.floating):
        raise UserError(f"{path}: expected ({frames}, 5, 2) floating-point landmarks, one set per frame "
                        f"of {video_path} ({frames} frames), got {track.dtype} {track.shape}")
    if np.isinf(track).any():
        raise UserError(f"{path}: landmarks must be finite numbers (NaN for a frame without a face)")
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
    raise UserError(f"unknown detector {name!r}: choose one of {', '.join(DETECTORS)}")


def video_crops(
    path: str | Path, detector_name: str | FrameDetector = "auto", size: int = 64, stride: int = 1,
    retinaface_weights: str | Path | None = None, device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every ``stride``-th frame of the video, find its face and align it.
    ``detector_name``: a name for ``make_detector``, or a detector it made.
    Returns the crops (L,size,size,3) uint8 of the frames where a face was found, in order,
    and their frame indices in the video (L,) int64; the other frames are dropped."""
    if stride < 1:
        raise UserError(f"--stride must be >= 1, got {stride}")
    total = probe_video(path).num_frames  # also a clear error, early, for a missing or corrupt file
    faces = detector_name if isinstance(detector_name, FrameDetector) else \
        make_detector(detector_name, path, retinaface_weights, device)
    progress = frame_progress(f"{Path(path).name}: detect ({faces.name}) and align")
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
