"""The running node: the Storage SCP, worker processes that assess the spool, and the sender.

::

    sender ─C-STORE─► Storage SCP (threads) ─► spool queue/ ─► workers (processes) ─► out/
                                                               sender thread ─C-STORE─► destination

Workers are processes, so that two of them use two cores (rendering the report page holds
Python's GIL). Their log records travel to this process through a queue and are logged here,
so one place (the ``boneage`` logger) carries every line. A worker that dies is replaced and
its instance assessed again; one that two workers died on is moved to ``failed/``. A worker
whose node has died stops before storing results, leaving its instance to the next node.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import queue
import threading
import time
from collections import Counter

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


def _worker_main(index: int, settings: dict, log_queue, ready_queue, stop, parent_pid: int,
                 level: int) -> None:
    """A worker process: load the model, then assess queued instances until told to stop or
    until the node that started it is gone."""
    root = logging.getLogger("boneage")
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(level)
    root.propagate = False
    log = logging.getLogger("boneage.dicomnode.worker")
    try:
        node_settings = NodeSettings.from_dict(settings)
        spool = Spool(node_settings.spool)
        hold = spool.hold_for_worker()
        assessor = Assessor(node_settings)
    except Exception as exc:  # reported to the node, which fails its start with the message
        ready_queue.put((index, f"{type(exc).__name__}: {exc}"))
        return
    ready_queue.put((index, None))
    try:
        while not stop.is_set() and os.getppid() == parent_pid:
            claimed = spool.claim(index)
            if claimed is None:
                stop.wait(0.1)
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
        hold.close()
        # Results and spool moves are already on disk; skipping the interpreter's teardown
        # (seconds with the model and plotting libraries loaded) makes stopping quick.
        logging.shutdown()
        log_queue.close()
        log_queue.join_thread()
        os._exit(0)


class _Forward(logging.Handler):
    """Logs a worker's record here, under the same logger name."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


class DicomNode:
    """A DICOM node: ``start()`` it, ``stop()`` it (also usable as a context manager).

    ``port`` is the port actually listened on (``settings.port`` may be 0 for any free one).
    """

    def __init__(self, settings: NodeSettings):
        self.settings = settings.require("spool", "destination")
        self.spool = Spool(settings.spool)
        self._stop = threading.Event()
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: dict[int, multiprocessing.Process] = {}
        self._crashes: Counter = Counter()
        self._threads: list[threading.Thread] = []
        self._server = None
        self._listener = None
        self._worker_stop = None
        self.port: int | None = None

    def __enter__(self) -> "DicomNode":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> "DicomNode":
        """Recover the spool, start the workers (waiting until their model is loaded), the
        sender and the Storage SCP. Raises InputError when any of them cannot start."""
        s = self.settings
        self.spool.prepare()
        self.spool.lock()
        try:
            counts = self.spool.recover()
            if any(counts.values()):
                logger.info("spool recovered: %d instance(s) queued again, %d completed, %d leftover(s) "
                            "removed", counts["requeued"], counts["completed"], counts["cleaned"])
            self._log_queue = self._ctx.Queue()
            self._listener = logging.handlers.QueueListener(self._log_queue, _Forward())
            self._listener.start()
            self._worker_stop = self._ctx.Event()
            self._ready = self._ctx.Queue()
            for index in range(s.workers):
                self._start_worker(index)
            self._await_workers(range(s.workers))
            self._sender = Sender(s, self.spool, self._stop)
            self._spawn(self._sender.run, "boneage-sender")
            self._spawn(self._watch_workers, "boneage-worker-watch")
            self._server = self._scp().start_server((s.host, s.port), block=False, evt_handlers=[
                (evt.EVT_C_STORE, handle_store, [self.spool, int(s.min_free_mb * 2**20)]),
                (evt.EVT_C_ECHO, self._echo), (evt.EVT_REJECTED, self._rejected)])
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
        if self._worker_stop is not None:
            self._worker_stop.set()
        for process in self._workers.values():
            process.join(timeout=self.settings.timeout + 60)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        self._workers.clear()
        for thread in self._threads:
            thread.join(timeout=self.settings.timeout + 10)
        self._threads.clear()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self.spool.unlock()
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
        process = self._ctx.Process(
            target=_worker_main, name=f"boneage-worker-{index}", daemon=True,
            args=(index, self.settings.to_dict(), self._log_queue, self._ready, self._worker_stop,
                  os.getpid(), logging.getLogger("boneage").getEffectiveLevel()))
        process.start()
        self._workers[index] = process

    def _await_workers(self, indices) -> None:
        waiting = set(indices)
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while waiting:
            try:
                index, error = self._ready.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise InputError(f"worker(s) {sorted(waiting)} did not start within "
                                 f"{WORKER_START_TIMEOUT:.0f} s") from None
            if error is not None:
                raise InputError(f"a worker cannot start: {error}")
            waiting.discard(index)

    def _watch_workers(self) -> None:
        """Replace a worker that died, after putting back (or setting aside) what it held."""
        while not self._stop.wait(0.5):
            for index, process in list(self._workers.items()):
                if process.is_alive() or self._stop.is_set():
                    continue
                logger.error("worker %d exited unexpectedly (exit code %s); starting another",
                             index, process.exitcode)
                for claimed in sorted(self.spool.worker_dir(index).glob("*.dcm")):
                    self._crashes[claimed.stem] += 1
                    if self._crashes[claimed.stem] >= MAX_CRASHES_PER_INSTANCE:
                        self.spool.fail_claimed(claimed, "workers died twice while assessing it")
                        logger.error("%s set aside: workers died twice while assessing it",
                                     claimed.stem.split("_", 1)[-1])
                    else:
                        os.replace(claimed, self.spool.queue / claimed.name)
                self._start_worker(index)
                try:
                    self._await_workers([index])
                except InputError as exc:
                    logger.error("%s", exc)
