"""Model files carry what they need, name no path of the training machine, and fail cleanly."""

import json
import os

import numpy as np
import pytest
import torch

from boneage.config import Recipe
from boneage.errors import InputError
from boneage.inference import read_model_metadata
from boneage.inference.torch_model import save_model_file
from boneage.inference.torch_model import build_model
from boneage.inference.loader import load_predictor
from boneage.inference.torch_predictor import TorchPredictor

IMG = np.random.default_rng(0).random((48, 40)).astype(np.float32)


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory):
    from boneage.segmentation.unet import train_hand_unet

    path = tmp_path_factory.mktemp("unet") / "hand_unet.safetensors"
    train_hand_unet(n_images=8, size=32, epochs=1, depth=2, out=path)
    return path


def small_recipe(**kw) -> Recipe:
    r = Recipe.from_dict({"name": "mf", "preprocess": [{"name": "resize", "size": 32}],
                          "model": {"name": "small_cnn", "options": {"width": 4, "stages": 2}}, **kw})
    r.target.mean, r.target.std = 100.0, 10.0
    return r


def test_embedded_unet_predicts_the_same_from_any_folder(unet_file, tmp_path, monkeypatch):
    import shutil

    local = tmp_path / "work" / "unet.safetensors"
    local.parent.mkdir()
    shutil.copy(unet_file, local)
    monkeypatch.chdir(local.parent)
    r = small_recipe(preprocess=[{"name": "unet_crop", "weights": "unet.safetensors"},
                                 {"name": "resize", "size": 32}])
    torch.manual_seed(0)
    model = build_model(r)
    before = TorchPredictor(model, r).predict(IMG, "M").bone_age_months
    path = save_model_file(tmp_path / "m.safetensors", model, r)
    local.unlink()  # the U-Net file is gone, and we are elsewhere
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    stored, _ = read_model_metadata(path)
    assert stored.preprocess[0]["weights"].startswith("sha256:")
    after = load_predictor(path).predict(IMG, "M").bone_age_months
    assert after == pytest.approx(before, abs=1e-5)


def test_stored_recipe_holds_no_path_of_the_training_machine(tmp_path):
    r = small_recipe(data={"root": str(tmp_path / "data" / "rsna-100px")})
    other = save_model_file(tmp_path / "other.safetensors", build_model(r), r)
    r.train.init_from = str(other)
    path = save_model_file(tmp_path / "m.safetensors", build_model(r), r)
    raw = json.loads(__import__("safetensors").safe_open(str(path), "pt").metadata()["recipe"])
    assert str(tmp_path) not in json.dumps(raw)
    _, info = read_model_metadata(path)
    assert info["training_data"] == "rsna-100px" and info["init_from"]["file"] == "other.safetensors"
    assert len(info["init_from"]["sha256"]) == 64


def test_predictions_carry_the_model_identity(tmp_path):
    r = small_recipe()
    path = save_model_file(tmp_path / "m.safetensors", build_model(r), r)
    out = load_predictor(path).predict(IMG, "F")
    import hashlib
    assert out.model_name == "mf" and out.model_hash == hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@pytest.mark.parametrize("damage, message", [
    ("truncate", "model file"),
    ("metadata", "broken model metadata"),
    ("shapes", "do not fit the recipe's model"),
])
def test_damaged_model_files_are_one_line_errors(tmp_path, damage, message):
    from safetensors.torch import load_file, save_file

    r = small_recipe()
    path = save_model_file(tmp_path / "m.safetensors", build_model(r), r)
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        from safetensors import safe_open

        meta = safe_open(str(path), "pt").metadata()
        tensors = load_file(str(path))
        if damage == "metadata":
            meta["recipe"] = meta["recipe"][:-5]
        else:
            key = next(k for k in tensors if k.endswith("weight") and tensors[k].ndim == 4)
            tensors[key] = torch.zeros(3, 3, 3, 3)
        save_file(tensors, str(path), metadata=meta)
    with pytest.raises(InputError) as err:
        load_predictor(path)
    assert message in str(err.value) and "\n" not in str(err.value) and "m.safetensors" in str(err.value)


def test_training_refuses_a_folder_holding_a_model_file(tmp_path, synthetic_folder):
    from boneage.engine import fit

    r = small_recipe(data={"root": str(synthetic_folder), "val_fraction": 0.2, "limit": 30},
                     train={"epochs": 1, "batch_size": 16, "device": "cpu"})
    r.target.mean = r.target.std = None
    out = tmp_path / "run"
    out.mkdir()
    save_model_file(out / "model.safetensors", build_model(small_recipe()), small_recipe())
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(InputError, match="already holds a model file"):
        fit(r, out, progress=False, log=lambda *_: None)
    assert (out / "model.safetensors").read_bytes() == before
    res = fit(r, out, overwrite=True, progress=False, log=lambda *_: None)
    _, info = read_model_metadata(res.model_path)
    assert len(info["val_ids"]) == info["n_val"] == 6


def test_holdout_evaluates_exactly_the_stored_ids(cli, tiny_model, synthetic_folder):
    _, info = read_model_metadata(tiny_model)
    code, out, err = cli("evaluate", synthetic_folder, "--holdout", "--model", tiny_model, "--json", "--quiet")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["n"] == len(info["val_ids"]) == 12
    from boneage.data.labels import load_samples
    from boneage.data.split import holdout_subset
    samples = load_samples(synthetic_folder)
    chosen = holdout_subset(samples, None, info)
    assert [s.id for s in chosen] == info["val_ids"]
    with pytest.raises(InputError, match="held-back images are not in this folder"):
        holdout_subset(samples[:10], None, info)


def test_model_files_that_cannot_predict_are_one_line_errors(tmp_path):
    untrained = small_recipe()
    untrained.target.mean = untrained.target.std = None
    path = save_model_file(tmp_path / "untrained.safetensors", build_model(untrained), untrained)
    with pytest.raises(InputError) as err:
        load_predictor(path)
    assert str(err.value).startswith(f"{path}: cannot predict: its recipe has no target scaling")
    assert "\n" not in str(err.value)


def test_info_and_the_service_quote_the_recorded_validation_mae(tmp_path, cli):
    """One number: the held-back MAE measured with the file's inference as it is now, when
    the file records one, else training's best epoch."""
    from boneage.inference.torch_model import add_to_model_file
    from boneage.inference.modelfile import describe_model_file, validation_record
    from boneage.service.app import describe_model

    r = small_recipe()
    trained = save_model_file(tmp_path / "m.safetensors", build_model(r), r, info={"val_mae": 5.0, "epoch": 3})
    assert "validation   MAE 5.00 months (best epoch 3 of training)" in describe_model_file(
        trained, *read_model_metadata(trained))
    record = validation_record({"mae": 4.3216, "mae_male": 4.0, "mae_female": 4.6, "n": 12}, "set")
    measured = add_to_model_file(trained, tmp_path / "measured.safetensors", info_update={"validation": record})
    code, out, _ = cli("info", measured)
    assert code == 0 and "validation   MAE 4.32 months (12 held-back images of set, as it predicts now)" in out
    assert describe_model(load_predictor(measured))["validation_mae_months"] == 4.32
