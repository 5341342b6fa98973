"""The report as a DICOM Secondary Capture in the source radiograph's study.

A PACS files an object by its StudyInstanceUID, so the report page keeps the source's study
(and its patient and study tags) and gets a new series and instance of its own: it then
appears beside the radiograph it reads, as a separate "boneage report" series. The page is the
PDF's page rendered to RGB pixels (Secondary Capture Image Storage, Modality OT, ImageType
DERIVED\\SECONDARY, ConversionType WSD: a workstation-made image).

>>> report = boneage.api.create_report("hand.dcm")
>>> write_report_dicom(report, "hand.dcm", "hand-report.dcm")

Error messages name tags and files, never tag values (the patient's name, ID and dates).
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path

import numpy as np

from boneage import __version__
from boneage.errors import InputError
from boneage.fileutils import atomic_path
from boneage.reporting.report import render_page

logger = logging.getLogger(__name__)

#: Secondary Capture Image Storage.
SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
SERIES_DESCRIPTION = "boneage report"
#: A series number far from the modality's usual 1, 2, 3 ... so the report sorts after the images.
SERIES_NUMBER = 9901
#: Copied from the source when present: the patient and general study modules, so the object
#: is filed under the same patient and study.
PATIENT_STUDY_TAGS = (
    "SpecificCharacterSet",  # first: it says how the copied names are encoded
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
    "ReferringPhysicianName", "StudyDescription",
)
DICOM_SUFFIXES = (".dcm", ".dicom")


def check_dicom_out_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it ends in .dcm or .dicom, else a one-line InputError."""
    out = Path(path)
    if out.suffix.lower() not in DICOM_SUFFIXES:
        shown = f"'{out.suffix}'" if out.suffix else "no suffix"
        raise InputError(f"the DICOM report is written as {' or '.join(DICOM_SUFFIXES)}, got {shown}", out)
    if out.is_dir():
        raise InputError("is a directory; give a file name ending in .dcm", out)
    return out


def read_source_header(source):
    """The source radiograph's DICOM header (pixels not read); a Dataset passes through.

    Raises:
        InputError: ``source`` is missing or not a DICOM file (the report must join a DICOM study).
    """
    import pydicom
    from pydicom.dataset import Dataset

    if isinstance(source, Dataset):
        return source
    path = Path(source)
    if not path.is_file():
        raise InputError("file not found", path)
    ds = None
    # A file without the 128-byte preamble is still DICOM (read_image accepts it too), hence
    # the second, forced attempt; the SOPClassUID check then rejects what only parsed by force.
    for force in (False, True):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=force)
            break
        except Exception:  # pydicom raises several types for non-DICOM data
            continue
    if ds is None or "SOPClassUID" not in ds:
        raise InputError("a DICOM report needs a DICOM source image (it joins the source's "
                         "study); this file is not DICOM", path)
    return ds


def secondary_capture(rgb: np.ndarray, source, *, series_description: str = SERIES_DESCRIPTION,
                      when: datetime.datetime | None = None):
    """A Secondary Capture dataset of the RGB image ``rgb`` in the study of ``source``.

    Args:
        rgb: (H, W, 3) uint8 pixels (e.g. :func:`boneage.reporting.report.render_page`).
        source: the source radiograph's path or pydicom Dataset.
        series_description: SeriesDescription of the new series.
        when: content date and time (default now).

    Returns:
        A :class:`pydicom.dataset.Dataset` with its file meta information, ready to save.
        The study is the source's (a new StudyInstanceUID only if the source has none);
        SeriesInstanceUID and SOPInstanceUID are new.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    src = read_source_header(source)
    when = when or datetime.datetime.now()

    ds = Dataset()
    for keyword in PATIENT_STUDY_TAGS:
        if keyword in src:
            ds[keyword] = src[keyword]  # the element as it is: VR and encoding kept
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                    "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        if keyword not in ds:
            setattr(ds, keyword, "")  # type 2 in the SC IOD: present, empty when unknown
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()  # cannot join a study the source does not name
    ds.SOPClassUID = SC_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.SeriesDescription = series_description
    ds.SeriesNumber = SERIES_NUMBER
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = "bone age report rendered from the source radiograph"
    ds.BurnedInAnnotation = "YES"  # the page shows the patient's identifiers in its pixels
    ds.Manufacturer = "boneage"
    ds.SoftwareVersions = __version__
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
    ds.PatientOrientation = ""
    if "SOPInstanceUID" in src and "SOPClassUID" in src:
        ref = Dataset()
        ref.ReferencedSOPClassUID = src.SOPClassUID
        ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
        ds.SourceImageSequence = Sequence([ref])
    ds.set_pixel_data(np.ascontiguousarray(rgb), "RGB", 8)

    return with_file_meta(ds)


def with_file_meta(ds):
    """``ds`` with the file meta information of an Explicit VR Little Endian file written by
    this program (its SOP class and instance, pydicom's implementation UID)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def write_secondary_capture(rgb: np.ndarray, source, path: str | os.PathLike, *,
                            overwrite: bool = False, series_description: str = SERIES_DESCRIPTION) -> Path:
    """Write :func:`secondary_capture` of ``rgb`` to ``path`` atomically; returns the path.

    Raises:
        InputError: ``path`` exists (and not ``overwrite``) or has another suffix than .dcm,
            or ``source`` is not DICOM.
    """
    out = check_dicom_out_path(path)
    if out.exists() and not overwrite:
        raise InputError("file exists; pass overwrite=True (--overwrite) to replace it", out)
    ds = secondary_capture(rgb, source, series_description=series_description)
    with atomic_path(out) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    logger.debug("DICOM secondary capture written to %s", out)
    return out


def write_report_dicom(report, source, path: str | os.PathLike, *, overwrite: bool = False,
                       dpi: int = 120) -> Path:
    """Render ``report``'s page (A4 at ``dpi``) and write it as a Secondary Capture in the
    study of the DICOM ``source``."""
    read_source_header(source)  # a non-DICOM source fails before the page is rendered
    return write_secondary_capture(render_page(report, dpi=dpi), source, path, overwrite=overwrite)
