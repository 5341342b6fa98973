import numpy as np
import pytest

from boneage.inference import aggregate, tune_percentile


def test_aggregates_on_hand_numbers():
    v = [10.0, 20.0, 30.0, 100.0]
    assert aggregate(v, "mean") == 40.0
    assert aggregate(v, "median") == 25.0
    assert aggregate(v, "percentile", 50) == 25.0
    assert aggregate(v, "percentile", 0) == 10.0
    # 25th percentile, linear: position 0.75 between 10 and 20
    assert aggregate(v, "percentile", 25) == pytest.approx(17.5)


def test_aggregate_errors():
    with pytest.raises(ValueError, match="empty"):
        aggregate([], "median")
    with pytest.raises(ValueError, match="percentile must be in"):
        aggregate([1.0], "percentile", 120)
    with pytest.raises(ValueError, match="unknown aggregate .mode.; valid names: mean, median, percentile"):
        aggregate([1.0], "mode")


def test_tune_percentile_finds_the_bias_correcting_value():
    # every image's patches over-estimate: truth sits at the 20th percentile of its views
    views = [np.linspace(t - 2, t + 8, 11) for t in (50.0, 80.0, 120.0)]
    q, err = tune_percentile(views, [50.0, 80.0, 120.0])
    assert q == 20.0 and err == pytest.approx(0.0, abs=1e-9)
