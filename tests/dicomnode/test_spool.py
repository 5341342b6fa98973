"""The spool: written atomically, claimed once, recovered after a crash at any step, refused
when the disk is full, and described by SOP Instance UID only."""

from __future__ import annotations

import errno
import json

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from boneage.dicomnode.spool import Spool, SpoolFull, entry_uid, format_status
from boneage.errors import InputError

UIDS = ["1.2.3.1", "1.2.3.2", "1.2.3.3"]


def _spool(tmp_path) -> Spool:
    return Spool(tmp_path / "spool").prepare()


def _results() -> dict:
    ds = Dataset()
    ds.SOPInstanceUID = "9.9.9"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return {"1-sr.dcm": ds}


def test_admitted_instances_are_queued_whole_in_arrival_order(tmp_path):
    spool = _spool(tmp_path)
    paths = [spool.admit(f"data {uid}".encode(), uid) for uid in UIDS]
    assert [p.parent for p in paths] == [spool.queue] * 3
    assert [entry_uid(p.name) for p in sorted(spool.queue.iterdir())] == UIDS
    assert paths[1].read_bytes() == b"data 1.2.3.2"
    assert list(spool.incoming.iterdir()) == []  # nothing half-written left beside the queue


def test_two_workers_never_claim_the_same_instance(tmp_path):
    spool = _spool(tmp_path)
    for uid in UIDS:
        spool.admit(b"x", uid)
    claims = [spool.claim(0), spool.claim(1), spool.claim(0), spool.claim(1)]
    assert claims[3] is None
    assert [entry_uid(c.name) for c in claims[:3]] == UIDS
    assert claims[0].parent.name == "w0" and claims[1].parent.name == "w1"


def test_a_spool_kept_in_reserve_or_a_full_disk_refuses_instead_of_writing_half(tmp_path, monkeypatch):
    spool = _spool(tmp_path)
    with pytest.raises(SpoolFull, match="MiB kept in reserve"):
        spool.admit(b"x", UIDS[0], min_free_bytes=spool.free_bytes() + 2**30)

    def disk_full(path, data):
        path.write_bytes(data[:1])  # a part was written before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "_write", staticmethod(disk_full))
    with pytest.raises(SpoolFull, match="the disk is full"):
        spool.admit(b"xyz", UIDS[0])
    assert list(spool.queue.iterdir()) == [] and list(spool.incoming.iterdir()) == []


def test_recovery_after_a_crash_at_each_step(tmp_path):
    spool = _spool(tmp_path)
    for uid in UIDS:
        spool.admit(b"x", uid)
    a, b, c = (spool.claim(0) for _ in UIDS)
    # a: the worker died while assessing it. b: results made, the source not yet moved beside
    # them. c: finished. Plus leftovers of a half-built result folder and of a removal.
    spool.commit(c, _results(), {"attempts": 0, "next_try": 0})
    done_b = spool.out / b.stem
    done_b.mkdir()
    (done_b / "1-sr.dcm").write_bytes(b"sr")
    (spool.out / ".tmp-x-1").mkdir()
    (spool.out / ".done-y").mkdir()
    (spool.incoming / "z.part").write_bytes(b"half")

    counts = Spool(spool.root).recover()
    assert counts == {"requeued": 1, "completed": 1, "cleaned": 3}
    assert [p.name for p in spool.queue.iterdir()] == [a.name]
    assert sorted(p.name for p in spool.out.iterdir()) == sorted([b.stem, c.stem])
    assert (done_b / "source.dcm").exists() and list(spool.work.glob("*/*")) == []
    assert [o.uid for o in spool.outgoing()] == UIDS[1:]


def test_a_duplicate_assessment_keeps_the_first_results(tmp_path):
    spool = _spool(tmp_path)
    spool.admit(b"x", UIDS[0])
    claimed = spool.claim(0)
    first = spool.commit(claimed, _results(), {"n": 1})
    # An orphaned worker of a killed node finishing the same entry later.
    claimed.parent.mkdir(exist_ok=True)
    claimed.write_bytes(b"x")
    again = spool.commit(claimed, _results(), {"n": 2})
    assert again == first and json.loads((first / "state.json").read_text()) == {"n": 1}
    assert sorted(p.name for p in spool.out.iterdir()) == [claimed.stem]


def test_outgoing_waits_for_next_try_and_acknowledged_entries_are_gone(tmp_path):
    spool = _spool(tmp_path)
    for uid in UIDS[:2]:
        spool.admit(b"x", uid)
        spool.commit(spool.claim(0), _results(), {"attempts": 0, "next_try": 0})
    first, second = spool.outgoing(now=100)
    spool.update(first, attempts=1, next_try=200, last_error="destination cannot be reached")
    assert [o.uid for o in spool.outgoing(now=150)] == [UIDS[1]]
    spool.acknowledged(second)
    assert [o.uid for o in spool.outgoing(now=250)] == [UIDS[0]]
    assert [p.name for p in spool.out.iterdir()] == [first.name]


def test_status_lists_uids_by_state_and_nothing_else(tmp_path):
    spool = _spool(tmp_path)
    for uid in UIDS + ["1.2.3.4"]:
        spool.admit(b"x", uid)
    spool.claim(0)                                                     # assessing: 1.2.3.1
    spool.commit(spool.claim(0), _results(), {"attempts": 0, "next_try": 0})
    item = spool.outgoing()[0]
    spool.update(item, attempts=3, last_error="destination cannot be reached")  # sending: 1.2.3.2
    spool.fail_claimed(spool.claim(1), "could not be assessed (ValueError)")     # failed: 1.2.3.3
    status = spool.status()
    assert status == {"queued": ["1.2.3.4"], "assessing": ["1.2.3.1"],
                      "sending": [{"uid": "1.2.3.2", "attempts": 3, "last_error": "destination cannot be reached"}],
                      "failed": [{"uid": "1.2.3.3", "reason": "could not be assessed (ValueError)"}]}
    text = format_status(status, spool.root)
    assert text.splitlines()[0] == (f"spool {spool.root}: 1 queued, 2 in progress (1 being assessed, "
                                    "1 waiting for the destination), 1 failed")
    assert "  1.2.3.2 (waiting for the destination: 3 attempt(s), last: destination cannot be reached)" in text
    assert "  1.2.3.3: could not be assessed (ValueError)" in text
    with pytest.raises(InputError, match="spool folder not found"):
        Spool(tmp_path / "nope").status()


def test_one_node_per_spool(tmp_path):
    first, second = _spool(tmp_path), Spool(tmp_path / "spool")
    first.lock()
    try:
        with pytest.raises(InputError, match="another boneage dicom-node is using this spool"):
            second.lock()
    finally:
        first.unlock()
    second.lock()
    second.unlock()
