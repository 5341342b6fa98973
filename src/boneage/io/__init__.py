"""Image input/output: radiographs from PNG, JPEG, TIFF, BMP or DICOM as float32 in [0, 1].

Public API::

    read_image(path) -> LoadedImage
    read_image_bytes(data, name="<upload>") -> LoadedImage
    write_dicom(path, pixels, ...) -> Path
    ImageMetadata, LoadedImage, MAX_PIXELS, MIN_SIDE
"""

from boneage.io.dicom import parse_age_months, write_dicom
from boneage.io.image import (
    MAX_PIXELS,
    MIN_SIDE,
    ImageMetadata,
    LoadedImage,
    read_image,
    read_image_bytes,
)

__all__ = [
    "MAX_PIXELS",
    "MIN_SIDE",
    "ImageMetadata",
    "LoadedImage",
    "parse_age_months",
    "read_image",
    "read_image_bytes",
    "write_dicom",
]
