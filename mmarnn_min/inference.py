"""One video file -> its 7 reaction intensities, with the networks of a training run (the
whole data flow of docs/design.md, read left to right):

    video --decode, detect, align (mmarnn_min.video_faces)--> crops (L,S,S,3)
      --MMA (paper section 3.1, per frame)--> z (L,26) = [VA | 7 expressions | 17 AUs]
      --MRNN (paper section 3.2: GRU, masked routing over the L real frames, FC, FC)--> (7,)

MRNN reads at most ``max_frames`` frames; a video with more face frames is refused with the
smallest stride that fits rather than cut: reading every frame of a video of any length is
what the masked RNN is for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmarnn_min.affect import REACTIONS
from mmarnn_min.checkpoints import TrainedPipeline
from mmarnn_min.errors import UserError
from mmarnn_min.mma import predict_features
from mmarnn_min.video import probe_video
from mmarnn_min.video_faces import make_detector, video_crops


def smallest_fitting_stride(indices: np.ndarray, stride: int, max_frames: int) -> int:
    """The smallest multiple s of ``stride`` for which at most ``max_frames`` of the face
    frames ``indices`` (all multiples of ``stride``) are read, i.e. have index % s == 0.
    With stride 1 this is the smallest stride of all that fits."""
    fit = stride
    while np.count_nonzero(indices % fit == 0) > max_frames:
        fit += stride
    return fit


def predict_video(
    pipeline: TrainedPipeline, path: str | Path, detector: str = "auto", stride: int = 1,
    device: str | torch.device = "cpu", retinaface_weights: str | Path | None = None,
) -> dict:
    """The 7 reaction intensities of the video at ``path``, computed on ``device`` (the
    pipeline's networks move there): ``{"video", "detector" (the one used), "frames" (read:
    every ``stride``-th), "frames_with_face" (L), "intensities" {reaction: float, in REACTIONS
    order}}``. Raises ValueError when no frame read holds a face or when more than MRNN's
    ``max_frames`` do, and when the networks give a value that is not a number."""
    faces = make_detector(detector, path, retinaface_weights, device)
    crops, indices = video_crops(path, faces, pipeline.image_size, stride)  # (L,S,S,3), (L,)
    frames = len(range(0, probe_video(path).num_frames, stride))
    if len(crops) == 0:
        raise UserError(f"no face found in any of the {frames} frames of {path}: "
                        f"try another --detector, or check the video")
    max_frames = pipeline.mrnn.frame_limit
    if max_frames is not None and len(crops) > max_frames:
        fit = smallest_fitting_stride(indices, stride, max_frames)
        hint = (f"the smallest --stride that fits is {fit}" if stride == 1 else
                f"--stride {fit} fits (the smallest multiple of {stride} that does)")
        raise UserError(f"{path}: {len(crops)} of its {frames} frames read hold a face but the "
                        f"MRNN reads at most max_frames = {max_frames}: {hint}")
    mma, mrnn = pipeline.mma.to(device), pipeline.mrnn.to(device)
    z = torch.from_numpy(predict_features(mma, crops, device=device)).to(device)  # (L,26)
    with torch.inference_mode():
        intensities = mrnn(z[None], torch.tensor([len(z)]))[0]             # (1,L,26) -> (7,)
    if not torch.isfinite(intensities).all():
        raise UserError(f"the networks of {', '.join(map(str, pipeline.source))} give values that are not numbers "
                        f"for {path}: the checkpoint is damaged or its training diverged")
    return {"video": str(path), "detector": faces.name, "frames": frames, "frames_with_face": len(crops),
            "intensities": dict(zip(REACTIONS, intensities.tolist()))}
