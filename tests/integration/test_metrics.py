"""/metrics and /healthz of a running daemon, read the way Prometheus reads them."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from maild.service import daemon as daemon_module
from tests.integration.test_smtp_intake import send, wait_until
from tests.support.desk import make_message, read_maildir
from tests.support.serveproc import healthz


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        body = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_intake_processing_outbox_and_quarantine(db_url, daemon_factory, tmp_path):
    running = daemon_factory(db_url)
    http_port = running.daemon.http.port
    send(running.port, make_message(message_id="<m1@example.org>"))
    (ack,) = wait_until(lambda: read_maildir(tmp_path / "outgoing"))
    send(running.port, make_message(message_id="<m1@example.org>"))  # a client retrying
    reply = make_message(message_id="<m2@example.org>", in_reply_to=ack["Message-ID"],
                         subject="Re: printer")  # fmt: skip
    send(running.port, reply)
    send(running.port, b"\x00\x01garbage without headers\r\n" * 3)

    def settled():
        s = scrape(http_port)
        done = value(s, "maild_inbound_processed_total", source="smtp", outcome="quarantined")
        return (
            s if done == 1 and value(s, "maild_queue_depth", queue="inbound_pending") == 0 else None
        )

    s = wait_until(settled, timeout=10)
    assert value(s, "maild_inbound_received_total", source="smtp", result="stored") == 3
    assert value(s, "maild_inbound_received_total", source="smtp", result="duplicate") == 1
    assert value(s, "maild_inbound_processed_total", source="smtp", outcome="new_ticket") == 1
    assert value(s, "maild_inbound_processed_total", source="smtp", outcome="appended") == 1
    assert value(s, "maild_outbox_total", result="sent") == 1
    assert value(s, "maild_quarantine_messages") == 1
    assert value(s, "maild_outbox_dead_messages") == 0
    assert value(s, "maild_processing_latency_seconds_count") == 3
    assert value(s, "maild_smtp_data_reply_seconds_count") == 4
    assert value(s, "maild_database_up") == 1
    assert value(s, "maild_instances") == 1
    # The new ticket's first response is due in 3 h: neither breached nor at risk.
    assert value(s, "maild_sla_tickets", target="first_response", state="breached") == 0

    # The IMAP pollers' gauge: tests/integration/imap/test_imap_metrics.py, with a real poller.

    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=10) as resp:
        health = json.loads(resp.read())
    assert resp.status == 200
    assert health == {"status": "ok", "checks": {"intake_writer": True, "worker": True,
                      "sender": True, "imap": True, "smtp": True, "database": True}}  # fmt: skip


def test_sla_breach_shows_in_metrics(sqlite_url, daemon_factory):
    from datetime import timedelta

    from sqlalchemy import update

    from maild.store.models import Ticket

    running = daemon_factory(sqlite_url)
    send(running.port, make_message())
    wait_until(lambda: running.daemon.metrics and _tickets(running) == 1)
    with running.daemon.sessions.begin() as session:
        now = running.daemon.clock.now()
        session.execute(update(Ticket).values(first_response_due=now - timedelta(minutes=1),
                                              resolution_due=now + timedelta(minutes=10)))  # fmt: skip
    s = scrape(running.daemon.http.port)
    assert value(s, "maild_sla_tickets", target="first_response", state="breached") == 1
    assert value(s, "maild_sla_tickets", target="resolution", state="at_risk") == 1


def _tickets(running) -> int:
    from sqlalchemy import func, select

    from maild.store.models import Ticket

    with running.daemon.sessions() as session:
        return session.scalar(select(func.count()).select_from(Ticket))


def test_healthz_fails_when_a_thread_died(sqlite_url, daemon_factory):
    running = daemon_factory(sqlite_url)
    running.daemon.worker_loop.stop(5)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{running.daemon.http.port}/healthz", timeout=10)
        raise AssertionError("healthz answered 200 with the worker stopped")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
        assert json.loads(exc.read())["checks"]["worker"] is False


@pytest.fixture
def pg_url(_postgres) -> Iterator[str]:
    name = _postgres.create()
    yield _postgres.url_for(name)
    _postgres.drop(name)


def test_healthz_fails_while_a_thread_is_stuck_and_recovers(pg_url, daemon_factory, monkeypatch):
    """A worker alive but stuck in one step (here: its claim waits on a lock
    another program holds on the inbound table) is unhealthy: a load balancer
    and the watchdog must see it. The threshold is 300 s in production."""
    monkeypatch.setattr(daemon_module, "STUCK_AFTER_SECONDS", 1.0)
    running = daemon_factory(pg_url)
    port = running.daemon.http.port
    assert healthz(port)[0] == 200
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("LOCK TABLE inbound IN ACCESS EXCLUSIVE MODE"))
            status, body = wait_until(lambda: (r := healthz(port))[0] == 503 and r, timeout=30)
            assert body["checks"]["worker"] is False and body["checks"]["database"] is True
        # The lock is gone: the worker goes on, and so does the answer.
        wait_until(lambda: healthz(port)[0] == 200, timeout=30)
    finally:
        engine.dispose()


def test_healthz_answers_while_another_program_holds_the_write_lock(sqlite_url, daemon_factory):
    """A liveness probe reads: it must not queue behind a writer (a backup, a
    long `maild contact erase`) for SQLite's busy timeout (60 s)."""
    running = daemon_factory(sqlite_url)
    port = running.daemon.http.port
    assert healthz(port)[0] == 200
    writer = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=1, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as another program may
        status, body = healthz(port)  # (urlopen gives up after 10 s)
        assert status == 200 and body["checks"]["database"] is True
    finally:
        writer.execute("ROLLBACK")
        writer.close()
