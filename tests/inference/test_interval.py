"""Split-conformal prediction intervals: hand-computed quantiles and coverage on data with
known noise."""

import numpy as np
import pytest

from boneage.inference.interval import (
    ConformalCalibration, PredictionInterval, conformal_quantile, coverage, fit_conformal,
)


def test_conformal_quantile_is_the_ceil_n_plus_1_level_th_residual():
    residuals = np.arange(1, 20)                      # 19 residuals 1..19
    assert conformal_quantile(residuals, 0.9) == 18   # ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(-residuals, 0.5) == 10  # absolute values; ceil(10) = 10th
    assert conformal_quantile([1, 2, 3], 0.9) == float("inf")  # 3 residuals cannot give 90 %


def test_conformal_quantile_of_a_small_signed_unsorted_sample_by_hand():
    # |r| sorted: 0.25 0.5 1.5 2.0 2.5 3.0 4.0 6.0 8.0 (n = 9)
    residuals = [2.5, -0.5, 4.0, -1.5, 3.0, -6.0, 0.25, 8.0, -2.0]
    assert conformal_quantile(residuals, 0.75) == 6.0   # ceil(10 * 0.75) = 8th; ceil(9 * 0.75) would be 7th (4.0)
    assert conformal_quantile(residuals, 0.5) == 2.5    # ceil(5.0) = 5th
    assert conformal_quantile(residuals, 0.9) == 8.0    # ceil(9.0) = 9th, the largest
    assert conformal_quantile(residuals, 0.91) == float("inf")  # ceil(9.1) = 10th of 9


def test_intervals_by_band_and_never_below_zero():
    cal = ConformalCalibration(level=0.9, edges=(100.0,), half_widths=(5.0, 12.0), n=(10, 10))
    assert cal.interval(50.0) == PredictionInterval(45.0, 55.0, 0.9)
    assert cal.interval(100.0) == PredictionInterval(88.0, 112.0, 0.9)  # the edge opens the upper band
    assert cal.interval(2.0).low_months == 0.0
    assert ConformalCalibration.from_dict(cal.to_dict()) == cal
    assert str(cal.interval(50.0)) == "90% interval 45.0-55.0 months"


@pytest.mark.parametrize("bad, message", [
    (dict(level=1.0), "level must be in"),
    (dict(edges=(1.0, 2.0)), "one half-width per band"),
    (dict(edges=(2.0,), half_widths=(1.0, 1.0)), None),
])
def test_calibration_checks_its_values(bad, message):
    kwargs = dict(level=0.9, edges=(), half_widths=(1.0,)) | bad
    if message is None:
        ConformalCalibration(**kwargs)
        return
    with pytest.raises(ValueError, match=message):
        ConformalCalibration(**kwargs)


def test_coverage_on_known_noise_is_within_two_points_of_nominal():
    rng = np.random.default_rng(0)

    def draw(n):
        truth = rng.uniform(0, 228, n)
        sd = 4.0 + 0.06 * truth                        # noise grows with age, as bone age errors do
        return truth + rng.normal(0, sd), truth

    pred_cal, truth_cal = draw(3000)
    pred_test, truth_test = draw(20000)
    for level in (0.8, 0.9, 0.95):
        cal = fit_conformal(pred_cal, truth_cal, level=level, bands=3)
        assert abs(coverage(cal, pred_test, truth_test) - level) < 0.02
        # the band of the oldest predictions is the widest: the width follows the noise
        assert cal.half_widths[0] < cal.half_widths[-1]
    one = fit_conformal(pred_cal, truth_cal, level=0.9, bands=1)
    # normal noise: the 90 % half-width of a mixture of sds between 4 and 17.7 lies between
    # 1.645 * 4 and 1.645 * 17.7
    assert 1.645 * 4 < one.half_widths[0] < 1.645 * 17.7 and one.edges == ()


def test_fit_conformal_refuses_too_few_images():
    with pytest.raises(ValueError, match="at least 30 images for 3 band"):
        fit_conformal(np.zeros(20), np.zeros(20), bands=3)
