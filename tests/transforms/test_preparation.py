"""Preparation augmentations and the canonical preparation (issue 8)."""

import numpy as np
import pytest
from PIL import Image

from boneage.errors import ConfigError
from boneage.transforms import build_transform, functional as F


def textured(size=96, seed=0):
    """A smooth blob with fine texture: what aliasing turns into a different image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.08)
    fine = 0.5 + 0.5 * np.sin(2 * np.pi * 0.45 * np.arange(size))[None, :] * np.ones((size, 1))
    return np.clip(0.6 * blob + 0.25 * fine + 0.05 * rng.random((size, size)), 0, 1).astype(np.float32)


def test_nearest_resample_matches_pillow_nearest():
    # rsna-100px was made with Pillow's NEAREST; ours must reproduce that sampling exactly.
    img = (np.random.default_rng(1).random((250, 190)) * 255).astype(np.uint8)
    ours = F.resample(img.astype(np.float32) / 255, 100, "nearest")
    pil = np.asarray(Image.fromarray(img).resize((100, 100), Image.NEAREST)).astype(np.float32) / 255
    np.testing.assert_array_equal(ours, pil)


@pytest.mark.parametrize("method", sorted(F.RESAMPLE_METHODS))
def test_resample_shape_and_range(method):
    out = F.resample(textured(), (40, 30), method)
    assert out.shape == (40, 30) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_resample_rejects_unknown_method():
    with pytest.raises(ValueError, match=r"resampling method must be one of .*got 'bilinear'"):
        F.resample(textured(), 10, "bilinear")


def test_rescale_roundtrip_nearest_differs_from_area_and_keeps_shape():
    img = textured()
    nn = F.rescale_roundtrip(img, 0.3, "linear", "nearest")
    ar = F.rescale_roundtrip(img, 0.3, "area", "area")
    assert nn.shape == ar.shape == img.shape
    assert np.abs(nn - ar).mean() > 1e-3
    with pytest.raises(ValueError, match="rescale factor must be in"):
        F.rescale_roundtrip(img, 0.0)


def test_canonical_preparation_makes_nearest_and_area_copies_nearly_equal():
    # One source, shrunk twice as real pipelines do: aliased (nearest) and anti-aliased (area).
    src = np.clip(textured(1000, seed=2) + 0.05 * np.random.default_rng(3).standard_normal((1000, 1000)),
                  0, 1).astype(np.float32)
    nn, ar = F.resample(src, 100, "nearest"), F.resample(src, 100, "area")
    before = np.sqrt(np.mean((nn - ar) ** 2))
    cn, ca = F.lowpass_resize(nn, 112, 1.1), F.lowpass_resize(ar, 112, 1.1)
    after = np.sqrt(np.mean((cn - ca) ** 2))
    assert cn.shape == (112, 112)
    assert after < 0.3 * before
    assert after < 0.02
    # sigma 0 is a plain resize: it keeps the difference
    assert np.sqrt(np.mean((F.lowpass_resize(nn, 112, 0) - F.lowpass_resize(ar, 112, 0)) ** 2)) > 2 * after


def test_sharpen_hand_computed_and_noise_statistics():
    img = np.full((9, 9), 0.5, np.float32)
    img[4, 4] = 0.6
    out = F.sharpen(img, 1.0, 1.0)
    assert out[4, 4] > 0.6 and np.isclose(out[0, 0], 0.5, atol=1e-3)
    assert np.array_equal(F.sharpen(img, 0.0), img)
    noisy = F.add_noise(np.full((200, 200), 0.5, np.float32), 0.02, np.random.default_rng(0))
    assert abs(noisy.std() - 0.02) < 0.002 and abs(noisy.mean() - 0.5) < 0.001


def test_jpeg_quantize_gamma_window_by_hand():
    img = textured()
    assert np.abs(F.jpeg_compress(img, 10) - img).mean() > np.abs(F.jpeg_compress(img, 95) - img).mean()
    q = F.quantize(np.array([[0.0, 0.2, 0.5, 1.0]], np.float32), 2)  # 4 levels: 0, 1/3, 2/3, 1
    np.testing.assert_allclose(q, [[0.0, 1 / 3, 2 / 3, 1.0]], atol=1e-6)
    np.testing.assert_allclose(F.adjust_gamma(np.array([[0.25, 1.0]], np.float32), 0.5), [[0.5, 1.0]])
    np.testing.assert_allclose(F.window(np.array([[0.1, 0.5, 0.9]], np.float32), 0.1, 0.9), [[0.0, 0.5, 1.0]])


def test_border_pad_and_marker_change_only_what_they_say():
    img = np.full((50, 40), 0.5, np.float32)
    b = F.add_border(img, 0.1, 1.0)
    assert np.all(b[:5] == 1.0) and np.all(b[:, :4] == 1.0) and np.all(b[5:45, 4:36] == 0.5)
    p = F.pad(img, top=0.2, left=0.5, value=0.0)
    assert p.shape == (60, 60) and np.all(p[:10] == 0) and np.all(p[10:, 20:] == 0.5)
    assert F.pad_to_square(img).shape == (50, 50)
    m = F.burn_marker(img, "L", "bottom_right", 0.2, 1.0)
    changed = np.argwhere(m != img)
    assert len(changed) > 10 and m.max() > 0.9
    assert changed[:, 0].min() >= 25 and changed[:, 1].min() >= 20  # bottom-right quadrant


@pytest.mark.parametrize("call, message", [
    (lambda: F.adjust_gamma(textured(), 0), "gamma must be > 0, got 0"),
    (lambda: F.adjust_gamma(textured(), -1.5), "gamma must be > 0, got -1.5"),
    (lambda: F.jpeg_compress(textured(), 0), "JPEG quality must be an integer in 1-100, got 0"),
    (lambda: F.jpeg_compress(textured(), 101), "JPEG quality must be an integer in 1-100, got 101"),
    (lambda: F.quantize(textured(), 17), "bits must be an integer in 1-16, got 17"),
    (lambda: F.window(textured(), 0.5, 0.5), "window needs finite low < high"),
    (lambda: F.add_border(textured(), 0.6), "border width must be a fraction in"),
    (lambda: F.burn_marker(textured(), corner="middle"), "marker corner must be one of"),
    (lambda: F.lowpass_resize(textured(), 10, -1), "sigma must be >= 0, got -1"),
])
def test_out_of_range_parameters_name_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# Each random recipe step: shape and range kept, same seed -> same output, and its parameter
# really changes the output.
RANDOM_STEPS = [
    ({"name": "rescale", "p": 1.0}, {"name": "rescale", "p": 1.0, "factor_min": 1.0, "factor_max": 1.0,
                                     "first": ["linear"], "second": ["linear"]}),
    ({"name": "sharpen", "p": 1.0, "amount_min": 1.5, "amount_max": 1.5},
     {"name": "sharpen", "p": 1.0, "amount_min": 0.0, "amount_max": 0.0}),
    ({"name": "noise", "p": 1.0, "std_min": 0.05, "std_max": 0.05},
     {"name": "noise", "p": 1.0, "std_min": 0.0, "std_max": 0.0}),
    ({"name": "jpeg", "p": 1.0, "quality_min": 10, "quality_max": 10},
     {"name": "jpeg", "p": 1.0, "quality_min": 100, "quality_max": 100}),
    ({"name": "quantize", "p": 1.0, "bits": [3]}, {"name": "quantize", "p": 1.0, "bits": [16]}),
    ({"name": "gamma", "p": 1.0, "gamma_min": 0.5, "gamma_max": 0.5},
     {"name": "gamma", "p": 1.0, "gamma_min": 1.0, "gamma_max": 1.0}),
    ({"name": "window", "p": 1.0, "shift": 0.3}, {"name": "window", "p": 1.0, "shift": 0.0}),
    ({"name": "border", "p": 1.0, "width_min": 0.1, "width_max": 0.1},
     {"name": "border", "p": 1.0, "width_min": 0.0, "width_max": 0.0}),
    ({"name": "pad", "p": 1.0, "max_fraction": 0.5}, {"name": "pad", "p": 1.0, "max_fraction": 0.0}),
    ({"name": "marker", "p": 1.0, "size_min": 0.2, "size_max": 0.2},
     {"name": "marker", "p": 0.0}),
    ({"name": "blur", "p": 1.0, "sigma_min": 1.5, "sigma_max": 1.5},
     {"name": "blur", "p": 0.0}),
]


@pytest.mark.parametrize("strong, neutral", RANDOM_STEPS, ids=[s["name"] for s, _ in RANDOM_STEPS])
def test_random_preparation_steps(strong, neutral):
    img = textured()
    t = build_transform(strong)
    a = t(img, np.random.default_rng(5))
    b = t(img, np.random.default_rng(5))
    assert a.shape == img.shape and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    n = build_transform(neutral)(img, np.random.default_rng(5))
    assert np.abs(a - img).mean() > 5 * max(np.abs(n - img).mean(), 1e-4)


def test_probability_zero_is_identity_and_bad_values_are_config_errors():
    img = textured()
    assert build_transform({"name": "jpeg", "p": 0.0})(img, np.random.default_rng(0)) is img
    for spec, text in [({"name": "gamma", "gamma_min": 0}, "need 0 < gamma_min"),
                       ({"name": "jpeg", "quality_min": 0}, "1-100, got 0"),
                       ({"name": "rescale", "second": ["bicubic"]}, "bicubic"),
                       ({"name": "noise", "p": 2}, "probability p must be in")]:
        with pytest.raises(ConfigError, match=text):
            build_transform(spec)
    with pytest.raises(ConfigError, match="unknown transform 'jpg'"):
        build_transform({"name": "jpg"})


def test_border_modes_fill_rotated_corners():
    img = np.full((40, 40), 0.6, np.float32)
    black = F.rotate(img, 10.0)
    assert black[0, 0] == 0.0 and black[20, 20] == pytest.approx(0.6)
    for border in ("replicate", "reflect"):
        np.testing.assert_allclose(F.rotate(img, 10.0, border=border), 0.6, atol=1e-6)
        np.testing.assert_allclose(F.zoom(img, 0.8, border=border), 0.6, atol=1e-6)
    views = F.make_views(img, angles=[10.0], border="replicate")
    np.testing.assert_allclose(views, 0.6, atol=1e-6)
    with pytest.raises(ValueError, match=r"border must be one of \['constant', 'reflect', 'replicate'\], got 'wrap'"):
        F.rotate(img, 5.0, border="wrap")
    with pytest.raises(ConfigError, match="border must be one of"):
        build_transform({"name": "rotate", "border": "mirror"})


def test_relative_noise_scales_with_the_image_contrast():
    rng = np.random.default_rng(0)
    dim = (0.1 + 0.1 * rng.random((200, 200))).astype(np.float32)    # 1-99 % range ~0.098
    full = (rng.random((200, 200))).astype(np.float32)                # range ~0.98
    d_dim = F.add_noise(dim, 0.1, np.random.default_rng(1), relative=True) - dim
    d_full = F.add_noise(np.clip(full, 0.2, 0.8), 0.01, np.random.default_rng(1)) - np.clip(full, 0.2, 0.8)
    assert d_dim.std() == pytest.approx(0.1 * 0.098, rel=0.1)
    assert d_full.std() == pytest.approx(0.01, rel=0.1)


def test_stretch_maps_percentiles_to_the_unit_range():
    img = np.linspace(0.2, 0.4, 101, dtype=np.float32).reshape(1, 101)
    out = F.stretch_percentiles(img, 0.0, 100.0)
    np.testing.assert_allclose(out, np.linspace(0, 1, 101).reshape(1, 101), atol=1e-5)
    # a narrower window of the same image gives the same stretched image
    np.testing.assert_allclose(F.stretch_percentiles(F.window(img, 0.1, 0.5), 0.0, 100.0), out, atol=1e-5)
    flat = np.full((5, 5), 0.3, np.float32)
    assert np.array_equal(F.stretch_percentiles(flat), flat)
    with pytest.raises(ValueError, match="need 0 <= low < high <= 100"):
        F.stretch_percentiles(img, 60, 40)


def test_stretch_margin_keeps_a_frame_out_of_the_percentiles():
    rng = np.random.default_rng(0)
    img = (0.35 + 0.4 * rng.random((100, 100))).astype(np.float32)   # a grey film, 0.35-0.75
    framed = F.add_border(img, 0.04, 1.0)                             # a white collimator frame
    inner = (slice(8, 92), slice(8, 92))
    # without a margin the frame becomes the 99th percentile and darkens the hand ...
    assert not np.allclose(F.stretch_percentiles(framed)[inner], F.stretch_percentiles(img)[inner], atol=0.05)
    # ... with one wider than the frame the middle gets the contrast it had before the frame
    np.testing.assert_array_equal(F.stretch_percentiles(framed, margin=0.08)[inner],
                                  F.stretch_percentiles(img, margin=0.08)[inner])
    # the frame itself is still stretched, not left out of the image
    assert F.stretch_percentiles(framed, margin=0.08)[0, 0] == 1.0
    assert np.array_equal(F.stretch_percentiles(img, margin=0.0), F.stretch_percentiles(img))
    with pytest.raises(ValueError, match=r"stretch margin must be a fraction in \[0, 0.5\), got 0.5"):
        F.stretch_percentiles(img, margin=0.5)
    with pytest.raises(ConfigError, match="stretch margin must be a fraction"):
        build_transform({"name": "stretch", "margin": -0.1})


def grey_film(seed=0, shape=(100, 100)):
    """A film on a grey background (0.35-0.75), as the RSNA file that a frame moved most."""
    return (0.35 + 0.4 * np.random.default_rng(seed).random(shape)).astype(np.float32)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_find_frame_measures_a_frame_on_every_side(value):
    framed = F.add_border(grey_film(), 0.04, value)                  # 4 px of 100
    assert F.find_frame(framed) == (4, 4, 4, 4)
    assert F.find_frame(grey_film()) == (0, 0, 0, 0)
    # one band of another value outside the frame stops at the change of value
    twice = F.pad(framed, 0.05, 0, 0, 0, value=0.5)
    assert F.find_frame(twice)[0] == 5


def test_find_frame_stops_at_max_fraction_and_at_noise_beyond_tol():
    wide = F.add_border(grey_film(), 0.3, 1.0)
    assert F.find_frame(wide, max_fraction=0.1) == (10, 10, 10, 10)
    noisy = F.add_border(grey_film(), 0.04, 0.9) + np.random.default_rng(1).normal(0, 0.01, (100, 100)).astype(np.float32)
    assert F.find_frame(noisy) == (0, 0, 0, 0)
    assert F.find_frame(noisy, tol=0.1) == (4, 4, 4, 4)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_unframe_continues_the_film_over_its_frame(value):
    img = grey_film()
    out = F.unframe(F.add_border(img, 0.04, value))
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[4:-4, 4:-4], img[4:-4, 4:-4])     # the film is untouched
    np.testing.assert_array_equal(out[0, 4:-4], img[4, 4:-4])            # its edge line, repeated
    np.testing.assert_array_equal(out[:, 0], out[:, 4])
    # the frame no longer decides the contrast the canonical stretch gives the film
    lo_hi = np.percentile(out, [1, 99])
    np.testing.assert_allclose(lo_hi, np.percentile(img, [1, 99]), atol=0.02)
    assert abs(np.percentile(F.add_border(img, 0.04, value), 99 if value else 1) - value) < 1e-6


def test_unframe_leaves_a_background_band_of_the_films_own_value():
    # A black background reaching the edge (most radiographs, every rsna-fullres image) is
    # a uniform band too, but not a frame: the line inside it is black as well.
    img = np.zeros((100, 100), np.float32)
    img[30:90, 40:60] = np.linspace(0.4, 0.9, 60)[:, None]              # a "finger" off the edges
    assert F.find_frame(img) != (0, 0, 0, 0)
    np.testing.assert_array_equal(F.unframe(img), img)
    np.testing.assert_array_equal(F.unframe(grey_film()), grey_film())
    flat = np.full((20, 30), 0.4, np.float32)                            # one value everywhere
    np.testing.assert_array_equal(F.unframe(flat), flat)


def test_unframe_only_replaces_the_sides_that_differ_from_the_film():
    img = grey_film()
    img[:, 90:] = 0.55                                                   # a uniform strip of film grey
    left_band = img.copy()
    left_band[:, :6] = 1.0                                               # a white band on the left only
    out = F.unframe(left_band)
    np.testing.assert_array_equal(out[:, 6:], img[:, 6:])
    np.testing.assert_array_equal(out[:, 0], img[:, 6])
    # a band closer to the film than min_contrast stays
    np.testing.assert_array_equal(F.unframe(left_band, min_contrast=0.9), left_band)


def test_unframe_gives_nearly_the_same_canonical_input_for_a_framed_and_a_plain_film():
    yy, xx = np.mgrid[:400, :400] / 400
    hand = np.exp(-((yy - 0.55) ** 2 + (xx - 0.5) ** 2) / 0.05)         # a bright hand on a grey film
    img = (0.35 + 0.4 * hand + np.random.default_rng(3).normal(0, 0.01, (400, 400))).astype(np.float32)
    canon = build_transform({"name": "lowpass_resize", "size": 112, "sigma": 1.1}), build_transform("stretch")

    def canonical(x):
        return canon[1](canon[0](F.resample(F.unframe(x), 100, "area")))

    framed = F.add_border(img, 0.04, 1.0)
    plain_in = canonical(img)
    without = canon[1](canon[0](F.resample(framed, 100, "area")))
    inner = (slice(10, 102), slice(10, 102))
    assert np.abs(without[inner] - plain_in[inner]).mean() > 0.1       # the frame darkened the film
    assert np.abs(canonical(framed)[inner] - plain_in[inner]).mean() < 0.01


@pytest.mark.parametrize("params, message", [
    ({"tol": -0.1}, r"unframe tol must be in \[0, 1\), got -0.1"),
    ({"max_fraction": 0.5}, r"unframe max_fraction must be a fraction in \(0, 0.5\), got 0.5"),
    ({"min_contrast": 0}, r"unframe min_contrast must be in \(0, 1\], got 0"),
])
def test_unframe_rejects_parameters_out_of_range(params, message):
    with pytest.raises(ValueError, match=message):
        F.unframe(grey_film(), **params)
    with pytest.raises(ConfigError, match=message):
        build_transform({"name": "unframe", **params})
