"""Masked inputs: crop to the segmented hand (and zero the background) with a segmenter that
model files embed (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from boneage.errors import ConfigError
from boneage.models.segmenter import mask_crop
from boneage.inference.loader import load_predictor

TINY = {"input_size": 32, "first_channels": 6, "growth": 4, "down_layers": [1, 1, 1], "bottleneck_layers": 4}


class _Threshold(nn.Module):
    """A 'segmenter' whose hand is exactly the pixels above 0.5: the crop's box is known."""

    input_size, size_multiple = 64, 1

    def forward_with_features(self, x):
        return (x > 0.5).float() * 20 - 10, torch.zeros(len(x), 1)


def _image():
    image = np.zeros((64, 64), np.float32)
    image[10:30, 20:44] = 0.9       # the hand: rows 10-29, columns 20-43
    image[50:53, 2:5] = 0.9         # a side marker, smaller and apart: not the largest component
    image[9, 25] = 0.3              # a label pixel just above the hand, inside the grown box
    return image


def test_crop_to_a_known_box_with_margin_and_zeroed_background():
    net, image = _Threshold(), _image()
    tight = mask_crop(net, image, margin=0.0)
    np.testing.assert_array_equal(tight, image[10:30, 20:44])
    grown = mask_crop(net, image, margin=0.1)       # 0.1 x 20 rows = 2, 0.1 x 24 columns = 2
    assert grown.shape == (24, 28)
    np.testing.assert_array_equal(grown, image[8:32, 18:46])
    assert grown[1, 7] == pytest.approx(0.3)         # the label pixel survives a plain crop
    zeroed = mask_crop(net, image, margin=0.1, zero_background=True)
    assert zeroed[1, 7] == 0.0 and zeroed[2:22, 2:26].min() == pytest.approx(0.9)
    with pytest.warns(UserWarning, match="found no hand"):
        assert mask_crop(net, np.zeros((64, 64), np.float32)).shape == (64, 64)


def test_crop_of_a_synthetic_radiograph_is_its_hand_box():
    from boneage.data.synthetic import make_radiograph
    from boneage.transforms.hull import mask_box

    s = make_radiograph(90.0, "F", size=64, seed=4, nuisance=False)
    top, bottom, left, right = mask_box(s.mask, 0.0)
    # the threshold 'segmenter' sees exactly the drawn hand when fed its mask
    crop = mask_crop(_Threshold(), s.mask.astype(np.float32), margin=0.0)
    assert crop.shape == (bottom - top, right - left) and 0 < crop.size < s.mask.size
    np.testing.assert_array_equal(crop, s.mask[top:bottom, left:right])


@pytest.fixture(scope="module")
def segmenter_file(tmp_path_factory):
    from boneage.config import Recipe
    from boneage.inference.torch_model import save_model_file
    from boneage.models.fcdensenet import FCDenseNet

    torch.manual_seed(0)
    recipe = Recipe.from_dict({"name": "seg", "task": "segmentation", "channels": 1, "input_mean": 0.0,
                               "input_std": 1.0, "model": {"name": "fc_densenet", "options": TINY}})
    path = tmp_path_factory.mktemp("seg") / "segmenter.safetensors"
    return save_model_file(path, FCDenseNet(**TINY).eval(), recipe)


def test_bad_hand_mask_steps_are_one_line(tmp_path, segmenter_file):
    from boneage.transforms import build_transform

    with pytest.raises(ConfigError, match="segmentation model file not found: .*nope.safetensors"):
        build_transform({"name": "hand_mask", "weights": str(tmp_path / "nope.safetensors")})
    with pytest.raises(ConfigError, match="margin must be >= 0, got -0.1"):
        build_transform({"name": "hand_mask", "weights": str(segmenter_file), "margin": -0.1})
    with pytest.raises(ConfigError, match="not a segmentation model"):
        build_transform({"name": "hand_mask", "weights": _regression_file(tmp_path)}).network()


def _regression_file(tmp_path):
    from boneage.config import Recipe
    from boneage.inference.torch_model import build_model, save_model_file

    recipe = Recipe.from_dict({"name": "r", "model": {"name": "small_cnn", "options": {"width": 4, "stages": 2}},
                               "target": {"mean": 100.0, "std": 40.0}})
    return str(save_model_file(tmp_path / "r.safetensors", build_model(recipe), recipe))


def test_model_file_embeds_the_segmenter_and_predicts_without_its_file(tmp_path, segmenter_file):
    import shutil

    from boneage import embedded
    from boneage.config import Recipe
    from boneage.data.synthetic import make_radiograph
    from boneage.engine.check import check_recipe
    from boneage.inference.torch_model import build_model, save_model_file
    from boneage.inference.modelfile import read_model_metadata

    own = shutil.copy(segmenter_file, tmp_path / "seg.safetensors")
    recipe = Recipe.from_dict({
        "name": "masked", "preprocess": [{"name": "hand_mask", "weights": str(own), "margin": 0.05,
                                          "zero_background": True}, {"name": "resize", "size": 32}],
        "model": {"name": "small_cnn", "options": {"width": 4, "stages": 2}}, "target": {"mean": 100.0, "std": 40.0}})
    check_recipe(recipe)
    image = make_radiograph(120.0, "M", size=80, seed=2).image
    torch.manual_seed(0)
    path = save_model_file(tmp_path / "m.safetensors", build_model(recipe), recipe)
    before = load_predictor(path).predict(image, "M").bone_age_months
    stored, _ = read_model_metadata(path)
    assert stored.preprocess[0]["weights"].startswith("sha256:")
    own.unlink()
    embedded._NETWORKS.clear()                      # as in a fresh process
    assert load_predictor(path).predict(image, "M").bone_age_months == pytest.approx(before, abs=1e-4)


def test_a_masked_model_file_can_start_another_training(tmp_path, segmenter_file):
    # train.init_from on a file that embeds its segmenter: the recipe's own hand_mask step brings
    # a segmenter, so only the regression network's weights may be read (they once failed as
    # "unexpected preprocess.0.net..." keys).
    from boneage.config import Recipe
    from boneage.engine.trainer import _init_weights
    from boneage.inference.torch_model import build_model, read_weights, save_model_file

    recipe = Recipe.from_dict({
        "name": "masked", "preprocess": [{"name": "hand_mask", "weights": str(segmenter_file)},
                                         {"name": "resize", "size": 32}],
        "model": {"name": "small_cnn", "options": {"width": 4, "stages": 2}}, "target": {"mean": 100.0, "std": 40.0}})
    torch.manual_seed(0)
    trained = build_model(recipe)
    path = save_model_file(tmp_path / "m.safetensors", trained, recipe)
    assert any(k.startswith("preprocess.0.") for k in read_weights(path))
    own = read_weights(path, embedded=False)
    assert set(own) == set(trained.state_dict())
    torch.manual_seed(1)
    fresh = build_model(recipe)
    _init_weights(fresh, str(path))
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)
