"""Parse in long-lived child processes: both cores, and a hostile message
cannot take the daemon down.

Parsing is the CPU-heavy stage of every message. In a thread it would hold
the GIL against the intake writer (whose commits each SMTP ``250`` waits for);
in child processes it runs on the other cores while the worker thread applies
earlier messages. A child that exceeds ``worker.parse_timeout_seconds`` or dies
is replaced, and the message it was working on gets a `PermanentError`
(quarantine, raw bytes kept); the other messages are unaffected.

``worker.parse_processes = 0`` parses in the calling thread (tests, debugging).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

from maild.config import Settings
from maild.errors import PermanentError
from maild.parse import ParsedMessage, parse

log = logging.getLogger(__name__)

Result = ParsedMessage | PermanentError


def _child_main(conn: Connection, setup: Callable[[], None] | None) -> None:
    """Child loop: receive raw bytes, send back a ParsedMessage or an error."""
    if setup is not None:
        setup()
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            result: Any = parse(raw)
        except PermanentError as exc:
            result = ("permanent", str(exc))
        except Exception as exc:  # a parser bug: retrying will not help
            result = ("permanent", f"parser failed: {type(exc).__name__}: {exc}")
        try:
            conn.send(result)
        except Exception as exc:  # e.g. a result that cannot be pickled
            conn.send(("permanent", f"parser result not transferable: {type(exc).__name__}"))


class _Child:
    def __init__(self, ctx: Any, setup: Callable[[], None] | None) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.conn: Connection = parent
        self.process = ctx.Process(target=_child_main, args=(child, setup), daemon=True)
        self.process.start()
        child.close()

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.join(5)
        finally:
            self.conn.close()


class ParsePool:
    """A fixed set of parse processes fed from one queue.

    Each process has a thread of ours that hands it one message at a time and
    waits (GIL released) for the answer, so the worker thread can submit a
    whole batch and apply the first messages while the rest are being parsed.
    """

    def __init__(
        self,
        processes: int,
        *,
        timeout: float = 10.0,
        setup: Callable[[], None] | None = None,
    ) -> None:
        self.size = max(0, processes)
        self.timeout = timeout
        self._setup = setup
        self._ctx = multiprocessing.get_context("forkserver")
        # Children fork from a server that has the parser imported already.
        self._ctx.set_forkserver_preload(["maild.parse"])
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.restarts = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ParsePool:
        size = settings.worker.parse_processes
        if size < 0:
            size = max(1, min(4, len(os.sched_getaffinity(0))))
        return cls(size, timeout=settings.worker.parse_timeout_seconds)

    def start(self) -> None:
        """Start the processes now (the daemon does, before it takes work)."""
        with self._lock:
            while len(self._threads) < self.size:
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._serve, args=(ready,), name=f"parser-{len(self._threads)}",
                    daemon=True,
                )  # fmt: skip
                thread.start()
                self._threads.append(thread)
                ready.wait(30)

    def submit(self, raw: bytes) -> Future[Result]:
        future: Future[Result] = Future()
        if self.size == 0:
            future.set_result(_inline(raw))
            return future
        if len(self._threads) < self.size:
            self.start()
        self._queue.put((raw, future))
        return future

    def parse_many(self, raws: Sequence[bytes]) -> Iterator[Result]:
        """Yield one result per message, in order, as soon as each is ready."""
        futures = [self.submit(raw) for raw in raws]
        for future in futures:
            yield future.result()

    def _serve(self, ready: threading.Event) -> None:
        child: _Child | None = None
        try:
            child = _Child(self._ctx, self._setup)
            ready.set()
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                raw, future = item
                if child is None or not child.process.is_alive():
                    if child is not None:
                        child.kill()
                    child = _Child(self._ctx, self._setup)
                result, dead = self._ask(child, raw)
                if dead:
                    child.kill()
                    child = None
                    self.restarts += 1
                future.set_result(result)
        finally:
            if child is not None:
                child.kill()

    def _ask(self, child: _Child, raw: bytes) -> tuple[Result, bool]:
        try:
            child.conn.send_bytes(raw)
            if not child.conn.poll(self.timeout):
                log.error("parser took longer than %.0fs; message set aside", self.timeout)
                return PermanentError(f"parsing took longer than {self.timeout:.0f} s"), True
            answer = child.conn.recv()
        except (EOFError, OSError):
            child.process.join(1)
            code = child.process.exitcode
            log.error("parser process died (exit status %s); message set aside", code)
            return PermanentError(f"the parser process died (exit status {code})"), True
        if isinstance(answer, tuple) and answer and answer[0] == "permanent":
            return PermanentError(answer[1]), False
        return answer, False

    def close(self) -> None:
        with self._lock:
            for _ in self._threads:
                self._queue.put(_STOP)
            for thread in self._threads:
                thread.join(10)
            self._threads.clear()


_STOP = object()


def _inline(raw: bytes) -> Result:
    try:
        return parse(raw)
    except PermanentError as exc:
        return exc
    except Exception as exc:
        return PermanentError(f"parser failed: {type(exc).__name__}: {exc}")
