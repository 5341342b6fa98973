"""The shipped BoneAgeNet recipes: the paper's settings, table 1's parameter counts, and the
rsna-100px recipes trained exactly like the bundled model."""

from pathlib import Path

import pytest
import torch

from boneage.config import load_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def params(recipe) -> int:
    from boneage.inference.torch_model import build_model

    with torch.device("meta"):
        return sum(p.numel() for p in build_model(recipe).parameters())


@pytest.mark.parametrize("stem, millions", [
    ("m3-boneagenet-baseline-fullres", 21.8), ("m3-boneagenet-modified1-fullres", 36.2),
    ("m3-boneagenet-modified2-fullres", 55.65), ("m3-boneagenet-modified3-fullres", 51.1),
    ("m3-boneagenet-modified4-fullres", 47.1), ("m3-boneagenet-modified5-fullres", 65.4),
    ("m3-boneagenet-modified6-fullres", 66.9), ("m3-boneagenet-final-nofc-fullres", 69.7),
    ("m3-boneagenet-final-nofc-nosex-fullres", 69.7), ("m3-boneagenet-final-fullres", 78.0),
])
def test_full_resolution_recipes_are_the_papers_table_1(stem, millions):
    r = load_recipe(CONFIGS / f"{stem}.yaml")
    assert params(r) / 1e6 == pytest.approx(millions, abs=0.05)
    assert r.preprocess == [{"name": "resize", "size": 300}] and r.input_spec() == (1, 0.0, 1.0)
    assert [s["name"] for s in r.augment.steps] == ["zoom", "hflip", "vflip"]
    assert (r.loss.name, r.optim.name, r.optim.lr, r.train.batch_size) == ("mse", "adam", 0.01, 32)
    # stepwise decay, down to the paper's 1e-5 and no lower
    s = r.schedule
    steps = (r.train.epochs - 1) // s.step_size
    assert s.name == "step" and r.optim.lr * s.gamma ** steps == pytest.approx(1e-5)
    assert r.model.options["output_l2"] > 0


def test_rsna100_recipes_train_like_the_bundled_model():
    default = load_recipe(CONFIGS / "default-efficientnet-lite0-rsna100.yaml")
    for stem in ("m3-boneagenet-baseline-rsna100", "m3-boneagenet-final-rsna100"):
        r = load_recipe(CONFIGS / f"{stem}.yaml")
        # the copied blocks: same data split, preparation-invariant augmentation, canonical
        # stage and views as the model they are compared against
        for key in ("data", "preprocess", "augment", "canonical", "inference"):
            assert getattr(r, key) == getattr(default, key), (stem, key)
        assert r.model.name == "inception_v3_scaled" and r.input_spec() == (1, 0.0, 1.0)
    final = load_recipe(CONFIGS / "m3-boneagenet-final-rsna100.yaml")
    assert final.model.options["extra_fc"] is True and final.model.options["repeats"] == [4, 3, 3]
