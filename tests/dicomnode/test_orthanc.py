"""The node against a real PACS: Orthanc (Debian's ``orthanc``) started with a generated
configuration on loopback ports, pushing with DCMTK's ``storescu`` and with Orthanc's own
routing rule, reading the results back through Orthanc's REST API.

One Orthanc and one node (two workers, in this process) serve the module; the crash test runs
its own node as ``boneage dicom-node`` in a light process (no PyTorch), and kills it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pydicom
import pytest

from boneage import api
from boneage.dicomnode.node import DicomNode
from boneage.dicomnode.settings import resolve_settings
from boneage.dicomnode.spool import Spool
from boneage.dicomnode.sr import read_structured_report
from nodekit import Orthanc, ct_slice, echo, free_port, hand_dicom, leaks, light_env, orthanc_binary, storescu, wait_for

pytestmark = pytest.mark.skipif(
    orthanc_binary() is None or shutil.which("storescu") is None or shutil.which("dsrdump") is None,
    reason="needs Orthanc and DCMTK (apt-get install orthanc dcmtk, as .ci/run does); not installed here")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, onnx_model, node_logs):
    folder = tmp_path_factory.mktemp("pacs")
    orthanc = Orthanc(folder / "orthanc")
    settings = resolve_settings(None, {
        "spool": str(folder / "spool"), "destination": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
        "port": "0", "workers": "2", "force": True, "model": onnx_model, "page_dpi": "40",
        "timeout": "10", "retry_initial": "0.2", "retry_max": "1"})
    node = DicomNode(settings).start()
    try:
        orthanc.configure(node.port).start()
        yield SimpleNamespace(orthanc=orthanc, node=node, spool=Spool(settings.spool), folder=folder)
    finally:
        node.stop()
        orthanc.stop()


def _done(orthanc: Orthanc, studies, sr: int = 1, ot: int = 1):
    """True once every study holds ``sr`` SRs and ``ot`` pages (and none has more)."""
    contents = orthanc.study_contents()
    counts = [(len(contents.get(s, {}).get("SR", [])), len(contents.get(s, {}).get("OT", []))) for s in studies]
    assert all(c[0] <= sr and c[1] <= ot for c in counts), counts  # never more than one each
    return all(c == (sr, ot) for c in counts)


def _study(path) -> str:
    return pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID


def test_a_hand_pushed_with_storescu_and_routed_by_orthanc_comes_back_into_its_study(pacs, tmp_path):
    hand = hand_dicom(tmp_path / "hand.dcm", seed=10)
    source = pydicom.dcmread(hand)
    run = storescu(pacs.node.port, hand)
    assert run.returncode == 0, run.stderr
    pacs.orthanc.upload(hand)  # Orthanc's routing rule sends it to the node: the second push
    wait_for(lambda: _done(pacs.orthanc, [source.StudyInstanceUID], sr=2, ot=2), 300, "two SRs and two pages")
    contents = pacs.orthanc.study_contents()[source.StudyInstanceUID]
    assert len(contents["CR"]) == 1  # the radiograph itself, beside its results in one study
    expected = api.predict(hand, force=True).bone_age_months  # boneage predict, its default model
    for ds in pacs.orthanc.objects(source.StudyInstanceUID, "SR"):
        read = read_structured_report(ds)
        assert read["assessed"] and read["bone_age_months"] == pytest.approx(expected, abs=0.01)
        assert read["bone_age_unit"] == "mo" and read["source_sop_instance_uid"] == source.SOPInstanceUID
        assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        ds.save_as(tmp_path / "from-orthanc.dcm", enforce_file_format=True)
        dump = subprocess.run(["dsrdump", "+Pc", str(tmp_path / "from-orthanc.dcm")], capture_output=True,
                              text=True, timeout=30)
        assert dump.returncode == 0 and dump.stderr == ""
        shown = re.search(r'NUM:\(85151-9,LN,"Bone age"\)="([0-9.]+)" \(mo,UCUM,"month"\)', dump.stdout)
        assert shown and float(shown.group(1)) == pytest.approx(expected, abs=0.01)
    for page in pacs.orthanc.objects(source.StudyInstanceUID, "OT"):
        assert page.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert page.SamplesPerPixel == 3 and page.StudyInstanceUID == source.StudyInstanceUID


def test_a_ct_slice_gets_one_not_assessed_sr_and_no_bone_age(pacs, tmp_path):
    ct = ct_slice(tmp_path / "ct.dcm")
    assert storescu(pacs.node.port, ct).returncode == 0
    wait_for(lambda: _done(pacs.orthanc, [_study(ct)], sr=1, ot=0), 240, "the CT slice's SR")
    wait_for(lambda: not any(pacs.spool.status().values()), 120, "an empty spool")
    assert _done(pacs.orthanc, [_study(ct)], sr=1, ot=0)  # and nothing else came after it
    [sr] = pacs.orthanc.objects(_study(ct), "SR")
    read = read_structured_report(sr)
    assert not read["assessed"] and read["bone_age_months"] is None and read["interval"] is None
    assert read["reason_not_assessed"].startswith("DICOM Modality is CT (computed tomography)")


def test_nothing_is_lost_while_orthanc_is_down(pacs, tmp_path, node_logs):
    hands = [hand_dicom(tmp_path / f"down{i}.dcm", seed=20 + i) for i in range(3)]
    pacs.orthanc.stop()
    try:
        assert storescu(pacs.node.port, *hands).returncode == 0  # the node takes them meanwhile
        wait_for(lambda: (lambda s: len(s) == 3 and all(i["attempts"] >= 2 for i in s))(pacs.spool.status()["sending"]),
                 240, "three result sets retried while Orthanc is down")
    finally:
        pacs.orthanc.start()
    wait_for(lambda: _done(pacs.orthanc, [_study(h) for h in hands]), 240, "every result once Orthanc is back")
    wait_for(lambda: not any(pacs.spool.status().values()), 120, "an empty spool")
    assert node_logs.lines_with(f"destination ORTHANC@127.0.0.1:{pacs.orthanc.dicom_port} cannot be reached",
                                "result set(s) waiting, next try in")


def test_fifty_instances_over_four_associations_at_once_get_fifty_results(pacs, tmp_path, node_logs):
    hands = [hand_dicom(tmp_path / f"h{i:02d}.dcm", seed=100 + i, age=60 + 2 * i) for i in range(50)]
    groups = [hands[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda group: storescu(pacs.node.port, *group, timeout=600), groups))
    assert [r.returncode for r in runs] == [0, 0, 0, 0], [r.stderr[-300:] for r in runs]
    studies = [_study(h) for h in hands]
    wait_for(lambda: _done(pacs.orthanc, studies), 900, "50 SRs and 50 pages", interval=1.0)
    uids = [pydicom.dcmread(h, stop_before_pixels=True).SOPInstanceUID for h in hands]
    assert sum(len(node_logs.lines_with(uid, " assessed")) for uid in uids) == 50
    wait_for(lambda: not any(pacs.spool.status().values()), 120, "an empty spool")


def test_a_killed_node_resumes_its_spool_and_every_instance_gets_exactly_one_result(pacs, tmp_path, onnx_model):
    env = light_env(tmp_path / "light-site")  # the light install: no PyTorch, the ONNX model
    port, spool = free_port(), tmp_path / "spool"
    command = [sys.executable, "-m", "boneage", "dicom-node", "--spool", str(spool), "--port", str(port),
               "--destination", f"ORTHANC@127.0.0.1:{pacs.orthanc.dicom_port}", "--force",
               "--page-dpi", "40", "--retry-initial", "0.2", "--retry-max", "1"]
    hands = [hand_dicom(tmp_path / f"k{i}.dcm", seed=40 + i) for i in range(6)]
    studies = [_study(h) for h in hands]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]

    def start(log):
        with open(log, "wb") as out:
            return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    first, second = start(logs[0]), None
    try:
        wait_for(lambda: echo(port) == 0 or first.poll() is not None, 300, "the node to answer")
        assert first.poll() is None, logs[0].read_text()
        assert storescu(port, *hands).returncode == 0
        wait_for(lambda: " assessed" in logs[0].read_text(), 300, "the first assessment", interval=0.02)
        first.send_signal(signal.SIGKILL)  # a crash mid-run; its workers notice and stop
        first.wait(timeout=10)
        arrived = sum(len(c.get("SR", [])) for s, c in pacs.orthanc.study_contents().items() if s in studies)
        assert arrived < 6
        second = start(logs[1])
        wait_for(lambda: _done(pacs.orthanc, studies) or second.poll() is not None, 600, "all six results")
        assert second.poll() is None, logs[1].read_text()
        wait_for(lambda: not any(Spool(spool).status().values()), 120, "an empty spool")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    finally:
        for process in (first, second):
            if process is not None:
                try:  # the whole session: a node and any worker it left behind
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    assert _done(pacs.orthanc, studies)
    onnx_hash = api.load_predictor(onnx_model).info["model_sha256"][:16]
    for study in studies:
        [sr] = pacs.orthanc.objects(study, "SR")
        assert read_structured_report(sr)["algorithm_version"] == onnx_hash
    second_log = logs[1].read_text()
    assert "spool recovered:" in second_log and "queued again" in second_log
    assert leaks(logs[0].read_text() + second_log) == []
    assert "Traceback" not in second_log


def test_no_patient_data_in_the_node_logs(pacs, node_logs):
    time.sleep(0.5)
    assert node_logs.records and leaks(node_logs.text()) == []
