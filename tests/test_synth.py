"""SynthAffect images: determinism, the Du-table label rules, the three sources, the renderer
and the cache."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min.affect import AUS, DU_TABLE, EXPRESSIONS, au_relation_matrix
from mmarnn_min.data import synth_cache
from mmarnn_min.data.synth import SOURCES, SynthConfig, make_images
from mmarnn_min.data.synth_face import (
    Identity,
    au_displacements,
    face_geometry,
    visible_parts,
)
from mmarnn_min.data.synth_labels import (
    annotate_aus,
    expression_probabilities,
    oracle_features,
    sample_image_affect,
)
from mmarnn_min.data.synth_make import make_image_arrays, render_image, sample_rng
from mmarnn_min.data.synth_render import Shot, render_crop
from mmarnn_min.data.synth_video import plan_video
from mmarnn_min.faces import align_template, alignment_matrix

TINY = SynthConfig(image_size=32, canvas_size=96, train_images_per_source=6, eval_images_per_source=3,
                   train_videos=3, eval_videos=2, min_frames=8, max_frames=16)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10 ** 6), index=st.integers(0, 10 ** 4),
       render=st.sampled_from(["canvas", "crop"]), source=st.sampled_from([0, 2]))
def test_an_image_is_a_function_of_the_seed(seed, index, render, source):
    config = replace(TINY, seed=seed, render=render)
    first = render_image(config, "train", source, index)
    again = render_image(config, "train", source, index)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    other = render_image(replace(config, seed=seed + 1), "train", source, index)
    assert not np.array_equal(first["images"], other["images"])


def test_images_do_not_depend_on_the_number_of_workers():
    one = make_image_arrays(TINY, "val", workers=1)
    two = make_image_arrays(replace(TINY, eval_images_per_source=70), "val", workers=2)  # 2 chunks
    for key in one:
        np.testing.assert_array_equal(one[key][:3], two[key][:3])  # source 0, images 0..2


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_labels_follow_the_du_table(expression):
    rng = np.random.default_rng(EXPRESSIONS.index(expression))
    samples = [sample_image_affect(rng, EXPRESSIONS.index(expression)) for _ in range(400)]
    aus = np.stack([s[0] for s in samples])  # (400,17)
    va = np.stack([s[1] for s in samples])
    labels = annotate_aus(rng, aus)
    prototypical, observational = DU_TABLE.get(expression, ((), ()))
    related = [AUS.index(au) for au in prototypical + observational]
    others = [k for k in range(len(AUS)) if k not in related]
    np.testing.assert_array_equal(  # the AUs it uses are the matrix R of docs/design.md, section 5
        np.sort(related), np.flatnonzero(au_relation_matrix()[EXPRESSIONS.index(expression)].numpy()))
    for au in prototypical:  # 0.7-1 of a strength uniform in [MIN_STRENGTH, 1]: present about half the time
        intensity, present = aus[:, AUS.index(au)], labels[:, AUS.index(au)]
        assert intensity.mean() > 0.45 and 0.4 < present.mean() < 0.75
        assert present[intensity > 0.8].mean() > 0.85 and present[intensity < 0.25].mean() < 0.15  # the annotator
    for au in observational:  # sometimes
        present = labels[:, AUS.index(au)].mean()
        assert 0.05 < present < 0.7
    assert aus[:, others].mean() < 0.1 and labels[:, others].mean() < 0.03  # faint noise
    if expression == "neutral":
        assert np.abs(va).mean() < 0.15
    assert (np.abs(va) <= 1).all()
    read = expression_probabilities(aus).argmax(1)   # weak expressions read as neutral, strong ones as themselves
    assert np.isin(read, [EXPRESSIONS.index(expression), 0]).mean() > 0.95
    strong = aus[:, [AUS.index(au) for au in prototypical]].mean(axis=1) > 0.5 if prototypical else slice(None)
    assert (read[strong] == EXPRESSIONS.index(expression)).mean() > 0.9


def test_oracle_features_are_probabilities():
    rng = np.random.default_rng(0)
    aus, va = rng.uniform(0, 1, (50, 17)), rng.uniform(-1, 1, (50, 2))
    z = oracle_features(aus, va)
    assert z.shape == (50, 26) and z.dtype == np.float32
    np.testing.assert_allclose(z[:, :2], va, rtol=1e-6)
    np.testing.assert_allclose(z[:, 2:9].sum(1), 1.0, rtol=1e-5)
    assert ((z[:, 9:] >= 0) & (z[:, 9:] <= 1)).all()
    rising = oracle_features(np.linspace(0, 1, 11)[:, None].repeat(17, 1), np.zeros((11, 2)))
    assert (np.diff(rising[:, 9:], axis=0) >= 0).all()  # AU probability grows with intensity


def test_sources_keep_only_their_labels(cache_dir):
    images = make_images(TINY, "train", workers=1, verbose=False)
    n = TINY.train_images_per_source
    assert len(images) == 3 * n and images.images.shape == (3 * n, 32, 32, 3)
    for source, name in enumerate(SOURCES):
        rows = images.source == source
        assert rows.sum() == n
        has_expression_va = name in ("expr_va", "all")
        has_aus = name in ("aus", "all")
        assert (images.expression[rows] >= 0).all() == has_expression_va
        assert (images.expression[rows] == -1).all() != has_expression_va
        assert np.isfinite(images.va[rows]).all() == has_expression_va
        assert np.isnan(images.va[rows]).all() != has_expression_va
        assert np.isfinite(images.aus[rows]).all() == has_aus
        if has_aus:
            assert set(np.unique(images.aus[rows])) <= {0.0, 1.0}
    assert np.isfinite(images.true_aus).all() and (images.true_expression >= 0).all()


def test_the_all_source_shows_frames_of_reaction_videos():
    """Like Aff-Wild2, the "all" source is frames of videos: each image is one frame of a
    reaction video planned from the image's own stream (its person is in no video set), about
    half of them from inside the reaction window, labelled with the frame's true VA and the
    oracle's most probable expression."""
    all_source, inside, count = SOURCES.index("all"), 0, 120
    for index in range(count):
        sample = render_image(TINY, "train", all_source, index)
        rng = sample_rng(TINY, "train", 2, index)
        plan = plan_video(rng, int(rng.integers(TINY.min_frames, TINY.max_frames + 1)), TINY.fps)
        frame = np.flatnonzero((plan.aus == sample["true_aus"]).all(axis=1))
        assert len(frame) >= 1, f"image {index} is no frame of its video"
        t = frame[0]
        np.testing.assert_array_equal(sample["true_va"], plan.va[t])
        assert sample["true_expression"] == expression_probabilities(plan.aus[t]).argmax()
        assert sample["images"].shape == (32, 32, 3) and set(np.unique(sample["au_labels"])) <= {0.0, 1.0}
        inside += plan.window[0] <= t < plan.window[1]
    assert 0.55 < inside / count < 0.9  # half drawn inside, and some of the other half lands there


def test_canvas_landmarks_land_near_the_template():
    """Through canvas + alignment, the true landmarks end near the template (not on it: the
    fit is least squares over 5 points that pose and AUs move)."""
    config = replace(TINY, image_size=64, canvas_size=160)
    for index in range(10):
        sample = render_image(config, "test", 0, index)
        assert np.abs(sample["landmarks"] - align_template(64)).max() < 8


def _plain_crop(aus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A frontal face without light, blur or noise, drawn into a 96 x 96 crop."""
    identity = Identity.sample(np.random.default_rng(3))
    shot = Shot(0.0, 0.0, 0.0, (0.0, 0.0), 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, (1.0, 1.0, 1.0))
    backdrop = np.full((96, 96, 3), 200, np.uint8)
    return render_crop(identity, aus, shot, backdrop, np.random.default_rng(0))


@pytest.mark.parametrize("au", AUS)
def test_every_au_changes_the_face(au):
    neutral, _ = _plain_crop(np.zeros(17))
    aus = np.zeros(17)
    aus[AUS.index(au)] = 1.0
    moved, _ = _plain_crop(aus)
    changed = np.abs(moved.astype(int) - neutral).max(axis=2) > 25
    assert changed.sum() >= 15, f"AU{au} changes only {changed.sum()} pixels"


def test_every_au_moves_the_typical_face_by_2_pixels_at_64():
    """Issue 18: at the default crop size each AU alone at full intensity moves a part that
    is visible at rest and with it by at least 2 pixels (frontal face, fixed camera)."""
    displacements = au_displacements(Identity.typical(), 64)
    too_small = {f"AU{au}": round(float(d), 2) for au, d in zip(AUS, displacements) if d < 2.0}
    assert not too_small, f"AUs that move the face by less than 2 pixels: {too_small}"


def test_au_displacements_scale_with_the_crop_and_match_the_jaw_drop():
    identity = Identity.sample(np.random.default_rng(5))
    small, large = au_displacements(identity, 64), au_displacements(identity, 128)
    np.testing.assert_allclose(large, 2 * small, rtol=1e-9)  # pixels scale with the crop
    # AU26 lowers the lower lip and the furrow under it by 0.3 face units, rigidly: the most
    # any visible point moves (the chin outline drops 0.25)
    rest = face_geometry(identity, np.zeros(17))
    pixels_per_unit = np.hypot(*alignment_matrix(rest.landmarks, 64)[:, 0])
    assert small[AUS.index(26)] == pytest.approx(0.3 * pixels_per_unit, rel=1e-6)


def test_only_visible_parts_count():
    aus = np.zeros(17)
    rest = visible_parts(face_geometry(Identity.typical(), aus))
    assert {"folds", "lower_crease", "chin_crease", "brows", "upper_lip"} <= rest  # seen at rest
    assert not {"forehead", "furrow", "crows_feet", "lip_press", "chin"} & rest     # drawn only by AUs
    aus[AUS.index(1)] = 1.0
    assert "forehead" in visible_parts(face_geometry(Identity.typical(), aus))


def test_mouth_corners_move_as_facs_says():
    identity = Identity.sample(np.random.default_rng(1))

    def corners(au: int) -> np.ndarray:
        aus = np.zeros(17)
        aus[AUS.index(au)] = 1.0
        return face_geometry(identity, aus).landmarks[3:]  # (2,2) left, right corner

    rest = face_geometry(identity, np.zeros(17)).landmarks[3:]
    assert (corners(12)[:, 1] < rest[:, 1] - 0.05).all()  # lip corner puller: up
    assert (corners(15)[:, 1] > rest[:, 1] + 0.05).all()  # lip corner depressor: down
    assert np.diff(corners(20)[:, 0]) > np.diff(rest[:, 0]) + 0.1  # lip stretcher: wider
    assert np.diff(corners(23)[:, 0]) < np.diff(rest[:, 0]) - 0.05  # lip tightener: narrower


def test_cache_loads_what_it_saved_and_keys_on_the_config(cache_dir, monkeypatch):
    first = make_images(TINY, "test", workers=1, verbose=False)
    entries = list((cache_dir / "synthaffect").iterdir())
    assert len(entries) == 1 and not any(".tmp-" in p.name for p in entries)

    def must_not_run(*args, **kwargs):
        raise AssertionError("regenerated instead of loading the cache")

    monkeypatch.setattr("mmarnn_min.data.synth.make_image_arrays", must_not_run)
    again = make_images(TINY, "test", workers=1, verbose=False)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.va, again.va)
    assert synth_cache.cache_key(TINY) != synth_cache.cache_key(replace(TINY, seed=1))
    assert synth_cache.cache_key(TINY) == synth_cache.cache_key(replace(TINY))


def test_a_broken_cache_entry_is_regenerated(cache_dir):
    make_images(TINY, "val", workers=1, verbose=False)
    entry = synth_cache.entry_dir("images-val", TINY)
    (entry / "images.npy").write_bytes(b"not an array")
    images = make_images(TINY, "val", workers=1, verbose=False)
    assert images.images.shape == (9, 32, 32, 3)
    assert synth_cache.load(entry) is not None


def test_cache_key_changes_with_the_generator_source(monkeypatch, tmp_path):
    fake = tmp_path / "mmarnn_min"
    (fake / "data").mkdir(parents=True)
    for name in ("data/synth_face.py", "faces.py", "affect.py"):
        (fake / name).write_text("# version 1\n")
    monkeypatch.setattr(synth_cache, "_PACKAGE", fake)
    before = synth_cache.cache_key(TINY)
    (fake / "data/synth_face.py").write_text("# version 2\n")
    assert synth_cache.cache_key(TINY) != before


def test_config_is_checked():
    with pytest.raises(ValueError, match="render"):
        SynthConfig(render="paint")
    with pytest.raises(ValueError, match="min_frames"):
        SynthConfig(min_frames=50, max_frames=20)
    with pytest.raises(ValueError, match="split"):
        TINY.num_videos("dev")
    assert SynthConfig.paper().max_frames == 480 and SynthConfig.paper().image_size == 112

