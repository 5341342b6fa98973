"""The pix2pix enhancement GAN (issue 12): networks, pairs, training through the one loop,
the generator as a preprocessing step embedded in model files, and its bad input."""

import csv

import numpy as np
import pytest
import torch

from boneage.config import Recipe
from boneage.models.enhancer import (EnhancementGenerator, PairDiscriminator, enhance,
                                          load_enhancer, save_enhancer)
from boneage.enhancement.pairs import EnhancementPairs
from boneage.errors import ConfigError, InputError
from boneage.transforms import build_pipeline
from boneage.inference.loader import load_predictor
from boneage.inference.torch_predictor import TorchPredictor


def _perturbed_generator(seed=0) -> EnhancementGenerator:
    """A generator that is not the identity (its zero-initialised last layer made random)."""
    torch.manual_seed(seed)
    gen = EnhancementGenerator(base=4, depth=2)
    torch.nn.init.normal_(gen.unet.head.weight, std=2.0)
    torch.nn.init.constant_(gen.unet.head.bias, 1.0)  # brighter, in logit space
    return gen.eval()


def test_discriminator_sees_pairs_through_three_convolutions_and_one_linear_layer():
    disc = PairDiscriminator(base=4, pooled=2)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in disc.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.in_channels for c in convs] == [2, 4, 8] and [c.out_channels for c in convs] == [4, 8, 16]
    assert len(linears) == 1 and linears[0].in_features == 16 * 2 * 2
    x, y = torch.rand(3, 1, 40, 24), torch.rand(3, 1, 40, 24)
    assert tuple(disc.features(x, y).shape) == (3, 16, 5, 3)
    assert tuple(disc(x, y).shape) == (3,)
    assert tuple(disc(torch.rand(2, 1, 100, 100), torch.rand(2, 1, 100, 100)).shape) == (2,)
    with pytest.raises(ValueError, match=r"two \(N, 1, H, W\) images of one shape"):
        disc(x, y[:, :, :32])
    with pytest.raises(ValueError, match="at least 8x8"):
        disc(torch.rand(1, 1, 6, 6), torch.rand(1, 1, 6, 6))


def test_untrained_generator_is_the_identity_at_any_size():
    gen = EnhancementGenerator(base=4, depth=3).eval()
    x = torch.rand(2, 1, 37, 50)
    with torch.no_grad():
        out = gen(x)
    assert out.shape == x.shape
    # only the clamp inside (0, 1) before the logit changes a pixel, by at most 1e-3
    assert float((out - x).abs().max()) <= 1.001e-3
    with torch.no_grad():
        moved = _perturbed_generator()(x)
    assert float((moved - x).abs().mean()) > 0.05 and 0 < float(moved.min()) and float(moved.max()) < 1


def test_pairs_turn_together_and_differ_by_epoch():
    target = np.tile(np.linspace(0, 1, 24, dtype=np.float32), (24, 1))
    flips = build_pipeline([{"name": "hflip", "p": 0.5}, {"name": "rotate", "max_deg": 30}])
    same = EnhancementPairs([target] * 4, build_pipeline([]), flips, seed=3)
    for i in range(4):
        x, y = same.pair(i)
        np.testing.assert_array_equal(x, y)  # no degradation: the input is the turned target
    darker = EnhancementPairs([target] * 4, build_pipeline([{"name": "gamma", "gamma_min": 2, "gamma_max": 2, "p": 1}]),
                              flips, seed=3)
    x, y = darker.pair(0)
    np.testing.assert_allclose(x, y ** 2, atol=1e-6)
    first = darker.pair(1)[1]
    np.testing.assert_array_equal(first, darker.pair(1)[1])  # (seed, epoch, index) decide
    darker.set_epoch(1)
    assert not np.array_equal(first, darker.pair(1)[1])


@pytest.fixture(scope="module")
def pair_folder(tmp_path_factory):
    from boneage.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("gan") / "set", 40, size=48, seed=5)


def _gan_recipe(root, **gan) -> Recipe:
    return Recipe.from_dict({
        "name": "gan-test", "task": "gan",
        "data": {"root": str(root), "val_fraction": 0.25, "split_seed": 0},
        "preprocess": [{"name": "resize", "size": 32}],
        "augment": {"steps": [{"name": "hflip", "p": 0.5}, {"name": "rotate", "max_deg": 30}]},
        # One systematic degradation (darker by gamma 1.8, plus blur): enough to learn in seconds.
        "gan": {"generator": {"base": 8, "depth": 2}, "discriminator": {"base": 8}, "synthetic": 8,
                "degrade": [{"name": "gamma", "gamma_min": 1.8, "gamma_max": 1.8, "p": 1.0},
                            {"name": "blur", "sigma_min": 0.5, "sigma_max": 0.5}], **gan},
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 8, "batch_size": 4, "seed": 0, "device": "cpu"},
    })


@pytest.fixture(scope="module")
def gan_run(pair_folder, tmp_path_factory):
    from boneage.evaluation.training import fit

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("gan-run")
    result = fit(_gan_recipe(pair_folder), out, progress=False, log=lambda *_: None)
    return result, out


def test_gan_trains_through_the_loop_and_its_l1_to_the_target_falls(gan_run):
    result, out = gan_run
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert {"train_loss_discriminator", "train_loss_generator", "val_l1", "val_l1_input"} <= set(rows[0])
    l1 = [float(r["val_l1"]) for r in rows]
    no_enhancement = float(rows[0]["val_l1_input"])
    # the generator starts as the identity, so it starts at the degraded input's own L1 ...
    assert l1[0] < no_enhancement * 1.05
    # ... and learns to undo the darkening: the L1 to the target at least halves
    assert min(l1) < 0.5 * no_enhancement, (l1, no_enhancement)
    assert result.best_val_mae == pytest.approx(min(l1))
    gen = load_enhancer(out / "model.safetensors")
    assert gen.options() == {"base": 8, "depth": 2}
    for name in ("val_examples.png", "val_l1.png", "training_curves.png", "val_summary.json"):
        assert (out / name).is_file(), name


def test_generator_step_in_a_recipe_round_trips_through_a_model_file(tmp_path, monkeypatch):
    from boneage import embedded
    from boneage.inference.torch_model import build_model, load_model_file, save_model_file
    import json
    from safetensors import safe_open

    gen_path = save_enhancer(_perturbed_generator(), tmp_path / "enhancer.safetensors")
    recipe = Recipe.from_dict({
        "name": "with-gan", "preprocess": [{"name": "resize", "size": 32},
                                           {"name": "gan_enhance", "weights": str(gen_path)}],
        "model": {"name": "small_cnn", "options": {"width": 4, "stages": 3}},
        "target": {"mean": 100.0, "std": 40.0}})
    torch.manual_seed(0)
    model_path = save_model_file(tmp_path / "m.safetensors", build_model(recipe), recipe)
    image = np.random.default_rng(0).random((60, 50)).astype(np.float32)
    before = TorchPredictor(*load_model_file(model_path)[:2]).predict(image, "F").bone_age_months

    gen_path.unlink()  # the model file alone must carry the generator
    embedded._NETWORKS.clear()
    _, stored, _ = load_model_file(model_path)
    step = stored.preprocess[1]
    assert step["name"] == "gan_enhance" and step["weights"].startswith("sha256:")
    with safe_open(str(model_path), framework="pt") as fh:
        assert json.loads(fh.metadata()["subnetworks"])["preprocess.1"]["kind"] == "enhancer"
    predictor = load_predictor(model_path)
    assert predictor.predict(image, "F").bone_age_months == pytest.approx(before, abs=1e-4)
    # the step really runs the embedded generator: its output, not the resized image
    from boneage.transforms.functional import resize
    expected = enhance(_perturbed_generator(), resize(image, 32))
    np.testing.assert_allclose(predictor.preprocess(image), expected, atol=1e-5)
    assert np.abs(expected - resize(image, 32)).mean() > 0.05


def test_gan_bad_input_is_one_line(tmp_path, pair_folder):
    from boneage.evaluation.training import check_recipe
    from boneage.models.unet import HandUNet, save_hand_unet
    from boneage.transforms import build_transform

    with pytest.raises(ConfigError, match="enhancement generator file not found: nowhere.safetensors"):
        build_transform({"name": "gan_enhance", "weights": "nowhere.safetensors"})
    unet = save_hand_unet(HandUNet(1, 4, 2, 32), tmp_path / "unet.safetensors")
    with pytest.raises(InputError, match="not an enhancement generator file"):
        load_enhancer(unet)
    # a file whose tensors do not fit its stated architecture names the first one that does not
    big = save_enhancer(EnhancementGenerator(base=8, depth=2), tmp_path / "g.safetensors")
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(big), framework="pt") as fh:
        meta = fh.metadata()
    save_file(load_file(str(big)), str(tmp_path / "lie.safetensors"),
              metadata={**meta, "options": '{"base": 4, "depth": 2}'})
    with pytest.raises(InputError, match=r"tensor 'unet.down.0.0.weight' has shape \(8, 1, 3, 3\), "
                                         r"the network's is \(4, 1, 3, 3\)"):
        load_enhancer(tmp_path / "lie.safetensors")
    with pytest.raises(ConfigError, match=r"gan.generator 'EnhancementGenerator' has no parameter\(s\) \['widht'\]"):
        check_recipe(_gan_recipe(pair_folder, generator={"widht": 8}))
    with pytest.raises(ConfigError, match="gan.degrade"):
        check_recipe(_gan_recipe(pair_folder, degrade=[{"name": "gama"}]))
    bad = _gan_recipe(pair_folder).model_copy(update={"preprocess": []})
    from boneage.evaluation.training import fit
    with pytest.raises(ConfigError, match="GAN training needs images of one size"):
        from boneage.data.labels import Sample
        from boneage.sex import Sex
        import cv2
        for i, size in enumerate((40, 48)):
            cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((size, size), np.uint8))
        samples = [Sample(path=tmp_path / f"{i}.png", id=str(i), boneage=100.0, sex=Sex.MALE) for i in range(2)] * 2
        fit(bad, tmp_path / "run", samples=samples, progress=False, log=lambda *_: None)
