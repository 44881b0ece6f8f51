"""SynthAffect's camera: where a face lands in the picture and how the picture looks.

Frames are rendered into a larger canvas at a random position, scale and rotation together
with their 5 true landmarks, so that alignment is exercised as with real data, with
lighting, blur and noise varying (docs/design.md, section 6). Two ways to the aligned crop:

    "canvas": draw on the canvas, then align with the true landmarks (faces.align_face),
              exactly as a real frame with known landmarks is processed;
    "crop":   draw straight into the S x S crop through the same similarity transform
              (the composition of placement and alignment): same geometry, no resampling,
              faster. Background, blur and noise are then applied at crop resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from mmarnn_min.data.synth_face import FaceGeometry, Identity, draw_face, face_geometry
from mmarnn_min.faces import alignment_matrix, warp_to_crop


@dataclass(frozen=True)
class Shot:
    """How one picture is taken: head rotation (radians), where the face lands on the canvas
    (its origin ``centre`` and inter-ocular distance ``iod``, in canvas pixels), blur (Gaussian
    sigma in canvas pixels), sensor noise (grey levels) and a light: a linear brightness ramp
    across the face (``light_angle``, ``light_strength``) times a global ``gain`` and ``tint``."""

    yaw: float
    pitch: float
    roll: float
    centre: tuple[float, float]
    iod: float
    blur: float
    noise: float
    light_angle: float
    light_strength: float
    gain: float
    tint: tuple[float, float, float]

    @staticmethod
    def sample(rng: np.random.Generator, canvas_size: int) -> Shot:
        u = rng.uniform
        iod = u(0.11, 0.28) * canvas_size
        margin = 1.6 * iod  # most faces stay inside the canvas; a few touch its border
        return Shot(
            yaw=np.radians(u(-28, 28)), pitch=np.radians(u(-16, 16)), roll=np.radians(u(-25, 25)),
            centre=(u(margin, canvas_size - margin), u(margin, canvas_size - margin)),
            iod=iod, blur=u(0.0, 1.3), noise=u(1.5, 9.0),
            light_angle=u(0, 2 * np.pi), light_strength=u(0.0, 0.45), gain=u(0.6, 1.2),
            tint=tuple(float(t) for t in u(0.88, 1.12, 3)),
        )

    def moved(self, yaw: float, pitch: float, roll: float, dx: float, dy: float) -> Shot:
        """The same shot with the head turned and shifted by the given amounts (for videos)."""
        return Shot(self.yaw + yaw, self.pitch + pitch, self.roll + roll,
                    (self.centre[0] + dx, self.centre[1] + dy), self.iod, self.blur, self.noise,
                    self.light_angle, self.light_strength, self.gain, self.tint)


def placement(identity: Identity, shot: Shot) -> np.ndarray:
    """(2,3) similarity from face units to canvas pixels: scale from the inter-ocular
    distance, rotation by ``roll``, face origin onto ``centre``."""
    scale = shot.iod / (2 * identity.eye_x)
    c, s = scale * np.cos(shot.roll), scale * np.sin(shot.roll)
    return np.array([[c, -s, shot.centre[0]], [s, c, shot.centre[1]]])


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A backdrop (H,W,3) uint8: a colour ramp between random corner colours plus a few
    random flat shapes (clutter)."""
    corners = rng.uniform(15, 240, (2, 2, 3)).astype(np.uint8)
    image = cv2.resize(corners, (width, height), interpolation=cv2.INTER_LINEAR)
    size = max(height, width)
    for _ in range(rng.integers(0, 5)):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.05, 0.4, 2) * size
        if rng.random() < 0.5:
            cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), colour, -1)
        else:
            cv2.ellipse(image, (int(x), int(y)), (int(w / 2), int(h / 2)), float(rng.uniform(0, 180)),
                        0, 360, colour, -1, cv2.LINE_AA)
    return image


@lru_cache(maxsize=4)
def _noise_bank(height: int, width: int) -> np.ndarray:
    """A fixed field of unit Gaussian noise (height+64, width+64, 3) float32; every picture
    adds a randomly shifted window of it (drawing fresh normals per pixel costs more than
    drawing the face)."""
    return np.random.default_rng(20230301).standard_normal((height + 64, width + 64, 3), np.float32)


def photo_effects(image: np.ndarray, shot: Shot, face_centre: np.ndarray, face_radius: float,
                  rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Blur, light and noise on a drawn picture (H,W,3) uint8 -> (H,W,3) uint8. The light ramp
    runs across the face (``face_centre`` and ``face_radius`` in pixels); ``scale`` converts
    canvas pixels to this picture's pixels (for the blur)."""
    sigma = shot.blur * scale
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    height, width = image.shape[:2]
    slope = shot.light_strength / face_radius
    ramp_x = (slope * np.cos(shot.light_angle)) * (np.arange(width) - face_centre[0])
    ramp_y = (slope * np.sin(shot.light_angle)) * (np.arange(height) - face_centre[1])
    light = np.clip(1 + ramp_y[:, None] + ramp_x[None, :], 0.3, 1.7).astype(np.float32)  # (H,W)
    light *= shot.gain
    light = cv2.merge([light * tint for tint in shot.tint])  # (H,W,3) float32
    oy, ox = rng.integers(0, 64, 2)
    noise = _noise_bank(height, width)[oy:oy + height, ox:ox + width]  # (H,W,3)
    lit = cv2.scaleAdd(noise, shot.noise, cv2.multiply(image, light, dtype=cv2.CV_32F))
    return cv2.add(lit, 0.0, dtype=cv2.CV_8U)  # rounds and saturates to 0..255


def _face_box(geometry: FaceGeometry, to_pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (2,) and radius (pixels) of the face, for the light ramp."""
    centre = geometry.landmarks.mean(axis=0) @ to_pixels[:, :2].T + to_pixels[:, 2]
    return centre, 1.6 * float(np.hypot(to_pixels[0, 0], to_pixels[1, 0]))


def render_canvas(identity: Identity, aus: np.ndarray, shot: Shot, backdrop: np.ndarray,
                  rng: np.random.Generator, blink: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Draw the face on a copy of ``backdrop`` (H,W,3) -> canvas (H,W,3) uint8 and its true
    landmarks (5,2) in canvas pixels."""
    geometry = face_geometry(identity, aus, shot.yaw, shot.pitch, blink)
    to_pixels = placement(identity, shot)
    canvas = backdrop.copy()
    landmarks = draw_face(canvas, geometry, identity, to_pixels)
    centre, radius = _face_box(geometry, to_pixels)
    return photo_effects(canvas, shot, centre, radius, rng), landmarks


def render_crop(identity: Identity, aus: np.ndarray, shot: Shot, backdrop: np.ndarray,
                rng: np.random.Generator, blink: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Draw the face straight into an aligned S x S crop (S = backdrop's side) -> crop
    (S,S,3) uint8 and the landmarks (5,2) in crop pixels (near the template, not on it)."""
    size = backdrop.shape[0]
    geometry = face_geometry(identity, aus, shot.yaw, shot.pitch, blink)
    to_pixels = alignment_matrix(geometry.landmarks, size)
    # the placement's roll and scale are undone by the alignment; keep the canvas blur in
    # proportion to the face: canvas pixels -> crop pixels
    on_canvas = placement(identity, shot)
    canvas_to_crop = np.hypot(*to_pixels[:, 0]) / np.hypot(*on_canvas[:, 0])
    crop = backdrop.copy()
    landmarks = draw_face(crop, geometry, identity, to_pixels)
    centre, radius = _face_box(geometry, to_pixels)
    return photo_effects(crop, shot, centre, radius, rng, scale=canvas_to_crop), landmarks


def render_aligned(identity: Identity, aus: np.ndarray, shot: Shot, backdrop: np.ndarray,
                   rng: np.random.Generator, size: int, mode: str, blink: float = 0.0,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """An aligned crop (size,size,3) uint8 and its landmarks (5,2) in crop pixels, through the
    canvas and alignment (``mode="canvas"``; ``backdrop`` is the canvas) or drawn straight at
    crop resolution (``mode="crop"``; ``backdrop`` is size x size)."""
    if mode == "crop":
        return render_crop(identity, aus, shot, backdrop, rng, blink)
    if mode != "canvas":
        raise ValueError(f"render mode must be 'canvas' or 'crop', got {mode!r}")
    canvas, landmarks = render_canvas(identity, aus, shot, backdrop, rng, blink)
    to_crop = alignment_matrix(landmarks, size)  # what faces.align_face does, keeping the matrix
    return warp_to_crop(canvas, to_crop, size), landmarks @ to_crop[:, :2].T + to_crop[:, 2]
