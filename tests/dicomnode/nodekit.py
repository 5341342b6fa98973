"""Helpers of the DICOM node tests: synthetic DICOMs, a stand-in destination, a real Orthanc
started with a generated configuration, and waiting."""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt

from boneage.data.synthetic import make_radiograph
from boneage.io import write_dicom

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
NAME_FAMILY, NAME_GIVEN = "Zwiebelhuber", "Annelore"
PATIENT_ID = "PX-40417"
BIRTH = datetime.date(2012, 4, 2)
STUDY = datetime.date(2023, 3, 14)
ACCESSION = "ACC-918273"
#: Every form in which the patient's data could leak into a log.
SECRETS = (NAME_FAMILY, NAME_GIVEN, PATIENT_ID, ACCESSION, BIRTH.strftime("%Y%m%d"), BIRTH.isoformat(),
           STUDY.strftime("%Y%m%d"), STUDY.isoformat())
REPO = Path(__file__).resolve().parents[2]


def leaks(text: str) -> list[str]:
    """The patient's data found in ``text`` (case-insensitive)."""
    low = text.lower()
    return [s for s in SECRETS if s.lower() in low]


class LogCollector(logging.Handler):
    """Every record of the ``boneage`` loggers (the node's, and its workers' forwarded here)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)

    def lines_with(self, *words: str) -> list[str]:
        return [m for m in (r.getMessage() for r in self.records) if all(w in m for w in words)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def hand_dicom(path: Path, *, seed: int = 0, age: float = 130.0, sex: str | None = "F", size=(128, 104),
               patient_id: str = PATIENT_ID, **tags) -> Path:
    """A synthetic hand radiograph as a CR image with the patient's name, ID, dates and
    accession number (a drawing: the node assesses it only with ``force``)."""
    image = make_radiograph(age, sex or "F", size=size, seed=seed).image
    write_dicom(path, image, sex=sex, birth_date=BIRTH, study_date=STUDY, patient_id=patient_id, overwrite=True)
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    ds.Modality = "CR"
    ds.BodyPartExamined = "HAND"
    ds.PatientName = f"{NAME_FAMILY}^{NAME_GIVEN}"
    ds.AccessionNumber = ACCESSION
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def ct_slice(path: Path) -> Path:
    """pydicom's CT test slice, with new UIDs so that each test has its own."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return path


def storescu(port: int, *files, calling: str = "MODALITY", called: str = "BONEAGE", timeout: float = 300):
    """DCMTK's storescu: all ``files`` over one association; the CompletedProcess."""
    return subprocess.run(["storescu", "-aet", calling, "-aec", called, "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=timeout)


def scu_store(port: int, datasets, *, calling: str = "MODALITY", called: str = "BONEAGE") -> list:
    """C-STORE pynetdicom Datasets over one association; the status Dataset of each."""
    ae = AE(ae_title=calling)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "association with the node failed"
    try:
        return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def echo(port: int, calling: str = "MODALITY", called: str = "BONEAGE"):
    """C-ECHO with pynetdicom: the status (an int), or None when the association failed."""
    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if status else None
    finally:
        assoc.release()


class Destination:
    """A stand-in PACS in this process: stores what it receives in a list; refuses the SRs
    of a patient ID in ``refuse_sr_of`` with status 0xA900."""

    def __init__(self, refuse_sr_of: str = "REFUSE-SR"):
        self.received: list[Dataset] = []
        self.refuse_sr_of = refuse_sr_of
        self._lock = threading.Lock()
        ae = AE(ae_title="PACS")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        self.server = ae.start_server(("127.0.0.1", 0), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        if ds.Modality == "SR" and ds.get("PatientID") == self.refuse_sr_of:
            status = Dataset()
            status.Status, status.ErrorComment = 0xA900, "test destination refuses this SR"
            return status
        with self._lock:
            self.received.append(ds)
        return 0x0000

    def of_study(self, study_uid: str) -> list[Dataset]:
        with self._lock:
            return [ds for ds in self.received if ds.StudyInstanceUID == study_uid]

    def close(self) -> None:
        self.server.shutdown()


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.access(p, os.X_OK)), None)


#: The routing rule a PACS administrator would write: radiographs go to the node as they
#: arrive (the node's own results, SR and OT, are not radiographs, so they stay).
ROUTING_LUA = textwrap.dedent("""\
    function OnStoredInstance(instanceId, tags, metadata, origin)
      local modality = tags['Modality']
      if modality == 'CR' or modality == 'DX' then
        SendToModality(instanceId, 'boneage')
      end
    end
""")


class Orthanc:
    """A real Orthanc on loopback ports with a generated configuration and its own storage;
    ``boneage`` in its DICOM modalities is the node, and the Lua rule routes radiographs to it."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.config = self.folder / "orthanc.json"
        self.process: subprocess.Popen | None = None

    def configure(self, node_port: int) -> "Orthanc":
        """Write the configuration: the node as modality ``boneage``, the routing rule."""
        (self.folder / "route.lua").write_text(ROUTING_LUA)
        self.config.write_text(json.dumps({
            "Name": "boneage-test", "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"), "HttpPort": self.http_port,
            "DicomPort": self.dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "Plugins": [],
            "DicomModalities": {"boneage": ["BONEAGE", "127.0.0.1", node_port]},
            "LuaScripts": [str(self.folder / "route.lua")], "StableAge": 1, "SaveJobs": False,
        }, indent=2))
        return self

    def start(self) -> "Orthanc":
        log = open(self.folder / "orthanc.log", "ab")
        self.process = subprocess.Popen([orthanc_binary(), str(self.config)], stdout=log, stderr=log)
        log.close()
        wait_for(self._up, 30, "Orthanc to answer on its REST port", 0.2)
        return self

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-800:]}")
        try:
            self.get("/system")
            return True
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def _request(self, method: str, path: str, body: bytes | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        with urllib.request.urlopen(req, timeout=30) as rsp:
            return rsp.read()

    def get(self, path: str):
        return json.loads(self._request("GET", path))

    def post(self, path: str, body: bytes):
        return json.loads(self._request("POST", path, body))

    def upload(self, path: Path) -> dict:
        return self.post("/instances", Path(path).read_bytes())

    def file(self, instance_id: str) -> Dataset:
        return pydicom.dcmread(io.BytesIO(self._request("GET", f"/instances/{instance_id}/file")))

    def study_contents(self) -> dict:
        """``{StudyInstanceUID: {"id": orthanc id, "CR": [instance ids], "SR": [...], "OT": [...]}}``."""
        studies = {s["ID"]: s["MainDicomTags"]["StudyInstanceUID"] for s in self.get("/studies?expand")}
        out: dict = {uid: {"id": sid} for sid, uid in studies.items()}
        for series in self.get("/series?expand"):
            uid = studies.get(series["ParentStudy"])
            if uid is not None:
                out[uid].setdefault(series["MainDicomTags"].get("Modality", ""), []).extend(series["Instances"])
        return out

    def objects(self, study_uid: str, modality: str) -> list[Dataset]:
        return [self.file(i) for i in self.study_contents().get(study_uid, {}).get(modality, [])]


def light_env(folder: Path) -> dict:
    """Environment for a subprocess in which PyTorch & co. cannot be imported (the light
    install) and this checkout's package is the one imported."""
    from boneage.cli.main import TRAIN_EXTRA_MODULES

    site = Path(folder)
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import importlib.abc, sys

        BLOCKED = {sorted(TRAIN_EXTRA_MODULES)!r}

        class _NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, _NotInstalled())
    """))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO / "src"), env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    return env
