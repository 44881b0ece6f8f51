"""Worked solutions to the exercises of lesson 2 (faces); each answer is passed to its check in
``tutorials/checks.py``. Run: ``python tutorials/solutions/02_faces.py``."""

# %%
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tutorials/: checks and _common

import numpy as np

import _common
import checks
from mmarnn_min import detectors, faces
from mmarnn_min.config import preset
from mmarnn_min.data.synth import export_videos
from mmarnn_min.video import read_video

SIZE = 112
template = faces.align_template(SIZE)
# the lesson's videos: the default preset's first validation videos, as .mp4 files
paths = export_videos(preset("default").data, Path(tempfile.mkdtemp()), splits=("val",), count=_common.quick(3, 1))


def distances_to_template(true_points: np.ndarray, fitted_points: np.ndarray) -> np.ndarray:
    """(5,): where the true landmarks land, aligned by the transform fitted to fitted_points."""
    matrix = faces.alignment_matrix(fitted_points, SIZE)
    return np.linalg.norm(true_points @ matrix[:, :2].T + matrix[:, 2] - template, axis=1)


# %% [markdown]
# ## 1. Aligning with Haar's points
#
# Haar's 5 points are fixed fractions of its box, so they ignore where the eyes and mouth
# really are; the true landmarks then land several times farther from the template than with
# an alignment on the true points.

# %%
video, landmarks = read_video(paths[0]), np.load(paths[0].with_suffix(".landmarks.npy"))
haar, by_haar, by_truth = detectors.HaarDetector(), [], []
for t in range(video.num_frames):
    by_truth.append(distances_to_template(landmarks[t], landmarks[t]))
    face = detectors.primary_face(haar, video.frames[t])
    if face is not None:
        by_haar.append(distances_to_template(landmarks[t], face.landmarks))
print(f"Haar found the face in {len(by_haar)}/{video.num_frames} frames: mean distance {np.mean(by_haar):.2f} px "
      f"with its alignment, {np.mean(by_truth):.2f} px with the true one")
checks.check_02_1(float(np.mean(by_haar)), paths[0])

# %% [markdown]
# ## 2. A mirror is not a similarity
#
# The best rotation-and-scale cannot swap left and right, so least squares shrinks the mirrored
# points towards their common centre: a small scale and a large residual. Allowing the
# reflection would fit exactly, and would silently exchange the left and right eye labels.

# %%
mirrored = template * [-1, 1] + [SIZE, 0]
matrix = faces.similarity_transform(mirrored, template)
scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
residual = float(np.linalg.norm(mirrored @ matrix[:, :2].T + matrix[:, 2] - template, axis=1).mean())
print(f"mirrored template -> template: scale {scale:.4f}, mean residual {residual:.2f} px")
checks.check_02_2(scale, residual)

# %% [markdown]
# ## 3. The point with the largest residual
#
# A turn of the head moves the nose tip across the face while the eyes and mouth corners move
# less (they lie near one plane); mouth corners move with the expression (AU12, AU20, AU25).

# %%
errors = np.array([distances_to_template(points, points)
                   for path in paths for points in np.load(path.with_suffix(".landmarks.npy"))])   # (frames, 5)
worst = checks.POINT_NAMES[int(np.argmax(errors.mean(axis=0)))]
print("mean distance per point (px):", {name: round(float(e), 2) for name, e in zip(checks.POINT_NAMES, errors.mean(axis=0))}, "->", worst)
checks.check_02_3(worst, paths)
