"""What a worker makes of one instance, without the network: the structured report (read back
with pydicom, opened by DCMTK's dsrdump), the report page, and the "not assessed" reports."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from boneage import api
from boneage.dicomnode.assess import SC_FILE, SR_FILE, Assessor, result_uid
from boneage.dicomnode.settings import resolve_settings
from boneage.dicomnode.sr import quality_text, read_structured_report
from boneage.errors import QualityRefusal
from boneage.io import write_dicom
from nodekit import CR_IMAGE_STORAGE, PATIENT_ID, ct_slice, hand_dicom


@pytest.fixture(scope="module")
def predictor(onnx_model):
    return api.load_predictor(onnx_model, threads=1)


@pytest.fixture(scope="module")
def forced(predictor, tmp_path_factory):
    return Assessor(resolve_settings(None, {"force": True, "page_dpi": 40}), predictor)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("assess")
    noise = np.random.default_rng(0).random((96, 80)).astype(np.float32)
    write_dicom(folder / "noise.dcm", noise, sex="M", patient_id=PATIENT_ID)
    ds = pydicom.dcmread(folder / "noise.dcm")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    ds.Modality = "CR"
    ds.save_as(folder / "noise.dcm", enforce_file_format=True)
    return {"hand": hand_dicom(folder / "hand.dcm", seed=1), "ct": ct_slice(folder / "ct.dcm"),
            "no_sex": hand_dicom(folder / "no-sex.dcm", seed=2, sex=None), "noise": folder / "noise.dcm"}


def _entry(path, tmp_path, name="00000000000000000001-1-00001_1.2.3"):
    """The file as a spool entry (the entry name seeds the result UIDs)."""
    target = tmp_path / f"{name}.dcm"
    shutil.copy(path, target)
    return target


def test_the_sr_holds_what_predict_says_and_reads_back(forced, predictor, files, tmp_path):
    result = forced.assess(_entry(files["hand"], tmp_path))
    expected = api.predict(files["hand"], model=predictor, force=True)
    assert result.assessed and sorted(result.results) == [SR_FILE, SC_FILE]
    source = pydicom.dcmread(files["hand"])
    sr = result.results[SR_FILE]
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    read = read_structured_report(pydicom.dcmread(tmp_path / "sr.dcm"))
    c = expected.clinical
    assert read["bone_age_months"] == pytest.approx(expected.bone_age_months, abs=1e-9)
    assert read["bone_age_unit"] == "mo"
    assert read["interval"] == pytest.approx({"low": expected.interval.low_months,
                                              "high": expected.interval.high_months, "level": 0.9})
    assert read["chronological_age_months"] == pytest.approx(c.chronological_age_months)
    assert read["age_source"] == "DICOM PatientBirthDate and StudyDate"
    assert read["difference_months"] == pytest.approx(c.difference_months)
    assert read["z_score"] == pytest.approx(c.z_score) and read["reference_sd_months"] == pytest.approx(c.reference_sd_months)
    assert read["impression"] == c.statement and read["impression"].startswith(c.impression)
    assert (read["sex"], read["sex_source"]) == ("F", "DICOM PatientSex")
    assert (read["algorithm_name"], read["algorithm_version"]) == (expected.model_name, expected.model_hash)
    assert read["quality"] == quality_text(expected.quality)
    assert read["source_sop_instance_uid"] == source.SOPInstanceUID and read["reason_not_assessed"] is None
    # In the source's study and patient, in a new series; the page as well.
    for obj in (sr, result.results[SC_FILE]):
        assert obj.StudyInstanceUID == source.StudyInstanceUID and obj.PatientID == PATIENT_ID
        assert obj.PatientName == source.PatientName and obj.AccessionNumber == source.AccessionNumber
        assert obj.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.Modality == "SR" and sr.SeriesInstanceUID != result.results[SC_FILE].SeriesInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert result.results[SC_FILE].SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_the_bone_age_equals_boneage_predict_with_its_default_model(forced, files, tmp_path):
    read = read_structured_report(forced.assess(_entry(files["hand"], tmp_path)).results[SR_FILE])
    assert read["bone_age_months"] == pytest.approx(api.predict(files["hand"], force=True).bone_age_months, abs=0.01)


def test_a_forced_image_says_so_in_the_words_predict_uses(forced, predictor, files, tmp_path):
    with pytest.raises(QualityRefusal) as refusal:
        api.predict(files["noise"], model=predictor)
    result = forced.assess(_entry(files["noise"], tmp_path))
    read = read_structured_report(result.results[SR_FILE])
    assert result.verdict == "assessed (forced)" and result.reason == refusal.value.reason
    assert read["quality"] == f"FORCED past the quality gate, which would have refused it: {refusal.value.reason}"
    assert read["bone_age_months"] is not None


@pytest.mark.parametrize("case, settings, reason", [
    ("ct", {"force": True}, "DICOM Modality is CT (computed tomography), not a radiograph"),
    ("no_sex", {"force": True}, "sex is unknown"),
    ("noise", {"force": False}, None),  # the gate's own reason, as predict gives it
])
def test_refused_images_get_a_not_assessed_sr_and_no_bone_age(predictor, files, tmp_path, case, settings, reason):
    if reason is None:
        with pytest.raises(QualityRefusal) as refusal:
            api.predict(files[case], model=predictor)
        reason = refusal.value.reason
    result = Assessor(resolve_settings(None, settings), predictor).assess(_entry(files[case], tmp_path))
    assert result.verdict == "not assessed" and list(result.results) == [SR_FILE]
    read = read_structured_report(result.results[SR_FILE])
    assert not read["assessed"] and read["bone_age_months"] is None and read["interval"] is None
    assert read["reason_not_assessed"].startswith(reason)
    assert read["source_sop_instance_uid"] == pydicom.dcmread(files[case]).SOPInstanceUID
    assert result.results[SR_FILE].StudyInstanceUID == pydicom.dcmread(files[case]).StudyInstanceUID


def test_the_same_entry_gets_the_same_objects_and_another_entry_new_ones(forced, files, tmp_path):
    (tmp_path / "a").mkdir()
    one = forced.assess(_entry(files["ct"], tmp_path / "a"))
    again = forced.assess(_entry(files["ct"], tmp_path))
    other = forced.assess(_entry(files["ct"], tmp_path, name="00000000000000000002-1-00001_1.2.3"))
    uid = one.results[SR_FILE].SOPInstanceUID
    assert again.results[SR_FILE].SOPInstanceUID == uid == result_uid("00000000000000000001-1-00001_1.2.3", "sr")
    assert other.results[SR_FILE].SOPInstanceUID != uid


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK's dsrdump is not installed (apt-get install dcmtk)")
def test_dsrdump_opens_the_reports_without_complaint_and_shows_the_bone_age_in_months(forced, files, tmp_path):
    assessed = forced.assess(_entry(files["hand"], tmp_path)).results[SR_FILE]
    refused = forced.assess(_entry(files["ct"], tmp_path)).results[SR_FILE]
    bone_age = read_structured_report(assessed)["bone_age_months"]
    for name, ds in (("assessed.dcm", assessed), ("refused.dcm", refused)):
        ds.save_as(tmp_path / name, enforce_file_format=True)
        run = subprocess.run(["dsrdump", "+Pc", "+Pl", str(tmp_path / name)], capture_output=True, text=True, timeout=30)
        assert run.returncode == 0 and run.stderr == "", run.stderr
        assert "Comprehensive SR Document" in run.stdout
    run = subprocess.run(["dsrdump", "+Pc", str(tmp_path / "assessed.dcm")], capture_output=True, text=True, timeout=30)
    shown = re.search(r'NUM:\(85151-9,LN,"Bone age"\)="([0-9.]+)" \(mo,UCUM,"month"\)', run.stdout)
    assert shown is not None and float(shown.group(1)) == pytest.approx(bone_age, abs=1e-4)
    run = subprocess.run(["dsrdump", "+Pc", "+Pl", str(tmp_path / "refused.dcm")], capture_output=True, text=True, timeout=30)
    assert 'TEXT:(121071,DCM,"Finding")="not assessed"' in run.stdout and "Bone age" not in run.stdout


def test_report_text_is_ascii_whatever_the_source_character_set(forced, files, tmp_path):
    ds = pydicom.dcmread(files["no_sex"])
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    ds.save_as(tmp_path / "latin1.dcm", enforce_file_format=True)
    sr = forced.assess(_entry(tmp_path / "latin1.dcm", tmp_path)).results[SR_FILE]
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    back = pydicom.dcmread(tmp_path / "sr.dcm")
    assert back.SpecificCharacterSet == "ISO_IR 100" and str(back.PatientName) == "Müller^Jürgen"
    texts = [item.TextValue for item in _walk(back.ContentSequence) if "TextValue" in item]
    assert texts and all(t.isascii() for t in texts)
    assert "Intended use" in " ".join(texts)


def _walk(items):
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))
