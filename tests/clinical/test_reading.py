"""Chronological age (its sources and their order), the reading, and bad input."""

import datetime
import json

import pytest

from boneage.clinical import (
    ChronologicalAge,
    check_age_months,
    clinical_reading,
    parse_date,
    resolve_chronological_age,
)
from boneage.errors import InputError
from boneage.io import ImageMetadata
from boneage.sex import Sex

MONTH = 365.25 / 12
D = datetime.date


# ------------------------------------------------------------------------------ the reading


def test_advanced_at_a_table_point():
    r = clinical_reading(80.0, Sex.MALE, ChronologicalAge(60.0, "age given"))
    assert r.difference_months == pytest.approx(20.0)
    assert r.difference_years == pytest.approx(20.0 / 12)
    assert r.reference_sd_months == pytest.approx(8.79)
    assert r.z_score == pytest.approx(20.0 / 8.79)  # 2.275
    assert r.impression == "advanced"
    assert r.statement == "advanced: bone age 20.0 months (1.7 years) ahead of chronological age"


def test_delayed_between_table_points():
    # Boys at 66 months: SD halfway between 8.79 (60) and 9.17 (72) = 8.98; -18 / 8.98 = -2.004.
    r = clinical_reading(48.0, "M", ChronologicalAge(66.0, "age given"))
    assert r.reference_sd_months == pytest.approx(8.98)
    assert r.z_score == pytest.approx(-18.0 / 8.98)
    assert r.impression == "delayed"
    assert r.statement == "delayed: bone age 18.0 months (1.5 years) behind chronological age"


@pytest.mark.parametrize("bone,age,sex,z", [
    (130.0, 120.0, Sex.MALE, 10.0 / 9.79),
    (100.0, 120.0, Sex.FEMALE, -20.0 / 11.73),
    (170.0, 186.0, Sex.FEMALE, -16.0 / 8.27),       # girls 180..192: (9.23 + 7.31) / 2
])
def test_within_normal_limits_inside_two_sd(bone, age, sex, z):
    r = clinical_reading(bone, sex, ChronologicalAge(age, "age given"))
    assert r.z_score == pytest.approx(z)
    assert abs(r.z_score) <= 2 and r.impression == "within normal limits"


@pytest.mark.parametrize("age,sex,side", [(200.0, Sex.FEMALE, "above"), (2.0, Sex.MALE, "below"),
                                          (0.0, Sex.FEMALE, "below")])
def test_outside_the_table_keeps_bone_age_and_difference_but_no_z_score(age, sex, side):
    r = clinical_reading(age + 6.0, sex, ChronologicalAge(age, "age given"))
    assert r.bone_age_months == pytest.approx(age + 6.0)
    assert r.difference_months == pytest.approx(6.0)
    assert r.z_score is None and r.reference_sd_months is None and r.impression is None
    who = "boys" if sex is Sex.MALE else "girls"
    assert f"is {side} the Greulich–Pyle (Brush Foundation) reference range for {who}" in r.no_z_score_reason
    assert r.statement == "no impression (no z-score); bone age 6.0 months (0.5 years) ahead of chronological age"
    assert any(line.startswith("z-score: none (chronological age") for line in r.lines())


def test_to_dict_is_json_with_the_stated_fields():
    r = clinical_reading(80.0, Sex.FEMALE, ChronologicalAge(72.0, "age given"))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["sex"] == "F" and d["age_source"] == "age given"
    assert d["chronological_age_months"] == 72.0 and d["chronological_age_years"] == 6.0
    assert d["difference_months"] == 8.0 and d["difference_years"] == 0.67  # to 0.01
    assert d["reference_sd_months"] == 10.23
    assert d["z_score"] == 0.78  # 8 / 10.23 = 0.782...
    assert d["impression"] == "within normal limits" and d["no_z_score_reason"] is None
    assert d["reference"] == "Greulich–Pyle (Brush Foundation)"


def test_lines_for_the_terminal():
    r = clinical_reading(80.0, Sex.MALE, ChronologicalAge(60.0, "age given"))
    assert r.lines() == [
        "chronological age: 60.0 months (5.0 years), from age given",
        "difference (bone - chronological): +20.0 months (+1.7 years)",
        "z-score: +2.28 (SD 8.79 months, Greulich–Pyle (Brush Foundation))",
        "impression: advanced: bone age 20.0 months (1.7 years) ahead of chronological age",
    ]


# ----------------------------------------------------------------------- chronological age


def test_age_from_dates_in_mean_months():
    # 2015-03-01 .. 2020-03-01 is 5 * 365 + 2 leap days = 1827 days.
    age = resolve_chronological_age(birth_date="2015-03-01", study_date="20200301")
    assert age.months == pytest.approx(1827 / MONTH)  # 60.02
    assert age.source == "birth and study dates given"
    same_day = resolve_chronological_age(birth_date=D(2020, 1, 1), study_date=D(2020, 1, 1))
    assert same_day.months == 0.0


FILE = ImageMetadata(birth_date=D(2014, 1, 1), study_date=D(2024, 1, 1), study_date_tag="StudyDate",
                     patient_age_months=108.0)


def test_explicit_dates_beat_explicit_age_beat_file_dates_beat_file_age():
    dates = dict(birth_date="2018-01-01", study_date="2020-01-01")
    age = resolve_chronological_age(**dates, age_months=50, metadata=FILE)
    assert (age.months, age.source) == (pytest.approx(730 / MONTH), "birth and study dates given")
    age = resolve_chronological_age(age_months=50, metadata=FILE)
    assert (age.months, age.source) == (50.0, "age given")
    age = resolve_chronological_age(metadata=FILE)
    assert (age.months, age.source) == (pytest.approx(3652 / MONTH), "DICOM PatientBirthDate and StudyDate")
    no_dates = ImageMetadata(birth_date=D(2014, 1, 1), patient_age_months=108.0)
    age = resolve_chronological_age(metadata=no_dates)
    assert (age.months, age.source) == (108.0, "DICOM PatientAge")


def test_the_file_names_the_tag_its_study_date_came_from():
    md = ImageMetadata(birth_date=D(2014, 1, 1), study_date=D(2015, 1, 1), study_date_tag="ContentDate")
    assert resolve_chronological_age(metadata=md).source == "DICOM PatientBirthDate and ContentDate"


def test_one_date_given_is_completed_from_the_file():
    age = resolve_chronological_age(birth_date="2019-01-01", metadata=FILE)
    assert (age.months, age.source) == (pytest.approx(1826 / MONTH), "birth date given, DICOM StudyDate")
    age = resolve_chronological_age(study_date="2015-01-01", metadata=FILE)
    assert (age.months, age.source) == (pytest.approx(365 / MONTH), "study date given, DICOM PatientBirthDate")


def test_no_source_is_no_age():
    assert resolve_chronological_age() is None
    assert resolve_chronological_age(metadata=ImageMetadata()) is None
    assert resolve_chronological_age(metadata=ImageMetadata(birth_date=D(2014, 1, 1))) is None


# ------------------------------------------------------------------------------ bad input


def _message(**kwargs) -> str:
    with pytest.raises(InputError) as info:
        resolve_chronological_age(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_study_before_birth():
    assert _message(birth_date="2020-05-01", study_date="2019-01-01") == (
        "study date 2019-01-01 is before birth date 2020-05-01; "
        "the study date must be on or after the birth date")


def test_study_before_birth_in_the_file_names_tags_not_dates():
    md = ImageMetadata(birth_date=D(2020, 5, 1), study_date=D(2019, 1, 1), study_date_tag="AcquisitionDate")
    message = _message(metadata=md)
    assert message == ("study date in DICOM AcquisitionDate is before birth date in DICOM PatientBirthDate; "
                       "the study date must be on or after the birth date")
    assert "2019" not in message and "2020" not in message


@pytest.mark.parametrize("value,message", [
    (241, "age 241 months is outside 0–240 months (0–20 years)"),
    (-1, "age -1 months is outside 0–240 months (0–20 years)"),
    (float("nan"), "age nan months is outside 0–240 months (0–20 years)"),
    ("ten", "age 'ten' is not a number of months"),
])
def test_age_outside_0_to_20_years(value, message):
    assert _message(age_months=value) == message


def test_age_from_dates_above_20_years():
    assert _message(birth_date="2000-01-01", study_date="2021-01-01") == (
        "age at the study is 21.0 years (birth and study dates given), outside 0–20 years")


def test_file_age_above_20_years_is_refused_without_echoing_it():
    message = _message(metadata=ImageMetadata(patient_age_months=45 * 12.0))
    assert message == ("the image's DICOM PatientAge is outside 0–20 years; "
                       "give the age in months or the birth and study dates instead")


@pytest.mark.parametrize("text,message", [
    ("01/05/2020", "birth date '01/05/2020' is in an unknown format; allowed: YYYY-MM-DD (ISO) or YYYYMMDD (DICOM)"),
    ("2020-1-5", "birth date '2020-1-5' is in an unknown format; allowed: YYYY-MM-DD (ISO) or YYYYMMDD (DICOM)"),
    ("2020-02-30", "birth date '2020-02-30' is not a calendar date; allowed: YYYY-MM-DD (ISO) or YYYYMMDD (DICOM)"),
])
def test_dates_in_an_unknown_format(text, message):
    assert _message(birth_date=text, study_date="2021-01-01") == message


def test_study_date_format_is_named_as_the_study_date():
    assert _message(birth_date="2020-01-01", study_date="yesterday").startswith("study date 'yesterday' is in")


def test_one_date_without_its_partner_anywhere():
    assert _message(birth_date="2020-01-01", age_months=12) == (
        "a birth date was given but no study date, and the image has none; "
        "give the study date too, or the age in months instead")


def test_parsers_accept_both_forms_and_date_objects():
    assert parse_date("2020-02-29") == parse_date("20200229") == parse_date(D(2020, 2, 29)) == D(2020, 2, 29)
    assert parse_date(datetime.datetime(2020, 2, 29, 13, 5)) == D(2020, 2, 29)
    assert check_age_months("0") == 0.0 and check_age_months(240) == 240.0
