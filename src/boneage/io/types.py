"""What every reader returns: a :class:`LoadedImage` (pixels and :class:`ImageMetadata`), and
the size limits every reader applies."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import numpy as np

from boneage.errors import InputError
from boneage.sex import Sex

#: Images with more pixels than this are refused (a 20000 x 20000 radiograph is already far
#: beyond any detector; bigger inputs are almost certainly mistakes or decompression bombs).
MAX_PIXELS: int = 20000 * 20000
#: Images with a side shorter than this are refused: nothing can be assessed at that size.
MIN_SIDE: int = 16


@dataclass
class ImageMetadata:
    """What we know about an image besides its pixels.

    Patient fields are only filled from DICOM tags; raster formats leave them ``None``.
    """

    sex: Sex | None = None
    """``Sex.MALE`` / ``Sex.FEMALE`` when the file says so (DICOM PatientSex), else ``None``."""
    birth_date: datetime.date | None = None
    """DICOM PatientBirthDate."""
    study_date: datetime.date | None = None
    """DICOM StudyDate, else AcquisitionDate, else ContentDate, else SeriesDate."""
    study_date_tag: str | None = None
    """Which of those tags gave :attr:`study_date` (so a reading can say where its age came from)."""
    patient_age_months: float | None = None
    """DICOM PatientAge ("010Y", "006M", "012W", "030D") in months; never derived from dates."""
    format: str = ""
    """``"png"``, ``"jpeg"``, ``"tiff"``, ``"bmp"``, ``"dicom"``, ..."""
    bit_depth: int = 8
    """Bits of the stored samples: 8, 16, 32 (float TIFF), or DICOM BitsStored."""
    original_shape: tuple[int, int] = (0, 0)
    """(height, width) of the stored image."""
    photometric: str | None = None
    """DICOM PhotometricInterpretation."""
    patient_id: str | None = None
    """DICOM PatientID."""
    modality: str | None = None
    """DICOM Modality (``"CR"``, ``"DX"``, ``"CT"``, ...), upper case."""
    body_part: str | None = None
    """DICOM BodyPartExamined, upper case."""
    image_type: tuple[str, ...] = ()
    """DICOM ImageType values (``("ORIGINAL", "PRIMARY")``, ``("DERIVED", "SECONDARY", "LOCALIZER")``)."""
    n_frames: int = 1
    """DICOM NumberOfFrames (1 for raster formats)."""
    colourfulness: float = 0.0
    """Mean spread between the colour channels, as a fraction of full scale: 0 for grayscale
    files and for radiographs saved as RGB with equal channels; photographs score > 0.05."""


@dataclass
class LoadedImage:
    """A decoded radiograph: float32 (H, W) pixels in [0, 1], bone bright, plus metadata."""

    pixels: np.ndarray
    metadata: ImageMetadata = field(default_factory=ImageMetadata)


def check_size(height: int, width: int, name: str) -> None:
    """Raise :class:`InputError` unless both sides are >= MIN_SIDE and the area <= MAX_PIXELS.

    Sizes in messages are written width x height.
    """
    if height < MIN_SIDE or width < MIN_SIDE:
        raise InputError(
            f"image size {width}x{height} is too small; "
            f"each side must be at least {MIN_SIDE} pixels",
            name,
        )
    if height * width > MAX_PIXELS:
        raise InputError(
            f"image size {width}x{height} ({height * width} pixels) "
            f"exceeds the maximum of {MAX_PIXELS} pixels",
            name,
        )
