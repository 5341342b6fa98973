"""The clinical reading: a bone age against the child's chronological age.

See ``docs/clinical.md``. Pure functions over plain values; :func:`boneage.api.predict`
attaches a :class:`ClinicalReading` when an age is known. :func:`create_report` and
:func:`write_report` make the clinician's report (HTML, PDF, JSON; ``boneage report``).
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
from boneage.clinical.report import BoneAgeReport, create_report, write_report

__all__ = [
    "ADVANCED", "DELAYED", "WITHIN_NORMAL_LIMITS", "BoneAgeReport", "ChronologicalAge", "ClinicalReading",
    "OutsideReferenceRange", "check_age_months", "clinical_reading", "gp_standard_deviation",
    "create_report", "parse_date", "reference_range", "resolve_chronological_age", "write_report",
]
