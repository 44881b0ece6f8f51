"""MMA (paper section 3.1): the residual units, the three heads, the affect vector, the configs."""

import numpy as np
import pytest
import torch
from torch import nn

from mmarnn_min.affect import AFFECT_DIM
from mmarnn_min.mma import (
    MMA,
    MMAConfig,
    ResidualUnit,
    images_to_tensor,
    predict_features,
)


def test_heads_have_their_shapes_and_ranges():
    torch.manual_seed(0)
    model = MMA(MMAConfig.tiny())
    va, expression, aus = model(4 * torch.rand(5, 3, 32, 32) - 2)    # out-of-range pixels: VA stays in [-1, 1]
    assert va.shape == (5, 2) and expression.shape == (5, 7) and aus.shape == (5, 17)
    assert (va.abs() <= 1).all()
    with pytest.raises(ValueError, match=r"\(N, 3, S, S\)"):
        model(torch.rand(5, 32, 32, 3))


@pytest.mark.parametrize("side", [8, 33, 64, 112])
def test_features_are_the_26_value_affect_vector(side):
    torch.manual_seed(0)
    model = MMA(MMAConfig.tiny()).eval()
    images = torch.rand(3, 3, side, side)
    z = model.features(images)
    va, expression, aus = model(images)
    assert z.shape == (3, AFFECT_DIM)
    torch.testing.assert_close(z[:, :2], va)
    torch.testing.assert_close(z[:, 2:9], expression.softmax(dim=1))
    torch.testing.assert_close(z[:, 2:9].sum(dim=1), torch.ones(3))
    torch.testing.assert_close(z[:, 9:], aus.sigmoid())


def test_residual_unit_is_relu_of_residual_plus_shortcut():
    torch.manual_seed(0)
    kept, changed = ResidualUnit(8, 8, stride=1), ResidualUnit(8, 16, stride=2)
    assert isinstance(kept.shortcut, nn.Identity)
    projection = changed.shortcut
    assert isinstance(projection[0], nn.Conv2d) and projection[0].kernel_size == (1, 1) and projection[0].stride == (2, 2)
    x = torch.randn(2, 8, 9, 9)
    for unit in (kept, changed):
        nn.init.normal_(unit.residual[-1][1].weight)                  # leave the zero initialisation
        unit.eval()
        expected = torch.relu(unit.residual(x) + unit.shortcut(x))
        torch.testing.assert_close(unit(x), expected)
    assert changed(x).shape == (2, 16, 5, 5)
    assert torch.equal(ResidualUnit(8, 8, 1).eval()(x.relu()), x.relu())  # a new unit is its shortcut


def test_configs_build_networks_of_growing_size():
    sizes = [sum(p.numel() for p in MMA(config).parameters())
             for config in (MMAConfig.tiny(), MMAConfig(), MMAConfig.paper())]
    assert sizes[0] < 10_000 < sizes[1] < 1_000_000 < sizes[2]
    paper = MMA(MMAConfig.paper())
    assert len(paper.units) == 8 and paper.embedding[0].in_features == 512        # ResNet-18's depth and width
    assert MMA(MMAConfig()).embedding[0].in_features == 128 * 4 * 4  # 128 channels on the 4 x 4 grid
    with pytest.raises(ValueError, match=">= 1"):
        MMAConfig(stages=0)


def test_images_to_tensor_and_batched_prediction_match_the_model():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    x = images_to_tensor(crops)
    assert x.shape == (10, 3, 16, 16) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x[3, 1, 4, 5], torch.tensor(crops[3, 4, 5, 1] / 255, dtype=torch.float32))
    torch.manual_seed(0)
    model = MMA(MMAConfig.tiny())
    calls = []
    z = predict_features(model, crops, batch_size=4, progress=lambda done, total: calls.append((done, total)))
    assert not model.training and calls == [(4, 10), (8, 10), (10, 10)]
    with torch.no_grad():
        np.testing.assert_allclose(z, model.features(x).numpy(), rtol=1e-5, atol=1e-6)
