"""Automatic mail made in a process of its own while `maild import` goes on.

An import of an archive acknowledges each new ticket (unless
``--no-notify``). Rendering an acknowledgement from its templates and
composing it to bytes took an eighth of the CPU of the import's main
process (1.5 ms of the 4 ms it spent on each acknowledgement on a slow
machine), the process that decides and writes every message and so sets
the import's pace (bench/run.py).
Here they are made on another core: the worker writes the ticket's article
and outbox rows at once, without the text and bytes, and fills them in from
this process before the transaction commits (`maild.desk.apply.flush_events`),
so what commits is what was made, and the outbox holds the bytes that are
sent. A mail that does not come back (the process died, the job could not
be sent, it took too long) is made in the worker instead.

Jobs travel in chunks of `CHUNK`: sent one at a time, each cost the
worker's process about 0.5 ms (a third of making the mail) in the
executor's threads, which need the GIL to pickle, send, receive and hand
over each one, and the import was no faster. At the end
of a transaction the jobs not sent yet are made in the worker
(`RenderPool.finish`), which costs less than waiting for them.

The daemon does not use it: its worker makes a mail or two per message, on
a core of its own already.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from pathlib import Path

from maild.mail.make import MadeMail, MailJob, make_mail
from maild.mail.render import Renderer
from maild.service.children import child_setup
from maild.service.parsepool import background_priority, without_main

log = logging.getLogger(__name__)

CHUNK = 8  # jobs sent to the process at once

_renderer: Renderer | None = None  # the child's


def _child_init(override_dir: Path | None, timezone: str, languages_dir: Path | None) -> None:
    global _renderer
    child_setup()  # SIGTERM and SIGINT are the command's to act on
    background_priority()  # the worker, which waits for nothing else, comes first
    _renderer = Renderer(override_dir, timezone, languages_dir)
    gc.freeze()  # what set-up made lives as long as the process


def _make_many(jobs: list[MailJob]) -> list[MadeMail]:
    assert _renderer is not None
    return [make_mail(_renderer, job) for job in jobs]


def _ready() -> bool:
    return True


class RenderPool:
    """One process that makes mail with a renderer built like `renderer`
    (`maild.mail.make.MailMaker`)."""

    def __init__(self, renderer: Renderer, chunk: int = CHUNK) -> None:
        self._renderer = renderer
        self._chunk = max(1, chunk)
        self._executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_child_init,
            initargs=renderer.recipe,
        )
        self._held: list[tuple[MailJob, Future[MadeMail]]] = []  # not sent yet
        self._broken = False

    def start(self) -> None:
        """Start the process now; it sets up while the caller goes on."""
        with without_main():  # the process starts with its first job
            self._executor.submit(_ready)

    def submit(self, job: MailJob) -> Future[MadeMail] | None:
        """Make `job` there; None once the process is gone (then the caller
        makes its mail itself, from now on)."""
        if self._broken:
            return None
        future: Future[MadeMail] = Future()
        self._held.append((job, future))
        if len(self._held) >= self._chunk:
            self._send()
        return future

    def finish(self) -> None:
        """Make the jobs not sent yet here, now."""
        held, self._held = self._held, []
        for job, future in held:
            try:
                future.set_result(make_mail(self._renderer, job))
            except Exception as exc:  # a template's error: raised where it is waited for
                future.set_exception(exc)

    def _send(self) -> None:
        held, self._held = self._held, []
        try:
            batch = self._executor.submit(_make_many, [job for job, _future in held])
        except BrokenExecutor as exc:  # its process died: the import goes on without it
            self._broken = True
            log.warning("the process making the import's mail stopped (%s); the import "
                        "makes them itself from now on", exc)  # fmt: skip
            for _job, future in held:
                future.set_exception(exc)
            return
        batch.add_done_callback(lambda done: _hand_out(done, [f for _job, f in held]))

    def close(self) -> None:
        """Stop the process (whoever still waits for a job makes it itself)."""
        self.finish()
        self._executor.shutdown(wait=True, cancel_futures=True)


def _hand_out(batch: Future[list[MadeMail]], futures: list[Future[MadeMail]]) -> None:
    """Each job's mail to its own future (or the batch's error, or its cancel)."""
    if batch.cancelled():
        for future in futures:
            future.cancel()
        return
    error = batch.exception()
    if error is not None:
        for future in futures:
            future.set_exception(error)
        return
    for future, made in zip(futures, batch.result(), strict=True):
        future.set_result(made)
