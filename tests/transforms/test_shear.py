"""The shear augmentation (the paced-transfer paper's online shear)."""

import numpy as np
import pytest

from boneage.errors import ConfigError
from boneage.transforms import build_transform
from boneage.transforms import functional as F


def test_a_shear_slants_a_vertical_line_by_the_tangent_of_its_angle():
    image = np.zeros((41, 41), np.float32)
    image[:, 20] = 1.0
    sheared = F.shear(image, 45.0)
    for row in (5, 20, 35):
        assert int(np.argmax(sheared[row])) == 20 + (row - 20)  # tan 45 = 1 pixel per row
    assert np.array_equal(F.shear(image, 0.0), image)
    assert sheared.shape == image.shape and sheared.dtype == np.float32


def test_random_shear_draws_within_its_range_and_refuses_a_bad_one():
    image = np.zeros((41, 41), np.float32)
    image[:, 20] = 1.0
    step = build_transform({"name": "shear", "max_deg": 10})
    rng = np.random.default_rng(0)
    for _ in range(5):
        top = int(np.argmax(step(image, rng)[0]))
        assert abs(top - 20) <= round(20 * np.tan(np.deg2rad(10))) + 1
    with pytest.raises(ConfigError, match=r"max_deg must be in \[0, 90\), got 90"):
        build_transform({"name": "shear", "max_deg": 90})
