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


# --- the upper end ----------------------------------------------------------------------------
#: The last standards of the Greulich–Pyle atlas (months): 18 years for girls, 19 for boys. A
#: skeleton there is mature, and the atlas (and a model trained on readings made with it) has
#: no older bone age to give.
GP_MATURE_MONTHS = {Sex.FEMALE: 216.0, Sex.MALE: 228.0}
#: Without a calibrated interval, an estimate within this many months of the last standard is
#: "near" maturity (about the bundled model's mean error; its 90 % interval is wider).
NEAR_MATURITY_MONTHS = 12.0


def maturity_statement(bone_age_months: float, sex: Sex, interval=None) -> str | None:
    """What to say instead of a precise bone age at the top of the Greulich–Pyle range, or None.

    The estimate is *at or near maturity* when the model cannot tell it from a mature
    skeleton: its calibrated ``interval`` (a
    :class:`~boneage.inference.interval.PredictionInterval`) reaches the last standard for
    ``sex``, or, without an interval, the estimate lies within :data:`NEAR_MATURITY_MONTHS` of
    it. What can be backed then is a lower bound (the interval's low end), not an age: the
    statement gives that and where the atlas ends, e.g. ``"at or near skeletal maturity: at
    least 15.3 years (low end of the 90% interval); the Greulich–Pyle atlas ends at 18 years
    for girls"``. The report, the web page, JSON and the results CSV all show this one string.
    """
    sex = Sex.parse(sex)
    mature = GP_MATURE_MONTHS[sex]
    who = "boys" if sex.is_male else "girls"
    if interval is not None:
        if interval.high_months < mature:
            return None
        low = min(interval.low_months, mature)
        return (f"at or near skeletal maturity: at least {low / 12:.1f} years (low end of the "
                f"{interval.level:.0%} interval); the Greulich–Pyle atlas ends at {mature / 12:g} years for {who}")
    if float(bone_age_months) < mature - NEAR_MATURITY_MONTHS:
        return None
    return (f"at or near skeletal maturity: within {NEAR_MATURITY_MONTHS:g} months of the end of the "
            f"Greulich–Pyle atlas ({mature / 12:g} years for {who})")
