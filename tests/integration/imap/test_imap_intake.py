"""IMAP intake against a real Dovecot, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from imapclient import IMAPClient
from sqlalchemy import func, select, text

from maild.intake.imap import PROCESSED_KEYWORD, LoginFailed, MailboxPoller
from maild.store.db import make_engine
from maild.store.models import Inbound
from tests.integration.imap.conftest import imap_section, mailbox_table, wait_until
from tests.support.desk import Desk, make_message, read_maildir, reply_to
from tests.support.dovecot import NoMoveIMAPClient
from tests.support.waiting import wait_settled


def rows(db_url: str, sql: str) -> list:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


def count(db_url: str, table: str) -> int:
    return rows(db_url, f"select count(*) from {table}")[0][0]


def messages(n: int, tag: str, start: int = 0) -> list[bytes]:
    return [
        make_message(
            message_id=f"<{tag}-{i}@example.org>",
            subject=f"Request {tag} {i}",
            sender=f"User {i} <user{i}@example.org>",
        )  # fmt: skip
        for i in range(start, start + n)
    ]


# --- through the daemon: new mail, replies, IDLE -----------------------------------


def test_new_mail_becomes_ticket_and_reply_threads(
    db_url, dovecot, imap_user, password_file, daemon_factory, tmp_path
):
    box = mailbox_table(dovecot, imap_user, password_file, category="hardware", tier=2)
    running = daemon_factory(db_url, imap=imap_section(box))
    dovecot.append(imap_user, [make_message(message_id="<first@example.org>")])
    acks = wait_until(lambda: read_maildir(tmp_path / "outgoing"), timeout=10)
    ack = acks[0]
    assert ack["Subject"].startswith("[#1] Printer on 3rd floor")
    assert ack["In-Reply-To"] == "<first@example.org>"

    # The requester answers the acknowledgement; the reply lands in the same mailbox.
    dovecot.append(imap_user, [reply_to(ack, sender="Bob Customer <bob@example.org>",
                                        body="It also jams on page 2.")])  # fmt: skip
    wait_until(lambda: count(db_url, "article") == 3)  # request, ack, reply
    wait_settled(db_url)  # nothing more will come of it
    assert count(db_url, "ticket") == 1
    assert len(read_maildir(tmp_path / "outgoing")) == 1  # no second acknowledgement
    (ticket,) = rows(db_url, "select category, tier, address from ticket")
    assert tuple(ticket) == ("hardware", 2, "help@example.com")  # the mailbox's defaults
    sources = rows(db_url, "select source, mailbox, status from inbound order by id")
    assert [tuple(r) for r in sources] == [("imap", "support", "done")] * 2
    # Moved out of the inbox only after the commit: each exactly once in Processed.
    assert dovecot.count(imap_user, "INBOX") == 0
    assert dovecot.message_ids(imap_user, "Processed") == [
        "<first@example.org>", "<reply-1@example.org>"
    ]  # fmt: skip
    assert running.daemon.imap.pollers[0].stats.connects == 1


def test_idle_picks_up_new_mail_without_polling(sqlite_url, dovecot, imap_user, password_file,
                                                daemon_factory):  # fmt: skip
    """Polling is an hour away: only IDLE can bring these in. How fast it does
    (the README's "usually within a second") is bench/imap_backlog.py's to measure."""
    running = daemon_factory(sqlite_url, imap=imap_section(
        mailbox_table(dovecot, imap_user, password_file), poll_seconds=3600))  # fmt: skip
    poller = running.daemon.imap.pollers[0]
    wait_until(poller.connected.is_set)
    for i in range(3):  # one after another: IDLE is issued again after each
        # Appended once the poller idles: one appended in the instant it
        # enters IDLE is not announced (test_mail_the_server_never_announces_comes_in).
        wait_until(poller.idling.is_set)
        dovecot.append(imap_user, messages(1, "idle", start=i))
        wait_until(lambda n=i + 1: count(sqlite_url, "ticket") == n, timeout=60)
    assert poller.stats.connects == 1 and poller.stats.failures == 0


def test_server_restart_mid_session(sqlite_url, own_dovecot, imap_user, password_file,
                                    daemon_factory, caplog):  # fmt: skip
    caplog.set_level(logging.INFO, logger="maild.intake.imap")
    running = daemon_factory(sqlite_url, imap=imap_section(
        mailbox_table(own_dovecot, imap_user, password_file)))  # fmt: skip
    poller = running.daemon.imap.pollers[0]
    own_dovecot.append(imap_user, messages(1, "before"))
    wait_until(lambda: count(sqlite_url, "ticket") == 1)
    own_dovecot.restart()  # the server goes away mid-IDLE and comes back
    own_dovecot.append(imap_user, messages(2, "after"))
    wait_until(lambda: count(sqlite_url, "ticket") == 3, timeout=20)
    assert poller.stats.connects >= 2
    assert any("imap support: connection to" in r.getMessage() for r in caplog.records)
    assert own_dovecot.count(imap_user, "INBOX") == 0
    assert sorted(own_dovecot.message_ids(imap_user, "Processed")) == sorted(
        ["<before-0@example.org>", "<after-0@example.org>", "<after-1@example.org>"]
    )


def test_wrong_password_is_logged_retried_and_others_go_on(
    db_url, dovecot, imap_user, tmp_path, password_file, daemon_factory, caplog
):
    caplog.set_level(logging.INFO, logger="maild.intake.imap")
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    bad = mailbox_table(dovecot, "someone", wrong, name="bad")
    good = mailbox_table(dovecot, imap_user, password_file, name="good")
    running = daemon_factory(db_url, imap=imap_section(
        bad, good, reconnect_min_seconds=0.2, reconnect_max_seconds=0.4))  # fmt: skip
    dovecot.append(imap_user, messages(2, "good"))
    wait_until(lambda: count(db_url, "ticket") == 2)
    bad_poller = running.daemon.imap.pollers[0]
    wait_until(lambda: bad_poller.stats.failures >= 3)
    lines = [r for r in caplog.records if r.getMessage().startswith("imap bad:")]
    assert lines, "no log line about the failing mailbox"
    first = lines[0].getMessage()
    assert lines[0].levelno == logging.ERROR
    assert "login to 127.0.0.1" in first and "as someone failed" in first
    assert "AUTHENTICATIONFAILED" in first and "retrying in" in first
    assert "secret" not in first and "not-the-password" not in first
    assert not any(r.exc_info for r in lines)  # one clear line, no traceback
    # Once per backoff step: never more lines than attempts.
    assert len(lines) <= bad_poller.stats.failures
    assert bad_poller.alive and running.thread.is_alive()
    # The good mailbox kept working all along.
    dovecot.append(imap_user, messages(1, "good", start=2))
    wait_until(lambda: count(db_url, "ticket") == 3)


# --- exactly once: UIDVALIDITY, no MOVE, crashes in-process -----------------------------


class Crash(Exception):
    pass


def crash_at(point: str, nth: int = 1):
    seen = {"n": 0}

    def hook(name: str) -> None:
        if name == point:
            seen["n"] += 1
            if seen["n"] == nth:
                raise Crash(point)

    return hook


def test_uidvalidity_change_in_flag_mode_imports_only_new(
    db_url, dovecot, imap_user, password_file, intake_factory
):
    box = mailbox_table(dovecot, imap_user, password_file, folder="Support", after="flag")
    intake = intake_factory(db_url, imap_section(box))
    first = messages(4, "uv")
    dovecot.append(imap_user, first, folder="Support")
    stats = intake.drain()
    assert stats.stored == 4
    with dovecot.client(imap_user) as c:
        c.select_folder("Support")
        flags = c.get_flags(c.search("ALL"))
        assert all(b"\\Seen" in f and PROCESSED_KEYWORD.encode() in f for f in flags.values())
        old_validity = c.folder_status("Support", ["UIDVALIDITY"])[b"UIDVALIDITY"]
        # The folder is recreated (restored from a backup, migrated...): the same
        # four messages come back without our flags, with two new ones.
        c.unselect_folder()
        c.delete_folder("Support")
        c.create_folder("Support")
        for raw in [*first, *messages(2, "uv", start=4)]:
            c.append("Support", raw)
        assert c.folder_status("Support", ["UIDVALIDITY"])[b"UIDVALIDITY"] != old_validity
    poller = intake.poller()
    stats = poller.drain()
    assert stats.uidvalidity_changes == 1
    assert stats.stored == 2 and stats.duplicates == 4
    assert count(db_url, "inbound") == 6
    assert len({r[0] for r in rows(db_url, "select message_id from inbound")}) == 6
    # A third pass finds nothing to do.
    assert poller.drain().stored == 2 and count(db_url, "inbound") == 6
    assert dovecot.count(imap_user, "Support") == 6  # flag mode leaves them in place


def test_uidvalidity_change_after_commit_before_move(
    db_url, dovecot, imap_user, password_file, intake_factory
):
    box = mailbox_table(dovecot, imap_user, password_file, folder="Support")
    intake = intake_factory(db_url, imap_section(box))
    batch = messages(3, "cm")
    dovecot.append(imap_user, batch, folder="Support")
    with pytest.raises(Crash):
        intake.drain(hook=crash_at("after_commit"))
    assert count(db_url, "inbound") == 3 and dovecot.count(imap_user, "Processed") == 0
    # Before maild comes back the folder is recreated with the same messages.
    with dovecot.client(imap_user) as c:
        c.delete_folder("Support")
        c.create_folder("Support")
        for raw in batch:
            c.append("Support", raw)
    stats = intake.drain()
    assert stats.uidvalidity_changes == 1 and stats.stored == 0 and stats.duplicates == 3
    assert count(db_url, "inbound") == 3
    assert dovecot.count(imap_user, "Support") == 0
    assert sorted(dovecot.message_ids(imap_user, "Processed")) == sorted(
        f"<cm-{i}@example.org>" for i in range(3)
    )


def test_without_move_copy_delete_expunge_and_crash_after_copy(
    sqlite_url, dovecot, imap_user, password_file, intake_factory
):
    box = mailbox_table(dovecot, imap_user, password_file)
    intake = intake_factory(sqlite_url, imap_section(box, batch_size=4),
                            limits={"max_message_bytes": 1024 * 1024})  # fmt: skip
    intake.kwargs["client_factory"] = NoMoveIMAPClient
    dovecot.append(imap_user, messages(10, "nm"))
    with pytest.raises(Crash):  # copied to Processed, not yet deleted from INBOX
        intake.drain(hook=crash_at("after_copy", nth=2))
    assert dovecot.count(imap_user, "Processed") == 8 and dovecot.count(imap_user, "INBOX") == 6
    stats = intake.drain()
    assert stats.stored == 2
    assert dovecot.count(imap_user, "INBOX") == 0
    ids = dovecot.message_ids(imap_user, "Processed")
    assert sorted(ids) == sorted(f"<nm-{i}@example.org>" for i in range(10))  # none twice
    assert count(sqlite_url, "inbound") == 10


def test_crash_after_fetch_refetches_nothing_lost(
    db_url, dovecot, imap_user, password_file, intake_factory
):
    box = mailbox_table(dovecot, imap_user, password_file)
    intake = intake_factory(db_url, imap_section(box, batch_size=3))
    dovecot.append(imap_user, messages(7, "cf"))
    with pytest.raises(Crash):
        intake.drain(hook=crash_at("after_fetch", nth=2))
    assert count(db_url, "inbound") == 3
    intake.drain()
    assert count(db_url, "inbound") == 7
    assert sorted(dovecot.message_ids(imap_user, "Processed")) == sorted(
        f"<cf-{i}@example.org>" for i in range(7)
    )


# --- batches, odd messages, mailbox defaults -------------------------------------------


def test_backlog_is_read_in_bounded_batches_in_arrival_order(
    sqlite_url, dovecot, imap_user, password_file, intake_factory
):
    box = mailbox_table(dovecot, imap_user, password_file)
    # 1 MiB per batch, messages of ~300 KB: at most 3 per batch whatever batch_size says.
    intake = intake_factory(sqlite_url, imap_section(box, batch_size=50, batch_bytes=1024 * 1024))
    big = [make_message(message_id=f"<big-{i}@example.org>", body=("x" * 75 + "\n") * 4000)
           for i in range(8)]  # fmt: skip
    dovecot.append(imap_user, big)
    fetched: list[int] = []
    poller = intake.poller(hook=lambda name: fetched.append(1) if name == "after_fetch" else None)
    stats = poller.drain()
    assert stats.stored == 8 and stats.batches == len(fetched) >= 3
    ids = [r[0] for r in rows(sqlite_url, "select message_id from inbound order by id")]
    assert ids == [f"<big-{i}@example.org>" for i in range(8)]


def test_oversize_and_garbage_are_quarantined_with_reason(
    sqlite_url, dovecot, imap_user, password_file, intake_factory
):
    box = mailbox_table(dovecot, imap_user, password_file)
    intake = intake_factory(sqlite_url, imap_section(box), limits={"max_message_bytes": 20_000})
    huge = make_message(message_id="<huge@example.org>", body=("y" * 75 + "\n") * 1000)
    dovecot.append(imap_user, [huge, b"\x00\x01 not a message at all\r\n"])
    intake.drain()
    got = rows(sqlite_url, "select status, error, size, message_id from inbound order by id")
    assert got[0][0] == "quarantined" and "exceeds limits.max_message_bytes" in got[0][1]
    assert got[0][2] < 20_000 and got[0][3] == "<huge@example.org>"  # the header, kept
    assert got[1][0] == "quarantined" and "not an email message" in got[1][1]
    assert dovecot.count(imap_user, "Processed") == 2  # the full message is still there


def test_bounce_keeps_its_null_return_path(
    sqlite_url, dovecot, imap_user, password_file, intake_factory
):
    box = mailbox_table(dovecot, imap_user, password_file)
    intake = intake_factory(sqlite_url, imap_section(box))
    raw = b"Return-Path: <>\r\n" + make_message(message_id="<dsn@example.org>")
    dovecot.append(imap_user, [raw])
    intake.drain()
    assert rows(sqlite_url, "select envelope_from from inbound")[0][0] == ""
    desk = Desk(intake.settings)
    processed, _ = desk.drain()
    desk.close()
    assert processed[0].outcome == "ignored" and "null return path" in processed[0].reason


# --- TLS, XOAUTH2, several instances -----------------------------------------------


def test_implicit_tls_and_starttls_verify_the_server(
    sqlite_url, dovecot, imap_user, password_file, intake_factory
):
    implicit = mailbox_table(dovecot, imap_user, password_file, name="implicit", tls="implicit",
                             port=dovecot.tls_port, ca_file=str(dovecot.cert))  # fmt: skip
    starttls = mailbox_table(dovecot, imap_user, password_file, name="starttls", tls="starttls",
                             ca_file=str(dovecot.cert), folder="Other")  # fmt: skip
    untrusted = mailbox_table(dovecot, imap_user, password_file, name="untrusted",
                              tls="implicit", port=dovecot.tls_port)  # fmt: skip
    intake = intake_factory(sqlite_url, imap_section(implicit, starttls, untrusted))
    dovecot.append(imap_user, messages(1, "tls"))
    dovecot.append(imap_user, messages(1, "starttls"), folder="Other")
    assert intake.drain("implicit").stored == 1
    assert intake.drain("starttls").stored == 1
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        intake.drain("untrusted")  # a self-signed certificate not in the system store


def test_poller_threads_serve_one_instance_per_mailbox_on_postgresql(
    pg_url, dovecot, imap_user, password_file, intake_factory, caplog
):
    caplog.set_level(logging.INFO, logger="maild.intake.imap")
    db_url = pg_url  # the advisory lock is PostgreSQL's; SQLite has a single instance
    box = mailbox_table(dovecot, imap_user, password_file)
    intake = intake_factory(db_url, imap_section(box, poll_seconds=0.5))
    a, b = intake.poller(), intake.poller()
    a.start()
    wait_until(a.connected.is_set)
    b.start()
    dovecot.append(imap_user, messages(12, "pg"))
    wait_until(lambda: count(db_url, "inbound") == 12)
    # The second instance tried the lock (again after the import) and waits.
    waits = len(caplog.records)
    wait_until(lambda: any("another maild instance reads this mailbox" in r.getMessage()
                           for r in caplog.records[waits:]))  # fmt: skip
    assert b.stats.connects == 0  # waited for the lock while the first instance read
    a.stop()
    a.join(10)
    wait_until(b.connected.is_set)  # the lock is free: the second takes over
    dovecot.append(imap_user, messages(3, "pg", start=12))
    wait_until(lambda: count(db_url, "inbound") == 15)
    b.stop()
    b.join(10)
    assert sorted(dovecot.message_ids(imap_user, "Processed")) == sorted(
        f"<pg-{i}@example.org>" for i in range(15)
    )


def test_login_failure_raises_in_burst_mode(sqlite_url, dovecot, tmp_path, intake_factory):
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    intake = intake_factory(sqlite_url, imap_section(mailbox_table(dovecot, "x", wrong)))
    with pytest.raises(LoginFailed, match="AUTHENTICATIONFAILED"):
        intake.drain()


def test_stop_finishes_the_batch_in_hand(sqlite_url, dovecot, imap_user, password_file,
                                         intake_factory):  # fmt: skip
    box = mailbox_table(dovecot, imap_user, password_file)
    intake = intake_factory(sqlite_url, imap_section(box, batch_size=5))
    dovecot.append(imap_user, messages(20, "st"))
    gate = threading.Event()
    poller: MailboxPoller

    def hook(name: str) -> None:
        if name == "after_commit" and not gate.is_set():
            gate.set()
            poller.stop()  # asked to stop mid-batch: this batch still gets moved

    poller = intake.poller(hook=hook)
    poller.start()
    poller.join(10)
    assert not poller.alive
    stored = count(sqlite_url, "inbound")
    assert stored == 5
    assert dovecot.count(imap_user, "Processed") == 5
    assert dovecot.count(imap_user, "INBOX") == 15
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Inbound)).scalar_one() == 5
    engine.dispose()


class CountingIMAPClient(IMAPClient):
    """The real client, counting the IDLE commands it sends."""

    idles = 0

    def idle(self):
        type(self).idles += 1
        return super().idle()


class NoIdleIMAPClient(IMAPClient):
    """A client of a server without IDLE (RFC 2177): maild polls."""

    def capabilities(self):
        return tuple(c for c in super().capabilities() if c.upper() != b"IDLE")


def test_idle_is_renewed_and_polling_is_the_fallback(
    sqlite_url, dovecot, imap_user, password_file, intake_factory
):
    idling = mailbox_table(dovecot, imap_user, password_file, name="idling")
    polling = mailbox_table(dovecot, imap_user, password_file, name="polling", folder="Poll")
    intake = intake_factory(sqlite_url, imap_section(idling, polling, idle_seconds=0.4,
                                                     poll_seconds=0.3))  # fmt: skip
    with dovecot.client(imap_user) as c:
        c.create_folder("Poll")
    CountingIMAPClient.idles = 0
    a = intake.poller("idling", client_factory=CountingIMAPClient)
    b = intake.poller("polling", client_factory=NoIdleIMAPClient)
    a.start()
    b.start()
    try:
        wait_until(lambda: a.connected.is_set() and b.connected.is_set())
        # IDLE ended and issued again, as configured (every 0.4 s).
        wait_until(lambda: CountingIMAPClient.idles >= 3)
        dovecot.append(imap_user, messages(1, "renewed"))
        dovecot.append(imap_user, messages(1, "polled"), folder="Poll")
        wait_until(lambda: count(sqlite_url, "inbound") == 2)
        assert a.stats.failures == b.stats.failures == 0
    finally:
        for p in (a, b):
            p.stop()
            p.join(5)


class DeafIdleIMAPClient(IMAPClient):
    """IDLE on a server that announces nothing (as Dovecot, for a message
    delivered in the instant IDLE starts): only the keepalives come through."""

    def idle_check(self, timeout=None):
        deadline = time.monotonic() + (timeout or 0)
        while True:  # what it heard is dropped, and it goes on listening
            kept = [r for r in super().idle_check(timeout) if r[:1] in ((b"OK",), (b"BYE",))]
            timeout = deadline - time.monotonic()
            if kept or timeout <= 0:
                return kept


def test_mail_the_server_never_announces_comes_in(
    sqlite_url, dovecot, imap_user, password_file, intake_factory
):
    """IDLE is renewed only every 25 minutes; the poller looks again after
    imap.poll_seconds all the same."""
    box = mailbox_table(dovecot, imap_user, password_file)
    intake = intake_factory(sqlite_url, imap_section(box, poll_seconds=1.0, idle_seconds=1500))
    poller = intake.poller(client_factory=DeafIdleIMAPClient)
    poller.start()
    try:
        wait_until(poller.idling.is_set)
        dovecot.append(imap_user, messages(1, "unannounced"))
        wait_until(lambda: count(sqlite_url, "inbound") == 1, timeout=15)
        assert poller.stats.failures == 0
    finally:
        poller.stop()
        poller.join(5)


def test_reply_address_counts_only_from_the_named_delivery_header(
    sqlite_url, dovecot, imap_user, password_file, daemon_factory, tmp_path
):
    """Through IMAP there is no envelope: a personal reply address counts only in
    the field the admin names as the one the delivering server writes on top."""
    agents = [{"email": "anna@example.com", "name": "Anna Agent", "tier": 1}]
    box = mailbox_table(dovecot, imap_user, password_file, delivery_header="X-Original-To")
    daemon_factory(sqlite_url, imap=imap_section(box), agents=agents)
    dovecot.append(imap_user, [make_message(message_id="<first@example.org>")])
    notes = wait_until(lambda: [m for m in read_maildir(tmp_path / "outgoing")
                                if "anna" in str(m["To"])], timeout=10)  # fmt: skip
    token = notes[0]["Reply-To"].addresses[0].addr_spec

    def agent_reply(n: int, priority: str, headers: dict[str, str]) -> bytes:
        return make_message(sender="Anna Agent <anna@example.com>", to=token, subject="Re: x",
                            body=f"#priority {priority}\n", message_id=f"<a{n}@example.com>",
                            headers=headers)  # fmt: skip

    def priority() -> str:
        return rows(sqlite_url, "select priority from ticket where id = 1")[0][0]

    # The address in To and in a Delivered-To the sender wrote: not delivery.
    dovecot.append(imap_user, [agent_reply(1, "P1", {"Delivered-To": token})])
    wait_until(lambda: count(sqlite_url, "inbound") == 2 and rows(
        sqlite_url, "select status from inbound where id = 2")[0][0] == "done")  # fmt: skip
    assert priority() == 3
    # Written on top by the delivering server (here: the test, as Dovecot's LDA would).
    raw = b"X-Original-To: " + token.encode() + b"\r\n" + agent_reply(2, "P2", {})
    dovecot.append(imap_user, [raw])
    wait_until(lambda: priority() == 2)
