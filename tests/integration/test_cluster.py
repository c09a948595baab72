"""Several instances on one PostgreSQL: liveness, singleton jobs, claims and ordering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from maild.clock import SystemClock
from maild.service.cluster import Membership, hold_singleton, singleton_lock
from maild.store.models import Inbound, Ticket
from tests.support.desk import Desk, make_message, make_settings, reply_to

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pg_url(_postgres) -> Iterator[str]:
    name = _postgres.create()
    yield _postgres.url_for(name)
    _postgres.drop(name)


def child(script: str, *args: str) -> subprocess.Popen[str]:
    """A separate Python process (another instance) running `script`."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), f"child failed: {line!r}"
    return proc


def test_singleton_job_moves_to_another_instance_when_its_holder_is_killed(pg_url):
    holder = child(
        """
        import sys, time
        from maild.store.db import make_engine
        from maild.service.cluster import hold_singleton
        with hold_singleton(make_engine(sys.argv[1]), "imap:support") as held:
            assert held is not None
            print("ready", flush=True)
            time.sleep(120)
        """,
        pg_url,
    )
    from maild.store.db import make_engine

    engine = make_engine(pg_url)
    try:
        with hold_singleton(engine, "imap:support") as held:
            assert held is None  # the other instance has it
        with hold_singleton(engine, "imap:other") as other:
            assert other is not None and other.still_held()  # other jobs are free
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        died = time.monotonic()
        while True:
            with hold_singleton(engine, "imap:support") as held:
                if held is not None:
                    break
            assert time.monotonic() - died < 30, "the job did not move within 30 s"
            time.sleep(0.2)
    finally:
        holder.kill()
        engine.dispose()


def test_transaction_singleton_lock_excludes_a_second_holder(pg_url):
    from maild.store.db import make_engine, session_factory

    engine = make_engine(pg_url)
    sessions = session_factory(engine)
    try:
        with sessions.begin() as a, sessions.begin() as b:
            assert singleton_lock(a, "sweep:sla") is True
            assert singleton_lock(b, "sweep:sla") is False
            assert singleton_lock(b, "sweep:retention") is True
        with sessions.begin() as c:  # released at commit
            assert singleton_lock(c, "sweep:sla") is True
    finally:
        engine.dispose()


def test_sqlite_grants_every_singleton(sqlite_url):
    from maild.store.db import make_engine

    engine = make_engine(sqlite_url)
    with hold_singleton(engine, "a") as one, hold_singleton(engine, "a") as two:
        assert one is not None and two is not None
    engine.dispose()


CLAIMER = """
    import sys, time
    from maild.clock import SystemClock
    from maild.service.cluster import Membership
    from tests.support.desk import Desk, make_settings
    from pathlib import Path
    desk = Desk(make_settings(Path(sys.argv[2]), sys.argv[1]), clock=SystemClock())
    member = Membership(desk.engine, desk.sessions, desk.clock, dead_after=float(sys.argv[3]))
    desk.worker.instance_id = member.register()
    rows = desk.worker._claim(100)
    print("ready", len(rows), flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_rows_claimed_by_a_dead_instance_return_within_30s(pg_url, tmp_path, how):
    desk = Desk(make_settings(tmp_path, pg_url), clock=SystemClock())
    for i in range(5):
        desk.deliver(make_message(message_id=f"<m{i}@example.org>", subject=f"Case {i}"))
    other = child(CLAIMER, pg_url, str(tmp_path), "3")
    me = Membership(desk.engine, desk.sessions, desk.clock, dead_after=3)
    desk.worker.instance_id = me.register()
    try:
        assert desk.worker.run_batch() == []  # all five are the other's
        assert me.reap() == []  # it is alive
        gone = time.monotonic()
        # killed: the server drops its lock at once; hung (SIGSTOP): when its
        # heartbeat connection has been idle for dead_after seconds.
        other.send_signal(signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        while not me.reap():
            assert time.monotonic() - gone < 30, "the dead instance was not noticed in 30 s"
            time.sleep(0.5)
        processed = desk.worker.drain()
        assert sorted(p.outcome for p in processed) == ["new_ticket"] * 5
        with desk.sessions() as s:
            assert s.scalar(select(func.count()).select_from(Ticket)) == 5
    finally:
        if other.poll() is None:
            os.kill(other.pid, signal.SIGKILL)
            other.wait()
        desk.close()


def test_worker_does_not_apply_rows_released_to_another_instance(pg_url, tmp_path):
    """A slow instance declared dead mid-batch must not apply its batch a second time."""
    from maild.service.cluster import release_claims

    slow = Desk(make_settings(tmp_path, pg_url), clock=SystemClock())
    fast = Desk(make_settings(tmp_path, pg_url), clock=SystemClock())
    slow.worker.instance_id, fast.worker.instance_id = 101, 202
    slow.deliver(make_message())
    real_parsed = slow.worker._parsed

    def parse_then_lose_the_claim(rows):
        for pair in real_parsed(rows):
            with slow.sessions.begin() as session:  # a peer reaps us meanwhile ...
                release_claims(session, [101], slow.clock)
            assert [p.outcome for p in fast.worker.run_batch()] == ["new_ticket"]  # ... and does it
            yield pair

    slow.worker._parsed = parse_then_lose_the_claim
    try:
        assert slow.worker.run_batch() == []  # nothing applied by the slow one
        with slow.sessions() as s:
            assert s.scalar(select(func.count()).select_from(Ticket)) == 1
            assert s.scalar(select(Inbound.status)) == "done"
    finally:
        slow.close()
        fast.close()


def test_reply_and_its_original_on_two_instances_make_one_ticket(pg_url, tmp_path):
    """The ordering hazard: B takes the reply while A is still applying the original."""
    a = Desk(make_settings(tmp_path, pg_url), clock=SystemClock())
    b = Desk(make_settings(tmp_path, pg_url), clock=SystemClock())
    a.worker.instance_id, b.worker.instance_id = 1, 2
    original = make_message(message_id="<orig@example.org>")
    a.deliver(original)
    b.deliver(reply_to(_parsed(original), sender="Bob Customer <bob@example.org>",
                       body="More detail", message_id="<reply@example.org>"))  # fmt: skip
    real_parsed = a.worker._parsed
    seen: list[list[str]] = []

    def parse_while_b_works(rows):
        for pair in real_parsed(rows):
            # A holds the original (processing, not committed); B gets the reply now.
            seen.append([p.reason for p in b.worker.run_batch()])
            yield pair

    a.worker._parsed = parse_while_b_works
    try:
        assert [p.outcome for p in a.worker.run_batch(limit=1)] == ["new_ticket"]
        assert seen == [["deferred"]]  # B waited instead of opening a second ticket
        assert [p.outcome for p in b.worker.run_batch()] == ["appended"]
        with a.sessions() as s:
            assert s.scalar(select(func.count()).select_from(Ticket)) == 1
            assert s.scalar(select(func.max(Inbound.attempts))) == 0  # waiting is no attempt
    finally:
        a.close()
        b.close()


def _parsed(raw: bytes):
    import email
    import email.policy

    return email.message_from_bytes(raw, policy=email.policy.default)


def test_rows_claimed_under_a_retired_instance_id_are_released(pg_url, tmp_path):
    """An instance declared dead registers again under a new id; what it had
    claimed under the old one (and then skipped) must not stay stuck."""
    desk = Desk(make_settings(tmp_path, pg_url), clock=SystemClock())
    me = Membership(desk.engine, desk.sessions, desk.clock)
    try:
        desk.deliver(make_message())
        desk.worker.instance_id = 999  # an id no registered instance holds
        assert len(desk.worker._claim(10)) == 1
        desk.worker.instance_id = me.register()
        assert desk.worker.run_batch() == []  # processing, but not ours
        me.reap()
        assert [p.outcome for p in desk.worker.run_batch()] == ["new_ticket"]
    finally:
        me.leave()
        desk.close()
