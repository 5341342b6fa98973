"""DICOM reading (pixels + patient metadata) and writing of single-frame grayscale DICOMs.

Reading follows the DICOM grayscale pipeline: stored values (BitsStored masking and sign by
pydicom) -> Modality LUT / rescale -> VOI LUT or window -> MONOCHROME1 inversion, and ends
with float32 in [0, 1] where bone is bright.
"""

from __future__ import annotations

import datetime
import io
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import DA, DSfloat

from boneage.errors import InputError
from boneage.io.types import ImageMetadata, LoadedImage, check_size
from boneage.sex import Sex
from boneage.units import DAYS_PER_MONTH

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_AGE_RE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_AGE_UNIT_MONTHS = {"D": 1 / DAYS_PER_MONTH, "W": 7 / DAYS_PER_MONTH, "M": 1.0, "Y": 12.0}
#: Where the date of the examination is looked for, first found wins. StudyDate is what the
#: clinical reading wants; exports that drop it usually keep AcquisitionDate or ContentDate
#: (issue 15), and SeriesDate is the same day in practice, so it stays as the last resort.
STUDY_DATE_TAGS = ("StudyDate", "AcquisitionDate", "ContentDate", "SeriesDate")


# --------------------------------------------------------------------------------------------
# Reading


def has_dicom_preamble(data: bytes) -> bool:
    """True if ``data`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def decode_dicom_bytes(data: bytes, name: str) -> LoadedImage:
    """Parse DICOM bytes and convert them with :func:`dataset_to_image`."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types for malformed input
        raise InputError(f"cannot decode image: invalid DICOM file ({' '.join(str(exc).split())})", name) from exc
    _ensure_transfer_syntax(ds)
    return dataset_to_image(ds, name)


def try_read_headerless_dicom(data: bytes) -> Dataset | None:
    """Parse a DICOM dataset stored without the Part 10 preamble, or return None.

    ``force=True`` makes pydicom "succeed" on arbitrary bytes, so the result only counts as
    DICOM if it carries an image-related element.
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        ok = any(k in ds for k in ("SOPClassUID", "Rows", "Columns", *_PIXEL_DATA_KEYWORDS))
    except Exception:
        return None
    if not ok:
        return None
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Record the encoding pydicom detected when the file does not name one.

    pydicom refuses to decode pixels without a Transfer Syntax UID, which files written
    without the Part 10 header (or with a sloppy one) lack; the dataset itself was necessarily
    uncompressed for pydicom to parse it that way.
    """
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = ds.original_encoding
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif little or little is None:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian


def dataset_to_image(ds: Dataset, name: str) -> LoadedImage:
    """Turn a single-frame DICOM dataset into a :class:`LoadedImage`.

    Grayscale: modality LUT / rescale, then the first VOI LUT (preferred) or window
    centre/width when present, scaled by the full output range of that VOI transform; without
    a VOI, min--max over the image (over the BitsStored range if the image is constant).
    MONOCHROME1 is then inverted so that bone is bright. Colour (RGB, YBR, palette) is
    converted to luminance and scaled by its bit depth.

    Raises:
        InputError: no pixel data, several frames, bad size, or undecodable pixel data.
    """
    try:
        return _dataset_to_image(ds, name)
    except InputError:
        raise
    except Exception as exc:  # malformed tags surface anywhere in pydicom's pipeline
        raise InputError(f"cannot decode image: invalid DICOM data ({' '.join(str(exc).split())})",
                         name) from exc


def _dataset_to_image(ds: Dataset, name: str) -> LoadedImage:
    if not any(k in ds for k in _PIXEL_DATA_KEYWORDS):
        raise InputError("DICOM file has no pixel data", name)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise _volume_error(frames, name)
    rows, cols = int(ds.Rows), int(ds.Columns)
    # Checked before decoding so that a huge image is refused without allocating it.
    check_size(rows, cols, name)

    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise InputError(f"cannot decode image: {_pixel_data_problem(ds, exc)}", name) from exc

    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if samples == 1 and arr.ndim == 3:
        raise _volume_error(arr.shape[0], name)

    bits_stored = int(ds.get("BitsStored") or arr.dtype.itemsize * 8)
    if samples > 1 or photometric == "PALETTE COLOR":
        pixels = _colour_to_unit_gray(arr, ds, bits_stored)
    else:
        pixels = _grayscale_to_unit(arr, ds, bits_stored)
        if photometric == "MONOCHROME1":
            pixels = 1.0 - pixels

    metadata = read_metadata(ds)
    metadata.bit_depth = bits_stored
    metadata.original_shape = (rows, cols)
    return LoadedImage(pixels=np.ascontiguousarray(pixels, dtype=np.float32), metadata=metadata)


# pydicom names each decoder plugin it could not use on a line of its own:
# "\tgdcm - requires gdcm>=3.0.10".
_MISSING_PLUGIN = re.compile(r"^\s*[\w.-]+ - requires (.+?)\s*$", re.MULTILINE)


def _pixel_data_problem(ds: Dataset, exc: Exception) -> str:
    """One line on why pydicom could not decode the pixels: for compressed data with no
    decoder installed, the compression and what to install (pydicom's own message spans a
    line per plugin); else pydicom's message with its line breaks folded."""
    plugins = _MISSING_PLUGIN.findall(str(exc))
    if plugins:
        syntax = ds.file_meta.get("TransferSyntaxUID")
        compression = getattr(syntax, "name", None) or str(syntax or "an unknown transfer syntax")
        return (f"DICOM pixel data is compressed as {compression} and no decoder for it is "
                f"installed (install one of: {'; '.join(plugins)})")
    return f"DICOM pixel data ({' '.join(str(exc).split())})"


def _volume_error(frames: int, name: str) -> InputError:
    return InputError(
        f"DICOM holds a 3-D volume of {frames} frames; a single 2-D radiograph is required",
        name,
    )


def _grayscale_to_unit(arr: np.ndarray, ds: Dataset, bits_stored: int) -> np.ndarray:
    values = apply_modality_lut(arr, ds)

    if _has_voi_lut(ds):
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        entries, first = int(descriptor[0]) or 2**16, int(descriptor[1])
        # Clipping to the LUT's input domain is what the standard prescribes anyway, and doing
        # it here avoids pydicom 3.0 computing indices in the LUT's dtype, which wraps inputs
        # above 255 for an 8-bit LUT. Rounding because rescaled values arrive as float64.
        values = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)
        out = apply_voi(values, ds)
        # The LUT's own output range (not its nominal bit depth, which is often wrong).
        lut = apply_voi(np.arange(first, first + entries, dtype=np.int64), ds)
        lo, hi = float(lut.min()), float(lut.max())
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        out = apply_windowing(values, ds)
        # Values far outside the window land on pydicom's output bounds (y_min, y_max).
        with np.errstate(over="ignore"):
            lo, hi = (float(v) for v in apply_windowing(np.array([-1e30, 1e30]), ds))
    else:
        out = values
        lo, hi = float(out.min()), float(out.max())
        if hi == lo:
            lo, hi = _possible_modality_range(ds, bits_stored)

    if hi == lo:
        return np.zeros(out.shape, dtype=np.float32)
    return np.clip((out.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _has_voi_lut(ds: Dataset) -> bool:
    seq = ds.get("VOILUTSequence")
    return bool(seq) and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]


def _possible_modality_range(ds: Dataset, bits_stored: int) -> tuple[float, float]:
    """Range of modality values that the stored bits can express."""
    if int(ds.get("PixelRepresentation") or 0) == 1:
        stored = np.array([-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1], dtype=np.int64)
    else:
        stored = np.array([0, 2**bits_stored - 1], dtype=np.int64)
    out = apply_modality_lut(stored, ds)
    return float(out.min()), float(out.max())


def _colour_to_unit_gray(arr: np.ndarray, ds: Dataset, bits_stored: int) -> np.ndarray:
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        full_scale = float(np.iinfo(arr.dtype).max)
    else:
        # pydicom has already converted YBR to RGB.
        full_scale = float(2**bits_stored - 1)
    rgb = arr.astype(np.float32)
    gray = cv2.cvtColor(rgb[..., :3], cv2.COLOR_RGB2GRAY)
    return np.clip(gray / full_scale, 0.0, 1.0)


def read_metadata(ds: Dataset) -> ImageMetadata:
    """Patient and image tags of ``ds``; malformed or missing values become ``None``."""
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip() or None
    patient_id = str(ds.get("PatientID", "") or "").strip() or None
    study_date, study_date_tag = None, None
    for keyword in STUDY_DATE_TAGS:
        study_date = _parse_date(ds.get(keyword))
        if study_date is not None:
            study_date_tag = keyword
            break
    return ImageMetadata(
        sex=Sex(sex) if sex in ("M", "F") else None,
        birth_date=_parse_date(ds.get("PatientBirthDate")),
        study_date=study_date,
        study_date_tag=study_date_tag,
        patient_age_months=parse_age_months(ds.get("PatientAge")),
        format="dicom",
        photometric=photometric,
        patient_id=patient_id,
        modality=_upper_or_none(ds.get("Modality")),
        body_part=_upper_or_none(ds.get("BodyPartExamined")),
        image_type=tuple(str(v).strip().upper() for v in _as_list(ds.get("ImageType"))),
        n_frames=_frames(ds),
    )


def _upper_or_none(value: object) -> str | None:
    text = str(value or "").strip().upper()
    return text or None


def _as_list(value: object) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value] if str(value).strip() else []
    try:
        return list(value)
    except TypeError:
        return [value]


def _frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _parse_date(value: object) -> datetime.date | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        d = DA(str(value).strip())
    except (ValueError, TypeError):
        return None
    return None if d is None else datetime.date(d.year, d.month, d.day)


def parse_age_months(value: object) -> float | None:
    """DICOM Age String ("010Y", "006M", "012W", "030D") -> months; None if absent/malformed.

    Days and weeks use the mean Gregorian month (365.25 / 12 days).
    """
    if value is None:
        return None
    m = _AGE_RE.match(str(value))
    if m is None:
        return None
    return int(m.group(1)) * _AGE_UNIT_MONTHS[m.group(2).upper()]


# --------------------------------------------------------------------------------------------
# Writing


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    sex: str | None = None,
    birth_date: datetime.date | None = None,
    study_date: datetime.date | None = None,
    patient_age: str | None = None,
    patient_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a float image in [0, 1] as a single-frame grayscale Secondary Capture DICOM.

    The file uses explicit VR little endian. Each pixel ``x`` becomes the intensity
    ``v = x * (2**bits_stored - 1)`` (``1 - x`` first for MONOCHROME1, so bone stays bright on
    display), stored as ``round((v - rescale_intercept) / rescale_slope)``; the pixel
    representation is signed only if the stored values need it.

    ``window=None`` writes the window that spans exactly ``[0, 2**bits_stored - 1]`` in
    modality units, so :func:`~boneage.io.read_image` gives back ``pixels`` within
    quantisation even when they do not fill [0, 1] (the reader would otherwise stretch them).
    ``window=(center, width)`` writes that window instead (LINEAR function), and reading then
    returns the windowed image.

    Args:
        path: where to write; refused if it exists unless ``overwrite=True``.
        pixels: 2-D array of finite values in [0, 1].
        photometric: ``"MONOCHROME2"`` (0 = black) or ``"MONOCHROME1"`` (0 = white).
        bits_stored: 1..16; BitsAllocated is 8 up to 8 bits, else 16.
        sex: ``"M"``, ``"F"``, ``"O"`` or None. ``patient_age``: a DICOM age string like
            ``"010Y"``. Dates are :class:`datetime.date`.

    Returns:
        The path written.

    Raises:
        InputError: invalid arguments, values that do not fit the stored bits, an existing
            file, or a directory that cannot be written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError("file already exists; pass overwrite=True to replace it", path)

    stored = _to_stored_values(
        pixels, path, photometric, bits_stored, rescale_slope, rescale_intercept
    )

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.PatientName = ""
    ds.PatientID = patient_id or ""
    ds.PatientBirthDate = _format_date(birth_date, "birth_date", path)
    ds.PatientSex = _format_sex(sex, path)
    if patient_age is not None:
        if not re.fullmatch(r"\d{3}[DWMY]", str(patient_age)):
            raise InputError(
                f"patient_age {patient_age!r} is not a DICOM age string like '010Y' or '006M'",
                path,
            )
        ds.PatientAge = str(patient_age)
    ds.StudyDate = _format_date(study_date, "study_date", path)
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""

    ds.set_pixel_data(stored, photometric, bits_stored)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    if rescale_slope != 1.0 or rescale_intercept != 0.0:
        ds.RescaleSlope = DSfloat(rescale_slope, auto_format=True)
        ds.RescaleIntercept = DSfloat(rescale_intercept, auto_format=True)
        ds.RescaleType = "US"

    if window is None:
        # LINEAR maps [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2] onto the output range, i.e.
        # exactly [0, full] for these values.
        full = 2**bits_stored - 1
        center, width = full / 2 + 0.5, float(full + 1)
    else:
        center, width = (float(v) for v in window)
        if not (np.isfinite(center) and np.isfinite(width) and width >= 1):
            raise InputError(f"window {window!r} needs a finite centre and a width >= 1", path)
    ds.WindowCenter = DSfloat(center, auto_format=True)
    ds.WindowWidth = DSfloat(width, auto_format=True)

    _save_new(ds, path, overwrite)
    return path


def _to_stored_values(
    pixels: np.ndarray,
    path: Path,
    photometric: str,
    bits_stored: int,
    slope: float,
    intercept: float,
) -> np.ndarray:
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(
            f"photometric must be 'MONOCHROME1' or 'MONOCHROME2', not {photometric!r}", path
        )
    if not (isinstance(bits_stored, (int, np.integer)) and 1 <= bits_stored <= 16):
        raise InputError(f"bits_stored must be an integer from 1 to 16, not {bits_stored!r}", path)
    if not (np.isfinite(slope) and np.isfinite(intercept) and slope != 0):
        raise InputError("rescale_slope must be finite and non-zero; intercept finite", path)

    x = np.asarray(pixels, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"pixels must be a 2-D grayscale array, not of shape {x.shape}", path)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise InputError("pixels must be a non-empty array of finite values", path)
    if x.min() < 0.0 or x.max() > 1.0:
        raise InputError(
            f"pixels must lie in [0, 1], found [{x.min():.6g}, {x.max():.6g}]", path
        )

    full = 2**bits_stored - 1
    if photometric == "MONOCHROME1":
        x = 1.0 - x
    stored = np.rint((x * full - intercept) / slope)
    lo, hi = stored.min(), stored.max()
    byte_type = (np.uint8, np.int8) if bits_stored <= 8 else (np.uint16, np.int16)
    if lo >= 0 and hi <= full:
        return stored.astype(byte_type[0])
    half = 2 ** (bits_stored - 1)
    if lo >= -half and hi <= half - 1:
        return stored.astype(byte_type[1])
    raise InputError(
        f"rescale slope {slope} / intercept {intercept} give stored values "
        f"[{lo:.0f}, {hi:.0f}] that do not fit in {bits_stored} bits",
        path,
    )


def _format_sex(sex: str | None, path: Path) -> str:
    if sex is None:
        return ""
    value = str(sex).strip().upper()
    if value not in ("M", "F", "O"):
        raise InputError(f"sex must be 'M', 'F', 'O' or None, not {sex!r}", path)
    return value


def _format_date(value: datetime.date | None, what: str, path: Path) -> str:
    if value is None:
        return ""
    if not isinstance(value, datetime.date):
        raise InputError(f"{what} must be a datetime.date, not {value!r}", path)
    return value.strftime("%Y%m%d")


def _save_new(ds: Dataset, path: Path, overwrite: bool) -> None:
    # "xb" makes the existence check atomic, so a concurrent writer is never clobbered.
    mode = "wb" if overwrite else "xb"
    try:
        with open(path, mode) as fh:
            try:
                ds.save_as(fh, enforce_file_format=True)
            except BaseException:
                fh.close()
                path.unlink(missing_ok=True)
                raise
    except FileExistsError:
        raise InputError("file already exists; pass overwrite=True to replace it", path) from None
    except OSError as exc:
        raise InputError(f"cannot write file: {exc.strerror or exc}", path) from exc
