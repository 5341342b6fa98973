import numpy as np
import pytest
import torch

from boneage.config import Recipe
from boneage.data import load_samples
from boneage.data.datasets import ImageDataset, PatchDataset, PreprocessedCache
from boneage.transforms import extract_patches
from boneage.inference.torch_predictor import TorchPredictor


@pytest.fixture(scope="module")
def cache(synthetic_folder):
    r = Recipe.from_dict({"preprocess": [{"name": "resize", "size": 40}]})
    return PreprocessedCache(load_samples(synthetic_folder), r)


def recipe(**kw) -> Recipe:
    r = Recipe.from_dict({"preprocess": [{"name": "resize", "size": 40}], **kw})
    r.target.mean, r.target.std = 100.0, 50.0
    return r


def test_cache_holds_preprocessed_images(cache):
    assert len(cache) == 60 and cache.image(0).shape == (40, 40) and cache.image(0).dtype == np.float32


def test_image_dataset_scales_target_and_replicates_channels(cache):
    r = recipe(channels=3, input_mean=0.5, input_std=0.5)
    ds = ImageDataset(cache, [0, 1], r, augment=False, seed=0)
    item = ds[1]
    assert item["image"].shape == (3, 40, 40)
    expected = (cache.image(1) - 0.5) / 0.5
    np.testing.assert_allclose(item["image"][2].numpy(), expected, atol=1e-6)
    age = cache.samples[1].boneage
    assert item["target"].item() == pytest.approx((age - 100.0) / 50.0, rel=1e-5)
    assert item["sex"].item() == (1.0 if cache.samples[1].male else 0.0)


def test_patch_sampler_draws_a_fixed_number_per_epoch_reproducibly(cache):
    r = recipe(patches={"n": 9, "size": 20, "samples_per_epoch": 50})
    ds = PatchDataset(cache, range(10), r, augment=False, seed=1)
    assert len(ds) == 50
    first = ds.pairs.copy()
    assert first.min() >= 0 and first.max() < 10 * 9
    ds.set_epoch(1)
    assert not np.array_equal(ds.pairs, first)
    ds.set_epoch(0)
    assert np.array_equal(ds.pairs, first)
    # the item is exactly the grid patch of the cached image
    img_pos, patch = divmod(int(first[0]), 9)
    expected = extract_patches(cache.image(img_pos), 9, 20)[patch]
    np.testing.assert_allclose(ds[0]["image"][0].numpy(), expected, atol=1e-6)


def test_patch_pool_without_sampling_uses_every_patch_once(cache):
    ds = PatchDataset(cache, range(4), recipe(patches={"n": 4, "size": 30}), augment=False, seed=0)
    assert len(ds) == 16 and sorted(ds.pairs.tolist()) == list(range(16))


def test_augmented_items_reproducible_and_in_range(cache):
    r = recipe(augment={"mode": "one_of", "steps": ["identity", {"name": "hflip", "p": 1.0},
                                                   {"name": "rotate", "max_deg": 30}, "blur"]})
    a = ImageDataset(cache, range(8), r, augment=True, seed=4)
    b = ImageDataset(cache, range(8), r, augment=True, seed=4)
    for i in range(8):
        assert torch.equal(a[i]["image"], b[i]["image"])
        assert 0.0 <= a[i]["image"].min() and a[i]["image"].max() <= 1.0




def test_cached_evaluation_goes_through_the_predictor(cache):
    from boneage.inference.batch import predict_cached
    from boneage.models import create_model

    r = recipe(patches={"n": 4, "size": 30}, inference={"aggregate": "median", "flip_tta": True,
                                                       "tta_angles": [4.0]})
    torch.manual_seed(0)
    model = create_model("small_cnn", width=4, stages=2, in_chans=1).train()
    preds, per_view = predict_cached(model, r, cache, [0, 1, 2], batch_size=7)
    assert model.training  # mode restored
    p = TorchPredictor(model, r)
    for k, pred, views in zip([0, 1, 2], preds, per_view):
        assert views.shape == (16,)
        one = p.per_view_preprocessed([cache.image(k)], [cache.samples[k].sex])[0]
        np.testing.assert_allclose(views, one, atol=1e-4)
        assert pred == pytest.approx(float(np.median(one)), abs=1e-4)
