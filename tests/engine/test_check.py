"""A broken recipe fails in seconds, before any data is read or any folder written."""

from pathlib import Path

import pytest

from boneage.config import load_recipe
from boneage.evaluation.training import check_recipe  # every task registered
from boneage.errors import ConfigError
from boneage.inference.loader import load_predictor

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
# The 1024-px VGG-16 differs from the 512-px one only in size and costs ~20 s of CPU.
CHECKED = [c for c in CONFIGS if "1024" not in c.name]
FULL_SIZE_STEP = {"m1-u-s-i-fullres", "m2-resnet18-fullres", "m2-inception-v4-fullres"}
# BoneAgeNet's table-1 rows differ from its final model only in width and depth (seconds each
# at 300 px): checked at a quarter of their width, same depth, same 300-px input.
REDUCED = {c.stem: ["model.options.width=0.25"] for c in CONFIGS
           if c.stem.startswith("m3-boneagenet") and c.stem.endswith("fullres")
           and c.stem != "m3-boneagenet-final-fullres"}


@pytest.fixture(scope="module")
def unet_weights(tmp_path_factory):
    """A folder holding runs/hand_unet.safetensors, the file the U+S+I recipes name."""
    from boneage.segmentation.unet import train_hand_unet

    root = tmp_path_factory.mktemp("unetwd")
    train_hand_unet(n_images=8, size=64, epochs=1, out=root / "runs" / "hand_unet.safetensors")
    # and the (untrained) enhancement generator the gan-boneage-gan recipe names
    from boneage.models.enhancer import EnhancementGenerator, save_enhancer
    save_enhancer(EnhancementGenerator(8, 3), root / "runs" / "gan" / "enhancer-rsna100" / "model.safetensors")
    # and the (untrained) hand segmenter the masked-input recipe names
    from boneage.config import Recipe
    from boneage.inference.torch_model import save_model_file
    from boneage.models.fcdensenet import FCDenseNet
    seg = Recipe.from_dict({"name": "seg", "task": "segmentation", "channels": 1, "input_mean": 0.0,
                            "input_std": 1.0, "model": {"name": "fc_densenet"}})
    save_model_file(root / "runs" / "segmentation" / "hand-segmenter" / "model.safetensors", FCDenseNet().eval(), seg)
    return root


@pytest.mark.parametrize("config", CHECKED, ids=[c.stem for c in CHECKED])
def test_every_shipped_recipe_builds_and_runs_a_synthetic_image(config, unet_weights, monkeypatch):
    recipe = load_recipe(config, REDUCED.get(config.stem))
    if any(isinstance(s, dict) and s.get("name") in ("unet_crop", "gan_enhance", "hand_mask") for s in recipe.preprocess):
        # the recipe names the U-Net file relative to the working folder, as `boneage train-unet` writes it
        monkeypatch.chdir(unet_weights)
    # A training step at full size for one recipe per full-resolution family (the rsna100
    # recipes all train a step below); the rest are checked through the forward pass.
    check_recipe(recipe, train_step=config.stem in FULL_SIZE_STEP)


def test_a_recipe_naming_a_missing_unet_file_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="preprocess: U-Net weights file not found: runs/hand_unet.safetensors"):
        check_recipe(load_recipe(CONFIGS[[c.stem for c in CONFIGS].index("m1-u-s-i-fullres")]))


@pytest.mark.parametrize("override, message", [
    ("inference.aggregate=medain", "unknown aggregate 'medain' (did you mean 'median'?)"),
    ("model.name=resnet81", "unknown model 'resnet81' (did you mean 'resnet18'?)"),
    ("model.options.dropuot=0.1", "model 'resnet18' has no parameter(s) ['dropuot']"),
    ("loss.name=gaussian_mse", None),
    ("optim.name=adm", "unknown optimizer 'adm'"),
    ("schedule.name=cosin", "unknown schedule 'cosin' (did you mean 'cosine'?)"),
    ("patches.size=400", "the recipe fails at its patches step"),
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
])
def test_recipe_mistakes_are_one_line_config_errors(override, message):
    config = CONFIGS[[c.stem for c in CONFIGS].index("m2-resnet18-rsna100")]
    recipe = load_recipe(config, [override])
    if message is None:
        check_recipe(recipe)  # a valid change passes
        return
    with pytest.raises(ConfigError) as err:
        check_recipe(recipe)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_input_smaller_than_the_backbone_reads_is_one_line():
    config = CONFIGS[[c.stem for c in CONFIGS].index("default-efficientnet-lite0-rsna299")]
    small = '[{name: lowpass_resize, size: 24, sigma: 0.6}, {name: stretch}]'
    with pytest.raises(ConfigError) as err:
        check_recipe(load_recipe(config, ["preprocess=[{name: resize, size: 24}]", f"canonical={small}"]))
    assert str(err.value) == ("the model input is 24x24 px, but efficientnet_lite0 reads at least 32 px a "
                              "side; raise the size of the preprocess/canonical resize steps")
    check_recipe(load_recipe(config, ["preprocess=[{name: resize, size: 32}]",
                                      f"canonical={small.replace('24', '32')}"]))  # the least it reads


def test_train_with_a_typo_reads_no_data_and_leaves_no_folder(cli, tmp_path):
    out = tmp_path / "run"
    # data.root points nowhere: the error must be the typo, found before the data is looked at
    config = CONFIGS[[c.stem for c in CONFIGS].index("m2-resnet18-rsna100")]
    code, stdout, err = cli("train", config, "inference.aggregate=medain",
                            f"data.root={tmp_path / 'nowhere'}", "--out", out)
    assert code == 2 and stdout == ""
    assert err.strip() == ("boneage: error: unknown aggregate 'medain' (did you mean 'median'?); "
                           "valid names: mean, median, percentile")
    assert not out.exists()


# Bone-age recipes; the GAN's (task: gan, whose file is a generator) trains in tests/enhancement.
TRAINABLE_HERE = [c for c in CONFIGS if c.stem.endswith("rsna100") and load_recipe(c).task == "regression"]


@pytest.mark.slow
@pytest.mark.parametrize("config", TRAINABLE_HERE, ids=[c.stem for c in TRAINABLE_HERE])
def test_every_rsna100_recipe_trains_a_step_and_predicts(config, synthetic_folder, tmp_path, unet_weights,
                                                        monkeypatch):
    import numpy as np

    from boneage.evaluation.training import fit

    recipe = load_recipe(config, [f"data.root={synthetic_folder}", "data.limit=12", "data.val_fraction=0.25",
                                  "train.epochs=1", "train.max_steps_per_epoch=1", "train.batch_size=4",
                                  "train.bn_recalibration_batches=0", "train.device=cpu"])
    if any(isinstance(s, dict) and s.get("name") == "gan_enhance" for s in recipe.preprocess):
        monkeypatch.chdir(unet_weights)  # the generator file the recipe names relative to runs/
    res = fit(recipe, tmp_path / "run", progress=False, log=lambda *_: None)
    pred = load_predictor(res.model_path).predict(np.random.default_rng(0).random((90, 80)).astype(np.float32), "F")
    assert np.isfinite(pred.bone_age_months) and pred.model_name == recipe.name
