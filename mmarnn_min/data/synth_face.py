"""SynthAffect's face model: 17 AU intensities + an identity + a head pose -> a drawn face.

The face's geometry is driven by the 17 AU intensities (brows, lids, cheeks, nose, lips,
jaw), with identity and pose varying (docs/design.md, section 6). The face is a set of 3D
curves in *face units* (the head's half width is about 1; x right, y down, z towards the
camera), rotated by yaw and pitch, projected orthographically, then mapped to pixels by a 2D
similarity (roll, scale, position) and drawn with OpenCV's anti-aliased polygons.

What each AU moves (intensity a in [0, 1]; FACS names):
    AU1  inner brow raiser      inner brow ends up, forehead wrinkles
    AU2  outer brow raiser      outer brow ends up, forehead wrinkles
    AU4  brow lowerer           brows down and together, vertical furrows between them
    AU5  upper lid raiser       upper lid up: more white above the iris
    AU6  cheek raiser           cheeks up and flushed, lower lids and the fold under them
                                pushed up, crow's feet
    AU7  lid tightener          both lids narrow the eye (the lower one most), the fold
                                under the lower lid bunches up
    AU9  nose wrinkler          wrinkles across the nose, nostrils up and wide, inner brows down
    AU10 upper lip raiser       upper lip up (upper teeth show), nose wings up
    AU11 nasolabial deepener    the folds from the nose wings to the mouth corners darker,
                                wider, their middle pulled up and out
    AU12 lip corner puller      corners up and out (smile curve)
    AU15 lip corner depressor   corners down (frown curve)
    AU17 chin raiser            lower lip pushes the upper one up, chin boss up and shaded,
                                the furrow under the lower lip up and deeper
    AU20 lip stretcher          corners out sideways, lips thinner
    AU23 lip tightener          red of the lips narrowed to a line, mouth narrower
    AU24 lip presser            lips pressed shut, thin and paler, bulges at the corners
    AU25 lips part              gap between the lips (mouth cavity and teeth)
    AU26 jaw drop               lower lip and chin down, face longer

Every AU is visible at the crop size the models read: at full intensity it moves a part that
is visible at rest (brows, lids, lips, nostrils, the nasolabial folds, the fold under each
eye, the furrow under the lower lip) by at least 2 pixels of a 64 x 64 aligned crop of the
typical identity (``au_displacements`` measures it; the tests check it). In such a crop the
eyes are 20 pixels apart, so 2 pixels are about 0.09 face units, about half an eye's
opening: the subtle AUs are drawn at the strong end of FACS's intensity E (AU7 narrows the
eye to a slit; AU23 and AU24 thin the lips to a line). Lips are nearly as thick as real
ones (the red of the lower lip about an eighth of the inter-ocular distance), and the three
folds are faintly drawn at rest, as most adult faces show them, so that the AUs that move
them move something a camera sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mmarnn_min.affect import AUS, NUM_AUS
from mmarnn_min.faces import alignment_matrix

_SHIFT = 4  # OpenCV fixed-point bits: points are drawn with 1/16 pixel precision
_ONE = 1 << _SHIFT
_HEAD_DEPTH = 0.9  # half depth of the head ellipsoid (face units)


@dataclass(frozen=True)
class Identity:
    """Who is drawn: head shape, feature placement and colours (RGB 0..255)."""

    head_w: float      # half width of the head
    head_h: float      # half height of the head
    head_cy: float     # y of the head's centre
    jaw_taper: float   # how much narrower the jaw is than the cheeks
    eye_x: float       # half the distance between the eye centres
    eye_y: float
    eye_w: float       # half width of an eye
    eye_h: float       # upper lid height at rest
    iris_r: float
    brow_gap: float    # brow height above the eye centre
    brow_t: float      # brow thickness
    nose_y: float      # y of the nose tip
    nose_w: float      # half width of the nose base
    mouth_y: float     # y of the mouth corners at rest
    mouth_w: float     # half width of the mouth at rest
    lip_up: float      # upper lip thickness
    lip_lo: float      # lower lip thickness
    hairline: float    # y of the hairline at the middle
    long_hair: bool
    skin: tuple[float, float, float]
    lips: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    clothes: tuple[float, float, float]

    @staticmethod
    def sample(rng: np.random.Generator) -> Identity:
        low, high = _SHAPE_RANGES.T
        shape = dict(zip(_SHAPE_NAMES, rng.uniform(low, high).tolist()))
        shape["nose_y"] += shape["eye_y"]  # nose and mouth are placed below the eyes
        shape["mouth_y"] += shape["eye_y"]
        tone, hair_shade, iris_shade, long_hair = rng.random(4)
        skin = _SKIN_DARK + tone * (_SKIN_LIGHT - _SKIN_DARK) + rng.normal(0, 6, 3)
        lips = _lip_colour(skin)
        hair = _HAIR[rng.integers(len(_HAIR))] * (0.8 + 0.35 * hair_shade)
        iris = _IRIS[rng.integers(len(_IRIS))] * (0.8 + 0.4 * iris_shade)
        colours = {name: tuple(np.clip(c, 0, 255).tolist()) for name, c in
                   (("skin", skin), ("lips", lips), ("hair", hair), ("iris", iris),
                    ("clothes", rng.uniform(20, 235, 3)))}
        return Identity(**shape, long_hair=bool(long_hair < 0.4), **colours)

    @staticmethod
    def typical() -> Identity:
        """The middle of every shape range and a middle skin tone: the face on which each
        AU's visibility is measured (``au_displacements``)."""
        shape = dict(zip(_SHAPE_NAMES, _SHAPE_RANGES.mean(axis=1).tolist()))
        shape["nose_y"] += shape["eye_y"]
        shape["mouth_y"] += shape["eye_y"]
        skin = (_SKIN_DARK + _SKIN_LIGHT) / 2
        return Identity(**shape, long_hair=False, skin=tuple(skin.tolist()),
                        lips=tuple(_lip_colour(skin).tolist()),
                        hair=tuple(_HAIR[1].tolist()), iris=tuple(_IRIS[0].tolist()),
                        clothes=(120.0, 120.0, 120.0))


# Ranges of the identity's shape parameters (face units), drawn uniformly.
_SHAPE = {
    "head_w": (0.92, 1.05), "head_h": (1.3, 1.45), "head_cy": (0.08, 0.14), "jaw_taper": (0.15, 0.35),
    "eye_x": (0.40, 0.46), "eye_y": (-0.08, 0.0), "eye_w": (0.17, 0.21), "eye_h": (0.075, 0.095),
    "iris_r": (0.065, 0.08), "brow_gap": (0.16, 0.22), "brow_t": (0.045, 0.08),
    "nose_y": (0.46, 0.54), "nose_w": (0.12, 0.16),  # nose_y: below eye_y
    "mouth_y": (0.95, 1.03), "mouth_w": (0.32, 0.38),  # mouth_y: below eye_y
    "lip_up": (0.07, 0.1), "lip_lo": (0.09, 0.12), "hairline": (-1.0, -0.72),
}
_SHAPE_NAMES = tuple(_SHAPE)
_SHAPE_RANGES = np.array(list(_SHAPE.values()))  # (18,2)


def _lip_colour(skin: np.ndarray) -> np.ndarray:
    return skin * np.array([0.86, 0.55, 0.55]) + np.array([25, 0, 5])


_SKIN_DARK, _SKIN_LIGHT = np.array([95.0, 62, 42]), np.array([245.0, 204, 177])
_HAIR = np.array([[25.0, 20, 18], [70, 45, 30], [120, 80, 45], [200, 165, 100], [150, 60, 30],
                  [160, 160, 160]])
_IRIS = np.array([[70.0, 45, 25], [40, 30, 20], [60, 100, 140], [70, 110, 70]])


@dataclass(frozen=True)
class FaceGeometry:
    """A face projected to 2D face units. ``points`` (n,2) holds every curve; ``parts`` maps a
    part name to the slices of ``points`` that are its curves; ``shade`` holds the darkness in
    [0, 1] of the AU-driven lines; ``landmarks`` (5,2) are the true 5 points (left eye, right
    eye, nose tip, left and right mouth corner; left = image left)."""

    points: np.ndarray
    parts: dict[str, list[slice]]
    shade: dict[str, float]
    landmarks: np.ndarray


def _depth(x: np.ndarray, y: np.ndarray, identity: Identity) -> np.ndarray:
    """z of the face surface (the front of the head ellipsoid) under (x, y)."""
    inside = 1 - (x / identity.head_w) ** 2 - ((y - identity.head_cy) / identity.head_h) ** 2
    return _HEAD_DEPTH * np.sqrt(np.clip(inside, 0.05, 1.0))


class _Sketch:
    """Named 3D curves collected in face units, then rotated and projected in one go. A curve
    either lies on the face surface (``face``: z = surface depth + lift) or at a fixed depth
    (``free``: the silhouette, hair, ears, neck, body). Coordinates broadcast together: a
    shape (n,) is one curve, (rows,n) several, e.g. (2,n) a mirror pair (image left, right)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.curves: list[tuple[str, int, int]] = []  # (part name, rows, points per row)
        self.x: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.z: list[np.ndarray] = []  # lift above the surface, or depth for free curves
        self.on_face: list[bool] = []

    def face(self, name: str, x, y, lift=0.0) -> None:
        self._add(name, x, y, lift, True)

    def free(self, name: str, x, y, z) -> None:
        self._add(name, x, y, z, False)

    def _add(self, name: str, x, y, z, on_face: bool) -> None:
        x, y = np.asarray(x, float), np.asarray(y, float)
        if x.shape != y.shape:  # e.g. one x for several rows of y
            zero = 0.0 * x + 0.0 * y
            x, y = x + zero, y + zero
        self.curves.append((name, 1 if x.ndim == 1 else len(x), x.shape[-1]))
        self.x.append(x.ravel())
        self.y.append(y.ravel())
        self.z.append(np.full(x.size, z) if np.ndim(z) == 0 else (z + 0.0 * x).ravel())
        self.on_face.append(on_face)

    def project(self, yaw: float, pitch: float) -> tuple[np.ndarray, dict[str, list[slice]]]:
        """Rotate by yaw (about the vertical axis), then pitch, and drop z: points (n,2)."""
        x, y, z = np.concatenate(self.x), np.concatenate(self.y), np.concatenate(self.z)
        z = z + np.repeat(self.on_face, [len(c) for c in self.x]) * _depth(x, y, self.identity)
        cos_y, sin_y, cos_p, sin_p = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        x_rot = cos_y * x + sin_y * z
        z_rot = -sin_y * x + cos_y * z
        points = np.stack([x_rot, cos_p * y - sin_p * z_rot], axis=1)  # (n,2)
        parts: dict[str, list[slice]] = {}
        start = 0
        for name, rows, size in self.curves:
            for _ in range(rows):
                parts.setdefault(name, []).append(slice(start, start + size))
                start += size
        return points, parts


_ARC_WEIGHTS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _arc(p0, p1, p2, n: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """n points on the quadratic curve through p0 (start), p1 (middle) and p2 (end); point
    coordinates may be scalars or (2,1) arrays (one per side), giving (n,) or (2,n)."""
    if n not in _ARC_WEIGHTS:
        u = np.linspace(0, 1, n)  # Lagrange weights of the three points
        _ARC_WEIGHTS[n] = (2 * (u - 0.5) * (u - 1), -4 * u * (u - 1), 2 * u * (u - 0.5))
    w0, w1, w2 = _ARC_WEIGHTS[n]
    return w0 * p0[0] + w1 * p1[0] + w2 * p2[0], w0 * p0[1] + w1 * p1[1] + w2 * p2[1]


def _ellipse(cx, cy, rx, ry) -> tuple[np.ndarray, np.ndarray]:
    return cx + rx * _COS16, cy + ry * _SIN16


def _band(x: np.ndarray, y: np.ndarray, half_width) -> tuple[np.ndarray, np.ndarray]:
    """A closed polygon of the given half width around the curve(s) (x, y), (..., n)."""
    def slope(v: np.ndarray) -> np.ndarray:
        return np.concatenate([v[..., 1:2] - v[..., :1], v[..., 2:] - v[..., :-2],
                               v[..., -1:] - v[..., -2:-1]], axis=-1)
    dx, dy = slope(x), slope(y)
    scale = half_width / (np.hypot(dx, dy) + 1e-9)
    nx, ny = -dy * scale, dx * scale
    return _between(x, y + ny, y - ny, x + nx, x - nx)


def _between(x: np.ndarray, upper: np.ndarray, lower: np.ndarray,
             x_upper=None, x_lower=None) -> tuple[np.ndarray, np.ndarray]:
    """The closed polygon between two curves (..., n) sampled at the same x (or at x_upper
    and x_lower): along the upper one, back along the lower one."""
    x_upper = x if x_upper is None else x_upper
    x_lower = x if x_lower is None else x_lower
    return (np.concatenate([x_upper, x_lower[..., ::-1]], axis=-1),
            np.concatenate([upper, lower[..., ::-1]], axis=-1))


def _lip_curve(x: np.ndarray, corner_y: float, centre_y: float, power: float) -> np.ndarray:
    """A lip contour through both corners (the ends of x) and ``centre_y`` at x = 0."""
    return corner_y + (centre_y - corner_y) * (1 - (x / x[-1]) ** 2) ** power


_SIDES = np.array([[-1.0], [1.0]])  # (2,1): image-left and image-right features
_ANGLES16 = np.linspace(0, 2 * np.pi, 16, endpoint=False)
_COS16, _SIN16 = np.cos(_ANGLES16), np.sin(_ANGLES16)
_OUTLINE_ANGLES = np.linspace(0, 2 * np.pi, 40, endpoint=False)
_OUTLINE_COS, _OUTLINE_SIN = np.cos(_OUTLINE_ANGLES), np.sin(_OUTLINE_ANGLES)  # sin > 0: jaw
_OUTLINE_JAW = np.maximum(_OUTLINE_SIN, 0) ** 2  # where the jaw narrows
_HAIRLINE_X = np.linspace(0.96, -0.96, 15)
_U11 = np.linspace(-1, 1, 11)  # across an eye
_LID_UP, _LID_LO = (1 - _U11 ** 2) ** 0.7, (1 - _U11 ** 2) ** 0.9
_CREASE = (1 - _U11[1:-1] ** 2) ** 0.6
_HALF_CIRCLE_X, _HALF_CIRCLE_Y = np.cos(np.linspace(np.pi, 0, 9)), np.sin(np.linspace(np.pi, 0, 9))
_WING = np.linspace(-1.9, 1.9, 7)  # a C around the nostril, open towards the middle
_BROW_TAPER = np.linspace(0.6, 0.35, 9)
_THREE = np.arange(3.0)[:, None]
_TILTS = np.tile([-0.45, 0.0, 0.45], 2)[:, None]  # crow's feet directions, left eye then right
_FEET_X = 0.09 * np.cos(_TILTS) * np.repeat(_SIDES, 3, axis=0)  # (6,1) from the corner
_FEET_Y = 0.09 * np.sin(_TILTS)
_NOSE_WRINKLE_X, _NOSE_WRINKLE_Y = np.array([-0.12, 0.0, 0.12]), np.array([0.02, 0.0, 0.02])
_BULGE_SIGN = np.array([[-1.0], [-1.0], [1.0], [1.0]])


def face_geometry(identity: Identity, aus: np.ndarray, yaw: float = 0.0, pitch: float = 0.0,
                  blink: float = 0.0) -> FaceGeometry:
    """Build the face for AU intensities ``aus`` (17,) in [0, 1], head rotation ``yaw`` and
    ``pitch`` (radians) and eye closure ``blink`` in [0, 1] (a nuisance, not an AU)."""
    a = dict(zip(AUS, np.clip(aus, 0.0, 1.0).tolist()))
    idt, side = identity, _SIDES
    sketch = _Sketch(idt)
    shade: dict[str, float] = {}

    # --- head outline, hair, ears, neck, body. The outline is the silhouette of the head
    # ellipsoid, not a rigid curve: it is widened so that, once rotated, it keeps its size.
    jaw = a[26] * 0.25 - a[17] * 0.04  # jaw drop lengthens the face, chin raise shortens it
    ox = idt.head_w * _OUTLINE_COS * (1 - idt.jaw_taper * _OUTLINE_JAW)
    oy = idt.head_cy + np.where(_OUTLINE_SIN > 0, idt.head_h + jaw, idt.head_h) * _OUTLINE_SIN
    widen_x = np.hypot(np.cos(yaw), _HEAD_DEPTH / idt.head_w * np.sin(yaw)) / max(np.cos(yaw), 0.3)
    widen_y = np.hypot(np.cos(pitch), _HEAD_DEPTH / idt.head_h * np.sin(pitch)) / max(np.cos(pitch), 0.3)
    ox, oy = ox * widen_x, idt.head_cy + (oy - idt.head_cy) * widen_y
    sketch.free("face", ox, oy, 0.0)
    temple_y = idt.eye_y - 0.08
    cap = (_OUTLINE_SIN <= 0) & (oy < temple_y)  # upper outline, enlarged: hair's edge
    hx = idt.head_w * _HAIRLINE_X
    hy = idt.hairline + (temple_y - idt.hairline) * (np.abs(hx) / idt.head_w) ** 2.5
    sketch.free("hair", np.concatenate([ox[cap] * 1.05, hx]),
                np.concatenate([idt.head_cy + (oy[cap] - idt.head_cy) * 1.04, hy]),
                np.concatenate([np.zeros(cap.sum()), _depth(hx, hy, idt) + 0.02]))
    if idt.long_hair:
        bx, by = _ellipse(0, idt.head_cy + 0.3, idt.head_w * 1.22, idt.head_h * 1.15)
        sketch.free("back_hair", bx, by, -0.5)
    sketch.free("ears", *_ellipse(side * idt.head_w * 0.97, idt.eye_y + 0.14, 0.11, 0.21), -0.1)
    sketch.free("neck", [-0.45, 0.45, 0.52, -0.52], [1.0, 1.0, 2.4, 2.4], -0.3)
    sketch.free("body", [-2.2, -0.5, -0.25, 0.0, 0.25, 0.5, 2.2, 2.2, -2.2],
                [2.2, 1.9, 2.2, 2.3, 2.2, 1.9, 2.2, 4.0, 4.0], -0.4)

    # --- brows (AU1 inner up, AU2 outer up, AU4 down and together, AU9 inner down),
    # forehead wrinkles (AU1, AU2) and vertical furrows between the brows (AU4)
    brow_y = idt.eye_y - idt.brow_gap
    inner = (side * (idt.eye_x - 0.9 * idt.eye_w - 0.05 * a[4]),
             brow_y - 0.16 * a[1] + 0.09 * a[4] + 0.05 * a[9])
    middle = (side * (idt.eye_x + 0.15 * idt.eye_w),
              brow_y - 0.035 - 0.07 * a[1] - 0.08 * a[2] + 0.06 * a[4] + 0.02 * a[9])
    outer = (side * (idt.eye_x + 1.25 * idt.eye_w), brow_y + 0.015 - 0.15 * a[2] + 0.03 * a[4])
    sketch.face("brows", *_band(*_arc(inner, middle, outer), idt.brow_t * _BROW_TAPER), 0.01)
    sketch.face("furrow", *_arc((side * 0.05, brow_y + 0.02), (side * 0.065, brow_y + 0.09),
                                (side * 0.05, brow_y + 0.16), 5))
    shade["forehead"] = max(a[1], a[2])
    shade["furrow"] = a[4]
    y0 = brow_y - 0.17 - 0.1 * _THREE  # (3,1) three wrinkles
    sketch.face("forehead", *_arc((-0.42, y0 + 0.03), (0.0, y0), (0.42, y0 + 0.03), 7))

    # --- eyes (AU5 opens the upper lid; AU6, AU7 raise the lower lid; blink closes both),
    # cheeks (AU6 raises and flushes them) and crow's feet (AU6)
    open_up = idt.eye_h * max(0.0, 1 + 1.3 * a[5] - 0.55 * a[7] - 0.25 * a[6] - 0.15 * a[4]) * (1 - blink)
    open_lo = idt.eye_h * max(0.0, 0.8 - 0.75 * a[7] - 0.6 * a[6] + 0.15 * a[5]) * (1 - blink)
    shade["cheeks"] = 0.1 + 0.8 * a[6]
    shade["crows_feet"] = a[6]
    shade["lower_crease"] = 0.25 + 0.35 * a[6] + 0.35 * a[7]
    cx, cy = side * idt.eye_x, idt.eye_y
    x = cx + _U11 * idt.eye_w  # (2,11)
    upper, lower = cy - open_up * _LID_UP + 0 * x, cy + open_lo * _LID_LO + 0 * x
    sketch.face("sclera", *_between(x, upper, lower))
    for name, radius in (("iris", idt.iris_r), ("pupils", 0.45 * idt.iris_r)):
        offset, half = radius * _HALF_CIRCLE_X, radius * _HALF_CIRCLE_Y  # the disc, clipped by the lids
        shape_at = 1 - (offset / idt.eye_w) ** 2  # the lids' shape at the disc's x
        top = np.maximum(cy - half, cy - open_up * shape_at ** 0.7)
        bottom = np.maximum(np.minimum(cy + half, cy + open_lo * shape_at ** 0.9), top)
        if (bottom - top).max() > 1e-3:
            sketch.face(name, *_between(cx + offset, top + 0 * cx, bottom + 0 * cx))
    sketch.face("lids", *_band(x, upper - 0.012, 0.014 + 0.01 * blink), 0.005)
    sketch.face("lower_lids", x, lower)
    sketch.face("crease", x[:, 1:-1], cy - (idt.eye_h * 1.7 + 0.035) * _CREASE + 0.02 * a[4])
    # the fold under the lower lid rises with it, and further as AU6 and AU7 bunch the skin up
    sketch.face("lower_crease", x[:, 2:-2],
                lower[:, 2:-2] + max(0.06 - 0.045 * a[6] - 0.035 * a[7], 0.015))
    corner = np.repeat(cx + side * idt.eye_w * 1.1, 3, axis=0)  # (6,1) outer eye corners
    sketch.face("crows_feet", np.concatenate([corner, corner + _FEET_X], 1),
                np.concatenate([cy + 0 * corner, cy + _FEET_Y], 1))
    sketch.face("cheeks", *_ellipse(side * (idt.eye_x + 0.03), cy + 0.37 - 0.12 * a[6],
                                    0.19, 0.12 + 0.02 * a[6]))

    # --- nose (AU9 wrinkles it, lifts and widens its base; AU10 lifts the base a little)
    lift = 0.09 * a[9] + 0.035 * a[10]
    shade["wrinkles"] = a[9]
    sketch.face("bridge", *_arc((side * 0.07, idt.eye_y + 0.06), (side * 0.085, idt.eye_y + 0.25),
                                (side * 0.1, idt.nose_y - 0.1), 5), 0.12)
    wing_x = side * idt.nose_w * (1 + 0.25 * a[9])  # outermost points of the nose wings
    sketch.face("wings", wing_x - side * 0.05 * (1 - np.cos(_WING)),
                idt.nose_y + 0.02 - lift + 0.06 * np.sin(_WING), 0.12)
    sketch.face("nostrils", *_ellipse(side * 0.055 * (1 + 0.35 * a[9]), idt.nose_y + 0.05 - lift,
                                      0.035, 0.018 + 0.008 * a[9]), 0.2)
    # wrinkles running up the sides of the nose, and across its bridge
    sketch.face("wrinkles", np.concatenate([side * (idt.nose_w + 0.02), side * 0.1], 1),
                np.array([idt.nose_y - 0.05 - lift, idt.eye_y + 0.22]), 0.1)
    y0 = idt.eye_y + 0.1 + 0.05 * _THREE  # (3,1)
    sketch.face("wrinkles", _NOSE_WRINKLE_X, y0 + _NOSE_WRINKLE_Y, 0.15)

    # --- mouth: corners (AU12 up and out, AU15 down, AU20 out, AU23 and AU24 in), opening
    # (AU10, AU25, AU26; AU24 presses it shut), lips (AU20, AU23, AU24 thinner; AU17 pout)
    corner_x = idt.mouth_w * (1 + 0.12 * a[12] + 0.3 * a[20] - 0.25 * a[23] - 0.1 * a[24])
    corner_y = (idt.mouth_y - 0.13 * a[12] + 0.12 * a[15] + 0.05 * a[20] + 0.03 * a[17]
                + 0.02 * a[26])
    mid = idt.mouth_y + 0.005 - 0.02 * a[12] - 0.04 * a[17]  # AU17: lower lip pushes the upper up
    inner_up = mid - 0.1 * a[10] - 0.03 * a[25]
    inner_lo = mid + 0.095 * a[25] + 0.3 * a[26] - 0.04 * a[17]
    inner_up += (mid - inner_up) * a[24]
    inner_lo = max(inner_lo + (mid - inner_lo) * a[24], inner_up)
    thin = 1 - 0.85 * a[23] - 0.9 * a[24] - 0.35 * a[20]
    outer_up = inner_up - idt.lip_up * max(thin + 0.1 * a[10], 0.1)
    outer_lo = inner_lo + idt.lip_lo * max(thin, 0.1) + 0.02 * a[17]
    x = corner_x * _LIP_X
    up_outer = _lip_curve(x, corner_y, outer_up, 0.6) - _CUPID_BOW
    up_inner = _lip_curve(x, corner_y, inner_up, 0.8)
    lo_inner = _lip_curve(x, corner_y, inner_lo, 0.8)
    lo_outer = _lip_curve(x, corner_y, outer_lo, 0.9)
    gap = inner_lo - inner_up
    if gap > 0.005:
        sketch.face("mouth", *_between(x, up_inner, lo_inner), 0.05)
        tx, t_up, t_lo = x[_TEETH], up_inner[_TEETH], lo_inner[_TEETH]
        sketch.face("teeth", *_between(tx, t_up, np.minimum(t_up + min(gap, 0.07), t_lo)), 0.05)
        if gap > 0.12:
            sketch.face("teeth", *_between(tx, np.maximum(t_lo - 0.035, t_up), t_lo), 0.05)
    else:
        sketch.face("lip_line", x, (up_inner + lo_inner) / 2, 0.06)
    sketch.face("upper_lip", *_between(x, up_outer, up_inner), 0.06)
    sketch.face("lower_lip", *_between(x, lo_inner, lo_outer), 0.06)
    shade["lip_press"] = a[24]
    shade["lip_pale"] = 0.45 * a[24] + 0.25 * a[23]
    edge = np.array([[outer_up], [outer_up], [outer_lo], [outer_lo]])  # (4,1) bulges (AU24)
    sign, side4 = _BULGE_SIGN, np.concatenate([side, side])  # above and below, both sides
    sketch.face("lip_press", *_arc((side4 * 0.55 * corner_x, edge + sign * 0.02),
                                   (side4 * 0.75 * corner_x, edge + sign * 0.035),
                                   (side4 * 0.95 * corner_x, corner_y + sign * 0.02), 5), 0.05)
    # nasolabial folds (AU11, and the smile or raised upper lip that deepen them)
    shade["folds"] = min(1.0, 0.25 + 0.6 * a[11] + 0.3 * a[12] + 0.25 * a[10] + 0.15 * a[9])
    start = (side * (idt.nose_w + 0.04), idt.nose_y - 0.01 - lift)
    end = (side * (corner_x + 0.05), corner_y + 0.05)
    # AU11 pulls the skin beside the fold's middle up and out: the fold bows up and outwards
    middle = (side * (max(idt.nose_w, corner_x) + 0.07 + 0.05 * a[12] + 0.07 * a[11]),
              (start[1] + end[1]) / 2 - 0.05 * a[11])
    sketch.face("folds", *_band(*_arc(start, middle, end, 7), 0.006 + 0.016 * a[11]), 0.02)
    # chin (AU17 pushes the chin boss up, shading it, and with it the mentolabial furrow
    # under the lower lip, which deepens)
    chin_bottom = idt.head_cy + idt.head_h + jaw
    shade["chin"] = a[17]
    shade["chin_crease"] = 0.25 + 0.5 * a[17]
    sketch.face("chin", *_ellipse(0.0, chin_bottom - 0.2 - 0.04 * a[17], 0.2, 0.11))
    sketch.face("chin_crease", *_arc((-0.18, outer_lo + 0.11 - 0.04 * a[17]),
                                     (0.0, outer_lo + 0.09 - 0.07 * a[17]),
                                     (0.18, outer_lo + 0.11 - 0.04 * a[17]), 7))

    # --- the 5 landmarks: eye centres, nose tip, mouth corners
    sketch.face("landmarks",
                [-idt.eye_x, idt.eye_x, 0.0, -corner_x, corner_x],
                np.array([idt.eye_y, idt.eye_y, idt.nose_y - 0.015 * a[9], corner_y, corner_y]),
                np.array([0.0, 0.0, 0.38, 0.06, 0.06]))
    points, parts = sketch.project(yaw, pitch)
    landmarks = points[parts.pop("landmarks")[0]]
    return FaceGeometry(points=points, parts=parts, shade=shade, landmarks=landmarks)


_LIP_X = np.linspace(-1, 1, 15)  # across the mouth, in corner half widths
_TEETH = np.abs(_LIP_X) < 0.8
_CUPID_BOW = 0.015 * (np.exp(-((np.abs(_LIP_X * 0.35) - 0.09) / 0.05) ** 2)
                      - 0.5 * np.exp(-(_LIP_X * 0.35 / 0.04) ** 2))


# Shaded parts are drawn in skin colour mixed by strength * shade towards a darker (or, for
# the cheeks, redder) colour; the parts not named here at full strength.
_SHADE_STRENGTH = {"cheeks": 0.3, "chin": 0.25}
VISIBLE_CONTRAST = 0.2  # a shaded part mixed this far from the skin colour counts as visible


def visible_parts(geometry: FaceGeometry) -> set[str]:
    """The parts ``draw_face`` draws visibly: every part with a colour of its own, and the
    shaded ones (creases, folds, flush) whose mix away from the skin is >= VISIBLE_CONTRAST."""
    return {name for name in geometry.parts
            if _SHADE_STRENGTH.get(name, 1.0) * geometry.shade.get(name, 1.0) >= VISIBLE_CONTRAST}


def au_displacements(identity: Identity, size: int = 64) -> np.ndarray:
    """(17,) how far each AU alone at intensity 1 moves the face, in pixels of a ``size`` x
    ``size`` aligned crop: the largest displacement of a point of a part visible both at rest
    and with the AU. Frontal face, fixed camera: both faces are mapped by the neutral face's
    alignment, so what moves is the AU's doing, not the alignment following the landmarks."""
    rest = face_geometry(identity, np.zeros(NUM_AUS))
    to_crop = alignment_matrix(rest.landmarks, size)[:, :2]  # (2,2); the shift cancels out
    displacements = np.zeros(NUM_AUS)
    for k in range(NUM_AUS):
        aus = np.zeros(NUM_AUS)
        aus[k] = 1.0
        moved = face_geometry(identity, aus)
        for name in visible_parts(rest) & visible_parts(moved):
            for before, after in zip(rest.parts[name], moved.parts[name], strict=True):
                if before.stop - before.start == after.stop - after.start:  # same curve, same points
                    shift = (moved.points[after] - rest.points[before]) @ to_crop.T  # (n,2) pixels
                    displacements[k] = max(displacements[k], np.hypot(*shift.T).max())
    return displacements


def _mix(colour, other, t: float) -> tuple[float, float, float]:
    return tuple(float(c + (o - c) * t) for c, o in zip(colour, other))


def draw_face(image: np.ndarray, geometry: FaceGeometry, identity: Identity,
              to_pixels: np.ndarray) -> np.ndarray:
    """Draw ``geometry`` onto ``image`` (H,W,3) uint8 in place; ``to_pixels`` (2,3) maps face
    units to pixels. Returns the 5 landmarks in pixels (5,2)."""
    scale = float(np.hypot(to_pixels[0, 0], to_pixels[1, 0]))  # pixels per face unit
    linear, offset = to_pixels[:, :2].T, to_pixels[:, 2]
    fixed = np.round((geometry.points @ linear + offset) * _ONE).astype(np.int32)  # (n,2)
    parts, shade = geometry.parts, geometry.shade
    skin, dark = identity.skin, _mix(identity.skin, (20, 10, 10), 0.7)
    line_px = max(1, round(0.02 * scale))

    def fill(name: str, colour) -> None:
        if name in parts:
            cv2.fillPoly(image, [fixed[s] for s in parts[name]], colour, cv2.LINE_AA, _SHIFT)

    def line(name: str, colour) -> None:
        if name in parts and shade.get(name, 1.0) > 0.04:
            cv2.polylines(image, [fixed[s] for s in parts[name]], False, colour, line_px,
                          cv2.LINE_AA, _SHIFT)

    def crease(name: str) -> None:
        line(name, _mix(skin, dark, shade[name]))

    fill("back_hair", identity.hair)
    fill("body", identity.clothes)
    fill("neck", _mix(skin, dark, 0.15))
    fill("ears", _mix(skin, dark, 0.08))
    fill("face", skin)
    fill("cheeks", _mix(skin, (235, 90, 90), _SHADE_STRENGTH["cheeks"] * shade["cheeks"]))
    fill("chin", _mix(skin, dark, _SHADE_STRENGTH["chin"] * shade["chin"]))
    fill("hair", identity.hair)
    fill("folds", _mix(skin, dark, shade["folds"]))
    for name in ("forehead", "furrow", "wrinkles", "crows_feet", "lower_crease", "chin_crease"):
        crease(name)
    line("crease", _mix(skin, dark, 0.35))
    line("bridge", _mix(skin, dark, 0.2))
    fill("brows", _mix(identity.hair, (15, 10, 10), 0.5))
    fill("sclera", (238, 236, 230))
    fill("iris", identity.iris)
    fill("pupils", (15, 12, 12))
    fill("lids", (45, 30, 28))
    line("lower_lids", _mix(skin, dark, 0.45))
    line("wings", _mix(skin, dark, 0.45))
    fill("nostrils", _mix(skin, (30, 15, 15), 0.75))
    fill("mouth", (70, 22, 28))
    fill("teeth", (236, 232, 218))
    lips = _mix(identity.lips, skin, shade["lip_pale"])
    fill("upper_lip", lips)
    fill("lower_lip", _mix(lips, (255, 255, 255), 0.08))
    line("lip_line", _mix(identity.lips, (30, 10, 10), 0.6))
    crease("lip_press")
    return geometry.landmarks @ linear + offset
