"""5-point face alignment, the step between a detected face and MMA's input (paper section
3.1; the data flow in docs/design.md):

    RGB frame + 5 landmarks --similarity transform--> S x S aligned crop

The 5 landmarks are RetinaFace's, in this order: left eye, right eye, nose tip, left mouth
corner, right mouth corner, where "left" means image left. Alignment fits the similarity
transform (rotation, uniform scale, translation; never a reflection) that maps them onto
ArcFace's 112 x 112 template by least squares, scaled for other crop sizes; pixels from
outside the image are black. Where the landmarks come from is ``mmarnn_min.detectors``.
"""

from __future__ import annotations

import cv2
import numpy as np

# The 5 landmarks, in RetinaFace's order ("left" = image left).
LANDMARK_NAMES: tuple[str, ...] = ("left eye", "right eye", "nose tip", "left mouth", "right mouth")

# ArcFace's 112 x 112 template: left eye, right eye, nose tip, left/right mouth corner (x, y).
ALIGN_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

def align_template(size: int = 112) -> np.ndarray:
    """The template for an ``size`` x ``size`` crop: ArcFace's points scaled by size / 112. (5, 2)"""
    return ALIGN_TEMPLATE_112 * (size / 112.0)


def similarity_transform(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking
    ``src_pts`` (N,2) onto ``dst_pts`` (N,2), N >= 2. Returns the (2,3) matrix M with
    ``dst ~= src @ M[:, :2].T + M[:, 2]``.

    In complex numbers a similarity is ``q = z * p + t``; with both point sets centred, the
    least-squares ``z`` is ``sum(conj(p) q) / sum(|p|^2)`` (Umeyama 1991 restricted to proper
    rotations: a reflection cannot be written this way), and ``t`` maps the centroids onto
    each other. Below, ``z = a + ib`` in real arithmetic."""
    src = np.asarray(src_pts, dtype=np.float64)
    dst = np.asarray(dst_pts, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two (N,2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points must be finite")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    p, q = src - src_mean, dst - dst_mean  # (N,2) centred
    spread = (p * p).sum()
    if spread <= 1e-12:
        raise ValueError("source points coincide: no transform can be estimated")
    a = (p * q).sum() / spread  # scale * cos(angle)
    b = (p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]).sum() / spread  # scale * sin(angle)
    linear = np.array([[a, -b], [b, a]])
    return np.concatenate([linear, (dst_mean - linear @ src_mean)[:, None]], axis=1)


def alignment_matrix(landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """The (2,3) similarity taking ``landmarks5`` (5,2) onto the template of a ``size`` crop."""
    landmarks5 = np.asarray(landmarks5, dtype=np.float64)
    if landmarks5.shape != (5, 2):
        raise ValueError(f"landmarks5 must be (5,2), got {landmarks5.shape}")
    return similarity_transform(landmarks5, align_template(size))


def warp_to_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Apply the (2,3) ``matrix`` to ``image`` (H,W,C) -> (size,size,C); zeros outside."""
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align_face(image: np.ndarray, landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp ``image`` (H,W,C) so that ``landmarks5`` (5,2) land on the template of a
    ``size`` x ``size`` crop. Pixels from outside the image are zeros. Returns (size,size,C)."""
    return warp_to_crop(image, alignment_matrix(landmarks5, size), size)


def align_faces(frames: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Align every frame with its given landmarks: frames (N,H,W,3), landmarks (N,5,2) ->
    crops (N,size,size,3). A frame whose landmarks hold a NaN gives a zero crop."""
    if len(frames) != len(landmarks):
        raise ValueError(f"{len(frames)} frames but {len(landmarks)} landmark sets")
    crops = np.zeros((len(frames), size, size, frames[0].shape[2] if len(frames) else 3), np.uint8)
    for i, (frame, points) in enumerate(zip(frames, landmarks)):
        if np.isfinite(points).all():
            crops[i] = align_face(frame, points, size)
    return crops
