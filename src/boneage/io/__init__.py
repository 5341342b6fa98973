"""Image input/output: radiographs from PNG, JPEG, TIFF, BMP or DICOM as float32 in [0, 1].

Public API::

    read_image(path) -> LoadedImage
    read_image_bytes(data, name="<upload>") -> LoadedImage
    write_dicom(path, pixels, ...) -> Path
    ImageMetadata, LoadedImage, MAX_PIXELS, MIN_SIDE
"""

from boneage.io.image import read_image, read_image_bytes
from boneage.io.types import MAX_PIXELS, MIN_SIDE, ImageMetadata, LoadedImage

#: Names served by :mod:`boneage.io.dicom`, imported on first use: pydicom takes most of a
#: second to import, which a PNG prediction (and the light install's start-up) need not pay.
_FROM_DICOM = ("parse_age_months", "write_dicom")


def __getattr__(name: str):
    if name in _FROM_DICOM:
        # boundary: pydicom's import cost, paid only by what reads or writes DICOM.
        from boneage.io import dicom

        return getattr(dicom, name)
    raise AttributeError(f"module 'boneage.io' has no attribute {name!r}")


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
