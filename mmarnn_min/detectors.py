"""Face detectors: a frame -> its faces, each a box, a score and RetinaFace's 5 landmarks
(left eye, right eye, nose tip, left and right mouth corner; "left" = image left), which
``mmarnn_min.faces.align_face`` turns into an aligned crop.

All share one interface, ``detect(rgb_uint8 (H,W,3)) -> list[FaceDetection]``:
    GivenLandmarks     the landmarks come with the data (SynthAffect, Aff-Wild2 crops)
    HaarDetector       OpenCV's Haar cascade: works offline on real photos; its 5 points are
                       *estimated from the box* with fixed proportions, so they are
                       approximate (no eye or mouth is located, and they do not follow a
                       tilted head)
    MTCNNDetector      MTCNN (Zhang et al. 2016: the P-, R- and O-Net cascade) from the
                       ``facenet-pytorch`` package, whose wheel ships the weights: a real
                       5-point detector that works offline
    RetinaFaceDetector RetinaFace (ResNet-50) from the ``retinaface-pytorch`` package, weights
                       from a local file or the torch hub cache; never downloaded here

``detect_batch(detector, images)`` finds the faces of many frames at once (MTCNN runs its
networks on the whole batch; the others take one frame after the other); ``Downscaled`` runs
any detector on a smaller copy of the frame, which is where most of the time of a detector
goes (its cost grows with the number of pixels) and loses little: a face big enough to align
is big enough to find at a few hundred pixels.

Policies, the same for every detector:
- no face: ``detect`` returns ``[]``; ``crop_faces`` then returns a zero crop and marks the
  frame as not found, and the pipeline treats it as a missing frame;
- several faces: the list is sorted by score, then by box area, largest first; the pipeline
  uses the first one (``primary_face``);
- a face at the border: boxes and landmarks are kept as found, even partly outside the image;
  the crop pads whatever falls outside the image with zeros (black).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np

from mmarnn_min.errors import UserError
from mmarnn_min.faces import ALIGN_TEMPLATE_112, align_face, similarity_transform


class MissingPackageError(UserError, ImportError):
    """A detector whose package is not installed here; the message says how to install it."""


class MissingWeightsError(UserError, FileNotFoundError):
    """A detector's weights file that is not where it was looked for."""

@dataclass(frozen=True)
class FaceDetection:
    """One face: ``box`` (4,) x1, y1, x2, y2 and ``landmarks`` (5,2) in image pixels (they may
    lie partly outside the image), and a ``score`` (higher is more confident)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))


class Detector(Protocol):
    """Anything with ``detect(rgb (H,W,3) uint8) -> list[FaceDetection]``, sorted best first."""

    def detect(self, image: np.ndarray) -> list[FaceDetection]: ...


def sort_detections(detections: Sequence[FaceDetection]) -> list[FaceDetection]:
    """Best first: highest score, then largest box."""
    return sorted(detections, key=lambda d: (d.score, d.area), reverse=True)


def detect_batch(detector: Detector, images: Sequence[np.ndarray]) -> list[list[FaceDetection]]:
    """The faces of each of ``images`` (each (H,W,3) uint8 RGB): the detector's own
    ``detect_batch`` when it has one, else ``detect`` one image at a time."""
    batched = getattr(detector, "detect_batch", None)
    return batched(images) if batched is not None else [detector.detect(image) for image in images]


def primary_face(detector: Detector, image: np.ndarray) -> FaceDetection | None:
    """The face the pipeline uses in ``image``: the detector's first, or None if there is none."""
    detections = detector.detect(image)
    return detections[0] if detections else None


def crop_faces(
    frames: np.ndarray | Sequence[np.ndarray], detector: Detector, size: int = 112,
) -> tuple[np.ndarray, np.ndarray]:
    """Detect and align the primary face of every frame.
    frames (N,H,W,3) uint8 -> crops (N,size,size,3) uint8 (zeros where no face), found (N,) bool."""
    crops = np.zeros((len(frames), size, size, 3), dtype=np.uint8)
    found = np.zeros(len(frames), dtype=bool)
    for i, frame in enumerate(frames):
        face = primary_face(detector, frame)
        if face is not None:
            crops[i] = align_face(frame, face.landmarks, size)
            found[i] = True
    return crops, found



def _box_around(landmarks5: np.ndarray) -> np.ndarray:
    """A face box (4,) estimated from 5 landmarks: the template's crop window mapped back,
    i.e. the region the aligned crop covers (in image pixels)."""
    inverse = cv2.invertAffineTransform(similarity_transform(landmarks5, ALIGN_TEMPLATE_112))
    corners = np.array([[0, 0], [112, 0], [0, 112], [112, 112]], dtype=np.float64)
    mapped = corners @ inverse[:, :2].T + inverse[:, 2]
    return np.concatenate([mapped.min(axis=0), mapped.max(axis=0)])


class GivenLandmarks:
    """A detector whose faces come with the data: ``landmarks`` (5,2) for one face or (K,5,2)
    for K faces, in image pixels, with optional ``scores`` (K,) (default 1). Boxes are the
    regions the aligned crops cover. Landmarks holding a NaN mean "no face here"."""

    def __init__(self, landmarks: np.ndarray, scores: Sequence[float] | None = None) -> None:
        points = np.asarray(landmarks, dtype=np.float64)
        if points.ndim == 2:
            points = points[None]
        if points.ndim != 3 or points.shape[1:] != (5, 2):
            raise ValueError(f"landmarks must be (5,2) or (K,5,2), got {np.shape(landmarks)}")
        self.landmarks = points  # (K,5,2)
        self.scores = np.ones(len(points)) if scores is None else np.asarray(scores, np.float64)
        if self.scores.shape != (len(points),):
            raise ValueError(f"need one score per face: {len(points)} faces, scores {self.scores.shape}")

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        _check_image(image)
        return sort_detections([
            FaceDetection(_box_around(points), float(score), points.astype(np.float32))
            for points, score in zip(self.landmarks, self.scores)
            if np.isfinite(points).all()
        ])


# Where the 5 points sit inside a Haar face box, as fractions of its width and height.
# Estimated for frontal faces (OpenCV's default cascade covers about brows to chin); no eye
# or mouth is located, so these points are approximate and the alignment is only as good.
HAAR_LANDMARKS_IN_BOX = np.array(
    [[0.31, 0.38], [0.69, 0.38], [0.50, 0.58], [0.35, 0.78], [0.65, 0.78]], dtype=np.float64,
)


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (shipped with opencv-python 4.x; 5.x dropped it).
    Scores are the cascade's level weights; landmarks are estimated from the box. OpenCV
    spreads one image's scan over its threads (``cv2.setNumThreads``)."""

    def __init__(
        self, min_size: int = 24, scale_factor: float = 1.1, min_neighbors: int = 5,
        cascade: str = "haarcascade_frontalface_default.xml",
    ) -> None:
        if not hasattr(cv2, "CascadeClassifier"):
            raise MissingPackageError("this OpenCV has no CascadeClassifier: install opencv-python>=4.8,<5")
        path = Path(cv2.data.haarcascades) / cascade
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise MissingPackageError(f"cannot load the Haar cascade {path}: reinstall opencv-python>=4.8,<5")
        self.min_size = min_size
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        _check_image(image)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes, _, weights = self.classifier.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True,
        )
        detections = []
        for (x, y, w, h), weight in zip(np.reshape(boxes, (-1, 4)), np.ravel(weights)):
            landmarks = np.array([x, y]) + HAAR_LANDMARKS_IN_BOX * np.array([w, h])  # (5,2)
            box = np.array([x, y, x + w, y + h], dtype=np.float32)
            detections.append(FaceDetection(box, float(weight), landmarks.astype(np.float32)))
        return sort_detections(detections)


MTCNN_INSTALL = (
    "MTCNN needs the facenet-pytorch package (its wheel holds the weights), whose requirements pin "
    "torch 2.2: install it with `pip install -e \".[mtcnn]\" && pip install --no-deps facenet-pytorch==2.6.0`"
)


class MTCNNDetector:
    """MTCNN from ``facenet-pytorch``, with the P-, R- and O-Net weights its wheel ships: a
    pyramid of the image through P-Net proposes boxes, R-Net refines them at 24 x 24, O-Net at
    48 x 48 scores them and places the 5 landmarks (Zhang et al. 2016). Its landmarks come in
    RetinaFace's order (left eye, right eye, nose, left and right mouth corner; image left).

    ``device``: where the networks run (a GPU when there is one). ``min_face_size`` (pixels),
    ``thresholds`` (one per network) and ``factor`` (the pyramid's step) are MTCNN's own.
    ``detect_batch`` runs frames of one size through the networks together.
    """

    def __init__(
        self, device: str = "cpu", min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709,
    ) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as error:
            raise MissingPackageError(f"{MTCNN_INSTALL} ({error})") from error
        self.model = MTCNN(min_face_size=min_face_size, thresholds=list(thresholds), factor=factor,
                           keep_all=True, select_largest=False, device=device).eval()

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection]]:
        for image in images:
            _check_image(image)
        if len(images) == 0:
            return []
        if len({image.shape for image in images}) > 1:  # the networks take one size per batch
            return [self.detect(image) for image in images]
        boxes, scores, points = self.model.detect(np.stack(images), landmarks=True)  # per image: (K,4), (K,), (K,5,2)
        return [
            [] if image_boxes is None else sort_detections([
                FaceDetection(np.asarray(box, np.float32), float(score), np.asarray(landmarks, np.float32))
                for box, score, landmarks in zip(image_boxes, image_scores, image_points)
            ])
            for image_boxes, image_scores, image_points in zip(boxes, scores, points)
        ]


RETINAFACE_WEIGHTS = "retinaface_resnet50_2020-07-20-f168fae3c.zip"
RETINAFACE_INSTALL = (
    "RetinaFace needs the retinaface-pytorch package, whose requirements pin torch 1.9: "
    "install it with `pip install torchvision` and then "
    "`pip install --no-deps retinaface-pytorch==0.0.8` (albumentations is not needed)"
)


def default_retinaface_weights() -> Path:
    """Where ``retinaface.pre_trained_models.get_model`` caches its weights:
    ``$TORCH_HOME/hub/checkpoints/retinaface_resnet50_2020-07-20-f168fae3c.zip``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / RETINAFACE_WEIGHTS


def load_retinaface_state_dict(path: str | Path) -> dict:
    """Read RetinaFace weights from ``path``: a torch checkpoint (.pth/.pt), or the one-file
    zip archive the package distributes (and the hub cache keeps). Never downloads."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(
            f"RetinaFace weights not found: {path}. Put the file "
            f"{RETINAFACE_WEIGHTS} (from the retinaface-pytorch release) there, or pass "
            "weights=PATH, or use HaarDetector / landmarks given by the data"
        )
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) == 1:  # a plain zip around one checkpoint (torch.hub's "legacy zip")
                return torch.load(io.BytesIO(archive.read(members[0])), map_location="cpu",
                                  weights_only=True)
    return torch.load(path, map_location="cpu", weights_only=True)


class RetinaFaceDetector:
    """RetinaFace (ResNet-50 backbone) from ``retinaface-pytorch``, run like its
    ``predict_jsons``: resize so the longer side is ``max_size``, ImageNet normalisation,
    decode boxes and landmarks against the prior boxes, score threshold, NMS.

    ``weights``: a local file; None means the torch hub cache (``default_retinaface_weights``).
    ``random_weights=True`` skips loading (for tests: the output format, not faces).
    """

    MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
    STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0
    VARIANCE = (0.1, 0.2)

    def __init__(
        self, weights: str | Path | None = None, max_size: int = 960, device: str = "cpu",
        confidence_threshold: float = 0.7, nms_threshold: float = 0.4,
        random_weights: bool = False,
    ) -> None:
        try:
            import torch
            from retinaface.network import RetinaFace
        except ImportError as error:
            raise MissingPackageError(f"{RETINAFACE_INSTALL} ({error})") from error
        with warnings.catch_warnings():  # torchvision's notice about the `pretrained` argument
            warnings.simplefilter("ignore", UserWarning)
            model = RetinaFace(
                name="Resnet50", pretrained=False, in_channels=256, out_channels=256,
                return_layers={"layer2": 1, "layer3": 2, "layer4": 3},
            )
        if not random_weights:
            model.load_state_dict(
                load_retinaface_state_dict(default_retinaface_weights() if weights is None else weights)
            )
        self.model = model.to(device).eval()
        self.torch = torch
        self.device = device
        self.max_size = max_size
        self.confidence_threshold = confidence_threshold
        self.nms_threshold = nms_threshold

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        from retinaface.box_utils import decode, decode_landm
        from retinaface.prior_box import priorbox
        from torchvision.ops import nms

        torch = self.torch
        _check_image(image)
        height, width = image.shape[:2]
        scale = self.max_size / max(height, width)
        resized = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                             interpolation=cv2.INTER_LINEAR)  # (h,w,3)
        h, w = resized.shape[:2]
        normalised = (resized.astype(np.float32) - self.MEAN) / self.STD
        batch = torch.from_numpy(normalised.transpose(2, 0, 1).copy())[None].to(self.device)  # (1,3,h,w)
        priors = priorbox(min_sizes=[[16, 32], [64, 128], [256, 512]], steps=[8, 16, 32],
                          clip=False, image_size=(h, w)).to(self.device)  # (P,4)
        with torch.no_grad():
            loc, conf, land = self.model(batch)  # (1,P,4), (1,P,2), (1,P,10)
        scores = torch.softmax(conf[0], dim=-1)[:, 1]  # (P,)
        to_pixels = torch.tensor([w, h], dtype=torch.float32, device=self.device) / scale
        boxes = decode(loc[0], priors, self.VARIANCE) * to_pixels.repeat(2)  # (P,4)
        points = decode_landm(land[0], priors, self.VARIANCE) * to_pixels.repeat(5)  # (P,10)
        keep = torch.where(scores > self.confidence_threshold)[0]
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        keep = nms(boxes, scores, self.nms_threshold)
        return sort_detections([
            FaceDetection(box.astype(np.float32), float(score), pts.reshape(5, 2).astype(np.float32))
            for box, score, pts in zip(boxes[keep].cpu().numpy(), scores[keep].cpu().numpy(),
                                       points[keep].cpu().numpy())
        ])


class Downscaled:
    """``detector`` run on a copy of the image shrunk (pixel area averaging) so that its longer
    side is at most ``max_side`` pixels; its boxes and landmarks are mapped back to the image.
    An image already that small is passed as it is. Faces smaller than the detector's smallest
    face at the reduced size (24 px for Haar, 20 px for MTCNN) are then missed."""

    def __init__(self, detector: Detector, max_side: int) -> None:
        if max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {max_side}")
        self.detector = detector
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection]]:
        small, factors = [], []
        for image in images:
            _check_image(image)
            height, width = image.shape[:2]
            scale = self.max_side / max(height, width)
            factor = None
            if scale < 1:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)      # (h,w,3)
                factor = np.array([width / size[0], height / size[1]])          # (x, y) small -> image
            small.append(image)
            factors.append(factor)
        return [faces if factor is None else [_scaled(face, factor) for face in faces]
                for faces, factor in zip(detect_batch(self.detector, small), factors)]


def _scaled(face: FaceDetection, factor: np.ndarray) -> FaceDetection:
    """``face`` found in a resized image, mapped back: a pixel centre x of the small image is
    (x + 0.5) * factor - 0.5 in the original."""
    def back(points: np.ndarray) -> np.ndarray:                     # (..., 2) small -> original
        return ((points + 0.5) * factor - 0.5).astype(np.float32)

    return FaceDetection(back(face.box.reshape(2, 2)).reshape(4), face.score, back(face.landmarks))


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        raise ValueError(
            f"expected an RGB uint8 image (H,W,3), got "
            f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}"
        )
