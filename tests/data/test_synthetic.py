"""Tests for the synthetic radiograph generator (boneage.data.synthetic)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from boneage.data.synthetic import (
    AGE_RANGE_MONTHS,
    SyntheticRadiograph,
    make_radiograph,
    sample_radiographs,
    write_example_radiograph,
    write_synthetic_dataset,
)

# Midway between soft tissue (~0.3) and bone (>= ~0.56) with nuisance off.
BONE_THRESHOLD = 0.45


def bone_pixels(r: SyntheticRadiograph) -> int:
    return int((r.image > BONE_THRESHOLD).sum())


def bone_fraction(r: SyntheticRadiograph) -> float:
    # Normalised by hand area, so it measures maturity rather than hand size.
    return bone_pixels(r) / float(r.mask.sum())


@pytest.mark.parametrize("size,shape", [(64, (64, 64)), (128, (128, 128)), ((96, 72), (96, 72))])
@pytest.mark.parametrize("nuisance", [False, True])
def test_shape_dtype_range(size, shape, nuisance):
    r = make_radiograph(100.0, "F", size=size, seed=3, nuisance=nuisance)
    assert isinstance(r, SyntheticRadiograph)
    assert r.image.shape == shape and r.image.dtype == np.float32
    assert r.mask.shape == shape and r.mask.dtype == np.uint8
    assert np.isfinite(r.image).all()
    assert r.image.min() >= 0.0 and r.image.max() <= 1.0
    assert r.age_months == 100.0 and r.sex == "F"


def test_deterministic_and_seed_dependent():
    a = make_radiograph(77.0, "M", size=96, seed=5)
    b = make_radiograph(77.0, "M", size=96, seed=5)
    c = make_radiograph(77.0, "M", size=96, seed=6)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert np.abs(a.image - c.image).mean() > 0.005
    assert not np.array_equal(a.mask, c.mask)  # different rotation/shift


def test_nuisance_changes_the_image():
    clean = make_radiograph(120.0, "M", size=96, seed=2, nuisance=False)
    noisy = make_radiograph(120.0, "M", size=96, seed=2, nuisance=True)
    assert np.abs(clean.image - noisy.image).mean() > 0.005


@pytest.mark.parametrize("age", [AGE_RANGE_MONTHS[0], 60.0, AGE_RANGE_MONTHS[1]])
@pytest.mark.parametrize("sex", ["M", "F"])
def test_mask_is_plausible_and_hand_brighter(age, sex):
    for seed in range(4):
        r = make_radiograph(age, sex, size=64, seed=seed, nuisance=True)
        assert set(np.unique(r.mask)) <= {0, 1}
        assert 0.10 <= r.mask.mean() <= 0.70
        hand = r.image[r.mask == 1].mean()
        background = r.image[r.mask == 0].mean()
        assert hand > background + 0.1


def test_bone_structure_grows_with_age():
    ages = (24.0, 96.0, 180.0)
    rs = [make_radiograph(a, "M", size=128, seed=0, nuisance=False) for a in ages]
    pixels = [bone_pixels(r) for r in rs]
    fractions = [bone_fraction(r) for r in rs]
    assert pixels[0] < pixels[1] < pixels[2]
    assert fractions[0] < fractions[1] < fractions[2]
    # The clean background stays dark; only the hand changes.
    assert all(r.image[r.mask == 0].mean() < 0.1 for r in rs)


@pytest.mark.parametrize("age", [24.0, 96.0, 180.0])
def test_girls_look_older_than_boys(age):
    boy = make_radiograph(age, "M", size=128, seed=0, nuisance=False)
    girl = make_radiograph(age, "F", size=128, seed=0, nuisance=False)
    assert bone_pixels(girl) > bone_pixels(boy)


def count_bone_pieces(r: SyntheticRadiograph) -> int:
    n, _ = cv2.connectedComponents((r.image > BONE_THRESHOLD).astype(np.uint8), connectivity=4)
    return n - 1


def test_ossification_centres_appear_then_fuse():
    # Carpals and epiphyses add separate bright pieces during childhood; at
    # skeletal maturity the epiphyses fuse with their shafts again.
    infant, child, adult = (
        count_bone_pieces(make_radiograph(age, "M", size=256, seed=0, nuisance=False))
        for age in (1.0, 48.0, 228.0)
    )
    assert child >= infant + 8
    assert child >= adult + 8


def _ridge_fit_predict(x_train, y_train, x_test, alpha=1.0):
    try:
        from sklearn.linear_model import Ridge
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        mu, ym = x_train.mean(0), y_train.mean()
        xc = x_train - mu
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(xc.shape[1]), xc.T @ (y_train - ym))
        return (x_test - mu) @ w + ym
    return Ridge(alpha=alpha).fit(x_train, y_train).predict(x_test)


def test_age_is_learnable_from_downsampled_pixels():
    train = sample_radiographs(400, size=64, seed=11, nuisance=True)
    test = sample_radiographs(200, size=64, seed=12, nuisance=True)

    def features(rs):
        px = np.stack([cv2.resize(r.image, (16, 16), interpolation=cv2.INTER_AREA).ravel() for r in rs])
        sex = np.array([[1.0 if r.sex == "M" else 0.0] for r in rs])
        return np.hstack([px, sex]).astype(np.float64)

    y_train = np.array([r.age_months for r in train])
    y_test = np.array([r.age_months for r in test])
    pred = _ridge_fit_predict(features(train), y_train, features(test))
    mae = np.abs(pred - y_test).mean()
    baseline = np.abs(y_train.mean() - y_test).mean()
    assert mae < 0.6 * baseline, (mae, baseline)


def test_sample_radiographs_balanced_deterministic_and_in_range():
    rs = sample_radiographs(40, size=48, seed=9, age_range=(50.0, 150.0))
    assert len(rs) == 40
    assert sum(r.sex == "M" for r in rs) == 20
    ages = np.array([r.age_months for r in rs])
    assert ages.min() >= 50.0 and ages.max() <= 150.0
    assert ages.std() > 15.0
    again = sample_radiographs(40, size=48, seed=9, age_range=(50.0, 150.0))
    assert [r.age_months for r in again] == list(ages)
    np.testing.assert_array_equal(rs[7].image, again[7].image)
    other = sample_radiographs(40, size=48, seed=10, age_range=(50.0, 150.0))
    assert [r.age_months for r in other] != list(ages)
    with pytest.raises(ValueError, match="500"):
        sample_radiographs(3, age_range=(10.0, 500.0))


def test_write_synthetic_dataset(tmp_path):
    out = tmp_path / "ds"
    returned = write_synthetic_dataset(out, 5, size=48, seed=1)
    assert returned == out
    with (out / "labels.csv").open(newline="") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == "id,boneage,male"
    with (out / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["id"]) for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        age = float(r["boneage"])
        assert AGE_RANGE_MONTHS[0] <= age <= AGE_RANGE_MONTHS[1]
        assert round(age, 1) == age and len(r["boneage"].split(".")[1]) == 1
        assert r["male"] in {"True", "False"}
    pngs = sorted((out / "images").glob("*.png"))
    assert sorted(p.name for p in pngs) == [f"{i}.png" for i in range(1, 6)]
    img = cv2.imread(str(out / "images" / "1.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == (48, 48)

    with pytest.raises(ValueError, match="labels.csv"):
        write_synthetic_dataset(out, 3, size=48)
    with pytest.raises(ValueError, match="0"):
        write_synthetic_dataset(tmp_path / "empty", 0)


def test_write_synthetic_dataset_matches_sample_labels(tmp_path):
    write_synthetic_dataset(tmp_path, 4, size=40, seed=3, nuisance=False)
    rs = sample_radiographs(4, size=40, seed=3, nuisance=False)
    with (tmp_path / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["boneage"]) for r in rows] == [round(r.age_months, 1) for r in rs]
    assert [r["male"] == "True" for r in rows] == [r.sex == "M" for r in rs]
    img = cv2.imread(str(tmp_path / "images" / "2.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_allclose(img / 255.0, rs[1].image, atol=1 / 255)


def test_write_example_radiograph(tmp_path):
    path = write_example_radiograph(tmp_path / "sub" / "example.png", age_months=60.0, sex="F", size=64)
    assert path.exists()
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == (64, 64)
    assert img.max() > 100  # bone visible


@pytest.mark.parametrize("sex", ["X", "m", "", None, "male"])
def test_bad_sex_raises(sex):
    with pytest.raises(ValueError) as exc:
        make_radiograph(100.0, sex)
    assert str(exc.value) == f"sex must be 'M' or 'F', got {sex!r}"


@pytest.mark.parametrize("age", [0.0, 0.5, 228.5, 300.0, -4.0, float("nan")])
def test_bad_age_raises_with_value(age):
    with pytest.raises(ValueError) as exc:
        make_radiograph(age, "M", size=32)
    assert repr(age) in str(exc.value)


@pytest.mark.parametrize("size", [31, 8, 0, (31, 64), (64, 16)])
def test_small_size_raises(size):
    with pytest.raises(ValueError, match="size"):
        make_radiograph(100.0, "M", size=size)


def test_range_endpoints_accepted():
    for age in AGE_RANGE_MONTHS:
        r = make_radiograph(age, "F", size=32, seed=0)
        assert r.image.shape == (32, 32)
