"""Convex-hull hand crop: known boxes, margins, clipping, the no-foreground fallback."""

from __future__ import annotations

import numpy as np
import pytest

from boneage.data.synthetic import make_radiograph
from boneage.errors import ConfigError
from boneage.transforms.hull import convex_hull_box, convex_hull_crop, largest_component
from boneage.transforms import build_transform


def _image_with_box() -> np.ndarray:
    """100x120, a bright rectangle on rows 20-59 / cols 30-89 and a smaller bright speck."""
    img = np.zeros((100, 120), np.float32)
    img[20:60, 30:90] = 0.8
    img[85:88, 5:8] = 1.0  # brighter than the hand, but a separate, smaller component
    return img


def test_box_is_the_largest_component_without_margin():
    assert convex_hull_box(_image_with_box(), margin=0.0) == (20, 60, 30, 90)


def test_box_of_a_polygon_is_its_hull_extent():
    import cv2

    img = np.zeros((100, 120), np.float32)
    # A concave "L": the hull box still spans its extreme points.
    cv2.fillPoly(img, [np.array([[30, 20], [89, 20], [89, 30], [45, 30], [45, 59], [30, 59]],
                                np.int32)], 0.7)
    assert convex_hull_box(img, margin=0.0) == (20, 60, 30, 90)


def test_margin_grows_by_fraction_of_box_side():
    # Box 40 rows x 60 cols: 10 % adds 4 rows and 6 columns on each side.
    assert convex_hull_box(_image_with_box(), margin=0.1) == (16, 64, 24, 96)


def test_margin_clips_at_the_border():
    # 60 % would add 24 rows / 36 columns: top and left and right run past the image.
    assert convex_hull_box(_image_with_box(), margin=0.6) == (0, 84, 0, 120)


def test_explicit_threshold():
    img = _image_with_box()
    img[20:60, 30:60] = 0.3  # left half of the rectangle is dimmer
    assert convex_hull_box(img, threshold=0.5, margin=0.0) == (20, 60, 60, 90)
    assert convex_hull_box(img, threshold=0.2, margin=0.0) == (20, 60, 30, 90)


def test_crop_is_the_box_contents():
    img = _image_with_box()
    out = convex_hull_crop(img, margin=0.0)
    assert out.shape == (40, 60) and out.dtype == np.float32
    assert np.all(out == 0.8)
    out[:] = 0  # a copy, not a view
    assert img[20, 30] == np.float32(0.8)


def test_dark_image_has_no_box_and_crop_falls_back_with_warning():
    img = np.zeros((50, 70), np.float32)
    assert convex_hull_box(img) is None
    with pytest.warns(UserWarning, match="no foreground found for the convex-hull crop"):
        out = convex_hull_crop(img)
    assert out.shape == img.shape and np.array_equal(out, img)


def test_threshold_above_everything_has_no_box():
    assert convex_hull_box(_image_with_box(), threshold=1.0) is None


def test_bad_input_and_margin():
    with pytest.raises(ValueError, match="2-D"):
        convex_hull_box(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="margin"):
        convex_hull_box(_image_with_box(), margin=-0.1)


def test_largest_component_of_empty_mask():
    assert not largest_component(np.zeros((5, 5), np.uint8)).any()


def test_crop_of_synthetic_radiograph_keeps_the_hand():
    r = make_radiograph(120.0, "M", size=128, seed=1, nuisance=False)
    top, bottom, left, right = convex_hull_box(r.image)
    inside = int(r.mask[top:bottom, left:right].sum())
    assert inside >= 0.95 * int(r.mask.sum())
    # And it does remove blank film: the crop is smaller than the image.
    assert (bottom - top) * (right - left) < r.image.size


def test_transform_from_recipe():
    t = build_transform({"name": "convex_hull_crop"})
    assert t(_image_with_box()).shape == (40 + 2 * 1, 60 + 2 * 1)  # 2 % of 40 and of 60 round to 1
    t = build_transform({"name": "convex_hull_crop", "margin": 0.0, "threshold": 0.5})
    assert t(_image_with_box()).shape == (40, 60)
    with pytest.raises(ConfigError, match="margin"):
        build_transform({"name": "convex_hull_crop", "margin": -1})
