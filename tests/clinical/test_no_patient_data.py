"""No patient data (names, IDs, dates) in logs, warnings or messages: only the report files
carry it. Runs predict and report on a DICOM with patient tags through the CLI and the API,
successes and error paths alike, with the ``boneage`` logger at DEBUG."""

from __future__ import annotations

import datetime
import json
import logging

import cv2
import numpy as np
import pydicom
import pytest

from boneage.data.synthetic import write_example_radiograph
from boneage.io import write_dicom

NAME_FAMILY, NAME_GIVEN = "Zwiebelhuber", "Annelore"
PATIENT_ID = "PX-40417"
BIRTH = datetime.date(2012, 4, 2)
STUDY = datetime.date(2023, 3, 14)
ACCESSION = "ACC-918273"
#: Every form in which the patient's data could leak.
SECRETS = (NAME_FAMILY, NAME_GIVEN, PATIENT_ID, ACCESSION,
           BIRTH.strftime("%Y%m%d"), BIRTH.isoformat(), STUDY.strftime("%Y%m%d"), STUDY.isoformat(),
           BIRTH.strftime("%d.%m.%Y"), BIRTH.strftime("%m/%d/%Y"))


def _dicom(path, pixels, **tags):
    """A DICOM radiograph carrying the patient's name, ID, dates and accession number."""
    write_dicom(path, pixels, sex="F", birth_date=tags.pop("birth", BIRTH),
                study_date=tags.pop("study", STUDY), patient_id=PATIENT_ID)
    ds = pydicom.dcmread(path)
    ds.PatientName = f"{NAME_FAMILY}^{NAME_GIVEN}"
    ds.AccessionNumber = ACCESSION
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """File names say nothing about the patient: a path is allowed in messages."""
    folder = tmp_path_factory.mktemp("phi")
    png = write_example_radiograph(folder / "x.png", age_months=130, sex="F", size=(256, 200))
    pixels = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    return {
        "hand": _dicom(folder / "hand.dcm", pixels, Modality="CR", BodyPartExamined="HAND"),
        "ct": _dicom(folder / "ct.dcm", pixels, Modality="CT"),
        "swapped": _dicom(folder / "swapped.dcm", pixels, birth=STUDY, study=BIRTH),
        "png": png,
        "folder": folder,
    }


@pytest.fixture
def logs(caplog, monkeypatch):
    """Every record of the ``boneage`` loggers at DEBUG, also while the CLI runs (it sets the
    level to INFO and stops propagation, so the capture handler is attached directly)."""
    from boneage.cli import main as cli_main

    logger = logging.getLogger("boneage")
    configure = cli_main._configure_process

    def configure_debug():
        configure()
        logger.setLevel(logging.DEBUG)

    monkeypatch.setattr(cli_main, "_configure_process", configure_debug)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    caplog.handler.setLevel(logging.DEBUG)
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old_level)


def _leaks(text: str) -> list[str]:
    low = text.lower()
    return [s for s in SECRETS if s.lower() in low]


def _log_text(caplog) -> str:
    parts = []
    for r in caplog.records:
        parts.append(r.getMessage())
        if r.exc_info:
            parts.append(logging.Formatter().formatException(r.exc_info))
    return "\n".join(parts)


def test_no_patient_data_in_cli_output_or_logs(cli, files, logs, recwarn, tmp_path):
    hand = files["hand"]
    runs = [
        # Successes: the report files hold the patient data, the terminal does not.
        (0, ["predict", hand]),
        (0, ["predict", hand, "--json"]),
        (0, ["report", hand, "--out", tmp_path / "r.html", "--dicom-out", tmp_path / "r.dcm"]),
        (0, ["report", hand, "--out", tmp_path / "r.json"]),
        # Errors: a bad suffix, an existing file, a refused CT, dates in the file that
        # cannot be right, --dicom-out of the wrong kind.
        (2, ["report", hand, "--out", tmp_path / "r.txt"]),
        (2, ["report", hand, "--out", tmp_path / "r.html"]),
        (2, ["report", hand, "--out", tmp_path / "s.html", "--dicom-out", tmp_path / "s.png"]),
        (3, ["predict", files["ct"]]),
        (3, ["report", files["ct"], "--out", tmp_path / "ct.html", "--dicom-out", tmp_path / "ct.dcm"]),
        (2, ["predict", files["swapped"]]),
        (2, ["report", files["swapped"], "--out", tmp_path / "sw.pdf"]),
        # Identifiers given on the command line go into the report only.
        (0, ["report", files["png"], "--sex", "F", "--force", "--patient-id", PATIENT_ID,
             "--accession", ACCESSION, "--out", tmp_path / "given.html"]),
        (2, ["report", hand, "--patient-id", PATIENT_ID, "--out", tmp_path / "g.html", "--dicom-out",
             tmp_path / "g.dcm"]),
    ]
    for expected, argv in runs:
        code, out, err = cli(*argv)
        assert code == expected, (argv, err)
        assert _leaks(out) == [] and _leaks(err) == [], (argv, out, err)
        if expected:
            assert err.count("\n") == 1, (argv, err)  # one line, as for every user error

    assert _leaks(_log_text(logs)) == []
    assert any("report written" in r.getMessage() for r in logs.records)  # DEBUG was on
    assert set(_leaks((tmp_path / "given.html").read_text(encoding="utf-8"))) == {PATIENT_ID, ACCESSION}
    assert _leaks("\n".join(str(w.message) for w in recwarn)) == []
    # The report files do carry the patient's data: that is where it belongs.
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert PATIENT_ID in html and NAME_FAMILY in html and BIRTH.isoformat() in html
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["patient"]["patient_id"] == PATIENT_ID and data["patient"]["accession_number"] == ACCESSION
    assert pydicom.dcmread(tmp_path / "r.dcm").PatientID == PATIENT_ID
    assert not (tmp_path / "ct.html").exists() and not (tmp_path / "sw.pdf").exists()


def test_no_patient_data_in_api_errors_or_logs(files, logs, tmp_path):
    from boneage import api
    from boneage.reporting.dicom import write_report_dicom
    from boneage.api import create_report
    from boneage.reporting.report import write_report
    from boneage.errors import BoneAgeError

    result = api.predict(files["hand"])
    assert _leaks(json.dumps(result.to_dict(), default=str)) == []
    report = create_report(files["hand"])
    write_report(report, tmp_path / "r.pdf")
    write_report_dicom(report, files["hand"], tmp_path / "r.dcm")
    messages = []
    for call in (lambda: api.predict(files["ct"]),
                 lambda: create_report(files["swapped"]),
                 lambda: write_report(report, tmp_path / "r.pdf"),
                 lambda: write_report(report, tmp_path / "r.doc"),
                 lambda: write_report_dicom(report, files["hand"], tmp_path / "r.dcm")):
        with pytest.raises(BoneAgeError) as info:
            call()
        messages.append(str(info.value))
    assert _leaks("\n".join(messages)) == [], messages
    assert _leaks(_log_text(logs)) == []
    assert any("report written" in r.getMessage() for r in logs.records)
