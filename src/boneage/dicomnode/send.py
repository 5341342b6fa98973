"""Sending results to the destination by C-STORE, with bounded backoff.

The sender takes the result folders that are due from the spool's ``out/``, sends their
objects over one association, and removes an entry only when the destination has answered
every one of its objects with success (or a warning). Then:

- the destination cannot be reached, rejects or drops the association, or answers "out of
  resources" (0xA7xx): every waiting entry waits ``retry_initial`` seconds, doubling with
  each failed attempt up to ``retry_max``; an entry still unsent ``retry_hours`` after its
  first failure is moved to ``failed/``. Each failed attempt is one log line.
- the destination refuses an object with any other failure status: retrying the same object
  would get the same answer, so the entry goes to ``failed/`` at once (logged, shown by
  ``--status``), and the node goes on with the others.
"""

from __future__ import annotations

import logging
import threading
import time

import pydicom
from pynetdicom import AE
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from boneage.dicomnode.assess import SC_IMAGE_STORAGE
from boneage.dicomnode.receive import sop_class_name
from boneage.dicomnode.settings import NodeSettings
from boneage.dicomnode.spool import Outgoing, Spool
from boneage.dicomnode.sr import COMPREHENSIVE_SR_STORAGE

logger = logging.getLogger(__name__)

#: Statuses that mean "stored": success and the warnings of PS3.4 Table B.2-1.
STORED = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
RESULT_SOP_CLASSES = (COMPREHENSIVE_SR_STORAGE, SC_IMAGE_STORAGE)
BATCH = 32


class DestinationUnavailable(Exception):
    """The destination could not take results now (worth trying again later)."""


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Seconds to wait after ``attempts`` failed attempts: initial, doubled each time, capped."""
    return min(maximum, initial * 2 ** max(0, attempts - 1))


class Sender:
    """Sends what the spool's ``out/`` holds to the destination until stopped."""

    def __init__(self, settings: NodeSettings, spool: Spool, stop: threading.Event):
        self.settings = settings
        self.destination = settings.destination
        self.spool = spool
        self.stop = stop
        self.wake = threading.Event()
        self.failures = 0
        """Consecutive failed attempts to reach the destination (0 after a success)."""

    def run(self) -> None:
        """Loop until ``stop`` is set; never raises (a failure is logged and retried)."""
        while not self.stop.is_set():
            try:
                sent = self.send_due()
            except Exception as exc:  # a bug must not end sending for good; say so, then go on
                # The type only: a message could quote a value from a result object.
                logger.error("sending results failed unexpectedly (%s); trying again", type(exc).__name__)
                sent = 0
            if not sent:
                self.wake.wait(0.1)
                self.wake.clear()

    def send_due(self, now: float | None = None) -> int:
        """One pass: send up to :data:`BATCH` due entries over one association. Returns the
        number of entries handled (acknowledged or given up)."""
        now = time.time() if now is None else now
        due = self.spool.outgoing(now)
        if not due:
            return 0
        try:
            handled = self._send(due[:BATCH])
        except DestinationUnavailable as exc:
            self._wait_all(due, str(exc), now)
            return 0
        self.failures = 0
        return handled

    def _association(self):
        ae = AE(ae_title=self.settings.ae_title)
        for sop_class in RESULT_SOP_CLASSES:
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        timeout = self.settings.timeout
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
        d = self.destination
        assoc = ae.associate(d.host, d.port, ae_title=d.ae_title)
        if not assoc.is_established:
            # pynetdicom reports a refused connection as an abort too: both mean "not now".
            why = "rejected the association" if assoc.is_rejected else "cannot be reached"
            raise DestinationUnavailable(why)
        return assoc

    def _send(self, batch: list[Outgoing]) -> int:
        assoc = self._association()
        handled = 0
        try:
            for item in batch:
                started = time.perf_counter()
                refused, objects = None, item.results()
                for path in objects:
                    ds = pydicom.dcmread(path)
                    status = assoc.send_c_store(ds)
                    code = int(status.Status) if status and "Status" in status else None
                    if code is None:
                        raise DestinationUnavailable("dropped the association (no C-STORE response)")
                    if code in STORED:
                        continue
                    if 0xA700 <= code <= 0xA7FF:
                        raise DestinationUnavailable(f"is out of resources (status 0x{code:04X})")
                    comment = str(status.get("ErrorComment", "") or "").strip()
                    refused = (f"destination refused the {sop_class_name(ds.SOPClassUID)} with status "
                               f"0x{code:04X}" + (f" ({comment})" if comment else ""))
                    break
                if refused is not None:
                    self.spool.fail_outgoing(item, refused)
                    logger.warning("results of %s not delivered: %s; moved to failed", item.uid, refused)
                else:
                    self.spool.acknowledged(item)
                    logger.info("results of %s stored by %s (%d object(s), %.0f ms)", item.uid,
                                self.destination, len(objects), 1000 * (time.perf_counter() - started))
                handled += 1
        finally:
            if assoc.is_established:
                assoc.release()
        return handled

    def _wait_all(self, due: list[Outgoing], why: str, now: float) -> None:
        """The destination failed: every due entry waits the backoff, or is given up."""
        self.failures += 1
        delay = backoff(self.failures, self.settings.retry_initial, self.settings.retry_max)
        limit = self.settings.retry_hours * 3600
        given_up = 0
        for item in due:
            if not item.path.exists():
                continue  # acknowledged earlier in the same association
            first = item.state.get("first_failure") or now
            attempts = int(item.state.get("attempts", 0)) + 1
            if now - first >= limit:
                self.spool.fail_outgoing(item, f"destination {why} for {limit / 3600:g} h; gave up "
                                               f"after {attempts} attempt(s)")
                given_up += 1
                continue
            self.spool.update(item, attempts=attempts, first_failure=first, next_try=now + delay,
                              last_error=f"destination {why}")
        logger.warning("destination %s %s: %d result set(s) waiting, next try in %.1f s (attempt %d)%s",
                       self.destination, why, len(due) - given_up, delay, self.failures,
                       f"; {given_up} given up and moved to failed" if given_up else "")
