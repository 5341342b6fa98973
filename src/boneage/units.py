"""Units shared across the package (kept free of heavy imports: the clinical reading and the
DICOM reader both use them, and the clinical reading must not pull in pydicom)."""

#: Days in the mean Gregorian month: DICOM ages in days or weeks, and ages from dates
#: (:mod:`boneage.clinical`), are converted to months with it.
DAYS_PER_MONTH = 365.25 / 12
