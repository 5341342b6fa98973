"""The spool: a folder where every received instance lives until its results are acknowledged.

An instance moves through sub-folders by atomic renames, so that a crash at any point leaves
it in exactly one of them and a restarted node picks it up where it was::

    incoming/<entry>.part         being written (fsynced, then renamed; never read)
    queue/<entry>.dcm             received: the sender was told "stored" only after this exists
    work/w<K>/<entry>.dcm         claimed by worker K (back to queue/ if the node restarts)
    out/<entry>/                  results made, waiting for the destination: source.dcm, the
                                  result objects (*.dcm) and state.json (attempts, next try)
    failed/<entry>/               given up (destination refused, or the worker failed): kept

An ``<entry>`` is a time stamp and the instance's SOP Instance UID, so ``--status`` lists
UIDs without opening any file, and never names a patient. Result objects get UIDs derived
from the entry (see :func:`boneage.dicomnode.assess.result_uid`), so an instance assessed
twice (a crash between sending and removal) sends the same objects again, which a PACS
stores once.

One node runs per spool (``node.lock``); worker processes hold ``workers.lock`` shared, so a
restarted node waits until the workers of a killed one have gone before it starts its own.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from boneage.errors import InputError

try:  # POSIX: one node per spool, orphaned workers waited for. Windows runs without the locks.
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms this project tests
    fcntl = None

SOURCE_NAME = "source.dcm"
STATE_NAME = "state.json"
_UID_SAFE = re.compile(r"^[0-9.]{1,64}$")
_SEQUENCE = itertools.count()
_SEQUENCE_LOCK = threading.Lock()


class SpoolFull(Exception):
    """The spool's disk has no room for an instance (or less than the reserve kept free)."""


def entry_name(sop_instance_uid: str) -> str:
    """A new, unique, time-ordered entry name carrying the SOP Instance UID."""
    with _SEQUENCE_LOCK:
        seq = next(_SEQUENCE) % 100000
    uid = sop_instance_uid if _UID_SAFE.match(sop_instance_uid or "") else "no-valid-uid"
    return f"{time.time_ns():020d}-{os.getpid()}-{seq:05d}_{uid}"


def entry_uid(name: str) -> str:
    """The SOP Instance UID an entry name carries."""
    return Path(name).name.split("_", 1)[-1].removesuffix(".dcm")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. a platform that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Outgoing:
    """Results waiting in ``out/``: the entry's folder and its state."""

    path: Path
    state: dict

    @property
    def name(self) -> str:
        """The entry's name."""
        return self.path.name

    @property
    def uid(self) -> str:
        """The source's SOP Instance UID."""
        return entry_uid(self.path.name)

    def results(self) -> list[Path]:
        """The result objects to send, in a fixed order (the SR before the page)."""
        return sorted(p for p in self.path.glob("*.dcm") if p.name != SOURCE_NAME)


class Spool:
    """The spool folder at ``root`` (see the module docstring for its layout)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.incoming = self.root / "incoming"
        self.queue = self.root / "queue"
        self.work = self.root / "work"
        self.out = self.root / "out"
        self.failed = self.root / "failed"
        self._node_lock = None

    # -- set-up and recovery ------------------------------------------------------------------

    def prepare(self) -> "Spool":
        """Create the folders (InputError when the spool cannot be written)."""
        try:
            for d in (self.incoming, self.queue, self.work, self.out, self.failed):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the spool folder: {exc.strerror or exc}", self.root) from None
        return self

    def lock(self, wait_for_workers: float = 30.0) -> None:
        """Take the spool for this node, then wait (up to ``wait_for_workers`` seconds) until
        no worker of an earlier node still holds it.

        Raises:
            InputError: another node runs on this spool, or its workers do not go away.
        """
        if fcntl is None:  # pragma: no cover
            return
        handle = open(self.root / "node.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise InputError("another boneage dicom-node is using this spool", self.root) from None
        self._node_lock = handle
        with open(self.root / "workers.lock", "a+") as workers:
            deadline = time.monotonic() + wait_for_workers
            while True:
                try:
                    fcntl.flock(workers, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(workers, fcntl.LOCK_UN)
                    return
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        self.unlock()
                        raise InputError("workers of an earlier node still hold this spool; "
                                         "stop them and start again", self.root) from None
                    time.sleep(0.05)

    def unlock(self) -> None:
        """Release the node's lock (stopping the node)."""
        if self._node_lock is not None:
            self._node_lock.close()
            self._node_lock = None

    def hold_for_worker(self):
        """The shared lock a worker process keeps while it runs (its file object)."""
        handle = open(self.root / "workers.lock", "a+")
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_SH)
        return handle

    def recover(self) -> dict:
        """Put the spool in order after a stop or crash, before any worker starts.

        Instances claimed by workers go back to the queue, unless their results were already
        made (the source then joins them); half-made result folders and the leftovers of
        removals are deleted. Returns counts: ``{"requeued": n, "completed": n, "cleaned": n}``.
        """
        counts = {"requeued": 0, "completed": 0, "cleaned": 0}
        for part in self.incoming.glob("*"):
            part.unlink(missing_ok=True)
            counts["cleaned"] += 1
        for leftover in self.out.glob(".*"):
            shutil.rmtree(leftover, ignore_errors=True)
            counts["cleaned"] += 1
        for claimed in sorted(self.work.glob("*/*.dcm")):
            done = self.out / claimed.stem
            if done.is_dir() and not (done / SOURCE_NAME).exists():
                os.replace(claimed, done / SOURCE_NAME)
                counts["completed"] += 1
            else:
                os.replace(claimed, self.queue / claimed.name)
                counts["requeued"] += 1
        for done in self.out.iterdir():
            if done.is_dir() and not (done / SOURCE_NAME).exists():
                # Results without their source: the source had already been sent back to the
                # queue, or was lost; the queue's copy makes them again under the same UIDs.
                shutil.rmtree(done, ignore_errors=True)
                counts["cleaned"] += 1
        _fsync_dir(self.queue)
        return counts

    # -- receiving ----------------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Free space on the spool's disk."""
        return shutil.disk_usage(self.root).free

    def admit(self, data: bytes, sop_instance_uid: str, min_free_bytes: int = 0) -> Path:
        """Write one received instance (DICOM Part 10 bytes) to the queue, durably.

        The file is written beside the queue, flushed to disk and renamed into it, so the
        queue never holds a partial instance.

        Raises:
            SpoolFull: fewer than ``min_free_bytes`` would be left, or the disk filled up.
        """
        free = self.free_bytes()
        if free - len(data) < min_free_bytes:
            raise SpoolFull(f"{free / 2**20:.0f} MiB free, {min_free_bytes / 2**20:.0f} MiB kept in reserve")
        name = entry_name(sop_instance_uid)
        part = self.incoming / f"{name}.part"
        try:
            self._write(part, data)
            os.replace(part, self.queue / f"{name}.dcm")
        except OSError as exc:
            part.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFull("the disk is full") from None
            raise
        _fsync_dir(self.queue)
        return self.queue / f"{name}.dcm"

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        with open(path, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    # -- workers ------------------------------------------------------------------------------

    def worker_dir(self, worker: int) -> Path:
        """Worker ``worker``'s folder of claimed instances (created if needed)."""
        path = self.work / f"w{worker}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def claim(self, worker: int) -> Path | None:
        """Move the oldest queued instance to worker ``worker``'s folder; None if none is queued.
        Renames are atomic, so two workers never claim the same instance."""
        target = self.worker_dir(worker)
        for path in sorted(self.queue.glob("*.dcm")):
            try:
                os.rename(path, target / path.name)
            except FileNotFoundError:
                continue  # another worker was faster
            return target / path.name
        return None

    def requeue(self, worker: int) -> list[str]:
        """Put back what worker ``worker`` had claimed (it died); returns the entry names."""
        names = []
        for claimed in sorted(self.worker_dir(worker).glob("*.dcm")):
            os.replace(claimed, self.queue / claimed.name)
            names.append(claimed.stem)
        return names

    def commit(self, claimed: Path, results: dict, state: dict) -> Path:
        """Store the results of a claimed instance and move the instance beside them.

        ``results`` maps file names (``"1-sr.dcm"``) to pydicom Datasets. The result folder is
        built under a hidden name and renamed into ``out/`` complete; an existing folder for the
        same entry (a duplicate assessment after a crash) is kept and this one dropped: both
        hold the same objects under the same UIDs.
        """
        entry = claimed.stem
        final = self.out / entry
        tmp = self.out / f".tmp-{entry}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for file_name, ds in results.items():
                ds.save_as(tmp / file_name, enforce_file_format=True)
            _write_json(tmp / STATE_NAME, state)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if claimed.exists():
            os.replace(claimed, final / SOURCE_NAME)
        return final

    def fail_claimed(self, claimed: Path, reason: str) -> Path:
        """Move a claimed instance that could not be assessed to ``failed/``."""
        target = self.failed / claimed.stem
        target.mkdir(parents=True, exist_ok=True)
        _write_json(target / STATE_NAME, {"reason": reason, "failed_at": time.time()})
        os.replace(claimed, target / SOURCE_NAME)
        return target

    # -- sending ------------------------------------------------------------------------------

    def outgoing(self, now: float | None = None) -> list[Outgoing]:
        """Result folders due to be sent (``next_try`` not in the future), oldest first."""
        due = []
        for path in sorted(p for p in self.out.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (path / SOURCE_NAME).exists():
                continue  # being completed by commit()
            state = _read_json(path / STATE_NAME)
            if now is None or state.get("next_try", 0) <= now:
                due.append(Outgoing(path, state))
        return due

    def update(self, item: Outgoing, **changes) -> Outgoing:
        """Write new state values for results waiting in ``out/``."""
        state = {**item.state, **changes}
        _write_json(item.path / STATE_NAME, state)
        return Outgoing(item.path, state)

    def acknowledged(self, item: Outgoing) -> None:
        """The destination stored every result: remove the entry (source included)."""
        trash = self.out / f".done-{item.name}"
        os.rename(item.path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def fail_outgoing(self, item: Outgoing, reason: str) -> Path:
        """Give up sending: move the entry, results and source, to ``failed/``."""
        _write_json(item.path / STATE_NAME, {**item.state, "reason": reason, "failed_at": time.time()})
        target = self.failed / item.name
        os.rename(item.path, target)
        return target

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict:
        """What the spool holds, by SOP Instance UID (never by patient)::

            {"queued": [uid, ...], "assessing": [uid, ...],
             "sending": [{"uid", "attempts", "last_error"}, ...],
             "failed": [{"uid", "reason"}, ...]}
        """
        if not self.root.is_dir():
            raise InputError("spool folder not found", self.root)
        out: dict = {"queued": [entry_uid(p.name) for p in sorted(self.queue.glob("*.dcm"))],
                     "assessing": [entry_uid(p.name) for p in sorted(self.work.glob("*/*.dcm"))],
                     "sending": [], "failed": []}
        if self.out.is_dir():
            for item in self.outgoing():
                out["sending"].append({"uid": item.uid, "attempts": int(item.state.get("attempts", 0)),
                                       "last_error": item.state.get("last_error")})
        if self.failed.is_dir():
            for path in sorted(p for p in self.failed.iterdir() if p.is_dir()):
                out["failed"].append({"uid": entry_uid(path.name),
                                      "reason": _read_json(path / STATE_NAME).get("reason", "unknown")})
        return out


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def format_status(status: dict, spool: Path) -> str:
    """``--status`` as text: counts, then the SOP Instance UIDs under each heading."""
    in_progress = len(status["assessing"]) + len(status["sending"])
    lines = [f"spool {spool}: {len(status['queued'])} queued, {in_progress} in progress "
             f"({len(status['assessing'])} being assessed, {len(status['sending'])} waiting for the "
             f"destination), {len(status['failed'])} failed"]
    if status["queued"]:
        lines += ["queued:"] + [f"  {uid}" for uid in status["queued"]]
    if in_progress:
        lines += ["in progress:"] + [f"  {uid} (being assessed)" for uid in status["assessing"]]
        for item in status["sending"]:
            detail = f"{item['attempts']} attempt(s)" + (f", last: {item['last_error']}" if item["last_error"] else "")
            lines.append(f"  {item['uid']} (waiting for the destination: {detail})")
    if status["failed"]:
        lines += ["failed:"] + [f"  {item['uid']}: {item['reason']}" for item in status["failed"]]
    return "\n".join(lines)
