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
from boneage.inference.loader import load_predictor
from boneage.inference.torch_predictor import TorchPredictor

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
    return TorchPredictor(toy_model(torch.ones(1, 1, 1, 1)), recipe)


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
    predictor = TorchPredictor(toy_model(torch.ones(1, 1, 1, 1)), recipe)
    pred, heat, _ = explain_image(predictor, image, "M")
    assert pred.n_views == 6
    # Identity backbone: each view's map is the view; mapped back, the bright block stays put.
    assert heat[10:16, 30:38].mean() > 0.9
    assert heat[30:, :20].max() < 0.2
    assert np.corrcoef(heat.ravel(), image.ravel())[0, 1] > 0.95


# --- The heat map on the radiograph as given (its own size and aspect ratio) -----------------

@pytest.mark.parametrize("steps,pre_spot,original_spot", [
    # 60x120 fitted into 40x40: scale 1/3, 10 rows of padding above; pre (15, 30) <- (16, 91).
    ([{"name": "resize", "size": 40, "mode": "pad"}], (15, 30), (16, 91)),
    # Squashed to 30x30: rows x1/2, columns x1/4; pre (10, 20) <- (20.5, 81.5).
    ([{"name": "resize", "size": 30}], (10, 20), (20.5, 81.5)),
    # 10 % of rows and 25 % of columns cropped first, then an intensity step, then a squash
    # of the 54x90 rest to 27x45 (x1/2): pre (5, 10) <- (10.5 + 6, 20.5 + 30).
    ([{"name": "crop", "top": 0.1, "left": 0.25}, {"name": "stretch"}, {"name": "resize", "size": [27, 45]}],
     (5, 10), (16.5, 50.5)),
])
def test_heatmap_to_original_puts_a_hot_spot_where_it_came_from(steps, pre_spot, original_spot):
    from boneage.evaluation.gradcam import heatmap_to_original, preprocess_geometry

    image = np.random.default_rng(4).random((60, 120)).astype(np.float32)
    geometry = preprocess_geometry(steps, image)
    assert geometry.approximated == ()
    heat = np.zeros(geometry.shape, np.float32)
    heat[pre_spot] = 1.0
    back = heatmap_to_original(heat, image, steps)
    assert back.shape == image.shape and back.dtype == np.float32
    peak = np.unravel_index(back.argmax(), back.shape)
    assert abs(peak[0] - original_spot[0]) <= 1 and abs(peak[1] - original_spot[1]) <= 1
    # The forward map agrees: the original spot lands on the preprocessed one.
    np.testing.assert_allclose(geometry.to_preprocessed(*original_spot), pre_spot, atol=1e-6)


def test_heatmap_to_original_leaves_cropped_away_parts_and_padding_out():
    from boneage.evaluation.gradcam import heatmap_to_original

    image = np.zeros((50, 100), np.float32)
    image[10:40, 30:80] = 0.8  # the "hand": the convex-hull crop keeps this box
    steps = [{"name": "convex_hull_crop", "threshold": 0.5, "margin": 0.0}, {"name": "resize", "size": 20}]
    back = heatmap_to_original(np.ones((20, 20), np.float32), image, steps)
    assert back[12:38, 32:78].min() > 0.99
    assert back[:8].max() == 0.0 and back[:, :28].max() == 0.0 and back[:, 82:].max() == 0.0
    # Padding: a map that is hot only on the padded band above a wide image gives nothing.
    pad = [{"name": "resize", "size": 40, "mode": "pad"}]
    band = np.zeros((40, 40), np.float32)
    band[:8] = 1.0
    assert heatmap_to_original(band, image, pad).max() == 0.0


def test_explain_image_lays_the_map_on_the_radiograph_at_its_own_aspect_ratio():
    # A padded resize squeezes this wide image into a square; with an identity backbone the map
    # is the network input, so mapped back it must follow the bright block in the original.
    image = np.full((60, 150), 0.1, np.float32)
    image[20:35, 100:130] = 1.0
    recipe = Recipe.from_dict({"preprocess": [{"name": "resize", "size": 48, "mode": "pad"}],
                               "inference": {"flip_tta": True}, "target": {"mean": 100.0, "std": 10.0}})
    predictor = TorchPredictor(toy_model(torch.ones(1, 1, 1, 1)), recipe)
    pred, heat, background = explain_image(predictor, image, "M")
    assert heat.shape == background.shape == image.shape
    assert background is not None and np.array_equal(background, image)
    assert heat[22:33, 103:127].mean() > 0.8
    assert heat[:, :80].max() < 0.3
    _, pre_heat, pre = explain_image(predictor, image, "M", on="preprocessed")
    assert pre_heat.shape == pre.shape == (48, 48)
    with pytest.raises(ValueError, match="original"):
        explain_image(predictor, image, "M", on="squashed")


def test_overlay_rgb_keeps_the_aspect_ratio_and_caps_the_size():
    from boneage.visualize import overlay_rgb

    rng = np.random.default_rng(5)
    small = overlay_rgb(rng.random((90, 60)), rng.random((10, 10)))
    assert small.shape == (90, 60, 3) and small.dtype == np.uint8
    big = overlay_rgb(rng.random((2000, 1500)).astype(np.float32), np.zeros((20, 20)), max_side=400)
    assert big.shape == (400, 300, 3)
    # No heat: the gray radiograph itself shows through unchanged.
    gray = np.linspace(0, 1, 50, dtype=np.float32)[None, :].repeat(20, 0)
    plain = overlay_rgb(gray, np.zeros_like(gray))
    np.testing.assert_array_equal(plain[..., 0], np.round(gray * 255).astype(np.uint8))


def test_efficientnet_is_explained_at_its_stride_16_map():
    import torch

    from boneage.evaluation.gradcam import feature_split
    from boneage.models import create_model

    model = create_model("efficientnet_lite0", in_chans=3, pretrained=None).eval()
    pre, post = feature_split(model)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        mid = pre(x)
        assert mid.shape[-2:] == (7, 7)                       # half the last map's 4 x 4 stride
        torch.testing.assert_close(post(mid), model.forward_features(x))
    assert feature_split(create_model("small_cnn", in_chans=1)) is None   # falls back to the last map


def test_bundled_models_peak_lies_on_the_hand(data_dir):
    from boneage.evaluation.gradcam import explain_image
    from boneage.io import read_image

    predictor = load_predictor()
    for path in sorted((data_dir / "rsna-fullres" / "images").glob("*.png"))[:3]:
        pixels = read_image(path).pixels                      # background removed: black
        _, heat, background = explain_image(predictor, pixels, "M")
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        assert background[peak] > 0.1, (path.name, peak)
