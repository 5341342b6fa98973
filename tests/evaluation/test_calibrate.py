"""``boneage calibrate`` end to end on synthetic radiographs with a small model: the file it
writes carries an interval and a gate, predicts the same bone ages, and refuses noise."""

import json

import numpy as np
import pytest

from boneage import api
from boneage.data.negatives import negative_image
from boneage.errors import QualityRefusal
from boneage.inference.loader import load_predictor


@pytest.fixture(scope="module")
def half_held_model(tmp_path_factory):
    """A small CNN trained one epoch on 160 synthetic radiographs, half of them held back."""
    from boneage.config import Recipe
    from boneage.data.synthetic import write_synthetic_dataset
    from boneage.engine import fit

    folder = write_synthetic_dataset(tmp_path_factory.mktemp("cal") / "set", 160, size=48, seed=5)
    recipe = Recipe.from_dict({
        "name": "halfheld", "data": {"root": str(folder), "val_fraction": 0.5},
        "preprocess": [{"name": "resize", "size": 32}],
        "model": {"name": "small_cnn", "options": {"width": 4, "stages": 3}},
        "train": {"epochs": 1, "batch_size": 16, "device": "cpu"},
    })
    model = fit(recipe, tmp_path_factory.mktemp("halfheld"), progress=False, log=lambda *_: None).model_path
    return folder, model


def _other_body_parts(folder, n_per_part=4):
    """A negatives folder (labels.csv id,body_part + images/) of generated stand-ins: 'legs'
    are long vertical bars, 'hips' a pair of rings; enough to exercise the fitting path."""
    import cv2

    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(n_per_part):
        leg = np.full((120, 60), 30, np.uint8)
        cv2.rectangle(leg, (20 + i, 5), (38 + i, 115), 220, -1)
        hip = np.full((80, 120), 30, np.uint8)
        for cx in (35 + i, 85 - i):
            cv2.circle(hip, (cx, 40), 22, 200, 6)
        for name, image in ((f"leg{i}", leg), (f"hip{i}", hip)):
            cv2.imwrite(str(folder / "images" / f"{name}.png"), image)
            rows.append(f"{name},{name[:3]}")
    (folder / "labels.csv").write_text("id,body_part\n" + "\n".join(rows) + "\n")
    return folder


def test_calibrate_writes_interval_and_gate_without_changing_the_bone_age(cli, half_held_model, tmp_path):
    folder, model = half_held_model
    out = tmp_path / "calibrated.safetensors"
    negatives = _other_body_parts(tmp_path / "other")
    code, text, err = cli("calibrate", folder, "--model", model, "--out", out, "--fit-images", 40,
                          "--negatives", negatives, "--quiet", "--json")
    assert code == 0, err
    facts = json.loads(text)
    cal = facts["calibration"]
    assert cal["n_calibration"] == cal["n_test"] == 40 and cal["level"] == 0.9
    assert len(cal["half_widths"]) == 3 and 0.0 <= cal["coverage"] <= 1.0
    assert cal["coverage_calibration"] >= 0.9          # by construction of the conformal quantile
    gate = facts["quality_gate"]
    assert gate["n_fit_radiographs"] == 40
    # Floors under what this seed measures (accepted 0.975, generated negatives refused 0.84,
    # the stand-in body parts 1.0): an inverted distance quantile accepts none of the held-back
    # images, a bypassed classifier refuses none of the negatives.
    assert gate["accepted_test"] >= 0.9
    assert gate["rejected_test_negatives"] >= 0.7 and gate["rejected_real_test"] >= 0.75
    # half of each body part fitted on (as stored and in 6 variants), the other half only measured
    assert gate["n_negatives_fit"] == gate["n_negatives_test"] == 4
    assert {i[:3] for i in gate["negatives_test_ids"]} == {"leg", "hip"}
    assert set(gate["rejected_real_per_part"]) == {"hip", "leg"} and gate["classes"] == ["hand", "generated", "hip", "leg"]

    before, after = load_predictor(model), load_predictor(out)
    assert before.quality_gate is None and before.calibration is None
    assert after.quality_gate is not None and after.calibration is not None
    assert after.quality_gate.class_names == ("hand", "generated", "hip", "leg")
    image = sorted((folder / "images").glob("*.png"))[0]
    p0 = api.predict(image, "F", model=before)
    p1 = api.predict(image, "F", model=after, force=True)
    assert p1.bone_age_months == pytest.approx(p0.bone_age_months, abs=1e-6)
    assert p0.interval is None
    assert p1.interval.low_months < p1.bone_age_months < p1.interval.high_months
    assert p1.to_dict()["interval"]["level"] == 0.9
    with pytest.raises(QualityRefusal, match="not assessed"):
        api.predict(negative_image("noise/uniform", 0), "F", model=after)

    code, _, err = cli("calibrate", folder, "--model", model, "--out", out)
    assert code == 2 and "file exists" in err
    code, _, err = cli("calibrate", folder, "--model", model, "--out", tmp_path / "x.safetensors", "--level", "1.5")
    assert code == 2 and "--level must be in [0.5, 1), got 1.5" in err
    code, _, err = cli("calibrate", folder, "--model", model, "--out", tmp_path / "x.safetensors",
                       "--fit-all-under", "-1")
    assert code == 2 and "--fit-all-under must be >= 0 months, got -1.0" in err


def _stacks(rng, n, centre, d=12):
    """(n, 8, d) orientation stacks: each orientation its own offset around ``centre``."""
    offsets = np.eye(8, d) * 3.0
    return centre + offsets[None] + rng.normal(0, 0.5, (n, 8, d))


@pytest.mark.parametrize("classifier", ["logistic", "lda"])
def test_fit_gate_separates_hands_from_other_body_parts_with_either_classifier(classifier):
    from boneage.evaluation.calibrate import CalibrationSettings, fit_gate, refused_share

    rng = np.random.default_rng(0)
    hand, leg, generated = np.zeros(12), np.r_[np.zeros(8), 4.0, 0, 0, 0], np.r_[np.zeros(9), 4.0, 0, 0]
    settings = CalibrationSettings(classifier=classifier, pca_components=4)
    gate = fit_gate(_stacks(rng, 60, hand), _stacks(rng, 40, generated), _stacks(rng, 60, hand), settings,
                    (_stacks(rng, 40, leg), ["leg"] * 40))
    assert gate.class_names == ("hand", "generated", "leg") and gate.distance_override == 0.5
    assert refused_share(gate, _stacks(rng, 30, hand)) <= 0.1
    assert refused_share(gate, _stacks(rng, 30, leg)) == 1.0
    with pytest.raises(ValueError, match="classifier must be 'logistic' or 'lda', got 'svm'"):
        fit_gate(_stacks(rng, 10, hand), _stacks(rng, 10, generated), _stacks(rng, 10, hand),
                 CalibrationSettings(classifier="svm"))


def test_gate_fit_radiographs_adds_every_youngest_hand_once_and_keeps_the_draw():
    from types import SimpleNamespace

    from boneage.evaluation.calibrate import CalibrationSettings, gate_fit_radiographs

    train = [SimpleNamespace(id=f"r{i}", boneage=float(age)) for i, age in enumerate(range(6, 206, 4))]
    drawn, young = gate_fit_radiographs(train, CalibrationSettings(n_fit_radiographs=10),
                                        np.random.default_rng(3))
    plain, none = gate_fit_radiographs(train, CalibrationSettings(n_fit_radiographs=10, fit_all_under_months=0),
                                       np.random.default_rng(3))
    assert [s.id for s in drawn] == [s.id for s in plain] and len(drawn) == 10 and none == []
    under = {s.id for s in train if s.boneage < 36}     # 6, 10, ..., 34 months: 8 radiographs
    assert len(under) == 8
    # every one under 36 months is fitted on, exactly once, whether drawn or added
    assert {s.id for s in young} == under - {s.id for s in drawn}
    assert all(s.boneage < 36 for s in young) and not {s.id for s in young} & {s.id for s in drawn}
