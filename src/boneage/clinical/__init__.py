"""The clinical reading: a bone age against the child's chronological age.

See ``docs/clinical.md``. Pure functions over plain values; :func:`boneage.api.predict`
attaches a :class:`ClinicalReading` when an age is known.
"""

from boneage.clinical.reading import (
    ADVANCED,
    DELAYED,
    WITHIN_NORMAL_LIMITS,
    ChronologicalAge,
    ClinicalReading,
    check_age_months,
    clinical_reading,
    parse_date,
    resolve_chronological_age,
)
from boneage.clinical.reference import OutsideReferenceRange, gp_standard_deviation, reference_range

__all__ = [
    "ADVANCED", "DELAYED", "WITHIN_NORMAL_LIMITS", "ChronologicalAge", "ClinicalReading",
    "OutsideReferenceRange", "check_age_months", "clinical_reading", "gp_standard_deviation",
    "parse_date", "reference_range", "resolve_chronological_age",
]
