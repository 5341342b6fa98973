"""Per-sex models: one file, a male and a female network, each image routed by its sex."""

import numpy as np
import pytest
import torch

from boneage.errors import ConfigError, InputError
from boneage.models import create_model, model_input_spec
from boneage.inference.loader import load_predictor
from boneage.inference.torch_predictor import TorchPredictor

SILENT = dict(progress=False, log=lambda *_: None)


def _pair():
    torch.manual_seed(0)
    model = create_model("per_sex", model="small_cnn", width=4, stages=2)
    with torch.no_grad():  # make the two networks differ, as training does
        for p in model.female.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def test_each_image_goes_to_its_sexs_network_in_batch_order():
    model = _pair()
    x = torch.rand(5, 1, 16, 16)
    sex = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    with torch.no_grad():
        out = model(x, sex)
        male = model.male(x, sex)
        female = model.female(x, sex)
    assert torch.allclose(out, torch.where(sex == 1, male, female))
    assert not torch.allclose(male, female)
    assert model.male.head.sex_fc is None  # within one network sex is constant


def test_a_batch_of_one_sex_trains_only_that_network():
    model = _pair().train()
    model(torch.rand(3, 1, 16, 16), torch.ones(3)).sum().backward()
    assert all(p.grad is not None for p in model.male.parameters())
    assert all(p.grad is None for p in model.female.parameters())


def test_the_wrapper_expects_the_input_of_the_model_it_holds_and_names_its_stages():
    assert model_input_spec("per_sex", {"model": "efficientnet_lite0"}) == model_input_spec("efficientnet_lite0")
    model = create_model("per_sex", model="efficientnet_lite0", in_chans=3)
    assert list(model.stage_prefixes) == ["entry", "middle", "exit"]
    assert "male.backbone.blocks.4." in model.stage_prefixes["middle"]
    assert "female.backbone.blocks.4." in model.stage_prefixes["middle"]


@pytest.mark.parametrize("options, message", [
    ({}, "model.options.model: per_sex needs the name of the model it holds"),
    ({"model": "per_sex"}, "per_sex cannot hold per_sex models"),
    ({"model": "small_cnn", "widht": 4}, r"has no parameter\(s\) \['widht'\]"),
])
def test_a_bad_per_sex_model_is_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        create_model("per_sex", **options)


def test_an_unroutable_sex_is_refused():
    model = _pair()
    with pytest.raises(ValueError, match="must be 1 .male. or 0 .female."):
        model(torch.rand(2, 1, 16, 16), torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="needs each image's sex"):
        model(torch.rand(2, 1, 16, 16))


def test_one_command_trains_one_file_that_predicts_by_sex(synthetic_folder, tmp_path, cli):
    code, _, err = cli("train", _write_recipe(tmp_path, synthetic_folder), "--out", tmp_path / "run",
                       "--quiet")
    assert code == 0, err
    predictor = load_predictor(tmp_path / "run" / "model.safetensors")
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    male, female = predictor.predict(image, "M"), predictor.predict(image, "F")
    assert male.bone_age_months != pytest.approx(female.bone_age_months, abs=1e-3)
    # Each estimate is its own network's, through the same Predictor path.
    alone = TorchPredictor(predictor.model.male, predictor.recipe)
    assert male.bone_age_months == pytest.approx(alone.predict(image, "M").bone_age_months, abs=1e-4)
    with pytest.raises(InputError, match="sex is unknown, and this model needs it"):
        predictor.predict(image, None)
    # Its heat map is the routed network's own.
    from boneage.evaluation.gradcam import explain_image

    heats = {}
    for sex, net in (("M", predictor.model.male), ("F", predictor.model.female)):
        _, heats[sex], _ = explain_image(predictor, image, sex)
        _, alone_heat, _ = explain_image(TorchPredictor(net, predictor.recipe), image, sex)
        np.testing.assert_allclose(heats[sex], alone_heat, atol=1e-5)
    assert not np.allclose(heats["M"], heats["F"], atol=1e-3)  # so the routing is what was tested
    code, out, _ = cli("info", tmp_path / "run" / "model.safetensors")
    assert code == 0 and "a male and a female small_cnn, chosen by sex" in out
    code, _, err = cli("export", tmp_path / "run" / "model.safetensors", "--out", tmp_path / "m.onnx")
    assert code == 2 and "cannot export: the model (per_sex) is not one network" in err


def _write_recipe(tmp_path, root):
    import yaml

    path = tmp_path / "per-sex.yaml"
    path.write_text(yaml.safe_dump({
        "name": "per-sex-test", "data": {"root": str(root), "val_fraction": 0.2},
        "preprocess": [{"name": "resize", "size": 32}],
        "model": {"name": "per_sex", "options": {"model": "small_cnn", "width": 4, "stages": 3}},
        "train": {"epochs": 2, "batch_size": 16, "device": "cpu"},
    }))
    return path
