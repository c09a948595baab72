"""The worker applies each message when its parse is ready, not a whole
transaction's parses first, and never holds the database's write lock
waiting for a slow parse (maild.service.worker.IN_TXN_PARSE_WAIT), nor, while
intake is busy, for more than a couple of messages (BUSY_TXN_MESSAGES)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

from sqlalchemy import func, select

from maild.service import worker as worker_module
from maild.store.models import Inbound, Ticket
from tests.support.desk import Desk, make_message, make_settings


def _tickets(desk: Desk) -> int:
    with desk.sessions() as session:
        return session.scalar(select(func.count()).select_from(Ticket)) or 0


def _wait_until(check, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_messages_before_a_slow_parse_are_committed_while_it_is_parsed(sqlite_url, tmp_path):
    """Three new messages in one batch; the third's parse is held back. The
    first two are tickets (committed, visible to everyone) while it waits, and
    intake can store a new message meanwhile: nobody waits for one slow parse."""
    desk = Desk(make_settings(tmp_path, sqlite_url, worker={"parse_processes": 1}))
    release = threading.Event()
    real_submit = desk.parser.submit

    def submit(raw: bytes, *args, **kwargs) -> Future:
        future = real_submit(raw, *args, **kwargs)
        if b"slow-one" not in raw:
            return future
        held: Future = Future()

        def later() -> None:
            release.wait(30)
            held.set_result(future.result())

        threading.Thread(target=later, daemon=True).start()
        return held

    desk.parser.submit = submit  # type: ignore[method-assign]
    try:
        for n, name in enumerate(("first", "second", "slow-one")):
            desk.deliver(make_message(subject=f"Printer {name}", message_id=f"<{name}@example.org>",
                                      sender=f"User {n} <user{n}@example.org>"))  # fmt: skip
        worker = threading.Thread(target=desk.worker.run_batch)
        worker.start()
        try:
            assert _wait_until(lambda: _tickets(desk) == 2), "the ready messages waited"
            # The write lock is free while the third is parsed: intake stores
            # (a transaction holding it would leave this waiting, then failing).
            assert not desk.deliver(make_message(message_id="<new@example.org>")).duplicate
        finally:
            release.set()
            worker.join(30)
        assert _tickets(desk) == 3
    finally:
        desk.close()


def test_a_message_whose_parse_failed_in_the_pool_is_tried_again_not_waited_for(
    sqlite_url, tmp_path
):
    """The parse pool fails a message for a bug of its own (not the message's):
    the worker charges it an attempt and processes it on the next try, and
    nothing hangs."""
    desk = Desk(make_settings(tmp_path, sqlite_url, worker={"parse_processes": 1}))
    real_send = desk.parser._send
    tripped: list[bytes] = []

    def send(child, raw, *args):
        if b"trip-once" in raw and not tripped:
            tripped.append(raw)
            raise RuntimeError("a bug in the feed")
        return real_send(child, raw, *args)

    desk.parser._send = send  # type: ignore[method-assign]
    try:
        for n, name in enumerate(("first", "trip-once", "third")):
            desk.deliver(make_message(subject=f"Printer {name}", message_id=f"<{name}@example.org>",
                                      sender=f"User {n} <user{n}@example.org>"))  # fmt: skip
        worker = threading.Thread(target=desk.worker.drain, daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "the worker waited forever for a failed parse"
        assert tripped
        assert _tickets(desk) == 3
        with desk.sessions() as session:
            attempts = dict(session.execute(select(Inbound.message_id, Inbound.attempts)).all())
        # Charged an attempt (so a message that always meets the bug ends in
        # quarantine); those in the parse process's pipe with it may be too.
        assert attempts["<trip-once@example.org>"] == 1
        assert set(attempts.values()) <= {0, 1}
    finally:
        desk.close()


def test_a_transaction_begun_while_intake_was_idle_ends_when_intake_needs_the_lock(
    sqlite_url, tmp_path, monkeypatch
):
    """A burst of twelve new messages: the worker's second transaction is sized
    while intake is idle (all eight left). Mid-way, an SMTP session reaches
    DATA: the worker commits after BUSY_TXN_MESSAGES and gives way, and the
    new message is stored before the rest of the burst is applied, instead of
    waiting for the whole transaction (a 250 delayed by 140-180 ms under the
    benchmark's load)."""
    monkeypatch.setattr(worker_module, "YIELD_SECONDS", 30.0)  # gives way until intake is done
    desk = Desk(make_settings(tmp_path, sqlite_url))
    busy = threading.Event()
    desk.worker.intake_busy = busy.is_set
    stored: dict[str, int] = {}
    real_decide = desk.worker._decide
    decided: list[int] = []

    def intake() -> None:
        try:
            arrived = desk.deliver(make_message(message_id="<arrived@example.org>"))
            stored["duplicate"] = arrived.duplicate
            stored["tickets then"] = _tickets(desk)
        finally:
            busy.clear()  # a failed delivery must not keep the worker waiting

    def decide(session, row, msg):
        decided.append(row.id)
        if len(decided) == worker_module.FIRST_TXN_MESSAGES + 2:  # the second transaction's second
            busy.set()
            threading.Thread(target=intake, daemon=True).start()
        return real_decide(session, row, msg)

    desk.worker._decide = decide  # type: ignore[method-assign]
    try:
        for n in range(12):
            desk.deliver(make_message(subject=f"Printer {n}", message_id=f"<burst{n}@example.org>",
                                      sender=f"User {n} <user{n}@example.org>"))  # fmt: skip
        done = desk.worker.run_batch()
        assert _wait_until(lambda: "tickets then" in stored)
        assert stored["duplicate"] is False
        # Stored after the first transaction (4) and two of the second, not after all 12.
        assert stored["tickets then"] == worker_module.FIRST_TXN_MESSAGES + 2
        assert len(done) == 12 and _tickets(desk) == 12
    finally:
        busy.clear()
        desk.close()
