"""The clinical reading: a bone age against the child's chronological age.

See ``docs/clinical.md``. Pure functions over plain values (the Greulich-Pyle reference, the
chronological age, the reading), which the Prediction itself uses, so this package sits low in
the layers; :func:`boneage.api.predict` attaches a :class:`ClinicalReading` when an age is
known. The clinician's report (HTML, PDF, JSON, DICOM) is :mod:`boneage.reporting`'s.
"""

from boneage.clinical.reading import (
    ADVANCED, DELAYED, WITHIN_NORMAL_LIMITS, ChronologicalAge, ClinicalReading, check_age_months,
    clinical_reading, parse_date, resolve_chronological_age,
)
from boneage.clinical.reference import OutsideReferenceRange, gp_standard_deviation, reference_range

__all__ = [
    "ADVANCED", "DELAYED", "WITHIN_NORMAL_LIMITS", "ChronologicalAge", "ClinicalReading",
    "OutsideReferenceRange", "check_age_months", "clinical_reading", "gp_standard_deviation",
    "parse_date", "reference_range", "resolve_chronological_age",
]
