"""The sender's backoff: a destination that cannot be reached makes results wait, doubling the
wait up to its cap, and gives them up after the configured hours, each attempt logged."""

from __future__ import annotations

import threading

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from boneage.dicomnode.send import Sender, backoff
from boneage.dicomnode.settings import resolve_settings
from boneage.dicomnode.spool import Spool
from nodekit import free_port


def test_backoff_doubles_from_the_first_wait_up_to_the_cap():
    assert [backoff(n, 2.0, 30.0) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_unreachable_destination_waits_with_backoff_then_gives_up(tmp_path, node_logs):
    spool = Spool(tmp_path / "spool").prepare()
    for uid in ("1.2.3.1", "1.2.3.2"):
        spool.admit(b"x", uid)
        ds = Dataset()
        ds.SOPInstanceUID, ds.SOPClassUID = "9.9", "1.2.840.10008.5.1.4.1.1.88.33"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        spool.commit(spool.claim(0), {"1-sr.dcm": ds}, {"attempts": 0, "next_try": 0})
    settings = resolve_settings(None, {"destination": f"PACS@127.0.0.1:{free_port()}", "timeout": "2",
                                       "retry_initial": "10", "retry_max": "25", "retry_hours": "0.01"})
    sender = Sender(settings, spool, threading.Event())
    now = 1000.0
    waits = []
    for _ in range(3):
        assert sender.send_due(now) == 0
        states = [o.state for o in spool.outgoing()]
        assert len({s["next_try"] for s in states}) == 1  # all results wait together
        waits.append(states[0]["next_try"] - now)
        now = states[0]["next_try"]
    assert waits == [10.0, 20.0, 25.0]
    assert [o.state["attempts"] for o in spool.outgoing()] == [3, 3]
    assert spool.outgoing()[0].state["last_error"] == "destination cannot be reached"
    assert spool.outgoing(now=now - 1) == []  # nothing is due before its time
    # 0.01 h = 36 s after the first failure at t=1000: the next failure gives them up.
    assert sender.send_due(now + 1) == 0
    status = spool.status()
    assert status["sending"] == [] and [f["uid"] for f in status["failed"]] == ["1.2.3.1", "1.2.3.2"]
    assert status["failed"][0]["reason"] == ("destination cannot be reached for 0.01 h; gave up after 4 attempt(s)")
    lines = node_logs.lines_with(f"destination {settings.destination} cannot be reached")
    assert lines[:3] == [f"destination {settings.destination} cannot be reached: 2 result set(s) waiting, "
                         f"next try in {w:.1f} s (attempt {n})" for n, w in enumerate([10.0, 20.0, 25.0], 1)]
    assert lines[3].endswith("; 2 given up and moved to failed")
