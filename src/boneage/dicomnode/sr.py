"""The DICOM Structured Report of one assessment, written with pydicom and read back.

A Comprehensive SR (no template claimed; its layout follows the Imaging Measurement Report
of TID 1500) in the source radiograph's study, in a series of its own, referencing the source
instance::

    CONTAINER (126000, DCM, "Imaging Measurement Report")
      HAS OBS CONTEXT  Observer Type = Device; Device Observer UID / Name / Manufacturer
      CONTAINS CONTAINER (126010, DCM, "Imaging Measurements")
        CONTAINS CONTAINER (125007, DCM, "Measurement Group")
          HAS OBS CONTEXT  Tracking Identifier "bone age", Tracking Unique Identifier
          CONTAINS TEXT    Finding: "assessed" | "not assessed"
          CONTAINS NUM     (85151-9, LN, "Bone age") in (mo, UCUM, "month")
            HAS PROPERTIES NUM  90 % prediction interval: lower and upper limit (mo), level (%)
            INFERRED FROM  IMAGE  the source radiograph
          CONTAINS NUM     (121033, DCM, "Subject Age") in mo: the chronological age
            HAS PROPERTIES TEXT (260753009, SCT, "Source"): where it came from
          CONTAINS NUM     Bone age minus chronological age (mo)
          CONTAINS NUM     (121416, DCM, "Z-Score of measurement")
            HAS PROPERTIES NUM  (121414, DCM, "Standard deviation of population") in mo
            HAS PROPERTIES TEXT Reference standard: Greulich-Pyle (Brush Foundation)
          CONTAINS TEXT    (121073, DCM, "Impression")
          CONTAINS CODE    (121032, DCM, "Subject Sex") = (M|F, DCM, Male|Female)
            HAS PROPERTIES TEXT (260753009, SCT, "Source"): where the sex came from
          CONTAINS TEXT    Quality gate: accepted | corrected | FORCED ... (as predict says)
          CONTAINS TEXT    Reason not assessed (only when not assessed; no bone age then)
          CONTAINS TEXT    (111001, DCM, "Algorithm Name") = the model's name
          CONTAINS TEXT    (111003, DCM, "Algorithm Version") = the model's hash
          CONTAINS TEXT    (111002, DCM, "Algorithm Parameters") = the boneage version
          CONTAINS IMAGE   (260753009, SCT, "Source") = the source radiograph
          CONTAINS TEXT    (121106, DCM, "Comment"): the intended use, or what is missing

Concepts without a standard code use the private scheme ``99BONEAGE`` (declared in the
Coding Scheme Identification Sequence). :func:`read_structured_report` reads any SR written
here back into plain values.
"""

from __future__ import annotations

import datetime
import unicodedata
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pydicom.valuerep import DSfloat

from boneage import __version__
from boneage.clinical.reference import REFERENCE_NAME
from boneage.reporting.dicom import PATIENT_STUDY_TAGS, with_file_meta
from boneage.reporting.report import INTENDED_USE

COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"
SERIES_DESCRIPTION = "boneage structured report"
#: After the Secondary Capture page's 9901, so both sort after the modality's own series.
SERIES_NUMBER = 9902
PRIVATE_SCHEME = "99BONEAGE"
ASSESSED, NOT_ASSESSED = "assessed", "not assessed"


@dataclass(frozen=True)
class Code:
    """A coded concept: value, coding scheme designator, meaning."""

    value: str
    scheme: str
    meaning: str

    def item(self) -> Dataset:
        """The code as an item of a code sequence."""
        ds = Dataset()
        ds.CodeValue = self.value
        ds.CodingSchemeDesignator = self.scheme
        ds.CodeMeaning = self.meaning
        return ds

    @property
    def key(self) -> tuple[str, str]:
        """``(value, scheme)``: what identifies the concept (the meaning is only a label)."""
        return self.value, self.scheme


REPORT_TITLE = Code("126000", "DCM", "Imaging Measurement Report")
IMAGING_MEASUREMENTS = Code("126010", "DCM", "Imaging Measurements")
MEASUREMENT_GROUP = Code("125007", "DCM", "Measurement Group")
TRACKING_ID = Code("112039", "DCM", "Tracking Identifier")
TRACKING_UID = Code("112040", "DCM", "Tracking Unique Identifier")
OBSERVER_TYPE = Code("121005", "DCM", "Observer Type")
DEVICE = Code("121007", "DCM", "Device")
DEVICE_UID = Code("121012", "DCM", "Device Observer UID")
DEVICE_NAME = Code("121013", "DCM", "Device Observer Name")
DEVICE_MANUFACTURER = Code("121014", "DCM", "Device Observer Manufacturer")
FINDING = Code("121071", "DCM", "Finding")
BONE_AGE = Code("85151-9", "LN", "Bone age")
INTERVAL_LOW = Code("BA-PI-LOW", PRIVATE_SCHEME, "Prediction interval lower limit")
INTERVAL_HIGH = Code("BA-PI-HIGH", PRIVATE_SCHEME, "Prediction interval upper limit")
INTERVAL_LEVEL = Code("BA-PI-LEVEL", PRIVATE_SCHEME, "Prediction interval coverage")
CHRONOLOGICAL_AGE = Code("121033", "DCM", "Subject Age")
SOURCE = Code("260753009", "SCT", "Source")
DIFFERENCE = Code("BA-DIFF", PRIVATE_SCHEME, "Bone age minus chronological age")
Z_SCORE = Code("121416", "DCM", "Z-Score of measurement")
REFERENCE_SD = Code("121414", "DCM", "Standard deviation of population")
REFERENCE = Code("BA-REF", PRIVATE_SCHEME, "Reference standard")
IMPRESSION = Code("121073", "DCM", "Impression")
SUBJECT_SEX = Code("121032", "DCM", "Subject Sex")
SEX_CODES = {"M": Code("M", "DCM", "Male"), "F": Code("F", "DCM", "Female")}
QUALITY_GATE = Code("BA-QC", PRIVATE_SCHEME, "Quality gate")
REASON_NOT_ASSESSED = Code("BA-NA-REASON", PRIVATE_SCHEME, "Reason not assessed")
ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = Code("111003", "DCM", "Algorithm Version")
ALGORITHM_PARAMETERS = Code("111002", "DCM", "Algorithm Parameters")
COMMENT = Code("121106", "DCM", "Comment")

MONTHS = Code("mo", "UCUM", "month")
PERCENT = Code("%", "UCUM", "percent")
NO_UNITS = Code("1", "UCUM", "no units")

_ASCII = {"–": "-", "—": "-", "−": "-", "±": "+/-", "×": "x", "°": " degrees", "≥": ">=", "≤": "<=",
          "’": "'", "‘": "'", "“": '"', "”": '"', "…": "..."}


def ascii_text(text: object) -> str:
    """``text`` in plain ASCII, so it is valid whatever character set the source declares
    (the SR copies the source's Specific Character Set for the patient's name)."""
    s = "".join(_ASCII.get(c, c) for c in str(text))
    s = unicodedata.normalize("NFKD", s)
    return s.encode("ascii", "ignore").decode("ascii")


# -- content items ---------------------------------------------------------------------------

def _item(relationship: str, value_type: str, concept: Code) -> Dataset:
    ds = Dataset()
    ds.RelationshipType = relationship
    ds.ValueType = value_type
    ds.ConceptNameCodeSequence = Sequence([concept.item()])
    return ds


def _text(relationship: str, concept: Code, value: object) -> Dataset:
    ds = _item(relationship, "TEXT", concept)
    ds.TextValue = ascii_text(value)
    return ds


def _code(relationship: str, concept: Code, value: Code) -> Dataset:
    ds = _item(relationship, "CODE", concept)
    ds.ConceptCodeSequence = Sequence([value.item()])
    return ds


def _uidref(relationship: str, concept: Code, uid: str) -> Dataset:
    ds = _item(relationship, "UIDREF", concept)
    ds.UID = uid
    return ds


def _num(relationship: str, concept: Code, value: float, unit: Code, children=()) -> Dataset:
    ds = _item(relationship, "NUM", concept)
    measured = Dataset()
    measured.MeasurementUnitsCodeSequence = Sequence([unit.item()])
    # DS holds 16 characters (enough for 0.0001 months); the FD beside it keeps full precision.
    measured.NumericValue = DSfloat(round(float(value), 4), auto_format=True)
    measured.FloatingPointValue = float(value)
    ds.MeasuredValueSequence = Sequence([measured])
    if children:
        ds.ContentSequence = Sequence(list(children))
    return ds


def _image(relationship: str, concept: Code, sop_class: str, sop_instance: str) -> Dataset:
    ds = _item(relationship, "IMAGE", concept)
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class
    ref.ReferencedSOPInstanceUID = sop_instance
    ds.ReferencedSOPSequence = Sequence([ref])
    return ds


def _container(relationship: str | None, concept: Code, children) -> Dataset:
    ds = _item(relationship, "CONTAINER", concept) if relationship else Dataset()
    if not relationship:
        ds.ValueType = "CONTAINER"
        ds.ConceptNameCodeSequence = Sequence([concept.item()])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = Sequence(list(children))
    return ds


def quality_text(quality) -> str:
    """The gate's verdict in the words ``boneage predict`` prints."""
    if quality is None:
        return "not run"
    if quality.forced:
        return f"FORCED past the quality gate, which would have refused it: {quality.reason}"
    if quality.corrections:
        return "accepted after correction: " + "; ".join(quality.corrections)
    return "accepted"


def _measurements(prediction, source) -> list[Dataset]:
    """The NUM, TEXT and CODE items of an assessed radiograph."""
    image = [_image("INFERRED FROM", SOURCE, source.SOPClassUID, source.SOPInstanceUID)]
    interval = prediction.interval
    bounds = []
    if interval is not None:
        bounds = [_num("HAS PROPERTIES", INTERVAL_LOW, interval.low_months, MONTHS),
                  _num("HAS PROPERTIES", INTERVAL_HIGH, interval.high_months, MONTHS),
                  _num("HAS PROPERTIES", INTERVAL_LEVEL, 100 * interval.level, PERCENT)]
    items = [_num("CONTAINS", BONE_AGE, prediction.bone_age_months, MONTHS, bounds + image)]
    c = prediction.clinical
    if c is None:
        items.append(_text("CONTAINS", COMMENT, "chronological age not known (no dates or age "
                                                "in the DICOM header): no z-score or impression"))
        return items
    items.append(_num("CONTAINS", CHRONOLOGICAL_AGE, c.chronological_age_months, MONTHS,
                      [_text("HAS PROPERTIES", SOURCE, c.age_source)]))
    items.append(_num("CONTAINS", DIFFERENCE, c.difference_months, MONTHS))
    if c.z_score is None:
        items.append(_text("CONTAINS", COMMENT, f"no z-score: {c.no_z_score_reason}"))
    else:
        items.append(_num("CONTAINS", Z_SCORE, c.z_score, NO_UNITS,
                          [_num("HAS PROPERTIES", REFERENCE_SD, c.reference_sd_months, MONTHS),
                           _text("HAS PROPERTIES", REFERENCE, REFERENCE_NAME)]))
    items.append(_text("CONTAINS", IMPRESSION, c.statement))
    return items


def structured_report(source: Dataset, *, sop_instance_uid: str, series_instance_uid: str,
                      prediction=None, not_assessed: str | None = None, sex=None,
                      sex_source: str | None = None, model_name: str = "", model_hash: str = "",
                      device_name: str = "boneage", device_uid: str | None = None,
                      when: datetime.datetime | None = None) -> Dataset:
    """The Comprehensive SR of one assessment of ``source`` (a pydicom Dataset, header only
    is enough), ready to save or send.

    Give either ``prediction`` (a :class:`~boneage.inference.Prediction`, its quality and
    clinical reading included) or ``not_assessed`` (why no bone age was given). ``sex`` and
    ``sex_source`` say which sex the model was given and where it came from (a prediction's
    own sex is used when ``sex`` is None). The patient and study are the source's; the series
    and instance UIDs are the caller's, so that the same assessment always gets the same ones.
    """
    if (prediction is None) == (not_assessed is None):
        raise ValueError("give either a prediction or a reason it was not assessed")
    when = when or datetime.datetime.now()
    group: list[Dataset] = [
        _text("HAS OBS CONTEXT", TRACKING_ID, "bone age"),
        _uidref("HAS OBS CONTEXT", TRACKING_UID, generate_uid(entropy_srcs=[sop_instance_uid, "tracking"])),
        _text("CONTAINS", FINDING, NOT_ASSESSED if prediction is None else ASSESSED),
    ]
    if prediction is not None:
        group += _measurements(prediction, source)
        sex = sex if sex is not None else prediction.sex
    sex_text = str(sex) if sex is not None else None
    if sex_text in SEX_CODES:
        sex_item = _code("CONTAINS", SUBJECT_SEX, SEX_CODES[sex_text])
        if sex_source:
            sex_item.ContentSequence = Sequence([_text("HAS PROPERTIES", SOURCE, sex_source)])
        group.append(sex_item)
    if prediction is not None:
        group.append(_text("CONTAINS", QUALITY_GATE, quality_text(prediction.quality)))
    else:
        group.append(_text("CONTAINS", REASON_NOT_ASSESSED, not_assessed))
    group += [
        _text("CONTAINS", ALGORITHM_NAME, model_name or "unnamed model"),
        _text("CONTAINS", ALGORITHM_VERSION, model_hash or "unknown"),
        _text("CONTAINS", ALGORITHM_PARAMETERS, f"boneage {__version__}"),
        _image("CONTAINS", SOURCE, source.SOPClassUID, source.SOPInstanceUID),
        _text("CONTAINS", COMMENT, INTENDED_USE),
    ]
    content = [
        _code("HAS OBS CONTEXT", OBSERVER_TYPE, DEVICE),
        _uidref("HAS OBS CONTEXT", DEVICE_UID, device_uid or generate_uid(entropy_srcs=["boneage", device_name])),
        _text("HAS OBS CONTEXT", DEVICE_NAME, device_name),
        _text("HAS OBS CONTEXT", DEVICE_MANUFACTURER, "boneage"),
        _container("CONTAINS", IMAGING_MEASUREMENTS, [_container("CONTAINS", MEASUREMENT_GROUP, group)]),
    ]
    ds = _header(source, sop_instance_uid, series_instance_uid, when)
    root = _container(None, REPORT_TITLE, content)
    for element in root:
        ds[element.tag] = element
    return ds


def _header(source: Dataset, sop_instance_uid: str, series_instance_uid: str,
            when: datetime.datetime) -> Dataset:
    ds = Dataset()
    for keyword in PATIENT_STUDY_TAGS:
        if keyword in source:
            ds[keyword] = source[keyword]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                    "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        if keyword not in ds:
            setattr(ds, keyword, "")  # type 2: present, empty when unknown
    ds.SOPClassUID = COMPREHENSIVE_SR_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.Modality = "SR"
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = when.strftime("%H%M%S")
    ds.InstanceNumber = 1
    ds.Manufacturer = "boneage"
    ds.SoftwareVersions = __version__
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])
    ds.PerformedProcedureCodeSequence = Sequence([])
    instance = Dataset()
    instance.ReferencedSOPClassUID = source.SOPClassUID
    instance.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence([instance])
    study = Dataset()
    study.StudyInstanceUID = ds.StudyInstanceUID
    study.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "boneage private codes"
    scheme.CodingSchemeResponsibleOrganization = "boneage"
    ds.CodingSchemeIdentificationSequence = Sequence([scheme])

    return with_file_meta(ds)


# -- reading back ----------------------------------------------------------------------------

def _concept(item: Dataset) -> tuple[str, str] | None:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return None
    return str(seq[0].get("CodeValue", "")), str(seq[0].get("CodingSchemeDesignator", ""))


def _walk(items):
    for item in items or ():
        yield item
        yield from _walk(item.get("ContentSequence"))


def _find(items, concept: Code, value_type: str | None = None) -> Dataset | None:
    for item in _walk(items):
        if _concept(item) == concept.key and (value_type is None or item.get("ValueType") == value_type):
            return item
    return None


def _num_value(item: Dataset | None) -> tuple[float, str] | None:
    if item is None or not item.get("MeasuredValueSequence"):
        return None
    measured = item.MeasuredValueSequence[0]
    value = measured.get("FloatingPointValue")
    value = float(value if value is not None else measured.NumericValue)
    return value, str(measured.MeasurementUnitsCodeSequence[0].CodeValue)


def _child_text(item: Dataset | None, concept: Code) -> str | None:
    child = _find(item.get("ContentSequence") if item is not None else None, concept, "TEXT")
    return None if child is None else str(child.TextValue)


def read_structured_report(ds: Dataset) -> dict:
    """The values of an SR written by :func:`structured_report`, as plain Python.

    Keys: ``assessed``, ``bone_age_months``, ``bone_age_unit``, ``interval`` (``low``,
    ``high``, ``level`` or None), ``chronological_age_months``, ``age_source``,
    ``difference_months``, ``z_score``, ``reference_sd_months``, ``impression``, ``sex``,
    ``sex_source``, ``quality``, ``reason_not_assessed``, ``algorithm_name``,
    ``algorithm_version``, ``source_sop_instance_uid``. Absent values are None.

    Raises:
        ValueError: ``ds`` is not such a report.
    """
    if _concept(ds) != REPORT_TITLE.key or str(ds.get("SOPClassUID", "")) != COMPREHENSIVE_SR_STORAGE:
        raise ValueError("not a boneage structured report (Comprehensive SR, Imaging Measurement Report)")
    items = ds.get("ContentSequence")
    bone = _find(items, BONE_AGE, "NUM")
    bone_value = _num_value(bone)
    low = _num_value(_find(bone.get("ContentSequence"), INTERVAL_LOW)) if bone is not None else None
    high = _num_value(_find(bone.get("ContentSequence"), INTERVAL_HIGH)) if bone is not None else None
    level = _num_value(_find(bone.get("ContentSequence"), INTERVAL_LEVEL)) if bone is not None else None
    chrono = _find(items, CHRONOLOGICAL_AGE, "NUM")
    z = _find(items, Z_SCORE, "NUM")
    sd = _num_value(_find(z.get("ContentSequence"), REFERENCE_SD)) if z is not None else None
    sex = _find(items, SUBJECT_SEX, "CODE")
    source_ref = _find(items, SOURCE, "IMAGE")

    def text(concept: Code) -> str | None:
        item = _find(items, concept, "TEXT")
        return None if item is None else str(item.TextValue)

    finding = text(FINDING)
    return {
        "assessed": finding == ASSESSED and bone_value is not None,
        "bone_age_months": None if bone_value is None else bone_value[0],
        "bone_age_unit": None if bone_value is None else bone_value[1],
        "interval": None if low is None or high is None else {
            "low": low[0], "high": high[0], "level": None if level is None else level[0] / 100},
        "chronological_age_months": None if _num_value(chrono) is None else _num_value(chrono)[0],
        "age_source": _child_text(chrono, SOURCE),
        "difference_months": (_num_value(_find(items, DIFFERENCE, "NUM")) or (None,))[0],
        "z_score": None if _num_value(z) is None else _num_value(z)[0],
        "reference_sd_months": None if sd is None else sd[0],
        "impression": text(IMPRESSION),
        "sex": None if sex is None else str(sex.ConceptCodeSequence[0].CodeValue),
        "sex_source": _child_text(sex, SOURCE),
        "quality": text(QUALITY_GATE),
        "reason_not_assessed": text(REASON_NOT_ASSESSED),
        "algorithm_name": text(ALGORITHM_NAME),
        "algorithm_version": text(ALGORITHM_VERSION),
        "source_sop_instance_uid": None if source_ref is None else
        str(source_ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID),
    }
