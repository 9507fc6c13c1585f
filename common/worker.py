"""One base for every background loop: a thread that runs its steps, sleeps, is woken, backs off, stops.

A ``Worker`` runs its steps (callables) one after the other in a thread of its own, then waits:
``interval`` when the pass found nothing to do, ``busy_interval`` when a step returned something truthy
(more work is likely waiting), longer and longer (``Backoff``) while steps keep failing. Anyone may set
its ``wake`` event to have the next pass run now. A step's failure is logged and the other steps still run;
a step raising ``LeaseLost`` (its fence refused a write: another process holds the lease now) ends the
pass at once, so a worker that lost its lease writes nothing more. The loop itself goes on, backing off:
the lease keeper stops it on the loss, and if the lease comes back to this process before that (it had
only expired, nobody took it), the next fence succeeds and the work resumes.

``LeaseKeeper`` is the one lease keeper: a ``Worker`` whose pass takes or renews a database lease
(``common/lease.py``) and says when it is won or lost. The loops that run only in the lease holder start on
a gain and stop on a loss (``app/main.py``'s background workers, the collector's schedule).

Each worker's thread carries its name in the operating system too (``name_os_thread``), so its CPU can be
read per loop from ``/proc/<pid>/task/*/{comm,stat}`` without a profiler (``bench/bench_idle.py``).

Imports nothing of ours above ``common``: the relayer (``wallet``), the collector and the app use it.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.lease import Lease, LeaseLost

log = logging.getLogger(__name__)
Step = Callable[[], object]


@dataclass(frozen=True)
class Pacing:
    """How long a worker waits before its next pass (pure: the loop asks, tests ask the same)."""

    interval: float  # after a pass that found nothing to do
    busy_interval: float = 0.0  # after a pass that did something: there is likely more
    backoff_first: float = 0.5  # after the first failed pass in a row...
    backoff_max: float = 30.0  # ...doubling with each further one, up to this

    def next_wait(self, *, busy: bool, failures: int) -> float:
        if failures > 0:
            return min(self.backoff_max, self.backoff_first * 2 ** min(failures - 1, 32))
        return self.busy_interval if busy else self.interval


_PR_SET_NAME = 15  # prctl(2): the calling thread's name, at most 15 bytes
_libc: ctypes.CDLL | None = None


def name_os_thread(name: str) -> None:
    """Gives the calling thread ``name`` (cut to 15 bytes) in the operating system (Linux only; elsewhere,
    or if it fails, nothing): Python keeps its thread names to itself before 3.14."""
    global _libc
    if not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None)  # the process's own symbols: libc's among them
        _libc.prctl(_PR_SET_NAME, name.encode("utf-8", "replace")[:15], 0, 0, 0)
    except (OSError, AttributeError):  # no libc found, or no prctl in it: the names are only a help
        pass


def step_name(step: Step) -> str:
    return str(getattr(step, "__qualname__", None) or getattr(step, "__name__", None) or step)


class Worker:
    """A background loop. ``steps`` run in order each pass; ``linger``: after a wake-up, wait this long for
    more wake-ups to gather (authorisations arriving together share one transaction); ``min_gap``: at least
    this long between two passes, however often it is woken."""

    def __init__(
        self,
        name: str,
        steps: Sequence[Step],
        pacing: Pacing,
        *,
        wake: threading.Event | None = None,
        linger: float = 0.0,
        min_gap: float = 0.0,
        join_timeout: float = 10.0,
        first_pass_now: bool = True,
    ) -> None:
        self.name = name
        self.steps = tuple(steps)
        self.pacing = pacing
        self.wake = wake if wake is not None else threading.Event()
        self.linger, self.min_gap = linger, min_gap
        self.join_timeout = join_timeout
        self.first_pass_now = first_pass_now  # False: the first pass comes after one interval
        self.failures = 0  # failed passes in a row
        self.lease_lost = False  # the last pass ended on a refused fence
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """A thread exists: running, or still finishing its last pass after ``stop()`` timed out."""
        return self._thread is not None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def kick(self) -> None:
        """Run the next pass now (or as soon as the current one ends)."""
        self.wake.set()

    def start(self) -> None:
        if self._thread is not None:
            if not self._stop.is_set() and self._thread.is_alive():
                return  # running
            self._thread.join()  # a stopped run still finishing its pass: one thread per worker at a time
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        thread = self._thread
        if thread is None:
            return
        thread.join(timeout=self.join_timeout)
        if thread.is_alive():  # a slow pass: it ends at its next check; start() waits for it
            log.warning("%s still finishing a pass after %.0f s", self.name, self.join_timeout)
        else:
            self._thread = None

    def run_pass(self) -> bool:
        """Runs every step once; True when one of them reported work done. Counts failed passes and logs
        each failure; a refused fence (``LeaseLost``) skips the steps after it: they would write too."""
        busy = failed = False
        self.lease_lost = False
        for step in self.steps:
            if self._stop.is_set():
                break
            try:
                busy = bool(step()) or busy
            except LeaseLost:
                failed = self.lease_lost = True
                log.warning(
                    "%s: %s refused: the lease is not held",
                    self.name,
                    step_name(step),
                    extra={"fields": {"worker": self.name, "failures": self.failures + 1}},
                )
                break
            except Exception:  # the loop must survive a flaky node or database: the next pass retries
                failed = True
                log.exception(
                    "%s: %s failed",
                    self.name,
                    step_name(step),
                    extra={"fields": {"worker": self.name, "failures": self.failures + 1}},
                )
        self.failures = self.failures + 1 if failed else 0
        return busy

    def _run(self) -> None:
        name_os_thread(self.name)
        if not self.first_pass_now:
            self._stop.wait(self.pacing.interval)
        while not self._stop.is_set():
            busy = self.run_pass()
            if self._stop.is_set():
                return
            if self.min_gap:
                self._stop.wait(self.min_gap)
            woken = self.wake.wait(self.pacing.next_wait(busy=busy, failures=self.failures))
            self.wake.clear()
            if woken and self.linger and not self._stop.is_set():
                self._stop.wait(self.linger)


class LeaseKeeper:
    """Keeps trying to take (and then renews) a lease from a worker thread, every third of its TTL.

    ``on_gain`` runs when this process becomes the holder, ``on_loss`` when it stops being one (the
    renewal failed or was late, or ``stop()``); both run in the keeper's thread, never at the same time.
    A holder that dies stops renewing, so another process's keeper takes over once the TTL has passed.
    """

    def __init__(
        self,
        lease: Lease,
        on_gain: Callable[[], None],
        on_loss: Callable[[], None],
        *,
        every_s: float | None = None,
    ) -> None:
        self.lease = lease
        self.on_gain, self.on_loss = on_gain, on_loss
        every = every_s if every_s is not None else max(0.5, lease.ttl.total_seconds() / 3)
        # A failed check is a lost lease (handled in check()): the keeper keeps its pace, no back-off.
        self.worker = Worker(
            f"lease:{lease.name}", [self.check], Pacing(every), join_timeout=30, first_pass_now=False
        )
        self.leading = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """The first attempt runs in the caller's thread, so a lone process leads as soon as it starts."""
        self.check()
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()
        with self._lock:
            if self.leading:
                self.leading = False
                self.on_loss()
        try:
            self.lease.release()  # another process takes over at once rather than after the TTL
        except Exception:
            log.exception("could not release lease %s", self.lease.name)

    def check(self) -> None:
        with self._lock:
            try:
                held = self.lease.try_acquire()
            except Exception:  # the database is unreachable: we cannot prove we still hold it
                log.exception("lease %s check failed", self.lease.name)
                held = False
            fields = {"lease": self.lease.name, "holder": self.lease.holder}
            if held and not self.leading:
                log.info("lease taken", extra={"fields": fields})
                self.leading = True
                self.on_gain()
            elif self.leading and not held:
                log.warning("lease lost", extra={"fields": fields})
                self.leading = False
                self.on_loss()
