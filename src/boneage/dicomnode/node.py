"""The running node: the Storage SCP, worker processes that assess the spool, and the sender.

::

    sender ─C-STORE─► Storage SCP (threads) ─► spool queue/ ─► workers (processes) ─► out/
                                                               sender thread ─C-STORE─► destination

Workers are processes, so that two of them use two cores (rendering the report page holds
Python's GIL). Their log records travel to this process through a pipe of their own and are
logged here, so one place (the ``boneage`` logger) carries every line. A worker that dies is replaced and
its instance assessed again; one that two workers died on is moved to ``failed/``. A worker
whose node has died stops before storing results, leaving its instance to the next node.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from boneage.dicomnode.assess import Assessor
from boneage.dicomnode.receive import handle_store
from boneage.dicomnode.send import Sender
from boneage.dicomnode.settings import NodeSettings
from boneage.dicomnode.spool import Spool
from boneage.errors import InputError

logger = logging.getLogger(__name__)
#: How long start() waits for the workers to load their model.
WORKER_START_TIMEOUT = 180.0
#: Two crashes of a worker on the same instance and it is set aside.
MAX_CRASHES_PER_INSTANCE = 2


class _PipeHandler(logging.handlers.QueueHandler):
    """Sends a worker's log records to the node through the worker's own pipe."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.send(("log", record))


def _worker_main(index: int, settings: dict, conn, parent_pid: int, level: int) -> None:
    """A worker process: load the model, then assess queued instances until SIGTERM or until
    the node that started it is gone.

    It shares no lock with any other process (a worker killed while holding one would hang the
    others): it talks to the node through its own pipe ``conn``, is stopped by a signal, and
    claims instances by renaming files.
    """
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    # Ctrl-C in a terminal reaches the whole process group: the node decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = logging.getLogger("boneage")
    root.handlers[:] = [_PipeHandler(conn)]
    root.setLevel(level)
    root.propagate = False
    log = logging.getLogger("boneage.dicomnode.worker")
    hold = None
    try:
        node_settings = NodeSettings.from_dict(settings)
        spool = Spool(node_settings.spool)
        hold = spool.hold_for_worker()
        assessor = Assessor(node_settings)
        conn.send(("ready", None))
    except Exception as exc:  # reported to the node, which fails its start with the message
        conn.send(("ready", f"{type(exc).__name__}: {exc}"))
        stopping.set()
    try:
        while not stopping.is_set() and os.getppid() == parent_pid:
            claimed = spool.claim(index)
            if claimed is None:
                stopping.wait(0.1)
                continue
            try:
                result = assessor.assess(claimed)
            except Exception as exc:  # one instance must not stop the worker
                reason = f"could not be assessed ({type(exc).__name__})"
                spool.fail_claimed(claimed, reason)
                log.error("%s %s; moved to failed", claimed.stem.split("_", 1)[-1], reason)
                continue
            if os.getppid() != parent_pid:
                break  # the node died: the next one requeues the instance
            spool.commit(claimed, result.results, {
                "sop_instance_uid": result.sop_instance_uid, "verdict": result.verdict,
                "attempts": 0, "next_try": 0, "assessed_at": time.time()})
            log.info("%s %s%s in %.2f s (worker %d): %s", result.sop_instance_uid, result.verdict,
                     f" ({result.reason})" if result.reason else "", result.seconds, index,
                     "SR and report page" if len(result.results) > 1 else "SR only, no bone age")
    finally:
        if hold is not None:
            hold.close()
        conn.close()
        # Results and spool moves are already on disk; skipping the interpreter's teardown
        # (seconds with the model and plotting libraries loaded) makes stopping quick.
        os._exit(0)


@dataclass
class _Worker:
    """A worker process and the node's end of its pipe."""

    process: multiprocessing.Process
    conn: object
    ready: bool = False
    """Set once it has loaded its model; until then only its starter reads its pipe."""


class DicomNode:
    """A DICOM node: ``start()`` it, ``stop()`` it (also usable as a context manager).

    ``port`` is the port actually listened on (``settings.port`` may be 0 for any free one).
    """

    def __init__(self, settings: NodeSettings):
        self.settings = settings.require("spool", "destination")
        self.spool = Spool(settings.spool)
        self._stop = threading.Event()
        self._workers_gone = threading.Event()
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._workers_lock = threading.Lock()
        self._crashes: Counter = Counter()
        self._threads: list[threading.Thread] = []
        self._server = None
        self._started = False
        self.port: int | None = None

    def __enter__(self) -> "DicomNode":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> "DicomNode":
        """Recover the spool, start the Storage SCP, the workers (waiting until their model is
        loaded) and the sender. Raises InputError when any of them cannot start."""
        s = self.settings
        if s.model is not None and not Path(s.model).is_file():
            raise InputError("model file not found", s.model)  # before minutes of worker start-up
        self.spool.prepare()
        self.spool.lock()
        try:
            counts = self.spool.recover()
            if any(counts.values()):
                logger.info("spool recovered: %d instance(s) queued again, %d completed, %d leftover(s) "
                            "removed", counts["requeued"], counts["completed"], counts["cleaned"])
            # Listening first: a port in use fails at once, and instances that arrive while
            # the workers load their model wait in the spool.
            try:
                self._server = self._scp().start_server((s.host, s.port), block=False, evt_handlers=[
                    (evt.EVT_C_STORE, handle_store, [self.spool, int(s.min_free_mb * 2**20)]),
                    (evt.EVT_C_ECHO, self._echo), (evt.EVT_REJECTED, self._rejected)])
            except OSError as exc:
                raise InputError(f"cannot listen on {s.host}:{s.port}: {exc.strerror or exc}") from None
            self._started = True
            for index in range(s.workers):
                self._start_worker(index)
            for index in range(s.workers):
                self._await_worker(index)
            self._spawn(self._pump_logs, "boneage-worker-logs")
            self._sender = Sender(s, self.spool, self._stop)
            self._spawn(self._sender.run, "boneage-sender")
            self._spawn(self._watch_workers, "boneage-worker-watch")
        except BaseException:
            self.stop()
            raise
        self.port = self._server.server_address[1]
        logger.info("DICOM node %s listening on %s:%d; results to %s; %d worker(s); spool %s",
                    s.ae_title, s.host, self.port, s.destination, s.workers, self.spool.root)
        logger.info("settings: %s", s.summary())
        return self

    def stop(self) -> None:
        """Stop listening, let the workers finish the instance in hand, stop the sender.
        Whatever is still queued or unsent stays in the spool for the next start."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        with self._workers_lock:
            workers = list(self._workers.values())
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()  # SIGTERM: finish the instance in hand, then exit
        for worker in workers:
            worker.process.join(timeout=self.settings.timeout + 60)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
        self._workers_gone.set()  # their last log lines are in: the pump may stop
        for thread in self._threads:
            thread.join(timeout=self.settings.timeout + 10)
        self._threads.clear()
        with self._workers_lock:
            for worker in self._workers.values():
                worker.conn.close()
            self._workers.clear()
        self.spool.unlock()
        if self._started:
            self._started = False
            logger.info("DICOM node %s stopped", self.settings.ae_title)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the node stops (or ``timeout`` seconds pass); True if it stopped."""
        return self._stop.wait(timeout)

    # -- parts ---------------------------------------------------------------------------------

    def _scp(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        ae.require_called_aet = True
        ae.require_calling_aet = list(s.allow)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = s.timeout
        ae.maximum_associations = 16
        return ae

    def _echo(self, event) -> int:
        logger.info("C-ECHO from %s", str(event.assoc.requestor.ae_title).strip())
        return 0x0000

    def _rejected(self, event) -> None:
        requestor = event.assoc.requestor
        calling = str(requestor.ae_title).strip()
        called = str(getattr(requestor.primitive, "called_ae_title", "") or "").strip()
        if self.settings.allow and calling not in self.settings.allow:
            why = "calling AE title not in the allow-list"
        elif called and called != self.settings.ae_title:
            why = f"called AE title {called!r} is not this node's {self.settings.ae_title!r}"
        else:
            why = "too many associations at once"
        logger.warning("association from %s at %s rejected: %s", calling, requestor.address, why)

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_worker(self, index: int) -> None:
        reader, writer = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_worker_main, name=f"boneage-worker-{index}", daemon=True,
            args=(index, {**self.settings.to_dict(), "spool": str(self.spool.root)}, writer, os.getpid(),
                  logging.getLogger("boneage").getEffectiveLevel()))
        process.start()
        writer.close()  # the worker's end: closed here, so its death reads as EOF
        with self._workers_lock:
            self._workers[index] = _Worker(process, reader)

    def _await_worker(self, index: int) -> None:
        """Forward worker ``index``'s log lines until it says it is ready.

        Raises:
            InputError: it could not start (its reason), died, or took too long.
        """
        worker = self._workers[index]
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while time.monotonic() < deadline:
            if not worker.conn.poll(0.2):
                continue
            try:
                kind, payload = worker.conn.recv()
            except (EOFError, OSError):
                worker.process.join(timeout=5)
                raise InputError(f"worker {index} exited while starting (exit code "
                                 f"{worker.process.exitcode})") from None
            if kind == "log":
                logging.getLogger(payload.name).handle(payload)
            elif payload is not None:
                raise InputError(f"a worker cannot start: {payload}")
            else:
                worker.ready = True
                return
        raise InputError(f"worker {index} did not start within {WORKER_START_TIMEOUT:.0f} s")

    def _pump_logs(self) -> None:
        """Log the workers' records here, under their own logger names (until they are gone:
        a worker finishing its last instance at a stop still logs it)."""
        while not self._workers_gone.is_set():
            with self._workers_lock:
                conns = [w.conn for w in self._workers.values() if w.ready and not w.conn.closed]
            try:
                readable = mp_connection.wait(conns, timeout=0.2) if conns else []
            except (OSError, ValueError):  # a pipe closed meanwhile by the watcher
                continue
            for conn in readable:
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    with self._workers_lock:  # the worker died: its watcher replaces it
                        conn.close()
                    continue
                if kind == "log":
                    logging.getLogger(payload.name).handle(payload)
            if not conns:
                self._workers_gone.wait(0.2)

    def _watch_workers(self) -> None:
        """Replace a worker that died, after putting back (or setting aside) what it held."""
        while not self._stop.wait(0.5):
            for index, worker in list(self._workers.items()):
                if worker.process.is_alive() or self._stop.is_set():
                    continue
                logger.error("worker %d exited unexpectedly (exit code %s); starting another",
                             index, worker.process.exitcode)
                for claimed in sorted(self.spool.worker_dir(index).glob("*.dcm")):
                    self._crashes[claimed.stem] += 1
                    if self._crashes[claimed.stem] >= MAX_CRASHES_PER_INSTANCE:
                        self.spool.fail_claimed(claimed, "workers died twice while assessing it")
                        logger.error("%s set aside: workers died twice while assessing it",
                                     claimed.stem.split("_", 1)[-1])
                    else:
                        os.replace(claimed, self.spool.queue / claimed.name)
                with self._workers_lock:
                    worker.conn.close()
                self._start_worker(index)
                try:
                    self._await_worker(index)
                except InputError as exc:
                    if not self._stop.is_set():  # a stop ends a starting worker too
                        logger.error("%s", exc)
