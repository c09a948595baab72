"""Parse processes: order kept, a hang or a crash costs one message only."""

from __future__ import annotations

import os
import signal

from maild.errors import PermanentError
from maild.mail.parse import ParsedMessage
from maild.service.parsepool import ParsePool
from tests.support.desk import make_message

MESSAGES = [
    make_message(message_id=f"<m{i}@example.org>", subject=f"message {i}") for i in range(12)
]


def _hang_on_marker() -> None:
    """Child setup for the test: a message whose subject says HANG hangs the parser."""
    import maild.service.parsepool as pp

    real = pp.parse

    def parse(raw: bytes, *args, **kwargs):
        if b"Subject: HANG" in raw:
            import time

            time.sleep(60)
        if b"Subject: CRASH" in raw:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(raw, *args, **kwargs)

    pp.parse = parse


def test_results_come_back_in_order():
    pool = ParsePool(2)
    try:
        results = list(pool.parse_many(MESSAGES))
    finally:
        pool.close()
    assert [r.subject for r in results] == [f"message {i}" for i in range(12)]
    assert all(isinstance(r, ParsedMessage) for r in results)


def test_garbage_is_a_permanent_error_not_a_crash():
    pool = ParsePool(1)
    try:
        (result,) = pool.parse_many([b"\x00\x01 not mail at all"])
    finally:
        pool.close()
    assert isinstance(result, PermanentError) and "not an email message" in str(result)


def test_a_hanging_or_crashing_message_costs_only_itself():
    pool = ParsePool(2, timeout=4.0, setup=_hang_on_marker)
    batch = [*MESSAGES[:3], make_message(subject="HANG"), *MESSAGES[3:6],
             make_message(subject="CRASH"), *MESSAGES[6:9]]  # fmt: skip
    try:
        results = list(pool.parse_many(batch))
        # The pool recovered: it parses the next batch normally.
        again = list(pool.parse_many(MESSAGES[:4]))
    finally:
        pool.close()
    hang, crash = results[3], results[7]
    assert isinstance(hang, PermanentError) and "longer than" in str(hang)
    assert isinstance(crash, PermanentError) and "died" in str(crash)
    others = [r for i, r in enumerate(results) if i not in (3, 7)]
    assert all(isinstance(r, ParsedMessage) for r in others)
    assert [r.subject for r in again] == [f"message {i}" for i in range(4)]
    # Each was tried once more in salvage mode (maild.limits), which failed too.
    assert pool.restarts == 4


def test_messages_queued_behind_a_crash_are_parsed_by_the_next_child_uncharged():
    # One child: the messages after CRASH wait in its pipe when it dies.
    pool = ParsePool(1, timeout=4.0, setup=_hang_on_marker)
    batch = [*MESSAGES[:2], make_message(subject="CRASH"), *MESSAGES[2:8]]
    try:
        futures = [pool.submit(raw) for raw in batch]
        results = [f.result(timeout=60) for f in futures]
    finally:
        pool.close()
    assert isinstance(results[2], PermanentError) and "died" in str(results[2])
    others = [r for i, r in enumerate(results) if i != 2]
    assert [r.subject for r in others] == [f"message {i}" for i in range(8)]
    assert pool.restarts == 2  # the crash, and its salvage attempt: nothing else


def test_inline_mode_parses_in_the_calling_thread():
    pool = ParsePool(0)
    assert [r.subject for r in pool.parse_many(MESSAGES[:2])] == ["message 0", "message 1"]


def test_look_ahead_parses_each_message_once_across_a_retry(sqlite_url, tmp_path):
    """The next batch is parsed while this one is applied; a retry claimed alone
    in between neither loses those parses nor changes the order of tickets."""
    from sqlalchemy import func, select, update

    from maild.clock import SystemClock
    from maild.store.models import Inbound, Ticket
    from tests.support.desk import Desk, make_settings

    settings = make_settings(tmp_path, sqlite_url, worker={"parse_processes": 2, "batch_size": 3})
    desk = Desk(settings, clock=SystemClock())
    submitted: list[bytes] = []
    real_submit = desk.parser.submit

    def counting_submit(raw: bytes, hint: bool = False, recipient: str | None = None):
        submitted.append(raw)
        return real_submit(raw, hint, recipient)

    desk.parser.submit = counting_submit  # type: ignore[method-assign]
    try:
        raws = [make_message(sender=f"user{i}@example.org", subject=f"case {i}",
                             message_id=f"<look-{i}@example.org>") for i in range(8)]  # fmt: skip
        ids = [desk.deliver(raw).inbound_id for raw in raws]
        with desk.sessions.begin() as session:  # the 5th failed once before: claimed alone
            session.execute(update(Inbound).where(Inbound.id == ids[4]).values(attempts=1))
        batches = []
        while batch := desk.worker.run_batch():
            batches.append([p.inbound_id for p in batch])
        assert batches == [ids[0:3], [ids[3]], [ids[4]], ids[5:8]]
        assert sorted(submitted) == sorted(raws)  # every message parsed once, none twice
        with desk.sessions() as session:
            subjects = session.scalars(select(Ticket.subject).order_by(Ticket.id)).all()
            done = session.scalar(
                select(func.count()).select_from(Inbound).where(Inbound.status == "done")
            )
        assert subjects == [f"case {i}" for i in range(8)] and done == 8
    finally:
        desk.parser.close()


def test_triage_is_made_beside_the_parse_and_used_only_with_the_same_rules(tmp_path):
    """The parse process classifies with the worker's rules; after a reload,
    or for another recipient, the worker classifies again (and may differ)."""
    from maild.config.settings import settings_from_mapping
    from maild.pipeline.triage import Rulebook, classify, reload_rules

    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('[[category]]\nname = "facilities"\npatterns = ["coffee machine"]\n')
    settings = settings_from_mapping({"triage": {"rules_file": str(rules_file)}})
    before = Rulebook.from_settings(settings)
    new = make_message(subject="Coffee machine broken", body="It leaks all over.")
    reply = make_message(subject="Re: Coffee machine broken", in_reply_to="<a@example.org>")
    pool = ParsePool(1)
    try:
        pool.set_rules(before)
        parsed = pool.submit(new, recipient="help@example.com").result(30)
        parsed_reply = pool.submit(reply, recipient="help@example.com").result(30)
        # The rules change on disk and are reloaded (SIGHUP).
        rules_file.write_text('[[category]]\nname = "kitchen"\npatterns = ["coffee machine"]\n')
        after = reload_rules(settings)
        pool.set_rules(after)
        parsed_after = pool.submit(new, recipient="help@example.com").result(30)
    finally:
        pool.close()
    assert isinstance(parsed, ParsedMessage) and parsed.pre_triage is not None
    token, recipient, triage = parsed.pre_triage
    assert (token, recipient, triage.category) == (before.token, "help@example.com", "facilities")
    assert classify(parsed, "help@example.com", settings, before) is triage
    # Another recipient, or rules reloaded since: classified afresh.
    assert classify(parsed, "other@example.com", settings, before) is not triage
    assert classify(parsed, "help@example.com", settings, after).category == "kitchen"
    # The reloaded rules reached the parse process.
    assert isinstance(parsed_after, ParsedMessage) and parsed_after.pre_triage is not None
    assert parsed_after.pre_triage[0] == after.token
    assert parsed_after.pre_triage[2].category == "kitchen"
    # A reply usually threads onto its ticket: not classified beside the parse.
    assert isinstance(parsed_reply, ParsedMessage) and parsed_reply.pre_triage is None


def test_a_failure_of_the_feeding_thread_fails_its_messages_instead_of_hanging_them():
    """A bug of maild's own in the thread that feeds a parse process (here:
    sending one message raises) fails the messages it had in hand (the
    worker tries them again), at once, and the pool goes on parsing: nobody
    waits forever for them."""
    pool = ParsePool(1)
    real_send = pool._send

    def send(child, raw, *args):
        if b"Subject: TRIP" in raw:
            raise RuntimeError("a bug in the feed")
        return real_send(child, raw, *args)

    pool._send = send  # type: ignore[method-assign]
    try:
        futures = [pool.submit(raw) for raw in
                   (MESSAGES[0], make_message(subject="TRIP"), MESSAGES[1])]  # fmt: skip
        outcomes = [f.exception(timeout=15) or f.result() for f in futures]
        # The pool goes on: the next messages are parsed.
        later = pool.submit(MESSAGES[2]).result(timeout=15)
    finally:
        pool.close()
    tripped = outcomes[1]
    assert isinstance(tripped, RuntimeError) and "a bug in the feed" in str(tripped)
    for outcome, subject in ((outcomes[0], "message 0"), (outcomes[2], "message 1")):
        # In the pipe with it (failed with it), or parsed.
        assert isinstance(outcome, RuntimeError) or outcome.subject == subject
    assert isinstance(later, ParsedMessage) and later.subject == "message 2"
