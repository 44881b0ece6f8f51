"""A video file (or an image) -> the faces in its frames: decode, find the face, align (the
front of the data flow in docs/design.md, before MMA):

    file --decode (mmarnn_min.media: a video streams by one frame at a time)--> RGB frames (H,W,3)
      --batches of B consecutive frames read--> find the face: the file's own landmarks, or a
        detector (RetinaFace | MTCNN | Haar) on a copy shrunk to at most DETECT_SIDE pixels
      --> box (4,) and 5 landmarks (5,2) per frame, or no face
      --align (mmarnn_min.faces.align_face, on the full-resolution frame)--> crop (S,S,3)

Only one batch of frames is in memory at a time: a long video costs S*S*3 bytes per frame with
a face (its crop), and 56 bytes per frame read (its box and landmarks).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from mmarnn_min.detectors import (
    Detector,
    Downscaled,
    FaceDetection,
    GivenLandmarks,
    HaarDetector,
    MissingPackageError,
    MTCNNDetector,
    RetinaFaceDetector,
    default_retinaface_weights,
    detect_batch,
)
from mmarnn_min.errors import UserError
from mmarnn_min.faces import align_face
from mmarnn_min.media import iter_media_frames, probe_media
from mmarnn_min.progress import frame_progress

DETECTORS = ("auto", "landmarks", "haar", "mtcnn", "retinaface")
DETECT_SIDE = 320   # pixels: Haar and MTCNN look at frames shrunk to this longer side (0: as they are)
BATCH_FRAMES = 32   # frames decoded, then detected together
PROGRESS_FROM = 50  # frames: shorter inputs report no progress


@dataclass(frozen=True)
class FrameDetector:
    """Finds the face in the frames of one file: from the landmarks that come with it
    (``track`` (N,5,2) in frame pixels, NaN where there is no face) or by running ``detector``
    on the pixels. ``name`` says which ("landmarks", "haar", "mtcnn" or "retinaface");
    ``reason`` why "auto" chose it (empty when it was asked for by name)."""

    name: str
    track: np.ndarray | None = None
    detector: Detector | None = None
    reason: str = ""

    def faces(self, indices: np.ndarray, frames: list[np.ndarray]) -> list[FaceDetection | None]:
        """The primary face of each frame (``indices`` (B,): their places in the file), or None."""
        if self.track is not None:
            found = [GivenLandmarks(self.track[index]).detect(frame) for index, frame in zip(indices, frames)]
        else:
            found = detect_batch(self.detector, frames)
        return [faces[0] if faces else None for faces in found]


def landmarks_path(path: str | Path) -> Path:
    """Where a file's own landmarks live: ``<stem>.landmarks.npy`` beside it (SynthAffect's export)."""
    path = Path(path)
    return path.parent / f"{path.stem}.landmarks.npy"


def load_landmark_track(path: str | Path) -> np.ndarray:
    """The landmarks file of the video (or image) at ``path``, checked: (N,5,2) numbers with N
    its number of frames (NaN where a frame has no face)."""
    frames = probe_media(path).num_frames
    landmarks = landmarks_path(path)
    if not landmarks.is_file():
        raise UserError(f"--detector landmarks needs {landmarks} beside the video: one (5,2) "
                        f"set per frame, NaN where there is no face")
    try:
        track = np.load(landmarks, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UserError(f"{landmarks} cannot be read as a .npy array of landmarks ({error})") from None
    if track.shape != (frames, 5, 2) or not np.issubdtype(track.dtype, np.floating):
        raise UserError(f"{landmarks}: expected ({frames}, 5, 2) floating-point landmarks, one set per frame "
                        f"of {path} ({frames} frames), got {track.dtype} {track.shape}")
    if np.isinf(track).any():
        raise UserError(f"{landmarks}: landmarks must be finite numbers (NaN for a frame without a face)")
    return track


def retinaface_available(weights: str | Path | None = None) -> bool:
    """Whether RetinaFace can run here without a download: its package and the weights file."""
    weights = default_retinaface_weights() if weights is None else Path(weights)
    return importlib.util.find_spec("retinaface") is not None and weights.is_file()


def detector_packages(name: str) -> str:
    """The versions of the packages that detector ``name`` may use here ("absent" for one not
    installed): what a cache of its crops must be keyed by, since "auto" picks by them."""
    packages = {"auto": ("facenet-pytorch", "retinaface-pytorch"), "mtcnn": ("facenet-pytorch",),
                "retinaface": ("retinaface-pytorch",)}.get(name, ())

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    return ", ".join(f"{package} {version(package)}" for package in packages)


def make_detector(
    name: str, path: str | Path, retinaface_weights: str | Path | None = None,
    device: str | torch.device = "cpu", detect_side: int = DETECT_SIDE,
) -> FrameDetector:
    """The face finder ``name`` for the video (or image) at ``path``. "auto": the file's own
    landmarks when ``<stem>.landmarks.npy`` lies beside it, else RetinaFace when its package
    and local weights are there, else MTCNN when facenet-pytorch is installed, else OpenCV's
    Haar cascade. Haar and MTCNN look at frames shrunk to ``detect_side`` pixels (0: as they are)."""
    if detect_side < 0:
        raise UserError(f"--detect-side must be >= 0 (0: full resolution), got {detect_side}")

    def shrunk(detector: Detector) -> Detector:
        return Downscaled(detector, detect_side) if detect_side else detector

    if name == "auto":
        if landmarks_path(path).is_file():
            return FrameDetector("landmarks", track=load_landmark_track(path),
                                 reason=f"{landmarks_path(path).name} lies beside it")
        if retinaface_available(retinaface_weights):
            return FrameDetector("retinaface", detector=RetinaFaceDetector(retinaface_weights, device=str(device)),
                                 reason="retinaface-pytorch and its weights are installed")
        absent = "no landmarks file, no RetinaFace with local weights"
        try:
            return FrameDetector("mtcnn", detector=shrunk(MTCNNDetector(str(device))), reason=absent)
        except MissingPackageError:
            return FrameDetector("haar", detector=shrunk(HaarDetector()),
                                 reason=f"{absent}, facenet-pytorch not installed for MTCNN")
    if name == "landmarks":
        return FrameDetector(name, track=load_landmark_track(path))
    if name == "haar":
        return FrameDetector(name, detector=shrunk(HaarDetector()))
    if name == "mtcnn":
        return FrameDetector(name, detector=shrunk(MTCNNDetector(str(device))))
    if name == "retinaface":
        return FrameDetector(name, detector=RetinaFaceDetector(retinaface_weights, device=str(device)))
    raise UserError(f"unknown detector {name!r}: choose one of {', '.join(DETECTORS)}")


@dataclass(frozen=True)
class FaceBatch:
    """The faces of B consecutive frames read: ``indices`` (B,) their places in the file,
    ``boxes`` (B,4) x1, y1, x2, y2 and ``landmarks`` (B,5,2) in frame pixels (NaN where a frame
    has no face), ``crops`` (F,S,S,3) uint8 the aligned faces of the F frames that have one,
    in order."""

    indices: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    crops: np.ndarray

    @property
    def found(self) -> np.ndarray:
        """(B,) bool: which frames have a face."""
        return np.isfinite(self.landmarks).all(axis=(1, 2))


def face_batches(
    path: str | Path, faces: FrameDetector, size: int, stride: int = 1, batch_frames: int = BATCH_FRAMES,
) -> Iterator[FaceBatch]:
    """Read every ``stride``-th frame of the video (or the image) at ``path``, ``batch_frames``
    at a time; find each one's face with ``faces`` and align it to a ``size`` crop. A progress
    line on stderr for inputs of ``PROGRESS_FROM`` frames or more."""
    if stride < 1:
        raise UserError(f"--stride must be >= 1, got {stride}")
    total = len(range(0, probe_media(path).num_frames, stride))  # as declared; also an early, clear error
    progress = frame_progress(f"{Path(path).name}: detect ({faces.name}) and align")
    read = ((index, frame) for index, frame in enumerate(iter_media_frames(path)) if index % stride == 0)
    done = 0
    while chunk := list(islice(read, batch_frames)):
        indices = np.array([index for index, _ in chunk], dtype=np.int64)            # (B,)
        frames = [frame for _, frame in chunk]                                       # B x (H,W,3)
        found = faces.faces(indices, frames)
        boxes = np.full((len(chunk), 4), np.nan, np.float32)                         # (B,4)
        landmarks = np.full((len(chunk), 5, 2), np.nan, np.float32)                  # (B,5,2)
        crops = []
        for row, (frame, face) in enumerate(zip(frames, found)):
            if face is not None:
                boxes[row], landmarks[row] = face.box, face.landmarks
                crops.append(align_face(frame, face.landmarks, size))                # (S,S,3)
        crops_array = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)  # (F,S,S,3)
        yield FaceBatch(indices, boxes, landmarks, crops_array)
        done += len(chunk)
        if total >= PROGRESS_FROM:
            progress(done, total)


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
    probe_media(path)  # a clear error, early, for a missing or corrupt file
    faces = detector_name if isinstance(detector_name, FrameDetector) else \
        make_detector(detector_name, path, retinaface_weights, device)
    crops, indices = [np.zeros((0, size, size, 3), np.uint8)], [np.zeros(0, np.int64)]
    for batch in face_batches(path, faces, size, stride):
        crops.append(batch.crops)
        indices.append(batch.indices[batch.found])
    return np.concatenate(crops), np.concatenate(indices)                            # (L,S,S,3), (L,)
