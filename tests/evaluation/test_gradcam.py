"""Grad-CAM: it points at what the model provably uses; overlay PNG; the explain command."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from boneage.cli.main import main
from boneage.config import Recipe
from boneage.evaluation.gradcam import explain_image, grad_cam, overlay_heatmap
from boneage.inference import Predictor
from boneage.models.head import BoneAgeModel, SexFusionHead

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class MaskedBackbone(nn.Module):
    """Passes only the pixels where ``mask`` is 1, optionally average-pooled by ``down``."""

    def __init__(self, mask: torch.Tensor, down: int = 1):
        super().__init__()
        self.register_buffer("mask", mask)
        self.pool = nn.AvgPool2d(down) if down > 1 else nn.Identity()
        self.num_features = 1

    def forward(self, x):
        return self.pool(x * self.mask)


def toy_model(mask: torch.Tensor, down: int = 1, weight: float = 1.0, sex_units: int = 0) -> BoneAgeModel:
    """Output = weight * mean(masked features) (+ a sex term): it depends only on the mask."""
    head = SexFusionHead(1, sex_units=sex_units)
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.weight[0, 0] = weight
        head.out.bias.zero_()
    return BoneAgeModel(MaskedBackbone(mask, down), 1, head)


def quadrant_mask(size: int) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size)
    m[..., : size // 2, : size // 2] = 1.0
    return m


def test_grad_cam_mass_lies_where_the_model_looks():
    size = 32
    # Noise over the whole image: brightness alone would not localise anything, only the
    # model's dependence on the top-left quadrant can.
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0)) + 0.1
    model = toy_model(quadrant_mask(size), down=4, sex_units=4)  # 8x8 map, upsampled to 32x32
    cam = grad_cam(model, x, "M")
    assert cam.shape == (size, size) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
    inside = cam[: size // 2, : size // 2].sum()
    assert inside / cam.sum() > 0.9
    assert model.training  # restored after the temporary eval mode
    assert all(p.grad is None for p in model.parameters())


def test_grad_cam_uses_the_output_gradient_sign_and_flat_maps_give_zeros():
    size = 16
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(1))
    everywhere = torch.ones(1, 1, size, size)
    # Brightness lowers the output: nothing raises the predicted age, so nothing is shown.
    assert not grad_cam(toy_model(everywhere, weight=-1.0), x).any()
    # A constant image gives a constant map: no localisation, all zeros (not NaN).
    flat = grad_cam(toy_model(everywhere), torch.full((1, 1, size, size), 0.5))
    assert flat.shape == (size, size) and not flat.any() and np.isfinite(flat).all()
    # With an identity backbone and a positive weight, the map is the image, rescaled.
    cam = grad_cam(toy_model(everywhere), x[0])  # (C, H, W) is accepted too
    ref = x[0, 0].numpy()
    np.testing.assert_allclose(cam, (ref - ref.min()) / (ref.max() - ref.min()), atol=1e-5)
    with pytest.raises(ValueError, match="one image"):
        grad_cam(toy_model(everywhere), torch.rand(2, 1, size, size))


def toy_predictor(patches: dict | None, flip: bool = False) -> Predictor:
    recipe = Recipe.from_dict({
        "preprocess": [], "patches": patches, "inference": {"flip_tta": flip},
        "target": {"mean": 100.0, "std": 10.0},
    })
    return Predictor(toy_model(torch.ones(1, 1, 1, 1)), recipe)


@pytest.mark.parametrize("patches,flip", [(None, False), ({"n": 9, "size": 24}, True)])
def test_explain_image_averages_patch_maps_over_the_grid(patches, flip):
    image = np.random.default_rng(2).random((40, 48)).astype(np.float32)
    image[5:15, 30:40] = 1.0
    predictor = toy_predictor(patches, flip)
    pred, heat, pre = explain_image(predictor, image, "F")
    assert heat.shape == pre.shape == image.shape
    assert pred.sex == "F" and pred.n_views == (18 if patches else 1)
    # Identity backbone: every patch's map is its pixels times the same positive factor, so
    # averaging over the overlapping grid must give back the image itself, rescaled.
    np.testing.assert_allclose(heat, (pre - pre.min()) / (pre.max() - pre.min()), atol=1e-5)


def test_overlay_png_is_written(tmp_path):
    rng = np.random.default_rng(3)
    out = overlay_heatmap(rng.random((60, 40)), rng.random((15, 10)), tmp_path / "sub" / "o.png",
                          title="bone age 120.0 months")
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and 5_000 < len(data) < 5_000_000
    assert sorted(p.name for p in out.parent.iterdir()) == ["o.png"]  # no temp file left






def test_explain_cli_end_to_end(cli, tmp_path, tiny_model):
    from boneage.io import write_dicom

    img = tmp_path / "hand.png"
    assert cli("example", img, "--size", "96")[0] == 0
    heat = tmp_path / "heat.png"
    code, out, err = cli("explain", img, "--sex", "F", "--model", tiny_model, "--out", heat)
    assert code == 0, err
    assert out.startswith(f"{img}: bone age ") and "months" in out and "sex F" in out
    assert out.strip().endswith(f"heat map: {heat}")
    assert heat.read_bytes()[:8] == PNG_SIGNATURE

    # Refuses to overwrite, unless --force.
    before = heat.stat().st_mtime_ns
    code, out, err = cli("explain", img, "--sex", "F", "--model", tiny_model, "--out", heat)
    assert code == 2 and out == "" and "file exists" in err and "--force" in err
    assert heat.stat().st_mtime_ns == before
    code, _, err = cli("explain", img, "--sex", "M", "--model", tiny_model, "--out", heat, "--force")
    assert code == 0, err

    # Sex from the DICOM tag, or a one-line error when there is none.
    pixels = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    dcm = write_dicom(tmp_path / "m.dcm", pixels, sex="M")
    code, out, err = cli("explain", dcm, "--model", tiny_model, "--out", tmp_path / "m.png")
    assert code == 0 and "sex M" in out, err
    nosex = write_dicom(tmp_path / "n.dcm", pixels)
    code, out, err = cli("explain", nosex, "--model", tiny_model, "--out", tmp_path / "n.png")
    assert code == 2 and out == "" and not (tmp_path / "n.png").exists()
    assert err.strip().count("\n") == 0 and "n.dcm" in err and "sex is unknown" in err


def test_explain_cli_requires_out(capsys, tmp_path):
    assert main(["explain", str(tmp_path / "x.png"), "--sex", "M"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and len(err.strip().splitlines()) == 1


def test_explain_puts_rotated_test_time_views_back_in_place():
    image = np.full((48, 48), 0.1, np.float32)
    image[8:18, 28:40] = 1.0
    recipe = Recipe.from_dict({"preprocess": [], "inference": {"tta_angles": [-10.0, 10.0], "flip_tta": True},
                               "target": {"mean": 100.0, "std": 10.0}})
    predictor = Predictor(toy_model(torch.ones(1, 1, 1, 1)), recipe)
    pred, heat, _ = explain_image(predictor, image, "M")
    assert pred.n_views == 6
    # Identity backbone: each view's map is the view; mapped back, the bright block stays put.
    assert heat[10:16, 30:38].mean() > 0.9
    assert heat[30:, :20].max() < 0.2
    assert np.corrcoef(heat.ravel(), image.ravel())[0, 1] > 0.95
