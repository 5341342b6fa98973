"""``inference.preprocess_views``: further preparations of the same image whose views are
pooled with the recipe's own (the bundled model adds the nearest-neighbour shrink its
training copies were made with)."""

import numpy as np
import pytest
import torch

from boneage.config import Recipe
from boneage.data.labels import Sample
from boneage.errors import ConfigError
from boneage.inference.torch_model import save_model_file
from boneage.inference.torch_model import add_to_model_file
from boneage.inference.modelfile import read_model_metadata
from boneage.models import create_model
from boneage.sex import Sex
from boneage.transforms import build_pipeline, preprocessed_copies
from boneage.inference.loader import load_predictor
from boneage.inference.torch_predictor import TorchPredictor

NEAREST = [{"name": "resample", "size": 32, "method": "nearest"}]
BIG = np.random.default_rng(0).random((96, 80)).astype(np.float32)


def make(views=(NEAREST,)):
    torch.manual_seed(0)
    r = Recipe.from_dict({"preprocess": [{"name": "resize", "size": 32}],
                          "model": {"name": "small_cnn", "options": {"width": 4, "stages": 2}},
                          "inference": {"aggregate": "mean", "flip_tta": True,
                                        "preprocess_views": [list(v) for v in views]}})
    r.target.mean, r.target.std = 100.0, 10.0
    return create_model("small_cnn", width=4, stages=2, in_chans=1).eval(), r


def months(model, arr, male=1.0):
    with torch.no_grad():
        return float(model(torch.from_numpy(np.ascontiguousarray(arr))[None, None], torch.tensor([male]))) * 10 + 100


def test_copies_keep_the_recipes_own_first_and_drop_duplicates():
    area, nearest = build_pipeline([{"name": "resize", "size": 32}]), build_pipeline(NEAREST)
    copies = preprocessed_copies(BIG, area, [nearest, nearest])
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], area(BIG))
    np.testing.assert_array_equal(copies[1], nearest(BIG))
    assert not np.array_equal(copies[0], copies[1])  # the two shrinkings do differ
    # An image already on the 32-px grid: both give the image itself, so one copy.
    on_grid = BIG[:32, :32].copy()
    assert len(preprocessed_copies(on_grid, area, [nearest])) == 1


def test_prediction_pools_the_views_of_both_preparations():
    model, r = make()
    p = TorchPredictor(model, r)
    area, nearest = p.preprocess_all(BIG)
    expected = np.mean([months(model, a) for a in (area, area[:, ::-1], nearest, nearest[:, ::-1])])
    out = p.predict(BIG, "M")
    assert out.n_views == 4 and out.bone_age_months == pytest.approx(expected, abs=1e-4)
    # On the grid the nearest copy is the image itself: two views, not four counted twice.
    small = BIG[:32, :32].copy()
    assert p.predict(small, "M").n_views == 2
    # Batched and one-by-one agree, views and all.
    batch = p.predict_batch([BIG, small], ["M", "F"])
    assert [b.n_views for b in batch] == [4, 2]
    assert batch[0].bone_age_months == pytest.approx(out.bone_age_months, abs=1e-4)


def test_cached_evaluation_sees_the_same_copies_as_predict(tmp_path):
    import cv2

    from boneage.data.datasets import PreprocessedCache
    from boneage.inference.batch import predict_cached

    model, r = make()
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), (BIG * 255).astype(np.uint8))
    cache = PreprocessedCache([Sample(path=path, id="a", boneage=100.0, sex=Sex.MALE)], r, workers=1)
    assert len(cache.copies(0)) == 2
    preds, per_view = predict_cached(model, r, cache, [0])
    from boneage.io import read_image

    direct = TorchPredictor(model, r).predict(read_image(path).pixels, "M")
    assert len(per_view[0]) == 4
    assert preds[0] == pytest.approx(direct.bone_age_months, abs=0.05)  # float16 cache


def test_a_bad_view_preparation_fails_the_recipe_check_naming_it():
    from boneage.engine.check import check_recipe

    _, r = make(views=([{"name": "resampel", "size": 32}],))
    with pytest.raises(ConfigError, match=r"inference\.preprocess_views\.0.*resample"):
        check_recipe(r)
    _, r = make(views=([{"name": "resample", "size": 48, "method": "nearest"}],))
    with pytest.raises(ConfigError, match=r"preprocess_views\.0 gives 48x48 views but preprocess gives 32x32"):
        check_recipe(r)


def test_model_file_gains_view_preparations_with_its_weights_unchanged(tmp_path):
    model, r = make(views=())
    src = save_model_file(tmp_path / "m.safetensors", model, r)
    assert load_predictor(src).predict(BIG, "F").n_views == 2
    dst = add_to_model_file(src, tmp_path / "v.safetensors", inference_update={"preprocess_views": [NEAREST]})
    recipe, _ = read_model_metadata(dst)
    assert recipe.inference.preprocess_views == [NEAREST] and recipe.inference.flip_tta
    assert load_predictor(dst).predict(BIG, "F").n_views == 4
    small = BIG[:32, :32].copy()
    assert load_predictor(dst).predict(small, "F").bone_age_months == pytest.approx(
        load_predictor(src).predict(small, "F").bone_age_months, abs=1e-6)
    with pytest.raises(ConfigError, match="preprocess_view"):
        add_to_model_file(src, tmp_path / "x.safetensors", inference_update={"preprocess_view": []})


def test_model_file_gains_preprocess_steps_with_its_weights_unchanged(tmp_path):
    model, r = make()
    src = save_model_file(tmp_path / "m.safetensors", model, r)
    unframe = {"name": "unframe"}
    dst = add_to_model_file(src, tmp_path / "u.safetensors", preprocess=[unframe, {"name": "resize", "size": 32}],
                            inference_update={"preprocess_views": [[unframe, *NEAREST]]})
    recipe, _ = read_model_metadata(dst)
    assert recipe.preprocess[0] == unframe and recipe.inference.preprocess_views == [[unframe, *NEAREST]]
    framed = BIG.copy()
    framed[:, :8] = 1.0                                      # a white band the new step removes
    before, after = load_predictor(src), load_predictor(dst)
    assert after.predict(BIG, "F").bone_age_months == pytest.approx(before.predict(BIG, "F").bone_age_months, abs=1e-6)
    assert after.predict(framed, "F").bone_age_months != pytest.approx(before.predict(framed, "F").bone_age_months, abs=1e-6)
    with pytest.raises(ConfigError, match="unframe max_fraction"):
        add_to_model_file(src, tmp_path / "x.safetensors", preprocess=[{"name": "unframe", "max_fraction": 0.7}])


def test_copies_run_the_steps_they_share_with_the_recipe_once(monkeypatch):
    from boneage.transforms import functional as F

    calls = []
    real = F.unframe
    monkeypatch.setattr(F, "unframe", lambda *a, **k: calls.append(1) or real(*a, **k))
    unframe = {"name": "unframe"}
    own = build_pipeline([unframe, {"name": "resize", "size": 32}])
    variants = [build_pipeline([unframe, *NEAREST]), build_pipeline([{"name": "unframe", "min_contrast": 0.9}, *NEAREST])]
    framed = BIG.copy()
    framed[:10] = 1.0
    copies = preprocessed_copies(framed, own, variants)
    assert len(calls) == 2            # once for the shared step, once for the one with other parameters
    expected = [p(framed) for p in (own, *variants)]
    assert len(copies) == 3 and all(np.array_equal(c, e) for c, e in zip(copies, expected))
