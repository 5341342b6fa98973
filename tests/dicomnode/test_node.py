"""The running node against a stand-in destination (pynetdicom, in this process): C-ECHO, the
allow-list, a radiograph's round trip, and bad input: each gets a DICOM status the sender
understands and one log line without patient data, and the node keeps serving."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from boneage.dicomnode.node import DicomNode
from boneage.dicomnode.settings import resolve_settings
from boneage.dicomnode.spool import Spool, entry_name
from boneage.dicomnode.sr import read_structured_report
from nodekit import Destination, echo, hand_dicom, leaks, scu_store, wait_for


@pytest.fixture(scope="module")
def destination():
    d = Destination()
    yield d
    d.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory, destination, onnx_model, node_logs):
    spool = tmp_path_factory.mktemp("node") / "spool"
    settings = resolve_settings(None, {
        "spool": str(spool), "destination": f"PACS@127.0.0.1:{destination.port}", "port": "0",
        "allow": "MODALITY,ORTHANC", "force": True, "model": onnx_model, "page_dpi": "40",
        "timeout": "10", "retry_initial": "0.2", "retry_max": "1"})
    with DicomNode(settings) as running:
        yield running


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("files")


def _results(destination, path, count: int, timeout: float = 240) -> list:
    study = pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
    return wait_for(lambda: (lambda got: got if len(got) >= count else None)(destination.of_study(study)),
                    timeout, f"{count} result(s) at the destination")


def test_echo_and_a_calling_ae_outside_the_allow_list_is_rejected_at_association(node, node_logs):
    assert echo(node.port, calling="MODALITY") == 0x0000
    assert echo(node.port, calling="STRANGER") is None
    assert echo(node.port, calling="MODALITY", called="NOTME") is None
    if shutil.which("echoscu"):
        run = subprocess.run(["echoscu", "-aet", "STRANGER", "-aec", "BONEAGE", "127.0.0.1", str(node.port)],
                             capture_output=True, text=True, timeout=30)
        assert run.returncode != 0 and "Association Rejected" in run.stderr + run.stdout
    rejected = node_logs.lines_with("association from STRANGER at 127.0.0.1 rejected")
    assert rejected and set(rejected) == {f"association from STRANGER at 127.0.0.1 rejected: calling AE title "
                                          "not in the allow-list"}
    assert node_logs.lines_with("association from MODALITY", "called AE title 'NOTME' is not this node's 'BONEAGE'")
    assert node_logs.lines_with("C-ECHO from MODALITY")


def test_a_radiograph_comes_back_as_an_sr_and_a_page_and_leaves_the_spool(node, destination, folder):
    path = hand_dicom(folder / "hand.dcm", seed=3)
    assert [int(s.Status) for s in scu_store(node.port, [pydicom.dcmread(path)])] == [0x0000]
    objects = _results(destination, path, 2)
    kinds = sorted(ds.Modality for ds in objects)
    assert kinds == ["OT", "SR"]
    sr = next(ds for ds in objects if ds.Modality == "SR")
    read = read_structured_report(sr)
    assert read["assessed"] and read["source_sop_instance_uid"] == pydicom.dcmread(path).SOPInstanceUID
    wait_for(lambda: not any(Spool(node.settings.spool).status().values()), 60, "an empty spool")


def _bad(kind: str, folder):
    """A dataset of each bad kind, and the status it must get."""
    ds = pydicom.dcmread(hand_dicom(folder / f"{kind}.dcm", seed=4))
    if kind == "non-image SOP class":
        doc = Dataset()
        doc.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage
        doc.SOPInstanceUID = generate_uid()
        doc.StudyInstanceUID, doc.SeriesInstanceUID = ds.StudyInstanceUID, generate_uid()
        doc.Modality, doc.MIMETypeOfEncapsulatedDocument = "DOC", "application/pdf"
        doc.EncapsulatedDocument = b"%PDF-1.4 not really\n"
        doc.file_meta = FileMetaDataset()
        doc.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return doc, 0x0122
    if kind == "truncated dataset":
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
        return ds, 0xC000
    if kind == "no pixel data":
        del ds.PixelData
        return ds, 0xA900
    if kind == "multi-frame volume":
        ds.NumberOfFrames = 4
        ds.PixelData = ds.PixelData * 4
        return ds, 0xC000
    return ds, 0xA700  # spool disk full


@pytest.mark.parametrize("kind", ["non-image SOP class", "truncated dataset", "no pixel data",
                                  "multi-frame volume", "spool disk full"])
def test_bad_input_gets_a_status_and_one_log_line_and_the_node_keeps_serving(
        node, destination, folder, node_logs, monkeypatch, kind):
    ds, expected = _bad(kind, folder)
    if kind == "spool disk full":
        def disk_full(path, data):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(Spool, "_write", staticmethod(disk_full))
    [status] = scu_store(node.port, [ds])
    monkeypatch.undo()
    assert int(status.Status) == expected and status.get("ErrorComment"), kind
    lines = node_logs.lines_with(ds.SOPInstanceUID)
    assert lines == [l for l in lines if l.startswith("refused ") and f"with status 0x{expected:04X}" in l]
    assert len(lines) == 1, lines
    assert ds.SOPInstanceUID not in str(Spool(node.settings.spool).status())
    # Still serving: an echo, then a radiograph all the way to the destination.
    assert echo(node.port) == 0x0000
    good = hand_dicom(folder / f"after-{kind}.dcm", seed=5)
    assert [int(s.Status) for s in scu_store(node.port, [pydicom.dcmread(good)])] == [0x0000]
    assert len(_results(destination, good, 2)) == 2


def test_a_destination_refusing_the_sr_moves_it_to_failed_and_status_says_so(
        node, destination, folder, node_logs, cli, capsys):
    refused = hand_dicom(folder / "refused.dcm", seed=6, patient_id="REFUSE-SR")
    uid = pydicom.dcmread(refused).SOPInstanceUID
    assert [int(s.Status) for s in scu_store(node.port, [pydicom.dcmread(refused)])] == [0x0000]
    spool = Spool(node.settings.spool)
    failed = wait_for(lambda: spool.status()["failed"], 240, "the refused results in failed/")
    reason = ("destination refused the Comprehensive SR Storage with status 0xA900 "
              "(test destination refuses this SR)")
    assert failed == [{"uid": uid, "reason": reason}]
    assert node_logs.lines_with(uid, "not delivered") == [f"results of {uid} not delivered: {reason}; moved to failed"]
    # The node runs in this process: once any earlier test ran the CLI in-process, its log
    # lines also reach the captured stderr. Only the status command's own output is checked.
    capsys.readouterr()
    code, out, err = cli("dicom-node", "--status", "--spool", node.settings.spool)
    assert code == 0 and err == ""
    assert "0 queued" in out and "1 failed" in out and f"  {uid}: {reason}" in out
    assert leaks(out) == []
    # Still serving: the next radiograph's results arrive.
    good = hand_dicom(folder / "after-refusal.dcm", seed=7)
    scu_store(node.port, [pydicom.dcmread(good)])
    assert len(_results(destination, good, 2)) == 2


def test_a_worker_that_dies_is_replaced_and_what_it_held_is_assessed_again(node, destination, folder, node_logs):
    hand = hand_dicom(folder / "held.dcm", seed=8)
    spool = Spool(node.settings.spool)
    held = spool.worker_dir(0) / f"{entry_name(pydicom.dcmread(hand).SOPInstanceUID)}.dcm"
    shutil.copy(hand, held)  # as if worker 0 had claimed it when it died
    os.kill(node._workers[0].process.pid, signal.SIGKILL)
    assert len(_results(destination, hand, 2, timeout=300)) == 2
    assert node_logs.lines_with("worker 0 exited unexpectedly (exit code -9); starting another")
    wait_for(lambda: not any(spool.status()[k] for k in ("queued", "assessing", "sending")), 60,
             "nothing left in progress")


def test_logs_name_aes_uids_timings_and_verdicts_never_the_patient(node, node_logs):
    time.sleep(0.5)  # the last worker lines travel through a queue
    text = node_logs.text()
    assert leaks(text) == []
    assert node_logs.lines_with("stored Computed Radiography Image Storage", "from MODALITY", " ms: queued")
    assert node_logs.lines_with(" assessed", "(worker 0): SR and report page")
    assert node_logs.lines_with("stored by PACS@127.0.0.1:", "2 object(s)")
    assert node_logs.lines_with("settings: ae_title=BONEAGE (default)", "force=True (command line)")
