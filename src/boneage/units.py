"""Units shared across the package (kept free of heavy imports: the clinical reading and the
DICOM reader both use them, and the clinical reading must not pull in pydicom)."""

#: Days in the mean Gregorian month: DICOM ages in days or weeks, and ages from dates
#: (:mod:`boneage.clinical`), are converted to months with it.
DAYS_PER_MONTH = 365.25 / 12
#: Decimals of months, years and z-scores in JSON output (results, reports, the service):
#: 0.01 months is far below what any bone age estimate resolves.
JSON_DECIMALS = 2


def rounded(value: float | None) -> float | None:
    """``value`` rounded to :data:`JSON_DECIMALS` for JSON output; None stays None."""
    return None if value is None else round(float(value), JSON_DECIMALS)
