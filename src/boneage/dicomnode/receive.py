"""The Storage SCP's side: which instances are taken, and the C-STORE status of each.

Every storage SOP class is negotiated, so that a sender always gets a C-STORE status it
understands instead of a missing presentation context. An instance is answered "success"
only once it is in the spool (written and flushed to disk); anything else gets a failure
status with an Error Comment saying why, and one log line without patient data:

=======================================  ========  ==========================================
what                                     status    meaning in PS3.4
=======================================  ========  ==========================================
a non-image SOP class (SR, PDF, ...)     0x0122    Refused: SOP Class not supported
a dataset that does not parse, or whose  0xC000    Error: cannot understand
pixel data is shorter than its size says
an image without pixel data or UIDs      0xA900    Error: data set does not match SOP Class
a multi-frame object (a volume)          0xC000    Error: cannot understand (not one radiograph)
the spool's disk is full or nearly so    0xA700    Refused: out of resources
=======================================  ========  ==========================================

Image SOP classes the node does not assess (CT, MR, ...) are stored and get a "not assessed"
structured report, like any image the quality gate refuses.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from boneage.dicomnode.spool import Spool, SpoolFull

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class StoreResult:
    """The answer to one C-STORE: a status, an Error Comment for a failure, and the spool
    entry when it was stored."""

    status: int
    comment: str = ""
    entry: Path | None = None

    def response(self) -> int | Dataset:
        """What the pynetdicom handler returns: the status, with its comment on a failure."""
        if self.status == SUCCESS:
            return SUCCESS
        ds = Dataset()
        ds.Status = self.status
        ds.ErrorComment = self.comment[:64]  # LO: 64 characters
        return ds


def is_image_sop_class(sop_class: str) -> bool:
    """Whether a storage SOP class stores images (its name says "Image Storage")."""
    return "Image Storage" in UID(sop_class).name


def sop_class_name(sop_class: str) -> str:
    """The SOP class's name as the standard spells it (its UID when unknown)."""
    return UID(sop_class).name or sop_class


def check_dataset(ds: Dataset) -> StoreResult | None:
    """The failure status for a parsed dataset the node cannot take, or None when it can."""
    if not all(ds.get(k) for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")):
        return StoreResult(DOES_NOT_MATCH_SOP_CLASS, "a study, series or SOP instance UID is missing")
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        return StoreResult(DOES_NOT_MATCH_SOP_CLASS, "no pixel data")
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.get("BitsAllocated") or 0)
    except (AttributeError, TypeError, ValueError):
        return StoreResult(DOES_NOT_MATCH_SOP_CLASS, "image size tags are missing or invalid")
    if frames > 1:
        return StoreResult(CANNOT_UNDERSTAND, f"multi-frame object ({frames} frames), not one radiograph")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if "PixelData" in ds and syntax is not None and not UID(syntax).is_compressed and bits:
        expected = (rows * columns * samples * frames * bits + 7) // 8
        if len(ds.PixelData) < expected:
            return StoreResult(CANNOT_UNDERSTAND, f"truncated: {len(ds.PixelData)} of {expected} pixel bytes")
    return None


def store(spool: Spool, data: bytes, sop_class: str, sop_instance: str, min_free_bytes: int) -> StoreResult:
    """Check one received instance (``data``: DICOM Part 10 bytes as received) and spool it.

    Raises nothing: every outcome is a status (see the module docstring).
    """
    if not is_image_sop_class(sop_class):
        return StoreResult(SOP_CLASS_NOT_SUPPORTED, f"{sop_class_name(sop_class)} is not an image")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many types for a malformed stream
        return StoreResult(CANNOT_UNDERSTAND, f"dataset does not parse ({type(exc).__name__})")
    problem = check_dataset(ds)
    if problem is not None:
        return problem
    if str(ds.SOPInstanceUID) != sop_instance or str(ds.SOPClassUID) != sop_class:
        return StoreResult(DOES_NOT_MATCH_SOP_CLASS, "dataset UIDs differ from the C-STORE request")
    try:
        entry = spool.admit(data, sop_instance, min_free_bytes)
    except SpoolFull as exc:
        return StoreResult(OUT_OF_RESOURCES, f"spool full: {exc}")
    except OSError as exc:
        return StoreResult(OUT_OF_RESOURCES, f"spool not writable: {exc.strerror or type(exc).__name__}")
    return StoreResult(SUCCESS, entry=entry)


def handle_store(event, spool: Spool, min_free_bytes: int):
    """pynetdicom's ``EVT_C_STORE`` handler: spool the instance, answer with its status, log
    one line (calling AE, SOP class, SOP Instance UID, size, time, status)."""
    started = time.perf_counter()
    sop_class = str(event.request.AffectedSOPClassUID)
    sop_instance = str(event.request.AffectedSOPInstanceUID)
    calling = str(event.assoc.requestor.ae_title).strip()
    size = 0
    try:
        data = event.encoded_dataset(include_meta=True)
        size = len(data)
        result = store(spool, data, sop_class, sop_instance, min_free_bytes)
    except Exception as exc:  # never let a bad instance take the association down unanswered
        result = StoreResult(CANNOT_UNDERSTAND, f"cannot be received ({type(exc).__name__})")
    ms = 1000 * (time.perf_counter() - started)
    if result.status == SUCCESS:
        logger.info("stored %s %s from %s (%d kB) in %.0f ms: queued", sop_class_name(sop_class),
                    sop_instance, calling, size // 1024, ms)
    else:
        logger.warning("refused %s %s from %s with status 0x%04X: %s", sop_class_name(sop_class),
                       sop_instance, calling, result.status, result.comment)
    return result.response()
