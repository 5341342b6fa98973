import numpy as np
import pytest
import torch

from boneage.config import PatchConfig, Recipe
from boneage.errors import InputError
from boneage.inference import read_model_metadata
from boneage.inference.torch_model import save_model_file
from boneage.sex import Sex
from boneage.models import create_model
from boneage.inference.loader import load_predictor
from boneage.inference.torch_predictor import TorchPredictor


def make(flip=False, patches=None, aggregate="mean"):
    torch.manual_seed(0)
    r = Recipe.from_dict({"preprocess": [{"name": "resize", "size": 32}],
                          "model": {"name": "small_cnn", "options": {"width": 4, "stages": 2}},
                          "inference": {"aggregate": aggregate, "flip_tta": flip}})
    r.patches = patches
    r.target.mean, r.target.std = 100.0, 10.0
    model = create_model("small_cnn", width=4, stages=2, in_chans=1).eval()
    return model, r


def raw(model, arr, male=1.0):
    with torch.no_grad():
        return float(model(torch.from_numpy(arr)[None, None], torch.tensor([male]))) * 10.0 + 100.0


IMG = np.random.default_rng(0).random((40, 40)).astype(np.float32)


def test_flip_tta_averages_the_image_and_its_mirror():
    model, r = make(flip=True)
    p = TorchPredictor(model, r)
    pre = p.preprocess(IMG)
    expected = (raw(model, pre) + raw(model, np.ascontiguousarray(pre[:, ::-1]))) / 2
    out = p.predict(IMG, "M")
    assert out.n_views == 2 and out.bone_age_months == pytest.approx(expected, abs=1e-4)


def test_patch_median_over_grid():
    model, r = make(patches=PatchConfig(n=4, size=16), aggregate="median")
    p = TorchPredictor(model, r)
    pre = p.preprocess(IMG)
    out = p.predict(IMG, "F")
    assert out.n_views == 4 and out.sex == "F"
    per = [raw(model, np.ascontiguousarray(pre[a:a + 16, b:b + 16]), 0.0) for a in (0, 16) for b in (0, 16)]
    assert out.bone_age_months == pytest.approx(float(np.median(per)), abs=1e-4)
    assert out.spread_months == pytest.approx(float(np.std(per)), abs=1e-4)


def test_model_file_alone_reproduces_predictions(tmp_path):
    model, r = make(flip=True)
    path = save_model_file(tmp_path / "m.safetensors", model, r, info={"val_mae": 1.5})
    a = TorchPredictor(model, r).predict(IMG, "M").bone_age_months
    loaded = load_predictor(path)
    assert loaded.predict(IMG, "M").bone_age_months == pytest.approx(a, abs=1e-5)
    recipe, info = read_model_metadata(path)
    assert recipe == r and info["val_mae"] == 1.5 and set(info) == {"val_mae", "date"}


def test_bad_model_files_and_sex(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.safetensors: not a safetensors model file"):
        read_model_metadata(junk)
    with pytest.raises(InputError, match="model file not found"):
        load_predictor(tmp_path / "none.safetensors")
    model, r = make()
    with pytest.raises(InputError, match="sex is unknown"):
        TorchPredictor(model, r).predict(IMG, None)
    with pytest.raises(InputError, match="sex must be M or F, got 'x'"):
        Sex.parse("x")
    assert Sex.parse("female") is Sex.FEMALE and Sex.parse(True) is Sex.MALE and Sex.parse("1") is Sex.MALE
    assert Sex.parse_optional(None) is None and str(Sex.MALE) == "M" and Sex.MALE.flag == 1.0


def test_canonical_preparation_runs_on_every_view_before_the_network():
    model, r = make(flip=True)
    r.inference.tta_angles = [-5.0, 5.0]
    r.preprocess = [{"name": "resize", "size": 30}]
    r.canonical = [{"name": "lowpass_resize", "size": 32, "sigma": 1.0}]
    p = TorchPredictor(model, r)
    views = p.views(IMG)
    assert views.shape == (6, 32, 32)
    from boneage.transforms import functional as F
    pre = F.resize(IMG, 30)
    np.testing.assert_allclose(views[0], F.lowpass_resize(pre, 32, 1.0), atol=1e-6)
    np.testing.assert_allclose(views[1], F.lowpass_resize(F.rotate(pre, -5.0), 32, 1.0), atol=1e-6)
    np.testing.assert_allclose(views[3], views[0][:, ::-1], atol=1e-6)
    expected = np.mean([raw(model, np.ascontiguousarray(v)) for v in views])
    assert p.predict(IMG, "M").bone_age_months == pytest.approx(expected, abs=1e-4)


def test_predict_batch_equals_one_by_one_with_patches_flips_and_rotations():
    model, r = make(flip=True, patches=PatchConfig(n=4, size=16), aggregate="median")
    r.inference.tta_angles = [7.0]
    p = TorchPredictor(model, r, batch_size=5)
    rng = np.random.default_rng(4)
    images = [rng.random((40 + 3 * i, 36)).astype(np.float32) for i in range(3)]
    sexes = ["M", "F", "male"]
    batch = p.predict_batch(images, sexes)
    single = [p.predict(im, s) for im, s in zip(images, sexes)]
    assert [b.n_views for b in batch] == [16, 16, 16]
    for b, s in zip(batch, single):
        assert b.sex == s.sex
        assert b.bone_age_months == pytest.approx(s.bone_age_months, abs=1e-4)
        assert b.spread_months == pytest.approx(s.spread_months, abs=1e-4)
    with pytest.raises(InputError, match="got 3 images but 2 sexes"):
        p.predict_batch(images, ["M", "F"])
    assert p.predict_batch([], []) == []
