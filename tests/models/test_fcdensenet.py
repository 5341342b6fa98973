"""FC-DenseNet, the segmentation loss, Otsu masks and the segmentation task (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from boneage.errors import ConfigError
from boneage.models.fcdensenet import PAPER_OPTIONS, FCDenseNet
from boneage.segmentation.losses import CEDiceLoss, DiceLoss, soft_dice
from boneage.models.segmenter import otsu_mask
from boneage.models.unet import dice_score

TINY = {"input_size": 32, "first_channels": 6, "growth": 4, "down_layers": [1, 1, 1], "bottleneck_layers": 4}


def test_shapes_bottleneck_and_a_gradient_on_every_parameter():
    torch.manual_seed(0)
    net = FCDenseNet(**{**TINY, "down_layers": [1, 2, 1]})
    x = torch.randn(2, 1, 32, 48)  # any multiple of 2**3, not only square
    logits, bottleneck = net.forward_with_features(x)
    assert logits.shape == (2, 1, 32, 48)
    assert bottleneck.shape == (2, 16, 4, 6)          # growth 4 x 4 layers, three halvings
    assert net.features(x).shape == (2, 16 * 4 * 6)
    (logits.mean() + bottleneck.mean()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert len(net.transitions_down) == len(net.transitions_up) == 3


def test_paper_and_default_sizes_have_a_192_map_bottleneck():
    assert FCDenseNet().bottleneck_channels == 192
    assert FCDenseNet(**PAPER_OPTIONS).bottleneck_channels == 192
    net = FCDenseNet(**TINY)
    assert FCDenseNet(**net.options()).options() == net.options()


@pytest.mark.parametrize("options, message", [
    ({"input_size": 36}, "divisible by 2\\*\\*len\\(down_layers\\) = 8, got 36"),
    ({"growth": 0}, "growth must be a positive integer, got 0"),
    ({"down_layers": []}, "down_layers must be a non-empty list"),
    ({"dropout": 1.0}, "dropout must be in \\[0, 1\\)"),
])
def test_bad_options_name_the_value(options, message):
    with pytest.raises(ValueError, match=message):
        FCDenseNet(**{**TINY, **options})


def test_input_not_divisible_is_refused():
    with pytest.raises(ValueError, match="divisible by 8, got shape \\(1, 1, 30, 32\\)"):
        FCDenseNet(**TINY)(torch.zeros(1, 1, 30, 32))


def test_dice_and_the_combined_loss_on_hand_computed_arrays():
    pred = np.array([[1, 1, 0], [0, 1, 0]])
    target = np.array([[1, 0, 0], [0, 1, 1]])
    assert dice_score(pred, target) == pytest.approx(2 * 2 / (3 + 3))
    # soft Dice of probabilities: (2 * 0.5 + 1) / (0.5 + 0.5 + 1 + 1) with smooth 1
    prob = torch.tensor([[[[0.5, 0.5]]]])
    tgt = torch.tensor([[[[1.0, 0.0]]]])
    assert soft_dice(prob, tgt).item() == pytest.approx(2.0 / 3.0)
    # logits 0 -> p = 0.5 everywhere: BCE = ln 2, soft Dice as above
    loss = CEDiceLoss()(torch.zeros(1, 1, 1, 2), tgt)
    assert loss.item() == pytest.approx(np.log(2) + 1 - 2.0 / 3.0, abs=1e-6)
    assert DiceLoss()(torch.zeros(1, 1, 1, 2), tgt).item() == pytest.approx(1 - 2.0 / 3.0, abs=1e-6)
    # a confident right answer costs almost nothing
    assert CEDiceLoss()(torch.tensor([[[[20.0, -20.0]]]]), tgt).item() < 1e-3
    with pytest.raises(ValueError, match="differ in shape"):
        CEDiceLoss()(torch.zeros(1, 1, 2, 2), tgt)


def test_otsu_splits_a_bimodal_probability_map_and_leaves_a_flat_one_empty():
    prob = np.full((20, 20), 0.1, np.float32)
    prob[5:15, 5:12] = 0.8
    mask = otsu_mask(prob)
    assert mask.dtype == np.uint8 and mask.sum() == 70 and mask[5:15, 5:12].all()
    assert otsu_mask(np.full((8, 8), 0.7, np.float32)).sum() == 0


def _synthetic_seg_folder(root, n, size=32, seed=0):
    import cv2

    from boneage.data.synthetic import sample_radiographs, write_synthetic_dataset

    write_synthetic_dataset(root, n, size=size, seed=seed)
    (root / "masks").mkdir()
    for i, s in enumerate(sample_radiographs(n, size=size, seed=seed), start=1):
        cv2.imwrite(str(root / "masks" / f"{i}.png"), s.mask * 255)
    return root


SEG_RECIPE = {"name": "seg", "task": "segmentation", "model": {"name": "fc_densenet", "options": TINY},
              "loss": {"name": "ce_dice"}, "optim": {"lr": 0.003},
              "augment": {"steps": [{"name": "hflip", "p": 0.5}]},
              "train": {"epochs": 4, "batch_size": 4, "device": "cpu"}}


def test_segmentation_task_trains_in_the_one_loop_and_writes_a_model_file(tmp_path):
    from boneage.config import Recipe
    from boneage.data.synthetic import make_radiograph
    from boneage.evaluation.training import fit
    from boneage.inference.modelfile import read_model_metadata
    from boneage.inference.torch_model import load_segmenter
    from boneage.models.segmenter import segment

    root = _synthetic_seg_folder(tmp_path / "data", 24)
    recipe = Recipe.from_dict({**SEG_RECIPE, "data": {"root": str(root), "val_fraction": 0.25}})
    res = fit(recipe, tmp_path / "run", progress=False, log=lambda *_: None)
    curve = [row["val_dice"] for row in res.history]
    assert res.best_val_mae == max(curve) and res.best_val_mae > 0.75  # the monitored metric, mode max
    stored, info = read_model_metadata(res.model_path)
    assert stored.task == "segmentation" and stored.data.root == "" and stored.data.mask_dir is None
    assert info["val_dice"] == pytest.approx(max(curve)) and len(info["val_ids"]) == 6
    net, _ = load_segmenter(res.model_path)
    sample = make_radiograph(100.0, "F", size=48, seed=7)
    mask = segment(net, sample.image)
    assert mask.shape == (48, 48) and dice_score(mask, sample.mask) > 0.6
    assert (tmp_path / "run" / "val_summary.json").is_file()
    # `boneage info` speaks of Dice and masks, not of months, views or sex.
    from boneage.inference.modelfile import describe_model_file

    text = describe_model_file(res.model_path, stored, info)
    assert f"validation   Dice {max(curve):.3f}" in text and "hand mask per image" in text
    assert "MAE" not in text and "sex" not in text and "view" not in text


def test_segmentation_recipe_mistakes_are_one_line():
    from boneage.config import Recipe
    from boneage.evaluation.training import check_recipe

    check_recipe(Recipe.from_dict(SEG_RECIPE), train_step=True)
    with pytest.raises(ConfigError, match="unknown segmentation model 'fc_densnet'.*did you mean 'fc_densenet'"):
        check_recipe(Recipe.from_dict({**SEG_RECIPE, "model": {"name": "fc_densnet"}}))
    with pytest.raises(ConfigError, match="allows at most one of each of hflip, film_background.*'rotate'"):
        check_recipe(Recipe.from_dict({**SEG_RECIPE, "augment": {"steps": [{"name": "rotate", "max_deg": 5}]}}))
    films = {"steps": [{"name": "film_background", "p": 0.5, "level": [0.2, 0.5]}]}
    check_recipe(Recipe.from_dict({**SEG_RECIPE, "augment": films}), train_step=True)
    with pytest.raises(ConfigError, match=r"film_background: level must be a range within \[0, 1\], got \(0.5, 0.2\)"):
        check_recipe(Recipe.from_dict({**SEG_RECIPE, "augment": {"steps": [
            {"name": "film_background", "level": [0.5, 0.2]}]}}))
    with pytest.raises(ConfigError, match="film_background: unknown option 'colour'.*allowed: contrast, level, noise, p, panels"):
        check_recipe(Recipe.from_dict({**SEG_RECIPE, "augment": {"steps": [
            {"name": "film_background", "colour": 1}]}}))
    with pytest.raises(ConfigError, match="preprocess: a segmentation recipe takes images as they are"):
        check_recipe(Recipe.from_dict({**SEG_RECIPE, "preprocess": [{"name": "resize", "size": 32}]}))
    with pytest.raises(ConfigError, match="model 'fc_densenet'.*input_size must be divisible"):
        check_recipe(Recipe.from_dict({**SEG_RECIPE, "model": {"name": "fc_densenet",
                                                               "options": {**TINY, "input_size": 36}}}))


def test_film_background_changes_only_the_background_and_follows_its_seed():
    from boneage.data.synthetic import make_radiograph
    from boneage.segmentation.background import film_background

    sample = make_radiograph(100.0, "F", size=64, seed=3)
    hand = sample.mask > 0
    a = film_background(sample.image, sample.mask, np.random.default_rng(5), level=(0.3, 0.6))
    b = film_background(sample.image, sample.mask, np.random.default_rng(5), level=(0.3, 0.6))
    c = film_background(sample.image, sample.mask, np.random.default_rng(6), level=(0.3, 0.6))
    assert a.shape == sample.image.shape and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a[hand], sample.image[hand])  # the hand is untouched
    np.testing.assert_array_equal(a, b)  # same seed, same film
    assert not np.array_equal(a[~hand], c[~hand])
    # The background now sits in the level range (up to panels, gradient and noise), far from the
    # synthetic film's own dark background.
    assert 0.2 < float(np.median(a[~hand])) < 0.8 and float(np.median(sample.image[~hand])) < 0.2
    with pytest.raises(ValueError, match="mask shape"):
        film_background(sample.image, sample.mask[:10], np.random.default_rng(0))
