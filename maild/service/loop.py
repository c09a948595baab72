"""`Loop`: run a step whenever woken (or every `interval` seconds), in a thread
of the daemon or in the main thread of a child process (`maild.service.workerproc`).

A stop lets the step in hand finish, and runs one more step if work was
signalled that no step has taken up yet: a message committed (and answered
``250``) a moment before SIGTERM gets its ticket now, not at the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class EventLike(Protocol):
    """`threading.Event` or a `multiprocessing` event (shared with a child)."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class _Flag:
    value: Any = False


class Loop:
    """Runs `step` whenever `wake` is set (or every `interval` seconds) until stopped.

    `step` returns True while there is more to do at once. `wake`, `stopping`
    and `owed` may be shared with another process (the child runs `run`; the
    parent, which holds the same objects, calls `stop`).
    """

    def __init__(
        self, name: str, step: Callable[[], bool], interval: float, settle: float = 0.0, *,
        wake: EventLike | None = None, stopping: EventLike | None = None, owed: Any = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.step = step
        self.interval = interval
        # After a wake-up, wait this long so that work arriving in a burst is
        # handled in one batch (fewer transactions) rather than piecemeal.
        self.settle = settle
        self.wake: EventLike = wake if wake is not None else threading.Event()
        self._stopping: EventLike = stopping if stopping is not None else threading.Event()
        self._owed = owed if owed is not None else _Flag()  # work was signalled at the stop
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.busy_since: float | None = None  # time.monotonic() when the step began

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the step in hand, and after one more step if work was
        signalled that no step has taken up yet. True if the thread ended
        within `timeout`."""
        if self._thread.ident is None:  # never started
            return True
        self.request_stop()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def request_stop(self) -> None:
        self._owed.value = self.wake.is_set()
        self._stopping.set()
        self.wake.set()

    def healthy(self, stuck_after: float) -> bool:
        """Alive, and not in one step for longer than `stuck_after` seconds."""
        busy = self.busy_since
        stuck = busy is not None and time.monotonic() - busy > stuck_after
        return self._thread.is_alive() and not stuck

    def run(self) -> None:
        first = True  # work left by an earlier run is taken up at once
        stepped_after_stop = False  # a step began after the stop: it took the work up
        while True:
            if not first:
                woken = self.wake.wait(self.interval)
                if self._stopping.is_set():
                    break
                if woken and self.settle:
                    self._stopping.wait(self.settle)
            first = False
            self.wake.clear()
            # The wake-up just cleared is owed a step, even if a stop came since.
            stepped_after_stop = self._stopping.is_set()
            while self._step() and not self._stopping.is_set():
                pass
            if self._stopping.is_set():
                break
        if self._owed.value and not stepped_after_stop:
            self._step()  # woken for work, then stopped before a step took it up

    def _step(self) -> bool:
        """One step; True if it says there is more to do at once."""
        self.busy_since = time.monotonic()
        try:
            return self.step()
        except Exception:
            log.exception("%s: step failed; trying again in %.0fs", self.name, self.interval)
            return False
        finally:
            self.busy_since = None
