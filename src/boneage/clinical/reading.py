"""Chronological age and the clinical reading of a bone age against it.

:func:`resolve_chronological_age` settles the child's age from what the caller gave and what
the image file says, and states where it came from; :func:`clinical_reading` compares a bone
age with it: the difference, a z-score against the Greulich–Pyle (Brush Foundation) SD, and
the impression. Values the caller gives that cannot be right are
:class:`~boneage.errors.InputError` s naming the value and what is allowed. Values read from a
file are named by their DICOM tag, not echoed, so patient dates stay out of error output.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from boneage.clinical.reference import REFERENCE_NAME, OutsideReferenceRange, gp_standard_deviation
from boneage.errors import InputError
from boneage.sex import Sex
from boneage.units import DAYS_PER_MONTH, rounded

#: Chronological ages outside 0..MAX_AGE_MONTHS (20 years) are refused: bone age is assessed
#: in children, and a larger value is almost surely a typo or the wrong field.
MAX_AGE_MONTHS = 240.0
#: A bone age within this many SDs of chronological age is "within normal limits" (SPEC).
NORMAL_LIMIT_SD = 2.0

WITHIN_NORMAL_LIMITS = "within normal limits"
ADVANCED = "advanced"
DELAYED = "delayed"

# Exactly these two spellings: anything looser (2020-1-5, 05/01/2020) is ambiguous somewhere.
_DATE_FORMATS = ((re.compile(r"\d{4}-\d{2}-\d{2}"), "%Y-%m-%d"), (re.compile(r"\d{8}"), "%Y%m%d"))
_DATE_FORMS_ALLOWED = "YYYY-MM-DD (ISO) or YYYYMMDD (DICOM)"


def parse_date(value: object, what: str = "date") -> datetime.date:
    """A :class:`datetime.date` from a date, ``"YYYY-MM-DD"`` or ``"YYYYMMDD"``.

    Raises:
        InputError: any other form, or a day that does not exist (``what`` names the field).
    """
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    text = str(value).strip()
    for pattern, fmt in _DATE_FORMATS:
        if pattern.fullmatch(text):
            try:
                return datetime.datetime.strptime(text, fmt).date()
            except ValueError:
                raise InputError(f"{what} {text!r} is not a calendar date; "
                                 f"allowed: {_DATE_FORMS_ALLOWED}") from None
    raise InputError(f"{what} {value!r} is in an unknown format; allowed: {_DATE_FORMS_ALLOWED}")


def check_age_months(value: object, what: str = "age") -> float:
    """``value`` as months if it is a number within 0–240 months (0–20 years), else InputError."""
    try:
        months = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} {value!r} is not a number of months") from None
    if not 0.0 <= months <= MAX_AGE_MONTHS:  # also refuses NaN
        raise InputError(f"{what} {months:g} months is outside 0–{MAX_AGE_MONTHS:g} months "
                         f"(0–{MAX_AGE_MONTHS / 12:g} years)")
    return months


@dataclass(frozen=True)
class ChronologicalAge:
    """The child's age at the examination and where it came from."""

    months: float
    source: str
    """e.g. ``"birth and study dates given"``, ``"age given"``,
    ``"DICOM PatientBirthDate and StudyDate"``, ``"DICOM PatientAge"``."""

    @property
    def years(self) -> float:
        return self.months / 12


def _age_from_dates(birth: datetime.date, study: datetime.date, birth_label: str,
                    study_label: str, source: str) -> ChronologicalAge:
    if study < birth:
        raise InputError(f"study date {study_label} is before birth date {birth_label}; "
                         "the study date must be on or after the birth date")
    months = (study - birth).days / DAYS_PER_MONTH
    if months > MAX_AGE_MONTHS:
        raise InputError(f"age at the study is {months / 12:.1f} years ({source}), outside "
                         f"0–{MAX_AGE_MONTHS / 12:g} years")
    return ChronologicalAge(months, source)


def resolve_chronological_age(*, birth_date: object = None, study_date: object = None,
                              age_months: object = None, metadata=None) -> ChronologicalAge | None:
    """The chronological age from the first source that has one, or None when none does.

    In order of preference: the birth and study dates given; the age in months given; the
    DICOM PatientBirthDate with the study date the file has (StudyDate, AcquisitionDate,
    ContentDate, SeriesDate, see :class:`~boneage.io.ImageMetadata`); the DICOM PatientAge.
    A date given without its partner is completed from the file (a PNG has no dates, so a
    birth date alone is then an error rather than silently unused).

    Args:
        birth_date, study_date: :class:`datetime.date` or ``"YYYY-MM-DD"`` / ``"YYYYMMDD"``.
        age_months: chronological age in months, 0–240.
        metadata: the image's :class:`~boneage.io.ImageMetadata`, or None.

    Raises:
        InputError: a date in another format, a study before the birth, an age outside
            0–20 years, or a date given whose partner is nowhere to be found.
    """
    birth = None if birth_date is None else parse_date(birth_date, "birth date")
    study = None if study_date is None else parse_date(study_date, "study date")
    age = None if age_months is None else check_age_months(age_months, "age")
    file_birth = getattr(metadata, "birth_date", None)
    file_study = getattr(metadata, "study_date", None)
    study_tag = getattr(metadata, "study_date_tag", None) or "StudyDate"

    if birth is not None or study is not None:
        if birth is not None and study is not None:
            return _age_from_dates(birth, study, birth.isoformat(), study.isoformat(),
                                   "birth and study dates given")
        if birth is not None and file_study is not None:
            return _age_from_dates(birth, file_study, birth.isoformat(), f"in DICOM {study_tag}",
                                   f"birth date given, DICOM {study_tag}")
        if study is not None and file_birth is not None:
            return _age_from_dates(file_birth, study, "in DICOM PatientBirthDate", study.isoformat(),
                                   "study date given, DICOM PatientBirthDate")
        given, missing = ("birth date", "study date") if birth is not None else ("study date", "birth date")
        raise InputError(f"a {given} was given but no {missing}, and the image has none; "
                         f"give the {missing} too, or the age in months instead")
    if age is not None:
        return ChronologicalAge(age, "age given")
    if file_birth is not None and file_study is not None:
        return _age_from_dates(file_birth, file_study, "in DICOM PatientBirthDate",
                               f"in DICOM {study_tag}", f"DICOM PatientBirthDate and {study_tag}")
    file_age = getattr(metadata, "patient_age_months", None)
    if file_age is not None:
        if not 0.0 <= file_age <= MAX_AGE_MONTHS:
            raise InputError(f"the image's DICOM PatientAge is outside 0–{MAX_AGE_MONTHS / 12:g} "
                             "years; give the age in months or the birth and study dates instead")
        return ChronologicalAge(float(file_age), "DICOM PatientAge")
    return None


@dataclass(frozen=True)
class ClinicalReading:
    """A bone age read against the child's chronological age.

    ``z_score`` is None when the chronological age lies outside the reference table; then
    ``no_z_score_reason`` says why and ``impression`` is None (the ±2 SD rule needs an SD).
    """

    chronological_age_months: float
    age_source: str
    bone_age_months: float
    sex: Sex
    difference_months: float
    """Bone age minus chronological age: positive when the bones are ahead."""
    reference_sd_months: float | None
    z_score: float | None
    no_z_score_reason: str | None
    impression: str | None
    """``"within normal limits"`` (|z| <= 2), ``"advanced"``, ``"delayed"`` or None."""

    @property
    def difference_years(self) -> float:
        return self.difference_months / 12

    @property
    def statement(self) -> str:
        """One sentence: the impression with the difference in months and years."""
        diff = abs(self.difference_months)
        direction = "ahead of" if self.difference_months >= 0 else "behind"
        gap = f"bone age {diff:.1f} months ({diff / 12:.1f} years) {direction} chronological age"
        if self.impression is None:
            return f"no impression (no z-score); {gap}"
        return f"{self.impression}: {gap}"

    def to_dict(self) -> dict:
        """JSON-ready fields (sex as ``"M"`` / ``"F"``), derived ones included; months,
        years and the z-score rounded to 0.01."""
        return {
            "chronological_age_months": rounded(self.chronological_age_months),
            "chronological_age_years": rounded(self.chronological_age_months / 12),
            "age_source": self.age_source,
            "bone_age_months": rounded(self.bone_age_months),
            "sex": str(self.sex),
            "difference_months": rounded(self.difference_months),
            "difference_years": rounded(self.difference_years),
            "reference": REFERENCE_NAME,
            "reference_sd_months": rounded(self.reference_sd_months),
            "z_score": rounded(self.z_score),
            "no_z_score_reason": self.no_z_score_reason,
            "impression": self.impression,
            "statement": self.statement,
        }

    def lines(self) -> list[str]:
        """Human-readable lines for terminal or report text."""
        age = self.chronological_age_months
        d = self.difference_months
        if self.z_score is None:
            z = f"z-score: none ({self.no_z_score_reason})"
        else:
            z = (f"z-score: {self.z_score:+.2f} (SD {self.reference_sd_months:.2f} months, "
                 f"{REFERENCE_NAME})")
        return [
            f"chronological age: {age:.1f} months ({age / 12:.1f} years), from {self.age_source}",
            f"difference (bone - chronological): {d:+.1f} months ({d / 12:+.1f} years)",
            z,
            f"impression: {self.statement}",
        ]


def clinical_reading(bone_age_months: float, sex: Sex, age: ChronologicalAge) -> ClinicalReading:
    """Compare ``bone_age_months`` with the chronological ``age`` for ``sex``.

    z = (bone age - chronological age) / SD, the SD being the Brush Foundation SD at the
    chronological age (interpolated). Outside the table's ages no z-score is given, and the
    reading says why instead of extrapolating.
    """
    sex = Sex.parse(sex)
    bone = float(bone_age_months)
    difference = bone - age.months
    try:
        sd = gp_standard_deviation(age.months, sex)
    except OutsideReferenceRange as exc:
        return ClinicalReading(age.months, age.source, bone, sex, difference, None, None,
                               str(exc), None)
    z = difference / sd
    if abs(z) <= NORMAL_LIMIT_SD:
        impression = WITHIN_NORMAL_LIMITS
    else:
        impression = ADVANCED if z > 0 else DELAYED
    return ClinicalReading(age.months, age.source, bone, sex, difference, sd, z, None, impression)
