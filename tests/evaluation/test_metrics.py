"""Metrics against hand-computed values."""

import json
import math

import numpy as np
import pytest

from boneage.errors import InputError
from boneage.evaluation import (
    DEFAULT_AGE_BINS_MONTHS,
    format_summary,
    mae,
    mae_by_age_bin,
    mae_by_sex,
    mean_error,
    rmse,
    summarize,
)

PRED = [1, 2, 3]
TRUE = [2, 2, 5]  # errors -1, 0, -2

# Six samples chosen to hit bin edges: 24 belongs to 24-60 (bins are [low, high)),
# 180 to 180-240, 250 is past the last edge and is clipped into 180-240, 60-120 is empty.
BIN_TRUE = [10, 20, 24, 130, 180, 250]
BIN_PRED = [12, 17, 30, 120, 185, 240]  # |errors| 2, 3, 6, 10, 5, 10


def test_mae_rmse_bias_hand_values():
    assert mae(PRED, TRUE) == 1.0
    assert rmse(PRED, TRUE) == pytest.approx(math.sqrt(5 / 3))
    assert mean_error(PRED, TRUE) == pytest.approx(-1.0)
    assert mean_error(TRUE, PRED) == pytest.approx(1.0)
    assert isinstance(mae(np.array(PRED), np.array(TRUE)), float)


def test_accepts_column_vectors():
    assert mae(np.array(PRED, dtype=float)[:, None], TRUE) == 1.0


def test_mae_by_sex_hand_values():
    pred = [10, 20, 30, 40]
    true = [12, 20, 27, 50]  # |errors| 2, 0, 3, 10
    male = [True, False, True, False]
    assert mae_by_sex(pred, true, male) == {"male": 2.5, "female": 5.0}
    assert mae_by_sex(pred, true, np.array([1, 0, 1, 0])) == {"male": 2.5, "female": 5.0}


def test_mae_by_sex_empty_group_is_none():
    assert mae_by_sex(PRED, TRUE, [True, True, True]) == {"male": 1.0, "female": None}
    assert mae_by_sex(PRED, TRUE, [False] * 3) == {"male": None, "female": 1.0}


def test_mae_by_sex_rejects_non_boolean_labels():
    # "M"/"F" strings would all be truthy; refusing them avoids a silent all-male split.
    with pytest.raises(ValueError, match="male"):
        mae_by_sex(PRED, TRUE, ["M", "F", "M"])
    with pytest.raises(ValueError, match="male"):
        mae_by_sex(PRED, TRUE, [1, 2, 0])
    with pytest.raises(ValueError, match="length mismatch"):
        mae_by_sex(PRED, TRUE, [True, False])


def test_mae_by_age_bin_hand_values():
    rows = mae_by_age_bin(BIN_PRED, BIN_TRUE)
    assert [r["bin"] for r in rows] == ["0-24", "24-60", "60-120", "120-180", "180-240"]
    assert [(r["low"], r["high"]) for r in rows] == list(
        zip(DEFAULT_AGE_BINS_MONTHS[:-1], DEFAULT_AGE_BINS_MONTHS[1:])
    )
    assert [r["n"] for r in rows] == [2, 1, 0, 1, 2]
    assert [r["mae"] for r in rows] == [2.5, 6.0, None, 10.0, 7.5]


def test_mae_by_age_bin_bins_by_true_age_and_custom_edges():
    # The prediction (100) is in the upper bin, the true age (5) in the lower one.
    rows = mae_by_age_bin([100], [5], bins=[0, 50, 200])
    assert [(r["bin"], r["n"], r["mae"]) for r in rows] == [("0-50", 1, 95.0), ("50-200", 0, None)]
    # Ages below the first edge are clipped into the first bin.
    assert mae_by_age_bin([0], [-3], bins=[0, 10, 20])[0]["n"] == 1


@pytest.mark.parametrize("bins", [[0], [0, 10, 10], [10, 0], [0, float("nan")]])
def test_mae_by_age_bin_rejects_bad_bins(bins):
    with pytest.raises(ValueError, match="bins"):
        mae_by_age_bin(PRED, TRUE, bins=bins)


def test_summarize_keys_values_and_json():
    male = [True, False, True, True, False, False]
    s = summarize(BIN_PRED, BIN_TRUE, male=male)
    assert set(s) == {"n", "mae", "rmse", "bias", "mae_male", "mae_female", "by_age_bin"}
    assert s["n"] == 6 and type(s["n"]) is int
    assert s["mae"] == pytest.approx(36 / 6)
    assert s["rmse"] == pytest.approx(math.sqrt((4 + 9 + 36 + 100 + 25 + 100) / 6))
    assert s["bias"] == pytest.approx((2 - 3 + 6 - 10 + 5 - 10) / 6)
    assert s["mae_male"] == pytest.approx((2 + 6 + 10) / 3)
    assert s["mae_female"] == pytest.approx((3 + 5 + 10) / 3)
    assert s["by_age_bin"] == mae_by_age_bin(BIN_PRED, BIN_TRUE)
    # Plain Python types only: json.dumps refuses numpy scalars such as np.float32.
    assert json.loads(json.dumps(s)) == s


def test_summarize_without_sex():
    s = summarize(np.array(PRED), np.array(TRUE))
    assert s["mae_male"] is None and s["mae_female"] is None
    json.dumps(s)


def test_format_summary_is_readable():
    text = format_summary(summarize(BIN_PRED, BIN_TRUE, male=[1, 0, 1, 1, 0, 0]))
    lines = text.splitlines()
    assert len(lines) > 5
    assert "n = 6" in lines[0]
    assert any(l.split()[:1] == ["MAE"] and "6.00" in l for l in lines)
    assert any("MAE male" in l and "6.00" in l for l in lines)
    assert any(l.split()[:3] == ["60-120", "0", "-"] for l in lines)
    assert any(l.split() == ["180-240", "2", "7.50"] for l in lines)
    assert "MAE male" not in format_summary(summarize(PRED, TRUE))


@pytest.mark.parametrize("fn", [mae, rmse, mean_error])
def test_errors_name_the_problem(fn):
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="length mismatch.*3.*2"):
        fn([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="pred.*non-finite.*index 1"):
        fn([1, float("nan"), 3], [1, 2, 3])
    with pytest.raises(ValueError, match="true.*non-finite"):
        fn([1, 2, 3], [1, 2, float("inf")])
    with pytest.raises(ValueError, match="numeric"):
        fn(["a", "b"], [1, 2])


def test_errors_are_input_errors():
    # InputError lets the CLI print a one-line message instead of a traceback.
    with pytest.raises(InputError):
        summarize([], [])
    with pytest.raises(InputError, match="1-D"):
        mae(np.zeros((2, 2)), np.zeros((2, 2)))


def test_paired_mae_difference_hand_computed():
    from boneage.evaluation.metrics import paired_mae_difference

    true = [0.0, 0.0, 0.0, 0.0]
    # Every image is exactly 1 month better: every bootstrap round agrees.
    assert paired_mae_difference([1, -1, 1, -1], [2, 2, -2, 2], true) == {"diff": -1.0, "low": -1.0, "high": -1.0}
    # Per-image differences -2 and 0: the mean is -1, resamples range over [-2, 0].
    d = paired_mae_difference([1, 3], [3, 3], [0, 0], n_boot=500)
    assert d["diff"] == -1.0 and -2.0 <= d["low"] < -1.0 < d["high"] <= 0.0
    assert d == paired_mae_difference([1, 3], [3, 3], [0, 0], n_boot=500)  # seeded
    with pytest.raises(InputError, match="length mismatch"):
        paired_mae_difference([1, 2], [1, 2, 3], [0, 0])
    with pytest.raises(InputError, match="level must be in \\(0, 1\\), got 95"):
        paired_mae_difference([1], [1], [0], level=95)


def test_errors_by_band_by_hand():
    from boneage.evaluation.metrics import errors_by_band

    true = [30, 70, 130, 170, 200, 130, 59.9, 60]   # months: 2.5, 5.8, 10.8, 14.2, 16.7, 10.8, 4.99, 5.0 y
    pred = [31, 68, 133, 166, 205, 137, 50, 63]
    male = [True, False, True, False, True, True, False, False]
    rows = {(r["sex"], r["band"]): r for r in errors_by_band(pred, true, male)}
    assert [k for k in rows] == [("F", b) for b in ("0-5", "5-10", "10-13", "13-15", "15+")] + \
        [("M", b) for b in ("0-5", "5-10", "10-13", "13-15", "15+")]
    assert rows["F", "0-5"] == {"sex": "F", "band": "0-5", "n": 1, "mae": pytest.approx(9.9), "bias": pytest.approx(-9.9)}
    # 5.0 years opens the 5-10 band: (-2 + 3) / 2 signed, (2 + 3) / 2 absolute.
    assert (rows["F", "5-10"]["n"], rows["F", "5-10"]["mae"], rows["F", "5-10"]["bias"]) == (2, 2.5, 0.5)
    assert (rows["M", "10-13"]["n"], rows["M", "10-13"]["mae"], rows["M", "10-13"]["bias"]) == (2, 5.0, 5.0)
    assert rows["M", "15+"]["bias"] == 5.0 and rows["F", "13-15"]["bias"] == -4.0
    assert rows["F", "10-13"] == {"sex": "F", "band": "10-13", "n": 0, "mae": None, "bias": None}
