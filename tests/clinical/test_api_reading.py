"""``api.predict`` attaches the reading when an age is known, and only then."""

import datetime

import numpy as np
import pytest

from boneage import api
from boneage.data.synthetic import write_example_radiograph
from boneage.errors import InputError
from boneage.io import write_dicom


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    return write_example_radiograph(tmp_path_factory.mktemp("png") / "hand.png", size=64)


def test_no_age_no_reading(png, tiny_model):
    result = api.predict(png, "M", model=tiny_model)
    assert result.clinical is None and "clinical" not in result.to_dict()


def test_age_given_gives_the_reading_of_that_bone_age(png, tiny_model):
    result = api.predict(png, "M", model=tiny_model, age_months=96)
    r = result.clinical
    assert (r.chronological_age_months, r.age_source, r.sex) == (96.0, "age given", "M")
    assert r.bone_age_months == result.bone_age_months
    assert r.difference_months == pytest.approx(result.bone_age_months - 96)
    assert r.z_score == pytest.approx((result.bone_age_months - 96) / 9.1)  # boys at 96: SD 9.1
    assert result.to_dict()["clinical"]["z_score"] == round(r.z_score, 2)


def test_dicom_dates_are_used_and_given_dates_beat_them(tmp_path, tiny_model):
    pixels = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    dcm = write_dicom(tmp_path / "f.dcm", pixels, sex="F", birth_date=datetime.date(2014, 1, 1),
                      study_date=datetime.date(2024, 1, 1), patient_age="009Y")
    r = api.predict(dcm, model=tiny_model).clinical
    assert r.age_source == "DICOM PatientBirthDate and StudyDate" and r.sex == "F"
    assert r.chronological_age_months == pytest.approx(3652 / (365.25 / 12))
    r = api.predict(dcm, model=tiny_model, birth_date="2018-01-01", study_date="2020-01-01").clinical
    assert (r.age_source, r.chronological_age_months) == ("birth and study dates given",
                                                         pytest.approx(730 / (365.25 / 12)))


def test_bad_age_names_the_image_and_runs_no_model(png, tiny_model):
    with pytest.raises(InputError) as info:
        api.predict(png, "M", model=tiny_model, birth_date="2020-05-01", study_date="2019-01-01")
    assert str(info.value) == (f"{png}: study date 2019-01-01 is before birth date 2020-05-01; "
                               "the study date must be on or after the birth date")
