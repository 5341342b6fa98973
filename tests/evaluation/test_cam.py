"""Class activation maps: exact (the prediction is the map's mean plus a location-free term),
they light up what a toy model provably uses, and explain draws them (and Grad-CAM) on the
radiograph at its own aspect ratio."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from boneage.config import Recipe
from boneage.evaluation.gradcam import cam_decomposition, class_activation_map, explain_image
from boneage.models.head import BoneAgeModel, SexFusionHead
from boneage.inference.torch_predictor import TorchPredictor


class MaskedBackbone(nn.Module):
    """Features = the input where ``mask`` is 1 (twice: two channels), average-pooled by ``down``."""

    def __init__(self, mask: torch.Tensor, down: int):
        super().__init__()
        self.register_buffer("mask", mask)
        self.pool = nn.AvgPool2d(down)
        self.num_features = 2

    def forward(self, x):
        masked = self.pool(x * self.mask)
        return torch.cat([masked, 0.5 * masked], dim=1)


def toy_model(mask, down=4, weight=1.0, sex_units=4, hidden=()) -> BoneAgeModel:
    """Its output depends on the image only through the pixels under ``mask``."""
    torch.manual_seed(0)
    head = SexFusionHead(2, sex_units=sex_units, hidden=hidden)
    if not hidden:
        with torch.no_grad():
            head.out.weight[0, :2] = torch.tensor([weight, weight])
    return BoneAgeModel(MaskedBackbone(mask, down), 2, head)


def quadrant(size: int) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size)
    m[..., : size // 2, : size // 2] = 1.0
    return m


NOISE = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) + 0.1


@pytest.mark.parametrize("hidden", [(), (6,)], ids=["linear head", "extra ReLU layer"])
def test_cam_is_exact_and_lies_where_the_model_looks(hidden):
    model = toy_model(quadrant(32), hidden=hidden)
    sex = torch.tensor([1.0, 0.0, 1.0])
    d = cam_decomposition(model, NOISE, sex)
    assert d.maps.shape == (3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(d.prediction, model.eval()(NOISE, sex))
    # Exact: mean of the map + the part no location carries = the prediction.
    torch.testing.assert_close(d.maps.mean(dim=(1, 2)) + d.offset, d.prediction, rtol=1e-5, atol=1e-6)
    # Cells outside the quadrant the model reads contribute exactly nothing.
    assert d.maps[:, 4:, :].abs().max() == 0 and d.maps[:, :, 4:].abs().max() == 0
    assert d.maps[:, :4, :4].abs().min() > 0
    # The sex branch moves the offset only, never the map.
    other = cam_decomposition(model, NOISE, 1 - sex)
    torch.testing.assert_close(other.maps, d.maps)
    assert all(p.grad is None for p in model.parameters())


def test_cam_of_a_linear_head_uses_the_output_weights():
    model = toy_model(torch.ones(1, 1, 32, 32), down=1, sex_units=0, weight=2.0)
    d = cam_decomposition(model, NOISE, None)
    # map = w . F = 2 x + 2 (0.5 x) = 3 x: the weights that map pooled features to the output
    torch.testing.assert_close(d.maps, 3.0 * NOISE[:, 0])


def test_cam_is_signed_and_normalised_for_display():
    x = NOISE[:1]
    lowering = class_activation_map(toy_model(quadrant(32), weight=-1.0), x, "F")
    assert lowering.shape == (32, 32) and lowering.min() == 0.0 and lowering.max() == pytest.approx(1.0)
    # Brightness in the quadrant lowers the age: there the map is darkest; Grad-CAM shows nothing.
    assert lowering[:16, :16].mean() < 0.5 < lowering[20:, 20:].min()
    raising = class_activation_map(toy_model(quadrant(32)), x, "F")
    assert raising[:16, :16].sum() / raising.sum() > 0.9
    with pytest.raises(ValueError, match="one image"):
        class_activation_map(toy_model(quadrant(32)), NOISE, "F")


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_explain_draws_each_method_on_the_radiograph_at_its_aspect_ratio(method):
    # A wide radiograph fitted (padded) into the model's 48 x 48 input; the model reads only
    # the right half of its input, i.e. the right half of the radiograph. Noise everywhere:
    # only the model's dependence can localise anything.
    image = (np.random.default_rng(1).random((60, 150)) * 0.8 + 0.1).astype(np.float32)
    mask = torch.zeros(1, 1, 48, 48)
    mask[..., 24:] = 1.0
    recipe = Recipe.from_dict({"preprocess": [{"name": "resize", "size": 48, "mode": "pad"}],
                               "target": {"mean": 100.0, "std": 10.0}})
    predictor = TorchPredictor(toy_model(mask, down=4), recipe)
    pred, heat, background = explain_image(predictor, image, "M", method=method)
    assert heat.shape == background.shape == image.shape and np.array_equal(background, image)
    assert heat[:, :65].max() < 0.1
    assert heat[:, 85:].mean() > 0.3
    assert pred.n_views == 1
    with pytest.raises(ValueError, match="heat-map method must be one of gradcam, cam, got 'lime'"):
        explain_image(predictor, image, "M", method="lime")


def test_boneagenet_cam_is_exact_and_gradcam_uses_the_finer_map():
    from boneage.evaluation.gradcam import feature_split, grad_cam
    from boneage.models import create_model

    torch.manual_seed(0)
    model = create_model("inception_v3_scaled", width=0.1, extra_fc=True, dropout=0.5).eval()
    x = torch.rand(2, 1, 112, 112)
    sex = torch.tensor([1.0, 0.0])
    d = cam_decomposition(model, x, sex)
    assert d.maps.shape == (2, 2, 2)  # the last map at 112 px
    torch.testing.assert_close(d.maps.mean(dim=(1, 2)) + d.offset, d.prediction, rtol=1e-5, atol=1e-5)
    pre, post = feature_split(model)
    with torch.no_grad():
        mid = pre(x)
        assert mid.shape[-2:] == (5, 5)
        torch.testing.assert_close(post(mid), model.forward_features(x))
    assert grad_cam(model, x[:1], "M").shape == (112, 112)


def test_explain_cli_method_cam(cli, tmp_path, tiny_model):
    img = tmp_path / "hand.png"
    assert cli("example", img, "--size", "96")[0] == 0
    code, out, err = cli("explain", img, "--sex", "F", "--model", tiny_model, "--method", "cam",
                         "--out", tmp_path / "cam.png")
    assert code == 0, err
    assert (tmp_path / "cam.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = cli("explain", img, "--sex", "F", "--model", tiny_model, "--method", "lime",
                         "--out", tmp_path / "x.png")
    assert code == 2 and out == "" and "--method" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
