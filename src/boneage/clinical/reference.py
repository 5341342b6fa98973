"""The Greulich–Pyle reference spread: Brush Foundation standard deviations of bone age.

The z-score of a reading divides the difference between bone age and chronological age by the
standard deviation of bone age that the Brush Foundation study found at the child's age and
sex. Between the listed ages the SD is interpolated linearly; outside them the table says
nothing, so :func:`gp_standard_deviation` refuses rather than extrapolate.
"""

from __future__ import annotations

import numpy as np

from boneage.sex import Sex

# Brush Foundation SD of bone age (months) at these chronological ages (months), as listed in
# ../shared/SPEC.md, section "Clinical reading". No value is published for girls at 204 months.
GP_AGES_MONTHS: tuple[float, ...] = (
    3, 6, 9, 12, 18, 24, 30, 36, 42, 48, 54, 60, 72, 84, 96, 108, 120, 132, 144, 156, 168, 180,
    192, 204)
GP_SD_BOYS_MONTHS: tuple[float, ...] = (
    0.69, 1.13, 1.43, 1.97, 3.52, 3.92, 4.52, 5.08, 5.4, 6.66, 8.36, 8.79, 9.17, 8.91, 9.1, 9.0,
    9.79, 10.09, 10.38, 10.44, 10.72, 11.32, 12.86, 13.05)
GP_SD_GIRLS_MONTHS: tuple[float, ...] = (
    0.72, 1.16, 1.36, 1.77, 3.49, 4.64, 5.37, 5.97, 7.48, 8.98, 10.73, 11.65, 10.23, 9.64, 10.23,
    10.74, 11.73, 11.94, 10.24, 10.67, 11.3, 9.23, 7.31)

REFERENCE_NAME = "Greulich–Pyle (Brush Foundation)"


class OutsideReferenceRange(ValueError):
    """The age lies outside the ages the reference table covers; the message says which."""


def reference_range(sex: Sex) -> tuple[float, float]:
    """First and last chronological age (months) with a published SD for ``sex``."""
    sds = GP_SD_BOYS_MONTHS if Sex.parse(sex).is_male else GP_SD_GIRLS_MONTHS
    return GP_AGES_MONTHS[0], GP_AGES_MONTHS[len(sds) - 1]


def gp_standard_deviation(age_months: float, sex: Sex) -> float:
    """Brush Foundation SD of bone age (months) at chronological ``age_months`` for ``sex``,
    interpolated linearly between the listed ages.

    Raises:
        OutsideReferenceRange: ``age_months`` is below the first or above the last listed age
            for that sex (3–204 months for boys, 3–192 for girls).
    """
    sex = Sex.parse(sex)
    sds = GP_SD_BOYS_MONTHS if sex.is_male else GP_SD_GIRLS_MONTHS
    low, high = reference_range(sex)
    if not low <= age_months <= high:
        who = "boys" if sex.is_male else "girls"
        side = "below" if age_months < low else "above"
        raise OutsideReferenceRange(
            f"chronological age {age_months:.1f} months is {side} the {REFERENCE_NAME} reference "
            f"range for {who} ({low:g}–{high:g} months)")
    return float(np.interp(age_months, GP_AGES_MONTHS[:len(sds)], sds))
