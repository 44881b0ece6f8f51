"""Face detection and 5-point alignment (mmarnn_min.faces): the laws and the common format."""

from __future__ import annotations

import importlib.util
import io
import sys
import typing
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min import video_faces
from mmarnn_min.detectors import (
    Downscaled,
    FaceDetection,
    GivenLandmarks,
    HaarDetector,
    MissingPackageError,
    MTCNNDetector,
    RetinaFaceDetector,
    crop_faces,
    detect_batch,
    load_retinaface_state_dict,
    primary_face,
)
from mmarnn_min.errors import UserError
from mmarnn_min.faces import (
    ALIGN_TEMPLATE_112,
    align_face,
    align_template,
    alignment_matrix,
    similarity_transform,
)
from mmarnn_min.video_faces import DETECT_SIDE, make_detector

# The 5 points of the face in matplotlib's grace_hopper.jpg (512 x 600), marked by hand once on
# 8x zooms of the photo: the eye centres at the pupils, the nose tip on the ball of the nose, the
# mouth corners where the lips meet ("left" = image left). Inter-ocular distance 82.1 px.
GRACE_HOPPER_POINTS = np.array([[224, 190], [306, 186], [267, 236], [228, 281], [307, 278]], np.float64)
GRACE_HOPPER_IOD = float(np.linalg.norm(GRACE_HOPPER_POINTS[1] - GRACE_HOPPER_POINTS[0]))


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@settings(max_examples=60, deadline=None)
@given(scale=st.floats(0.1, 10.0), angle=st.floats(-np.pi, np.pi),
       tx=st.floats(-500, 500), ty=st.floats(-500, 500),
       seed=st.integers(0, 2 ** 32 - 1))
def test_similarity_transform_recovers_a_known_transform(scale, angle, tx, ty, seed):
    points = np.random.default_rng(seed).uniform(-50, 50, (5, 2)) + ALIGN_TEMPLATE_112
    truth = _similarity(scale, angle, tx, ty)
    estimate = similarity_transform(points, _apply(truth, points))
    np.testing.assert_allclose(estimate, truth, rtol=1e-7, atol=1e-6 * max(1.0, abs(tx), abs(ty)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_similarity_transform_is_least_squares_and_never_reflects(seed):
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 100, (5, 2))
    dst = src * np.array([-1.0, 1.0]) + rng.normal(0, 2, (5, 2))  # a mirror image: no rotation fits well
    matrix = similarity_transform(src, dst)
    assert np.linalg.det(matrix[:, :2]) > 0  # a rotation times a positive scale
    def misfit(m: np.ndarray) -> float:
        return float(((_apply(m, src) - dst) ** 2).sum())

    a, b, tx, ty = matrix[0, 0], matrix[1, 0], matrix[0, 2], matrix[1, 2]
    for da, db, dx, dy in rng.normal(0, 1e-3, (20, 4)):  # no nearby similarity fits better
        nearby = np.array([[a + da, -(b + db), tx + dx], [b + db, a + da, ty + dy]])
        assert misfit(nearby) >= misfit(matrix) - 1e-9


def test_similarity_transform_rejects_bad_points():
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="finite"):
        similarity_transform(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="point sets"):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))


@pytest.mark.parametrize("size", [48, 64, 112, 128])
def test_align_face_puts_the_landmarks_on_the_template(size):
    """Bright dots at the landmarks of a rotated, scaled face land on the template."""
    landmarks = _apply(_similarity(1.7, 0.4, 90.0, 40.0), ALIGN_TEMPLATE_112)
    image = np.zeros((300, 320, 3), np.uint8)
    for x, y in landmarks:
        image[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3] = 255
    crop = align_face(image, landmarks, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(align_template(size), ALIGN_TEMPLATE_112 * size / 112)
    for x, y in align_template(size):
        near = crop[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3]
        assert near.max() > 150
    np.testing.assert_allclose(_apply(alignment_matrix(landmarks, size), landmarks),
                               align_template(size), atol=1e-6)


def test_a_face_at_the_border_is_padded_with_zeros():
    landmarks = ALIGN_TEMPLATE_112 - np.array([60.0, 60.0])  # the face hangs off the top left
    crop = align_face(np.full((200, 200, 3), 200, np.uint8), landmarks, 112)
    assert (crop[:40, :40] == 0).all()  # outside the image: black
    assert (crop[-20:, -20:] == 200).all()  # inside: the image


def _check_format(detections: list[FaceDetection]) -> None:
    assert isinstance(detections, list)
    for face in detections:
        assert isinstance(face, FaceDetection)
        assert face.box.shape == (4,) and face.box[2] >= face.box[0] and face.box[3] >= face.box[1]
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
        assert isinstance(face.score, float)
    scores = [(d.score, d.area) for d in detections]
    assert scores == sorted(scores, reverse=True)


def test_given_landmarks_common_format_several_faces_and_no_face():
    image = np.zeros((120, 160, 3), np.uint8)
    small = ALIGN_TEMPLATE_112 * 0.5
    large = ALIGN_TEMPLATE_112 * 0.9 + 10
    detections = GivenLandmarks(np.stack([small, large])).detect(image)
    _check_format(detections)
    assert len(detections) == 2
    np.testing.assert_allclose(detections[0].landmarks, large, rtol=1e-6)  # equal scores: largest first
    scored = GivenLandmarks(np.stack([small, large]), scores=[0.9, 0.2]).detect(image)
    np.testing.assert_allclose(scored[0].landmarks, small, rtol=1e-6)  # highest score first
    assert GivenLandmarks(np.full((5, 2), np.nan)).detect(image) == []
    assert primary_face(GivenLandmarks(np.full((5, 2), np.nan)), image) is None
    with pytest.raises(ValueError, match="RGB uint8"):
        GivenLandmarks(small).detect(np.zeros((10, 10), np.float32))


def test_crop_faces_marks_frames_without_a_face():
    frames = np.full((2, 120, 120, 3), 90, np.uint8)
    crops, found = crop_faces(frames, GivenLandmarks(np.full((5, 2), np.nan)), size=32)
    assert crops.shape == (2, 32, 32, 3) and not found.any() and not crops.any()
    crops, found = crop_faces(frames, GivenLandmarks(ALIGN_TEMPLATE_112), size=32)
    assert found.all() and (crops == 90).all()


def _synthetic_frontal_face():
    from mmarnn_min.data.synth_face import Identity
    from mmarnn_min.data.synth_render import Shot, render_canvas

    rng = np.random.default_rng(0)
    shot = Shot(0.0, 0.0, 0.0, (100.0, 90.0), 50.0, 0.0, 2.0, 0.0, 0.0, 1.0, (1.0, 1.0, 1.0))
    backdrop = np.full((200, 200, 3), 128, np.uint8)
    return render_canvas(Identity.sample(rng), np.zeros(17), shot, backdrop, rng)


def test_haar_detector_finds_a_frontal_face_and_estimates_its_points():
    canvas, truth = _synthetic_frontal_face()
    detector = HaarDetector()
    detections = detector.detect(canvas)
    _check_format(detections)
    assert len(detections) >= 1
    face = detections[0]
    x1, y1, x2, y2 = face.box
    assert x1 < truth[2, 0] < x2 and y1 < truth[2, 1] < y2  # the nose tip is in the box
    iod = np.linalg.norm(truth[1] - truth[0])
    assert np.abs(face.landmarks - truth).max() < 0.3 * iod  # approximate, as documented
    assert detector.detect(np.full((120, 160, 3), 127, np.uint8)) == []  # no face


def test_retinaface_explains_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "retinaface", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "retinaface.network", None)
    with pytest.raises(ImportError, match="--no-deps retinaface-pytorch"):
        RetinaFaceDetector(random_weights=True)


def test_missing_retinaface_weights_name_the_file(tmp_path):
    missing = tmp_path / "retinaface_resnet50.pth"
    with pytest.raises(FileNotFoundError, match="retinaface_resnet50.pth"):
        load_retinaface_state_dict(missing)


def test_retinaface_weights_load_from_a_one_file_zip(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"layer.weight": torch.arange(6.0).reshape(2, 3)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    archive = tmp_path / "weights.zip"
    with zipfile.ZipFile(archive, "w") as file:
        file.writestr("weights.pth", buffer.getvalue())
    assert torch.equal(load_retinaface_state_dict(archive)["layer.weight"], state["layer.weight"])
    plain = tmp_path / "weights.pth"
    torch.save(state, plain)
    assert torch.equal(load_retinaface_state_dict(plain)["layer.weight"], state["layer.weight"])


def test_retinaface_runs_end_to_end_with_random_weights(tmp_path):
    pytest.importorskip("retinaface.network", reason="retinaface-pytorch is not installed")
    pytest.importorskip("torchvision")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    detector = RetinaFaceDetector(random_weights=True, max_size=96, confidence_threshold=0.0,
                                  nms_threshold=0.3)
    image = np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    detections = detector.detect(image)
    _check_format(detections)
    assert len(detections) > 0  # threshold 0: random weights still score every prior box
    weights = tmp_path / "random.pth"
    torch.save(detector.model.state_dict(), weights)
    reloaded = RetinaFaceDetector(weights=weights, max_size=96, confidence_threshold=0.0,
                                  nms_threshold=0.3)
    again = reloaded.detect(image)
    assert len(again) == len(detections)
    np.testing.assert_allclose(again[0].box, detections[0].box, rtol=1e-4, atol=1e-3)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        RetinaFaceDetector(weights=tmp_path / "nowhere.pth")


@pytest.fixture(scope="module")
def grace_hopper() -> np.ndarray:
    """matplotlib's sample portrait, (600,512,3) uint8 RGB."""
    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    pytest.importorskip("facenet_pytorch", reason="facenet-pytorch is not installed")
    return MTCNNDetector()


def errors_in_iod(landmarks: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(5,) distance of each point from the truth, in inter-ocular distances of the truth."""
    return np.linalg.norm(landmarks - truth, axis=1) / np.linalg.norm(truth[1] - truth[0])


def tilted(image: np.ndarray, points: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` rotated by ``degrees`` about the face's centre (borders mirrored), and ``points``
    moved with it."""
    import cv2

    matrix = cv2.getRotationMatrix2D(tuple(points.mean(axis=0)), degrees, 1.0)
    image = cv2.warpAffine(image, matrix, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    return image, points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("side", [0, DETECT_SIDE], ids=["full resolution", "shrunk as predict does"])
def test_mtcnn_finds_the_hand_marked_points_of_a_real_face(mtcnn, grace_hopper, side):
    detector = Downscaled(mtcnn, side) if side else mtcnn
    detections = detector.detect(grace_hopper)
    _check_format(detections)
    assert len(detections) == 1 and detections[0].score > 0.99
    assert errors_in_iod(detections[0].landmarks, GRACE_HOPPER_POINTS).max() < 0.1


@pytest.mark.parametrize("degrees", [-10.0, 10.0])
def test_haar_guesses_the_points_of_a_tilted_head_further_off_than_mtcnn_finds_them(mtcnn, grace_hopper, degrees):
    """Haar's points are fixed places in an upright box: on the upright portrait they land
    within 0.1 inter-ocular distances (its proportions fit this face), but when the head tilts
    they stay put while MTCNN's follow the eyes and mouth."""
    upright = HaarDetector().detect(grace_hopper)[0].landmarks
    assert errors_in_iod(upright, GRACE_HOPPER_POINTS).max() < 0.1
    photo, truth = tilted(grace_hopper, GRACE_HOPPER_POINTS, degrees)
    mtcnn_error = errors_in_iod(mtcnn.detect(photo)[0].landmarks, truth).max()
    haar_error = errors_in_iod(HaarDetector().detect(photo)[0].landmarks, truth).max()
    assert mtcnn_error < 0.1 and haar_error > 0.15 and haar_error > 2 * mtcnn_error


def test_mtcnn_batches_find_what_single_images_find(mtcnn, grace_hopper):
    frames = [grace_hopper, tilted(grace_hopper, GRACE_HOPPER_POINTS, 8.0)[0], np.full_like(grace_hopper, 90)]
    batched = mtcnn.detect_batch(frames)
    assert [len(faces) for faces in batched] == [1, 1, 0]  # a plain grey frame has no face
    for faces, frame in zip(batched, frames):
        single = mtcnn.detect(frame)
        assert len(single) == len(faces)
        for one, other in zip(faces, single):
            np.testing.assert_allclose(one.landmarks, other.landmarks, atol=0.01)
            np.testing.assert_allclose(one.box, other.box, atol=0.01)


def test_mtcnn_without_its_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # as if not installed
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps facenet-pytorch==2\.6\.0") as error:
        MTCNNDetector()
    assert isinstance(error.value, UserError) and '.[mtcnn]' in str(error.value)


def test_auto_takes_mtcnn_when_installed_and_haar_otherwise(monkeypatch, tmp_path):
    monkeypatch.setattr(video_faces, "retinaface_available", lambda weights=None: False)
    video = tmp_path / "clip.mp4"  # auto looks beside it for landmarks, not into it
    if importlib.util.find_spec("facenet_pytorch") is not None:
        chosen = make_detector("auto", video)
        assert chosen.name == "mtcnn" and "no landmarks file" in chosen.reason
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    chosen = make_detector("auto", video)
    assert chosen.name == "haar" and "facenet-pytorch not installed" in chosen.reason
    with pytest.raises(MissingPackageError):
        make_detector("mtcnn", video)


class BrightestSpot:
    """A test detector: the intensity-weighted centre of the red channel, as all 5 points."""

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        weights = image[..., 0].astype(np.float64)
        ys, xs = np.indices(weights.shape)
        centre = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
        return [FaceDetection(np.concatenate([centre - 1, centre + 1]).astype(np.float32), 1.0,
                              np.tile(centre, (5, 1)).astype(np.float32))]


@settings(max_examples=40, deadline=None)
@given(height=st.integers(40, 300), width=st.integers(40, 300), side=st.integers(16, 320),
       x=st.floats(0.3, 0.7), y=st.floats(0.3, 0.7))
def test_downscaled_maps_what_it_finds_back_to_the_image(height, width, side, x, y):
    """A blob's centre found on the shrunk copy lands on the centre found at full size, to a
    small fraction of a shrunk pixel (pixel centres map as (x + 0.5) * factor - 0.5)."""
    ys, xs = np.indices((height, width))
    sigma = max(height, width) / 20
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.round(255 * np.exp(-((xs - x * width) ** 2 + (ys - y * height) ** 2) / (2 * sigma ** 2)))
    full = BrightestSpot().detect(image)[0]
    shrunk = Downscaled(BrightestSpot(), side).detect(image)[0]
    factor = max(1.0, max(height, width) / side)
    assert np.abs(shrunk.landmarks - full.landmarks).max() < 0.05 * factor
    assert np.abs(shrunk.box - full.box).max() < 0.05 * factor + 2 * (factor - 1) + 1e-4  # the +-1 box scales too
    if side >= max(height, width):  # small enough already: passed as it is
        np.testing.assert_array_equal(shrunk.landmarks, full.landmarks)


def same_detections(ones: list[FaceDetection], others: list[FaceDetection]) -> bool:
    return len(ones) == len(others) and all(
        np.array_equal(a.box, b.box) and a.score == b.score and np.array_equal(a.landmarks, b.landmarks)
        for a, b in zip(ones, others))


def test_a_detector_without_a_batch_method_takes_one_image_after_the_other():
    canvas, _ = _synthetic_frontal_face()
    frames = [np.roll(canvas, shift, axis=1) for shift in (-9, 0, 9)] + [np.full_like(canvas, 127)]
    haar = HaarDetector()
    batched = detect_batch(haar, frames)
    assert all(same_detections(faces, haar.detect(frame)) for faces, frame in zip(batched, frames))
    assert batched[-1] == [] and all(batched[:-1])


def test_train_and_predict_offer_the_same_detectors():
    from mmarnn_min.config import PipelineConfig

    assert typing.get_args(typing.get_type_hints(PipelineConfig)["detector"]) == video_faces.DETECTORS
    assert "mtcnn" in video_faces.DETECTORS
