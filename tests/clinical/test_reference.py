"""The Brush Foundation SD table: values at listed ages, interpolation, and its edges."""

import pytest

from boneage.clinical import OutsideReferenceRange, gp_standard_deviation, reference_range
from boneage.clinical.reference import GP_AGES_MONTHS, GP_SD_BOYS_MONTHS, GP_SD_GIRLS_MONTHS
from boneage.sex import Sex


def test_table_has_every_listed_age_and_girls_stop_at_192():
    assert len(GP_AGES_MONTHS) == len(GP_SD_BOYS_MONTHS) == 24
    assert len(GP_SD_GIRLS_MONTHS) == 23
    assert reference_range(Sex.MALE) == (3, 204)
    assert reference_range(Sex.FEMALE) == (3, 192)


@pytest.mark.parametrize("age,sex,sd", [
    (3, Sex.MALE, 0.69), (60, Sex.MALE, 8.79), (204, Sex.MALE, 13.05),
    (3, Sex.FEMALE, 0.72), (144, Sex.FEMALE, 10.24), (192, Sex.FEMALE, 7.31),
])
def test_sd_at_listed_ages(age, sex, sd):
    assert gp_standard_deviation(age, sex) == pytest.approx(sd, abs=1e-12)


@pytest.mark.parametrize("age,sex,sd", [
    (66, Sex.MALE, (8.79 + 9.17) / 2),
    (63, Sex.MALE, 8.79 + 0.25 * (9.17 - 8.79)),
    (200, Sex.MALE, 12.86 + 8 / 12 * (13.05 - 12.86)),
    (15, Sex.FEMALE, (1.77 + 3.49) / 2),
    (186, Sex.FEMALE, (9.23 + 7.31) / 2),
])
def test_sd_between_listed_ages_is_linear(age, sex, sd):
    assert gp_standard_deviation(age, sex) == pytest.approx(sd, abs=1e-12)


def test_sex_may_be_given_as_a_letter():
    assert gp_standard_deviation(60, "F") == pytest.approx(11.65)


@pytest.mark.parametrize("age,sex,message", [
    (2.9, Sex.MALE, "chronological age 2.9 months is below the Greulich–Pyle (Brush Foundation) "
                    "reference range for boys (3–204 months)"),
    (0, Sex.FEMALE, "is below the Greulich–Pyle (Brush Foundation) reference range for girls (3–192 months)"),
    (192.5, Sex.FEMALE, "chronological age 192.5 months is above the Greulich–Pyle (Brush Foundation) "
                        "reference range for girls (3–192 months)"),
    (204.1, Sex.MALE, "is above the Greulich–Pyle (Brush Foundation) reference range for boys (3–204 months)"),
])
def test_outside_the_table_is_refused_not_extrapolated(age, sex, message):
    with pytest.raises(OutsideReferenceRange) as info:
        gp_standard_deviation(age, sex)
    assert message in str(info.value)
