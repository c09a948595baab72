"""Parse in long-lived child processes: both cores, and a hostile message
cannot take the daemon down.

Parsing is the CPU-heavy stage of every message. In a thread it would hold
the GIL against the intake writer (whose commits each SMTP ``250`` waits for);
in child processes it runs on the other cores while the worker thread applies
earlier messages. A child that exceeds ``worker.parse_timeout_seconds`` or dies
is replaced, and the message it was working on gets a `PermanentError`
(quarantine, raw bytes kept); the other messages are unaffected.

Each child also has a budget per message (issue 6): its address space is
capped at what it used when it started plus ``limits.parse_memory_mb``
(``RLIMIT_AS``: the parse gets `MemoryError`), and its CPU time is watched
(``/proc``, with ``RLIMIT_CPU`` as the backstop) and the child killed past
``limits.parse_cpu_seconds``. The parse itself first applies the limits of
`maild.mail.limits` to the raw bytes. A message whose parse was killed is parsed
once more in salvage mode (headers within the limits, the first text part,
the original attached); if that fails too, it is quarantined with the reason.

``worker.parse_processes = 0`` parses in the calling thread, without the
CPU and memory budget (tests, debugging).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import gc
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import resource
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

from maild.config.settings import Settings
from maild.errors import PermanentError
from maild.mail.limits import ParseLimits
from maild.mail.parse import ParsedMessage, parse
from maild.mail.quotes import strip_reply
from maild.pipeline.triage import Rulebook, classify_with
from maild.service.children import child_setup

log = logging.getLogger(__name__)

Result = ParsedMessage | PermanentError
FLAG_BOUNCE_HINT = 1
FLAG_SALVAGE = 2
FLAG_RULES = 4  # not a message: the triage rules to classify with from now on
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_SLICE = 0.1
# Messages in a child's pipe at once (the one it parses and those behind it),
# and the bytes behind the first: small enough that sending never waits for
# the child to read (a socket buffer holds about 200 KB).
PIPELINE_DEPTH = 4
PIPELINE_BYTES = 48 * 1024
SWITCH_INTERVAL = 0.001  # seconds: see ParsePool.start
_MAIN_LOCK = threading.Lock()


def background_priority() -> None:
    """Child setup: parse at a lower CPU priority than the daemon, whose SMTP
    intake (a client waits for each 250) comes first when the cores are busy."""
    with contextlib.suppress(OSError):
        os.nice(10)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cap_memory(memory_mb: int) -> None:
    try:
        with open("/proc/self/statm", "rb") as fh:
            base = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = base + memory_mb * 1024 * 1024
    if hard == resource.RLIM_INFINITY or cap < hard:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


@contextlib.contextmanager
def without_main() -> Iterator[None]:
    """Start processes in here: a child would otherwise import the parent's
    __main__ (pytest, a bench script, maild's command line): seconds per
    process, for nothing it uses."""
    with _MAIN_LOCK:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main


def parse_one(raw: bytes, flags: int, limits: ParseLimits) -> Any:
    """A ParsedMessage, or ("permanent" | "memory", reason)."""
    try:
        return parse(raw, limits, bounce_hint=bool(flags & FLAG_BOUNCE_HINT),
                     salvage=bool(flags & FLAG_SALVAGE))  # fmt: skip
    except PermanentError as exc:
        return ("permanent", str(exc))
    except RecursionError:
        return ("permanent", "unparseable message: nesting too deep")
    except MemoryError:
        return ("memory", "parsing needed more than the memory budget")
    except Exception as exc:  # a parser bug: retrying will not help
        return ("permanent", f"parser failed: {type(exc).__name__}: {exc}"[:500])


def _child_main(
    conn: Connection,
    setup: Callable[[], None] | None,
    limits: ParseLimits | None = None,
    cpu_seconds: float = 2.0,
    memory_mb: int = 256,
) -> None:
    """Child loop: receive flags and raw bytes, send back a ParsedMessage or an error."""
    child_setup()  # SIGTERM is the daemon's to act on (maild.service.children)
    if setup is not None:
        setup()
    # The modules and data set up above live as long as the process: kept out
    # of the collector's full passes, which would walk them after every few
    # hundred messages.
    gc.freeze()
    limits = limits or ParseLimits()
    if memory_mb > 0:
        _cap_memory(memory_mb)
    _soft, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    conn.send_bytes(b"ready")  # starting up is not charged to the first message
    rules: Rulebook | None = None
    while True:
        try:
            head = conn.recv_bytes()
            flags = head[0]
            if flags & FLAG_RULES:
                rules = _load_rules(conn.recv_bytes())
                continue
            recipient = head[1:].decode("utf-8", "replace")
            raw = conn.recv_bytes()
        except MemoryError:
            conn.send(("memory", "the message alone does not fit the memory budget"))
            return
        except OSError as exc:  # ENOMEM: reading the message hit the memory budget
            if exc.errno == errno.ENOMEM:
                conn.send(("memory", "the message alone does not fit the memory budget"))
            return
        except EOFError:
            return
        backstop = int(_own_cpu() + cpu_seconds) + 2  # the parent kills it before
        if cpu_hard == resource.RLIM_INFINITY or backstop < cpu_hard:
            resource.setrlimit(resource.RLIMIT_CPU, (backstop, cpu_hard))
        result = parse_one(raw, flags, limits)
        del raw
        if isinstance(result, ParsedMessage):
            result = _stripped(result)
            if rules is not None:
                result = _classified(result, recipient, rules)
        try:
            conn.send_bytes(pickle.dumps(result, protocol=5))
        except MemoryError:
            conn.send(("memory", "parsing needed more than the memory budget"))
        except Exception as exc:  # e.g. a result that cannot be pickled
            conn.send(("permanent", f"parser result not transferable: {type(exc).__name__}"))
        if isinstance(result, tuple) and result[0] == "memory":
            return  # a process that ran out of memory is replaced


def _load_rules(blob: bytes) -> Rulebook | None:
    try:
        rules: Rulebook = pickle.loads(blob)
        return rules
    except Exception:  # MemoryError included: the worker classifies, as without rules
        log.exception("parse process: the triage rules could not be loaded")
        return None


def _stripped(msg: ParsedMessage) -> ParsedMessage:
    """`msg` with a reply's own words, for the search index: the worker's CPU
    time goes to the rest (bench/run.py)."""
    if not msg.in_reply_to:
        return msg
    try:
        return dataclasses.replace(msg, reply_text=strip_reply(msg.text))
    except Exception:  # the worker strips it again, and meets the bug in its own time
        return msg


def _classified(msg: ParsedMessage, recipient: str, rules: Rulebook) -> ParsedMessage:
    """`msg` with its triage: the worker's CPU time goes to the rest (bench/run.py).

    Only for a message that refers to none: a reply usually threads onto its
    ticket and needs no triage (if it opens a ticket, the worker classifies it).
    """
    if msg.in_reply_to or msg.references:
        return msg
    try:
        triage = classify_with(rules, msg, recipient or None)
    except Exception:  # the worker classifies it again, and meets the bug in its own time
        return msg
    return dataclasses.replace(msg, pre_triage=(rules.token, recipient, triage))


class _Child:
    def __init__(self, ctx: Any, setup: Callable[[], None] | None, pool: ParsePool) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.conn: Connection = parent
        self.process = ctx.Process(
            target=_child_main,
            args=(child, setup, pool.limits, pool.cpu_seconds, pool.memory_mb),
            daemon=True,
        )
        with without_main():
            self.process.start()
        child.close()
        try:
            if parent.poll(60):
                parent.recv_bytes()
        except (EOFError, OSError):
            pass  # it died starting: the first _ask finds out and replaces it
        self.cpu_mark = 0.0  # its CPU time when the current message was sent
        self.rules_token = ""  # of the triage rules it has

    def cpu(self) -> float:
        """CPU seconds this process used so far (0 where /proc is missing)."""
        try:
            with open(f"/proc/{self.process.pid}/stat", "rb") as fh:
                fields = fh.read().rpartition(b")")[2].split()
            return (int(fields[11]) + int(fields[12])) / _TICKS
        except (OSError, ValueError, IndexError):
            return 0.0

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.join(5)
        finally:
            self.conn.close()


class ParsePool:
    """A fixed set of parse processes fed from one queue.

    Each process has a thread of ours that hands it messages and waits (GIL
    released) for the answers, so the worker thread can submit a whole batch
    and apply the first messages while the rest are being parsed. A process
    has the message it parses and up to three small ones behind it in its pipe,
    so it goes on parsing while its thread waits for the GIL (`_serve`).
    """

    def __init__(
        self,
        processes: int,
        *,
        timeout: float = 10.0,
        setup: Callable[[], None] | None = None,
        limits: ParseLimits | None = None,
        cpu_seconds: float = 2.0,
        memory_mb: int = 256,
    ) -> None:
        self.size = max(0, processes)
        self.timeout = timeout
        self._setup = setup
        self.limits = limits or ParseLimits()
        self.cpu_seconds = cpu_seconds
        self.memory_mb = memory_mb
        self.killed = 0  # children killed for a budget (for tests and logs)
        self._rules: tuple[str, bytes] | None = None  # (token, pickled Rulebook)
        self._ctx = multiprocessing.get_context("forkserver")
        # Children fork from a server that has the parser imported already.
        self._ctx.set_forkserver_preload(["maild.mail.parse", "maild.pipeline.triage"])
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.restarts = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ParsePool:
        size = settings.worker.parse_processes
        if size < 0:
            size = max(1, min(4, len(os.sched_getaffinity(0))))
        lim = settings.limits
        limits = ParseLimits(
            max_message_bytes=lim.max_message_bytes,
            max_header_block_bytes=lim.max_header_block_bytes,
            max_header_fields=lim.max_header_fields,
            max_header_bytes=lim.max_header_bytes,
            max_addresses_per_header=lim.max_addresses_per_header,
            max_mime_depth=lim.max_mime_depth,
            max_mime_parts=lim.max_mime_parts,
            max_attachments=lim.max_attachments,
            max_attachment_bytes=lim.max_attachment_bytes,
        )
        return cls(size, timeout=settings.worker.parse_timeout_seconds, limits=limits,
                   cpu_seconds=lim.parse_cpu_seconds, memory_mb=lim.parse_memory_mb,
                   setup=background_priority)  # fmt: skip

    def start(self, *, wait: bool = True) -> None:
        """Start the processes now (the daemon does, before it takes work);
        without `wait` they start while the caller goes on (messages
        submitted meanwhile wait in the queue)."""
        if self.size > 0:
            # A thread that holds the GIL keeps it for up to the switch
            # interval (5 ms) before a feeding thread that waits for it gets
            # a turn. With a consumer burning 1.2 ms of Python per message,
            # it waited 1.66 s for 4,000 parses at 5 ms, 0.02 s at 1 ms with
            # the pipes of `_serve`.
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        with self._lock:
            while len(self._threads) < self.size:
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._serve, args=(ready,), name=f"parser-{len(self._threads)}",
                    daemon=True,
                )  # fmt: skip
                thread.start()
                self._threads.append(thread)
                if wait:
                    ready.wait(30)

    def set_rules(self, rules: Rulebook) -> None:
        """Classify each message with `rules` beside its parse, from now on.

        The triage rides along on the `ParsedMessage`, named by the rules'
        token: `maild.pipeline.triage.classify` takes it only while those rules are
        still in force (after a reload, the worker classifies the messages
        parsed before it).
        """
        if self.size > 0:
            self._rules = (rules.token, pickle.dumps(rules, protocol=5))

    def submit(
        self, raw: bytes, hint: bool = False, recipient: str | None = None
    ) -> Future[Result]:
        """Parse `raw`; `hint`: its envelope says it is a delivery report.

        `recipient` (the address it came to) is for the triage beside the parse.
        """
        future: Future[Result] = Future()
        if self.size == 0:
            future.set_result(_inline(raw, FLAG_BOUNCE_HINT if hint else 0, self.limits))
            return future
        if len(self._threads) < self.size:
            self.start()
        self._queue.put((raw, FLAG_BOUNCE_HINT if hint else 0, recipient or "", future))
        return future

    def parse_many(
        self, raws: Sequence[bytes], hints: Sequence[bool] | None = None
    ) -> Iterator[Result]:
        """Yield one result per message, in order, as soon as each is ready."""
        hints = hints or [False] * len(raws)
        futures = [self.submit(raw, hint) for raw, hint in zip(raws, hints, strict=True)]
        for future in futures:
            yield future.result()

    def _serve(self, ready: threading.Event) -> None:
        """Feed one child: the message it parses and, behind it, up to
        `PIPELINE_DEPTH` - 1 small ones already in its pipe.

        This thread needs the GIL to take an answer and send the next message,
        and a busy worker thread holds it for up to 5 ms at a time: a child
        given one message at a time waited that long after each answer, and
        the worker then waited for the parses (3.1 s of a 19 s ``maild
        import``; 2.7 s with these pipes, nearly all of it the worker pulling
        a transaction's parses first, since fixed in `maild.service.worker`).
        Answers come in the order the messages were sent; the one parsed when
        a child dies or runs out of its budget is the oldest unanswered, and
        those behind it are sent again to its successor.
        """
        child: _Child | None = None
        sent: collections.deque[Any] = collections.deque()  # in the child's pipe, in order
        held: collections.deque[Any] = collections.deque()  # taken from the queue, not sent
        stopping = False
        try:
            try:
                child = _Child(self._ctx, self._setup, self)
            except Exception:  # the loop below starts one for the first message
                log.exception("parse pool: a parse process could not be started")
            finally:
                ready.set()
            while True:
                try:
                    while len(sent) < PIPELINE_DEPTH:
                        if held:
                            item = held[0]
                        elif stopping:
                            break
                        else:
                            try:
                                item = self._queue.get(block=not sent)
                            except queue.Empty:
                                break
                            if item is _STOP:
                                stopping = True
                                break
                            held.append(item)
                        behind = itertools.islice(sent, 1, None)  # the ones queued in the pipe
                        if sent and len(item[0]) + sum(len(i[0]) for i in behind) > PIPELINE_BYTES:
                            break  # a big one waits until the child's pipe is empty
                        if child is None or (not sent and not child.process.is_alive()):
                            if child is not None:
                                child.kill()
                            child = _Child(self._ctx, self._setup, self)
                        if not self._send(child, item[0], item[1], item[2]) and sent:
                            break  # it is gone: the answers before it tell how
                        sent.append(held.popleft())
                    if not sent:
                        if stopping and not held:
                            return
                        continue
                    raw, flags, recipient, future = sent[0]
                    assert child is not None
                    result, dead = self._answer(child)
                    if not dead:
                        sent.popleft()
                        future.set_result(result)
                        continue
                    # The oldest unanswered message killed the child (or broke its
                    # budget): once more in salvage mode, alone, in a new child.
                    child.kill()
                    self.restarts += 1
                    held.extendleft(reversed(list(sent)[1:]))  # not charged: sent again
                    sent.clear()
                    child = _Child(self._ctx, self._setup, self)
                    salvage, dead = self._ask(child, raw, flags | FLAG_SALVAGE, recipient)
                    if dead:
                        child.kill()
                        child = None
                        self.restarts += 1
                        salvage = PermanentError(f"{result}; salvage: {salvage}")
                    future.set_result(salvage)
                except Exception as exc:  # a bug of maild's own, not a message's
                    # Its messages fail now (the worker charges them an
                    # attempt and tries again) rather than never: a worker
                    # waiting for them would wait forever.
                    log.exception("parse pool: feeding a parse process failed; "
                                  "%d message(s) failed with it", len(sent) + len(held))  # fmt: skip
                    error = RuntimeError(f"the parse pool failed: {type(exc).__name__}: {exc}")
                    for item in (*sent, *held):
                        if not item[3].done():
                            item[3].set_exception(error)
                    sent.clear()
                    held.clear()
                    if child is not None:
                        with contextlib.suppress(Exception):
                            child.kill()
                        child = None
                    self.restarts += 1
        finally:
            if child is not None:
                child.kill()

    def _send(self, child: _Child, raw: bytes, flags: int, recipient: str) -> bool:
        """Put one message into `child`'s pipe (with the triage rules first when
        it lacks them); False when the child is gone."""
        try:
            rules = self._rules
            if rules is not None and child.rules_token != rules[0]:
                child.conn.send_bytes(bytes((FLAG_RULES,)))
                child.conn.send_bytes(rules[1])
                child.rules_token = rules[0]
            child.conn.send_bytes(bytes((flags,)) + recipient.encode("utf-8", "replace"))
            child.conn.send_bytes(raw)
            return True
        except OSError:
            # The child may have refused the message (its memory budget)
            # before we finished writing it: its answer is in the pipe.
            return False

    def _answer(self, child: _Child) -> tuple[Result, bool]:
        """The answer to the oldest message in `child`'s pipe; (result, whether
        the child must be replaced). Its CPU time is watched while it works."""
        try:
            started = time.monotonic()
            # Most parses answer at once; a long one has its CPU time watched.
            while not child.conn.poll(_SLICE if child.cpu_mark else 0.02):
                if not child.cpu_mark:
                    child.cpu_mark = child.cpu() or 1e-9
                used = child.cpu() - child.cpu_mark
                if used > self.cpu_seconds:
                    self.killed += 1
                    log.error("parser used more than %.1f s CPU; child replaced", self.cpu_seconds)
                    return PermanentError(
                        f"parsing took more than {self.cpu_seconds:g} s of CPU"
                    ), True
                if time.monotonic() - started > self.timeout:
                    self.killed += 1
                    log.error("parser took longer than %.0fs; child replaced", self.timeout)
                    return PermanentError(f"parsing took longer than {self.timeout:.0f} s"), True
            answer = child.conn.recv()
        except (EOFError, OSError):
            child.process.join(1)
            code = child.process.exitcode
            log.error("parser process died (exit status %s)", code)
            return PermanentError(f"the parser process died (exit status {code})"), True
        finally:
            child.cpu_mark = 0.0
        if isinstance(answer, tuple) and answer and answer[0] == "memory":
            return PermanentError(answer[1]), True
        if isinstance(answer, tuple) and answer and answer[0] == "permanent":
            return PermanentError(answer[1]), False
        return answer, False

    def _ask(
        self, child: _Child, raw: bytes, flags: int = 0, recipient: str = ""
    ) -> tuple[Result, bool]:
        """Send one message and wait for its answer; (result, whether the child
        must be replaced)."""
        if not self._send(child, raw, flags, recipient) and not child.conn.poll(1):
            child.process.join(1)
            code = child.process.exitcode
            log.error("parser process died (exit status %s)", code)
            return PermanentError(f"the parser process died (exit status {code})"), True
        return self._answer(child)

    def close(self) -> None:
        with self._lock:
            for _ in self._threads:
                self._queue.put(_STOP)
            for thread in self._threads:
                thread.join(10)
            self._threads.clear()


_STOP = object()


def _inline(raw: bytes, flags: int, limits: ParseLimits) -> Result:
    answer = parse_one(raw, flags, limits)
    if isinstance(answer, tuple):
        return PermanentError(answer[1])
    return answer
