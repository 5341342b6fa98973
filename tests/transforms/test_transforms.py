import numpy as np
import pytest

from boneage.errors import ConfigError
from boneage.transforms import (
    CLAHE, Compose, OneOf, RandGaussianBlur, RandHFlip, RandRotate, RandVFlip, RandZoom,
    build_pipeline, build_transform, functional as F,
)


def ramp(h=10, w=20):
    return (np.arange(h * w, dtype=np.float32).reshape(h, w)) / (h * w - 1)


def test_crop_fractions_removes_the_right_rows_and_columns():
    img = ramp(10, 20)
    out = F.crop_fractions(img, top=0.1, bottom=0.2, left=0.25, right=0.05)
    # rows 1..7 (10*0.1=1 from top, 10*0.2=2 from bottom), cols 5..18 (20*.25=5, 20*.05=1)
    assert out.shape == (7, 14)
    np.testing.assert_array_equal(out, img[1:8, 5:19])


@pytest.mark.parametrize("kw", [dict(top=0.6, bottom=0.4), dict(left=0.5, right=0.5), dict(top=1.0)])
def test_crop_that_removes_everything_names_the_value(kw):
    with pytest.raises(ValueError, match="crop"):
        F.crop_fractions(ramp(), **kw)


def test_resize_squash_and_pad_keep_range_and_aspect():
    img = np.ones((50, 100), np.float32)
    sq = F.resize(img, 32)
    assert sq.shape == (32, 32) and np.allclose(sq, 1.0)
    pad = F.resize(img, (40, 40), mode="pad")
    assert pad.shape == (40, 40)
    # 50x100 fitted into 40x40 -> 20x40 band, centred: rows 10..29 are image, rest padding
    assert np.allclose(pad[10:30], 1.0) and np.allclose(pad[:10], 0.0) and np.allclose(pad[30:], 0.0)
    with pytest.raises(ValueError, match="resize mode"):
        F.resize(img, 10, mode="stretch")


def test_normalize_minmax_hand_values_and_constant_image():
    out = F.normalize_minmax(np.array([[2.0, 4.0], [6.0, 10.0]], np.float32))
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]])
    assert np.all(F.normalize_minmax(np.full((3, 3), 0.7, np.float32)) == 0)


def test_clahe_raises_local_contrast_and_validates():
    rng = np.random.default_rng(0)
    img = (0.4 + 0.05 * rng.random((64, 64))).astype(np.float32)  # low-contrast
    out = CLAHE(clip_limit=2.0, tile_grid=4)(img)
    assert out.shape == img.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() > 2 * img.std()
    with pytest.raises(ValueError, match="clip_limit must be > 0, got 0"):
        CLAHE(clip_limit=0)


def test_flips_are_exact_mirrors():
    img = ramp(3, 4)
    np.testing.assert_array_equal(F.hflip(img), img[:, ::-1])
    np.testing.assert_array_equal(F.vflip(img), img[::-1])
    np.testing.assert_array_equal(RandHFlip(p=1.0)(img), img[:, ::-1])
    np.testing.assert_array_equal(RandVFlip(p=0.0)(img), img)


def test_rotate_180_equals_double_flip():
    img = ramp(9, 9)
    np.testing.assert_allclose(F.rotate(img, 180), img[::-1, ::-1], atol=1e-5)


@pytest.mark.parametrize("t", [RandRotate(30), RandGaussianBlur(0.2, 1.0), RandZoom(0.8, 1.2),
                               RandHFlip(), RandVFlip()])
def test_random_transforms_reproducible_under_seed_and_stay_in_range(t):
    img = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    a = t(img, np.random.default_rng(42))
    b = t(img, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    assert a.shape == img.shape
    assert a.min() >= -1e-6 and a.max() <= 1 + 1e-6


def test_random_transform_differs_across_seeds():
    img = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    outs = {RandRotate(30)(img, np.random.default_rng(s)).tobytes() for s in range(5)}
    assert len(outs) == 5


def test_one_of_picks_each_option_and_compose_chains():
    img = ramp(4, 4)
    pool = OneOf([RandHFlip(p=1), RandVFlip(p=1)])
    seen = {pool(img, np.random.default_rng(s)).tobytes() for s in range(20)}
    assert seen == {img[:, ::-1].tobytes(), img[::-1].tobytes()}
    both = Compose([RandHFlip(p=1), RandVFlip(p=1)])(img)
    np.testing.assert_array_equal(both, img[::-1, ::-1])


def test_patch_grid_geometry_covers_image_with_even_stride():
    corners = F.patch_grid(500, 25, 224)
    assert len(corners) == 25
    rows = sorted({r for r, _ in corners})
    assert rows == [0, 69, 138, 207, 276]  # stride (500-224)/4 = 69
    assert corners[0] == (0, 0) and corners[-1] == (276, 276)
    covered = np.zeros((500, 500), bool)
    for r, c in corners:
        covered[r:r + 224, c:c + 224] = True
    assert covered.all()


def test_patch_grid_single_patch_is_centred():
    assert F.patch_grid((10, 20), 1, 4) == [(3, 8)]


def test_patch_grid_errors_name_value():
    with pytest.raises(ValueError, match="square number.*got 24"):
        F.patch_grid(500, 24, 224)
    with pytest.raises(ValueError, match="patch size 600x600 is larger than the image 500x500"):
        F.patch_grid(500, 25, 600)


def test_extract_patches_and_views():
    img = ramp(6, 6)
    p = F.extract_patches(img, 4, 4)
    assert p.shape == (4, 4, 4)
    np.testing.assert_array_equal(p[3], img[2:6, 2:6])
    v = F.make_views(img, (4, 4), flip=True)
    assert v.shape == (8, 4, 4)
    np.testing.assert_array_equal(v[4], p[0][:, ::-1])
    assert F.make_views(img).shape == (1, 6, 6)
    rot = F.make_views(img, angles=[180.0])
    assert rot.shape == (2, 6, 6)
    np.testing.assert_allclose(rot[1], img[::-1, ::-1], atol=1e-5)
    assert F.make_views(img, (4, 4), flip=True, angles=[90.0]).shape == (16, 4, 4)


def test_build_transform_from_recipe_steps_and_errors():
    t = build_transform({"name": "crop", "top": 0.05, "bottom": 0.05, "left": 0.05, "right": 0.05})
    assert t(ramp(20, 20)).shape == (18, 18)
    with pytest.raises(ConfigError, match="unknown transform 'emboss'; valid names: .*blur"):
        build_transform({"name": "emboss"})
    with pytest.raises(ConfigError, match="no parameter"):
        build_transform({"name": "resize", "size": 10, "colour": 1})
    with pytest.raises(ConfigError, match="clip_limit must be > 0"):
        build_transform({"name": "clahe", "clip_limit": -1})
    with pytest.raises(ConfigError, match="one_of"):
        build_pipeline([], mode="random")
