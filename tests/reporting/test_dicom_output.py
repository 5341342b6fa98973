"""The report as a DICOM Secondary Capture: read back with pydicom, in the source's study,
in a new series, with the patient and study tags copied."""

from __future__ import annotations

import datetime

import cv2
import numpy as np
import pydicom
import pytest

from boneage.reporting.dicom import SC_IMAGE_STORAGE, secondary_capture, write_secondary_capture
from boneage.data.synthetic import write_example_radiograph
from boneage.errors import InputError
from boneage.io import write_dicom


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A hand radiograph DICOM with patient and study tags, as a CR from a modality."""
    folder = tmp_path_factory.mktemp("dcm")
    png = write_example_radiograph(folder / "hand.png", age_months=130, sex="F", size=(320, 256))
    pixels = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    path = write_dicom(folder / "hand.dcm", pixels, sex="F", birth_date=datetime.date(2012, 4, 2),
                       study_date=datetime.date(2023, 3, 14), patient_id="P-31337")
    ds = pydicom.dcmread(path)
    ds.PatientName = "Muster^Erika"
    ds.AccessionNumber = "ACC-2023-77"
    ds.StudyID = "S42"
    ds.Modality = "CR"
    ds.BodyPartExamined = "HAND"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_report_cli_writes_a_secondary_capture_in_the_source_study(cli, source, tmp_path):
    out, dcm = tmp_path / "r.json", tmp_path / "r.dcm"
    code, stdout, err = cli("report", source, "--out", out, "--dicom-out", dcm)
    assert code == 0, err
    assert stdout.strip().endswith(f"report: {out}, {dcm}")

    src = pydicom.dcmread(source)
    sc = pydicom.dcmread(dcm)
    assert sc.file_meta.MediaStorageSOPClassUID == sc.SOPClassUID == SC_IMAGE_STORAGE
    assert sc.file_meta.MediaStorageSOPInstanceUID == sc.SOPInstanceUID
    assert sc.StudyInstanceUID == src.StudyInstanceUID
    assert sc.SeriesInstanceUID != src.SeriesInstanceUID
    assert sc.SOPInstanceUID not in (src.SOPInstanceUID, src.SeriesInstanceUID, src.StudyInstanceUID)
    assert pydicom.uid.UID(sc.SeriesInstanceUID).is_valid and pydicom.uid.UID(sc.SOPInstanceUID).is_valid
    assert sc.Modality == "OT" and sc.SeriesDescription == "boneage report"
    assert sc.ConversionType == "WSD" and list(sc.ImageType) == ["DERIVED", "SECONDARY"]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                    "AccessionNumber", "StudyID"):
        assert sc[keyword].value == src[keyword].value, keyword
    assert str(sc.PatientName) == "Muster^Erika" and sc.AccessionNumber == "ACC-2023-77"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert sc.BurnedInAnnotation == "YES"
    # The page: RGB, A4 portrait, not blank.
    assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
    page = sc.pixel_array
    assert page.shape == (sc.Rows, sc.Columns, 3) and page.dtype == np.uint8
    assert page.shape[0] / page.shape[1] == pytest.approx(11.69 / 8.27, rel=0.01)
    assert (page < 128).mean() > 0.02


def test_two_reports_of_one_study_get_distinct_series(source):
    rgb = np.zeros((20, 10, 3), np.uint8)
    a, b = secondary_capture(rgb, source), secondary_capture(rgb, source)
    assert a.StudyInstanceUID == b.StudyInstanceUID
    assert a.SeriesInstanceUID != b.SeriesInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID


def test_dicom_out_for_a_png_is_one_line_and_runs_nothing(cli, tmp_path):
    png = write_example_radiograph(tmp_path / "hand.png", size=64)
    code, stdout, err = cli("report", png, "--sex", "M", "--out", tmp_path / "r.html",
                            "--dicom-out", tmp_path / "r.dcm")
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "--dicom-out needs a DICOM input image" in err and "PNG" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hand.png"]


def test_dicom_out_suffix_and_same_name_are_refused(cli, source, tmp_path):
    code, _, err = cli("report", source, "--out", tmp_path / "r.json", "--dicom-out", tmp_path / "r.png")
    assert code == 2 and err.count("\n") == 1 and ".dcm" in err
    code, _, err = cli("report", source, "--out", tmp_path / "r.json", "--dicom-out", tmp_path / "r.json")
    assert code == 2 and err.count("\n") == 1 and ".dcm" in err
    assert list(tmp_path.iterdir()) == []


def test_secondary_capture_checks_its_inputs(source, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        secondary_capture(np.zeros((10, 10), np.uint8), source)
    png = write_example_radiograph(tmp_path / "x.png", size=64)
    with pytest.raises(InputError, match="not DICOM"):
        write_secondary_capture(np.zeros((10, 10, 3), np.uint8), png, tmp_path / "x.dcm")
    out = write_secondary_capture(np.full((10, 12, 3), 7, np.uint8), source, tmp_path / "x.dcm")
    assert pydicom.dcmread(out).pixel_array.shape == (10, 12, 3)
    with pytest.raises(InputError, match="exists"):
        write_secondary_capture(np.zeros((10, 10, 3), np.uint8), source, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dcm", "x.png"]  # no temp file left
