"""One video file -> what the networks of a training run read in it: per frame MMA's affect
vector, and the video's 7 reaction intensities (the whole data flow of docs/design.md, read
left to right):

    video --decode, detect, align, B frames at a time (mmarnn_min.video_faces)--> crops (F,S,S,3)
      --MMA (paper section 3.1, per frame, batch by batch)--> z (F,26) = [VA | 7 expressions | 17 AUs]
      --every frame read--> the per-frame table (mmarnn_min.frame_table): box, landmarks, z
      --MRNN (paper section 3.2: GRU, masked routing over the L frames with a face, FC, FC)--> (7,)

Only one batch of frames and crops is alive at a time; what grows with the video is its table
(176 bytes a frame). An image is a video of one frame: its table has one row, and there
are no intensities (MRNN reads a sequence).

MRNN reads at most ``max_frames`` frames; a video with more face frames is refused with the
smallest stride that fits rather than cut: reading every frame of a video of any length is
what the masked RNN is for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmarnn_min.affect import AFFECT_DIM, AUS, EXPRESSIONS, REACTIONS
from mmarnn_min.checkpoints import TrainedPipeline
from mmarnn_min.errors import UserError
from mmarnn_min.frame_table import FrameTable
from mmarnn_min.media import probe_media
from mmarnn_min.mma import predict_features
from mmarnn_min.video_faces import (
    BATCH_FRAMES,
    DETECT_SIDE,
    FrameDetector,
    face_batches,
    make_detector,
)

IMAGE_NOTE = "the 7 reaction intensities need a video: MRNN reads a sequence of frames"


def smallest_fitting_stride(indices: np.ndarray, stride: int, max_frames: int) -> int:
    """The smallest multiple s of ``stride`` for which at most ``max_frames`` of the face
    frames ``indices`` (all multiples of ``stride``) are read, i.e. have index % s == 0.
    With stride 1 this is the smallest stride of all that fits."""
    fit = stride
    while np.count_nonzero(indices % fit == 0) > max_frames:
        fit += stride
    return fit


@dataclass(frozen=True)
class Analysis:
    """What the networks read in one file: the per-frame ``table`` and, for a video, the 7
    ``intensities`` {reaction: value, in REACTIONS order} (None for an image)."""

    path: Path
    detector: FrameDetector
    is_image: bool
    table: FrameTable
    intensities: dict[str, float] | None

    def summary(self) -> dict:
        """A JSON-ready dict: ``{"video" (or "image"), "detector" (the one used),
        "detector_reason" (why auto chose it), "frames" (read), "frames_with_face",
        "intensities"}``; for an image also ``"note"`` and its ``"affect"``."""
        result = {"image" if self.is_image else "video": str(self.path), "detector": self.detector.name,
                  "detector_reason": self.detector.reason, "frames": len(self.table.index),
                  "frames_with_face": int(self.table.found.sum()), "intensities": self.intensities}
        if self.is_image:
            valence, arousal, *rest = self.table.affect[0].tolist()
            result |= {"note": IMAGE_NOTE, "affect": {
                "valence": valence, "arousal": arousal,
                "expressions": dict(zip(EXPRESSIONS, rest[:len(EXPRESSIONS)])),
                "aus": {f"AU{au}": value for au, value in zip(AUS, rest[len(EXPRESSIONS):])}}}
        return result


def analyse(
    pipeline: TrainedPipeline, path: str | Path, detector: str = "auto", stride: int = 1,
    device: str | torch.device = "cpu", retinaface_weights: str | Path | None = None,
    detect_side: int = DETECT_SIDE, batch_frames: int = BATCH_FRAMES,
) -> Analysis:
    """Every ``stride``-th frame of the video (or the image) at ``path`` through detection,
    alignment and MMA, ``batch_frames`` at a time, then the face frames through MRNN, on
    ``device`` (the pipeline's networks move there). Raises a UserError when no frame read
    holds a face, when a video has more face frames than MRNN's ``max_frames``, and when the
    networks give a value that is not a number."""
    info = probe_media(path)
    faces = make_detector(detector, path, retinaface_weights, device, detect_side)
    mma = pipeline.mma.to(device)
    parts = []
    for batch in face_batches(path, faces, pipeline.image_size, stride, batch_frames):
        z = np.full((len(batch.indices), AFFECT_DIM), np.nan, np.float32)           # (B,26)
        z[batch.found] = predict_features(mma, batch.crops, len(batch.crops) or 1, device)  # (F,26)
        parts.append((batch.indices, batch.boxes, batch.landmarks, z))
    index, boxes, landmarks, affect = (np.concatenate(column) for column in zip(*parts))
    time = index / info.fps if info.fps > 0 else np.full(len(index), np.nan)        # (N,) seconds
    table = FrameTable(index, time, boxes, landmarks, affect)
    if not table.found.any():
        where = path if info.is_image else f"any of the {len(index)} frames of {path}"
        raise UserError(f"no face found in {where}: try another --detector, or check the "
                        f"{'image' if info.is_image else 'video'}")
    if not np.isfinite(table.affect[table.found]).all():
        raise UserError(_not_numbers(pipeline, path))
    if info.is_image:
        return Analysis(Path(path), faces, True, table, None)

    face_index = table.index[table.found]                                          # (L,)
    max_frames = pipeline.mrnn.frame_limit
    if max_frames is not None and len(face_index) > max_frames:
        fit = smallest_fitting_stride(face_index, stride, max_frames)
        hint = (f"the smallest --stride that fits is {fit}" if stride == 1 else
                f"--stride {fit} fits (the smallest multiple of {stride} that does)")
        raise UserError(f"{path}: {len(face_index)} of its {len(index)} frames read hold a face but the "
                        f"MRNN reads at most max_frames = {max_frames}: {hint}")
    z = torch.from_numpy(table.affect[table.found]).to(device)                      # (L,26)
    mrnn = pipeline.mrnn.to(device)
    with torch.inference_mode():
        intensities = mrnn(z[None], torch.tensor([len(z)]))[0]                     # (1,L,26) -> (7,)
    if not torch.isfinite(intensities).all():
        raise UserError(_not_numbers(pipeline, path))
    return Analysis(Path(path), faces, False, table, dict(zip(REACTIONS, intensities.tolist())))


def _not_numbers(pipeline: TrainedPipeline, path: str | Path) -> str:
    return (f"the networks of {', '.join(map(str, pipeline.source))} give values that are not numbers "
            f"for {path}: the checkpoint is damaged or its training diverged")


def predict_video(
    pipeline: TrainedPipeline, path: str | Path, detector: str = "auto", stride: int = 1,
    device: str | torch.device = "cpu", retinaface_weights: str | Path | None = None,
) -> dict:
    """The 7 reaction intensities of the video at ``path``: ``analyse(...).summary()``,
    ``{"video", "detector", "detector_reason", "frames" (read: every ``stride``-th),
    "frames_with_face" (L), "intensities" {reaction: float, in REACTIONS order}}``."""
    return analyse(pipeline, path, detector, stride, device, retinaface_weights).summary()
