"""The balanced sampler: the same number of draws from every bone-age bin, a recipe bin width,
and a one-line error for a bin with no images."""

import numpy as np
import pytest

from boneage.engine.check import check_recipe
from boneage.engine.sampling import make_sampler
from boneage.errors import ConfigError
from synthetic_runs import synthetic_recipe


def _ages():
    # 70 images in [0, 12), 20 in [12, 24), 10 in [24, 36) months.
    return np.concatenate([np.linspace(0, 11, 70), np.linspace(12, 23, 20), np.linspace(24, 35, 10)])


def test_every_bin_gives_the_same_count_each_epoch():
    ages = _ages()
    for epoch in range(3):
        sampler = make_sampler("balanced", len(ages), seed=0, epoch=epoch, labels=ages, world=(0, 1))
        order = np.array(list(sampler))
        assert len(order) == 100
        counts = sampler.bin_counts(order)
        assert sorted(counts.tolist()) == [33, 33, 34]  # 100 over 3 bins, one bin one more
        # a small bin repeats all of its images rather than a few of them
        small = np.flatnonzero(ages >= 24)
        assert set(order[np.isin(order, small)]) == set(small)


def test_the_bin_width_is_a_recipe_option():
    ages = _ages()
    sampler = make_sampler("balanced", len(ages), 0, 0, ages, world=(0, 1), bin_months=6.0)
    counts = sampler.bin_counts(np.array(list(sampler)))
    assert len(counts) == 6 and counts.max() - counts.min() <= 1
    recipe = synthetic_recipe("unused", sampler="balanced", sampler_options={"bin_months": 0})
    with pytest.raises(ConfigError, match="train.sampler 'balanced': bin_months must be > 0, got 0"):
        check_recipe(recipe)
    recipe = synthetic_recipe("unused", sampler="shuffle", sampler_options={"bin_months": 6})
    with pytest.raises(ConfigError, match=r"train.sampler 'shuffle' has no parameter\(s\) \['bin_months'\]"):
        check_recipe(recipe)


def test_a_bin_with_no_images_is_one_line():
    ages = np.array([3.0, 5.0, 40.0, 41.0])
    with pytest.raises(ConfigError, match=r"the age bin \[12, 24\) months has no training image \(2 of 4 bins "
                                          r"are empty\); widen train.sampler_options.bin_months \(now 12\)") as err:
        make_sampler("balanced", len(ages), 0, 0, ages, world=(0, 1))
    assert "\n" not in str(err.value)
    make_sampler("balanced", len(ages), 0, 0, ages, world=(0, 1), bin_months=24.0)  # two full bins
