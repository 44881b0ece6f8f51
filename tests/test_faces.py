"""Face detection and 5-point alignment (mmarnn_min.faces): the laws and the common format."""

from __future__ import annotations

import io
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min.detectors import (
    FaceDetection,
    GivenLandmarks,
    HaarDetector,
    RetinaFaceDetector,
    crop_faces,
    load_retinaface_state_dict,
    primary_face,
)
from mmarnn_min.faces import (
    ALIGN_TEMPLATE_112,
    align_face,
    align_template,
    alignment_matrix,
    similarity_transform,
)


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
