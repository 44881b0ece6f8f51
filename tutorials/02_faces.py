# %% [markdown]
# # Lesson 2: from a video frame to an aligned face crop
#
# **Goal.** Follow the front end of the pipeline: decode a video file, find the face and its
# 5 landmarks (eyes, nose tip, mouth corners), and warp the frame so that those landmarks land
# on a fixed template. Every crop MMA sees (section 3.1) is made this way: the paper aligns
# faces with RetinaFace's 5 points; this lesson uses landmarks that come with the data and
# OpenCV's Haar detector, which need no downloaded weights.
#
# The equation: a *similarity* transform (rotation, uniform scale, translation; never a
# mirror) maps each landmark p_i onto its template point q_i,
#
#     q_i ~= s R(theta) p_i + t          i = 1..5,  fitted by least squares:
#     min_{s, theta, t}  sum_i || s R(theta) p_i + t - q_i ||^2
#
# Written with complex numbers (p = x + iy), s R(theta) is one complex number z, and with both
# point sets centred (p~, q~) the solution is closed-form:
#
#     z = sum_i conj(p~_i) q~_i / sum_i |p~_i|^2,      t = mean(q) - z mean(p)

# %%
import numpy as np
from PIL import Image

import _common
from mmarnn_min import detectors, faces
from mmarnn_min.config import preset
from mmarnn_min.data.synth import export_videos
from mmarnn_min.video import read_video

LESSON = "02_faces"
plt = _common.pyplot()
_common.banner("Lesson 2: faces")
SIZE = 112                                  # the paper's crop side
POINT_NAMES = faces.LANDMARK_NAMES                                      # RetinaFace's order
COLOURS = ["red", "lime", "blue", "orange", "cyan"]

# %% [markdown]
# ## The template
#
# The 5 target points are ArcFace's 112 x 112 template (`faces.ALIGN_TEMPLATE_112`); for
# another crop size they are scaled (`faces.align_template(size)`). "Left" means image left.

# %%
template = faces.align_template(SIZE)                                   # (5, 2) x, y
for name, (x, y) in zip(POINT_NAMES, template):
    print(f"{name:12s} x={x:6.2f} y={y:6.2f}")

# %% [markdown]
# ## The similarity fit, on points whose answer we know
#
# Move the template by a known similarity (scale 1.7, rotation 25 degrees, shift (40, -10)),
# then ask `similarity_transform` for the map back. Its 2 x 3 matrix is
# `[[a, -b, t_x], [b, a, t_y]]` with `a + ib = z`: scale |z|, angle arg z.

# %%
angle, scale, shift = np.radians(25), 1.7, np.array([40.0, -10.0])
rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
moved = template @ (scale * rotation).T + shift                       # (5, 2)

back = faces.similarity_transform(moved, template)                     # (2, 3)
recovered = moved @ back[:, :2].T + back[:, 2]
a, b = back[0, 0], back[1, 0]
print(f"map back: scale {np.hypot(a, b):.6f} (expected {1 / scale:.6f}), "
      f"angle {np.degrees(np.arctan2(b, a)):.4f} deg (expected -25)")
exact_error = np.abs(recovered - template).max()
assert exact_error < 1e-9
print(f"matched: a known similarity is undone to {exact_error:.1e} px")

# %% [markdown]
# ## A SynthAffect video, as a real file
#
# `export_videos` writes SynthAffect videos the way a real data set ships them: an `.mp4`
# per video (the whole canvas, the face somewhere in it, moving), the 5 true landmarks per
# frame (`<id>.landmarks.npy`) and the labels (`labels.csv`, in the Hume-Reaction layout). We
# read one back with `mmarnn_min.video.read_video`, exactly as a real video would be read.

# %%
# the default preset's videos in quick mode too (only fewer of them): the Haar detector below
# needs faces of a realistic size, which the tiny preset's 48-pixel canvas does not draw
config = preset("default").data
video_dir = _common.output_dir(LESSON) / "videos"                          # open the .mp4 files yourself
paths = export_videos(config, video_dir, splits=("val",), count=_common.quick(3, 1))
video = read_video(paths[0])
landmarks = np.load(paths[0].with_suffix(".landmarks.npy"))            # (L, 5, 2) canvas pixels
print(f"{paths[0]}: {video.num_frames} frames of {video.frames.shape[1:]} at {video.fps} fps, "
      f"landmarks {landmarks.shape}")

# %% [markdown]
# The data gives the landmarks, so the "detector" is `GivenLandmarks`: it only wraps them in
# the interface every detector shares, `detect(rgb) -> [FaceDetection(box, score, landmarks)]`.
# Its box is the region of the frame that the aligned crop will cover.

# %%
picks = np.linspace(0, video.num_frames - 1, 4).round().astype(int)
detections = [detectors.GivenLandmarks(landmarks[t]).detect(video.frames[t])[0] for t in picks]
crops = faces.align_faces(video.frames[picks], landmarks[picks], SIZE)   # (4, 112, 112, 3)

fig, axes = plt.subplots(2, len(picks), figsize=(3 * len(picks), 6.2))
for column, (t, face, crop) in enumerate(zip(picks, detections, crops)):
    top, bottom = axes[0, column], axes[1, column]
    top.imshow(video.frames[t])
    x1, y1, x2, y2 = face.box
    top.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="white", lw=1))
    top.scatter(*face.landmarks.T, c=COLOURS, s=14)
    top.set_title(f"frame {t} (canvas)", fontsize=9)
    bottom.imshow(crop)
    bottom.scatter(*template.T, c=COLOURS, s=40, marker="+")
    bottom.set_title("aligned; + = template", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
_common.save(fig, LESSON, "canvas_to_crop.png")

# %% [markdown]
# ## Check: the aligned landmarks land on the template
#
# Map every frame's landmarks through its own alignment matrix and measure how far each one
# lands from its template point. It cannot be exactly 0: a similarity has 4 degrees of
# freedom and 5 points have 10 coordinates, and a turned head or a face with other
# proportions than the template's is not a similarity of it. Least squares spreads the misfit
# over the points: most of it should stay within a few pixels at 112 x 112, and a point
# whose mean error stands out marks a systematic difference between these faces' proportions
# and the template's (look at the nose tip).

# %%
errors = []
for path in paths:
    points = np.load(path.with_suffix(".landmarks.npy"))
    for frame_points in points:
        matrix = faces.alignment_matrix(frame_points, SIZE)
        aligned = frame_points @ matrix[:, :2].T + matrix[:, 2]                # (5, 2) crop pixels
        errors.append(np.linalg.norm(aligned - template, axis=1))
errors = np.array(errors)                                                  # (frames, 5)
tolerance = 0.10 * SIZE
print("mean distance to the template per point (px): "
      + ", ".join(f"{name} {error:.2f}" for name, error in zip(POINT_NAMES, errors.mean(0))))
assert np.median(errors) < 0.04 * SIZE and errors.max() < tolerance, (np.median(errors), errors.max())
print(f"matched: over {len(errors)} frames the aligned landmarks lie {np.median(errors):.2f} px from their template "
      f"points (median), all within {errors.max():.2f} px (tolerance {tolerance:.1f} px = 10% of the crop)")

# %% [markdown]
# ## A detector that finds faces by itself: OpenCV's Haar cascade
#
# Real videos rarely come with landmarks. `HaarDetector` runs OpenCV's frontal-face cascade
# (it ships inside opencv-python 4.x, no download). It finds a *box*, not landmarks, so it
# places the 5 points at fixed fractions of the box (`detectors.HAAR_LANDMARKS_IN_BOX`): a rough
# alignment, good for frontal faces. (RetinaFace, `detectors.RetinaFaceDetector`, locates the
# 5 points for real but needs its weights file.)
#
# First on the SynthAffect frames, where we know the truth: how often does Haar find the face,
# and how far are its estimated points from the true ones, in units of the eye distance?

# %%
haar = detectors.HaarDetector()
found, point_errors = 0, []
for t in range(video.num_frames):
    face = detectors.primary_face(haar, video.frames[t])
    if face is None:
        continue
    found += 1
    eye_distance = np.linalg.norm(landmarks[t, 1] - landmarks[t, 0])
    point_errors.append(np.linalg.norm(face.landmarks - landmarks[t], axis=1).mean() / eye_distance)
print(f"Haar found a face in {found}/{video.num_frames} frames; its 5 estimated points are "
      f"{np.mean(point_errors):.2f} eye distances from the true ones on average")

# %% [markdown]
# Now on a real photograph. matplotlib ships a portrait of Grace Hopper among its sample
# data, so we need nothing from the network. If your matplotlib lacks it, the lesson says so
# and shows a SynthAffect frame instead.

# %%
try:
    from matplotlib import cbook

    photo = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    photo_name = "matplotlib sample data: grace_hopper.jpg"
except (OSError, ValueError) as error:
    print(f"no real photograph available offline ({error}); using a SynthAffect frame instead")
    photo, photo_name = video.frames[picks[0]], "SynthAffect canvas frame"

detections = haar.detect(photo)
print(f"{photo_name}: {len(detections)} face(s) found, best score {detections[0].score:.2f}" if detections
      else f"{photo_name}: no face found")
assert detections, "the Haar cascade should find the face in this frontal portrait"
face = detections[0]
crop = faces.align_face(photo, face.landmarks, SIZE)

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 5), gridspec_kw={"width_ratios": [photo.shape[1] / photo.shape[0], 1]})
left.imshow(photo)
x1, y1, x2, y2 = face.box
left.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="yellow", lw=2))
left.scatter(*face.landmarks.T, c=COLOURS, s=25)
left.set_title(f"Haar box and its 5 estimated points\n({photo_name})", fontsize=9)
right.imshow(crop)
right.scatter(*template.T, c=COLOURS, s=60, marker="+")
right.set_title("aligned 112 x 112 crop; + = template", fontsize=9)
for ax in (left, right):
    ax.axis("off")
_common.save(fig, LESSON, "haar_photo.png")

# %% [markdown]
# ## A detector that locates the 5 points: MTCNN
#
# MTCNN (Zhang et al. 2016) is a cascade of three small networks: P-Net slides over a pyramid
# of the image and proposes boxes, R-Net refines them at 24 x 24, O-Net scores them at 48 x 48
# and *places* the 5 landmarks. The `facenet-pytorch` wheel ships its weights (about 2 MB), so
# `detectors.MTCNNDetector` works offline once installed with
# `pip install -e ".[mtcnn]" && pip install --no-deps facenet-pytorch==2.6.0`
# (`predict --detector mtcnn`; `auto` takes it when RetinaFace has no weights here). Without it
# this part shows Haar alone.
#
# The truth is 5 points marked by hand once on the photograph. Haar's fixed proportions happen
# to fit this frontal portrait, so we also tilt the head by 10 degrees, as people do: MTCNN's
# points follow the eyes and mouth, Haar's stay where an upright face would have them.
# Distances are in inter-ocular distances (IOD), the usual unit of landmark error.

# %%
import cv2

if photo_name.startswith("matplotlib"):
    # Marked by hand on 8x zooms: pupils, ball of the nose, where the lips meet (image left first).
    truth = np.array([[224, 190], [306, 186], [267, 236], [228, 281], [307, 278]], np.float64)
else:
    truth = landmarks[picks[0]].astype(np.float64)                       # SynthAffect's own points
tilt = cv2.getRotationMatrix2D(tuple(truth.mean(axis=0)), 10.0, 1.0)  # (2, 3): 10 degrees about the face
tilted_photo = cv2.warpAffine(photo, tilt, photo.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
tilted_truth = truth @ tilt[:, :2].T + tilt[:, 2]

finders = {"Haar": haar}
try:
    finders = {"MTCNN": detectors.MTCNNDetector(), **finders}
except detectors.MissingPackageError as error:
    print(f"MTCNN is not installed here, Haar alone: {error}")


def error_in_iod(points, reference):
    """(5,) distances from the reference points, in its inter-ocular distances."""
    return np.linalg.norm(points - reference, axis=1) / np.linalg.norm(reference[1] - reference[0])


found = {}
for name, finder in finders.items():
    for pose, image, reference in (("upright", photo, truth), ("tilted", tilted_photo, tilted_truth)):
        face = detectors.primary_face(finder, image)
        found[name, pose] = face
        if face is None:
            print(f"{name:5s} {pose:7s}: no face found")
            continue
        errors = error_in_iod(face.landmarks, reference)
        print(f"{name:5s} {pose:7s}: " + ", ".join(f"{n} {e:.3f}" for n, e in zip(POINT_NAMES, errors))
              + f"   worst {errors.max():.3f} IOD")
if "MTCNN" in finders:
    worst = max(error_in_iod(found["MTCNN", pose].landmarks, reference).max()
                for pose, reference in (("upright", truth), ("tilted", tilted_truth)))
    assert worst < 0.1, worst
    print(f"matched: MTCNN's 5 points lie within {worst:.3f} inter-ocular distances of the hand-marked ones")

# %% [markdown]
# What the difference does to the crop: align the tilted photo with each detector's points,
# then map the *true* points into the crop too (+ is the template, o the true points). A
# detector that located the eyes undoes the tilt; Haar's upright guesses leave it in, and MMA
# then sees a tilted face with its eyes and mouth off the places it learned them at.

# %%
rows = [name for name in finders if found[name, "tilted"] is not None]
fig, axes = plt.subplots(len(rows), 2, figsize=(8, 4.2 * len(rows)), squeeze=False,
                         gridspec_kw={"width_ratios": [photo.shape[1] / photo.shape[0], 1]})
for (left, right), name in zip(axes, rows):
    face = found[name, "tilted"]
    matrix = faces.alignment_matrix(face.landmarks, SIZE)
    in_crop = tilted_truth @ matrix[:, :2].T + matrix[:, 2]                # (5, 2) crop pixels
    eye_line = np.degrees(np.arctan2(*(in_crop[1] - in_crop[0])[::-1]))
    left.imshow(tilted_photo)
    left.scatter(*face.landmarks.T, c=COLOURS, s=30)
    left.scatter(*tilted_truth.T, c=COLOURS, s=70, marker="x")
    left.set_title(f"{name}: dots found, x marked by hand", fontsize=9)
    right.imshow(faces.warp_to_crop(tilted_photo, matrix, SIZE))
    right.scatter(*template.T, c=COLOURS, s=60, marker="+")
    right.scatter(*in_crop.T, s=30, marker="o", facecolors="none", edgecolors=COLOURS)
    right.set_title(f"aligned with {name}'s points\ntrue eye line at {eye_line:+.1f} degrees", fontsize=9)
    print(f"{name}: the true eye line lies at {eye_line:+.1f} degrees in its crop (0 = level)")
for ax in axes.flat:
    ax.axis("off")
_common.save(fig, LESSON, "mtcnn_vs_haar.png")

# %% [markdown]
# The Haar points are guesses from the box, so on the crop they fall exactly on the template
# (that is how they were made) while the real eyes and mouth may not: look at the picture and
# judge how far off they are. With true landmarks (above) the crops are consistent from frame
# to frame however the head moves, which is what a per-frame model like MMA needs.
#
# ## Exercises
#
# Check an answer with `tutorials/checks.py`: in a cell (or a script in `tutorials/`) run
# `import checks`, then the check named after the exercise; it prints "correct" or fails with
# a hint. Worked solutions: `tutorials/solutions/02_faces.py`.
#
# 1. Align the frames of the first video (`paths[0]`) with the Haar points instead of the true
#    ones: map the *true* landmarks through each frame's Haar alignment and measure their mean
#    distance from the template (112 x 112 crop pixels, over the frames where Haar finds a face
#    and the 5 points). How much worse is it than the check above?
#    Check: `checks.check_02_1(mean_distance, paths[0])`.
# 2. `similarity_transform` forbids mirrors. Mirror the template left-right (x -> 112 - x) and
#    fit it back onto the original: what scale do you get, and what mean distance remains
#    between the 5 mapped points and their targets? Why would allowing a reflection be wrong
#    for faces whose left and right eye are labelled?
#    Check: `checks.check_02_2(scale, mean_residual)`.
# 3. Which of the 5 points lands farthest from its template point on average in the check
#    above? Why might it move more than the eyes from frame to frame?
#    Check: `checks.check_02_3(point, paths)`, the point named as in `POINT_NAMES`.
