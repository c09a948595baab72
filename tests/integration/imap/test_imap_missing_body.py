"""IMAP against a real Dovecot whose FETCH answers lose BODY[] (or RFC822.SIZE)
for one UID, through a wrapper around imapclient's real client: the checkpoint
only passes UIDs actually stored, recovery stores before it moves, and the
skipped UID is logged and fetched again; nothing is moved unstored."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from imapclient import IMAPClient

from maild.intake.imap import MAX_FETCH_ATTEMPTS
from tests.integration.imap.conftest import imap_section, mailbox_table
from tests.integration.imap.test_imap_intake import count, messages, rows


class Lossy:
    """Which FETCH items the server "forgets" for which UID, and how many more times."""

    def __init__(self, drops: dict[int, int], items: tuple[bytes, ...] = (b"BODY[]",)) -> None:
        self.drops = dict(drops)  # UID -> times left (-1: always)
        self.items = items
        self.dropped: list[int] = []

    def factory(self) -> Callable[..., IMAPClient]:
        plan = self

        class LossyIMAPClient(IMAPClient):
            def fetch(self, messages: Any, data: Any, modifiers: Any = None) -> Any:
                answer = super().fetch(messages, data, modifiers)
                wanted = {d.upper() if isinstance(d, str) else d.decode().upper() for d in data}
                for uid, fields in answer.items():
                    left = plan.drops.get(uid, 0)
                    items = [i for i in plan.items if i in fields]
                    body = "BODY.PEEK[]" in wanted or "RFC822.SIZE" in wanted
                    if left and items and body:
                        for item in items:
                            del fields[item]
                        plan.dropped.append(uid)
                        if left > 0:
                            plan.drops[uid] = left - 1
                return answer

        return LossyIMAPClient


def checkpoint(db_url: str) -> int:
    return rows(db_url, "select last_uid from imap_checkpoint")[0][0]


def stored_ids(db_url: str) -> list[str]:
    return [r[0] for r in rows(db_url, "select message_id from inbound order by id")]


def test_a_uid_without_its_body_holds_the_checkpoint_and_is_fetched_again(
    db_url, dovecot, imap_user, password_file, intake_factory, caplog
):
    box = mailbox_table(dovecot, imap_user, password_file)
    intake = intake_factory(db_url, imap_section(box, batch_size=2))
    dovecot.append(imap_user, messages(6, "mb"))  # UIDs 1..6
    lossy = Lossy({3: 1})  # the first FETCH of UID 3 comes back without BODY[]
    poller = intake.poller(client_factory=lossy.factory())
    with caplog.at_level(logging.WARNING, logger="maild.intake.imap"):
        poller.drain()
    assert lossy.dropped == [3]
    assert sorted(stored_ids(db_url)) == sorted(f"<mb-{i}@example.org>" for i in (0, 1, 3, 4, 5))
    assert checkpoint(db_url) == 2  # not past UID 3, though 4-6 are stored
    assert dovecot.message_ids(imap_user, "INBOX") == ["<mb-2@example.org>"]  # never moved
    assert dovecot.count(imap_user, "Processed") == 5
    assert "no body for UID(s) 3" in caplog.text
    # The next pass fetches it again (the same poller, as the daemon's thread would).
    poller.drain()
    assert sorted(stored_ids(db_url)) == sorted(f"<mb-{i}@example.org>" for i in range(6))
    assert count(db_url, "inbound") == 6  # none twice
    assert checkpoint(db_url) == 3  # (4-6 were stored and moved on the first pass)
    assert dovecot.count(imap_user, "INBOX") == 0 and dovecot.count(imap_user, "Processed") == 6


def test_a_uid_without_its_size_is_fetched_whole(
    db_url, dovecot, imap_user, password_file, intake_factory
):
    box = mailbox_table(dovecot, imap_user, password_file)
    intake = intake_factory(db_url, imap_section(box))
    dovecot.append(imap_user, messages(3, "ns"))
    lossy = Lossy({2: -1}, items=(b"RFC822.SIZE",))
    intake.poller(client_factory=lossy.factory()).drain()
    assert 2 in lossy.dropped
    assert count(db_url, "inbound") == 3 and checkpoint(db_url) == 3
    assert dovecot.count(imap_user, "INBOX") == 0


def test_recovery_stores_what_the_checkpoint_passed_before_it_moves_anything(
    sqlite_url, dovecot, imap_user, password_file, intake_factory
):
    """The checkpoint says UIDs 1-4 are stored, the database has none of them (what
    the old skip left behind): recovery stores them first, and leaves in the
    folder the one the server will not give."""
    box = mailbox_table(dovecot, imap_user, password_file, after="flag")
    intake = intake_factory(sqlite_url, imap_section(box))
    dovecot.append(imap_user, messages(6, "rc"))
    with dovecot.client(imap_user) as c:
        uidvalidity = int(c.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"])
    from datetime import UTC, datetime

    from maild.intake.imap import save_checkpoint

    with intake.sessions.begin() as session:
        save_checkpoint(session, "support", "INBOX", uidvalidity, 4, datetime.now(UTC))
    lossy = Lossy({2: 1})
    poller = intake.poller(client_factory=lossy.factory())
    poller.drain()
    assert sorted(stored_ids(sqlite_url)) == sorted(
        f"<rc-{i}@example.org>" for i in (0, 2, 3, 4, 5))  # fmt: skip
    with dovecot.client(imap_user) as c:
        c.select_folder("INBOX", readonly=True)
        unflagged = c.search(["UNKEYWORD", "$MaildProcessed"])
    assert unflagged == [2]  # stored nowhere, so not flagged
    poller.drain()
    assert count(sqlite_url, "inbound") == 6
    with dovecot.client(imap_user) as c:
        c.select_folder("INBOX", readonly=True)
        assert c.search(["UNKEYWORD", "$MaildProcessed"]) == []


def test_a_uid_that_never_comes_is_quarantined_after_the_last_attempt(
    sqlite_url, dovecot, imap_user, password_file, intake_factory
):
    box = mailbox_table(dovecot, imap_user, password_file)
    intake = intake_factory(sqlite_url, imap_section(box))
    dovecot.append(imap_user, messages(3, "nv"))
    lossy = Lossy({2: -1})
    poller = intake.poller(client_factory=lossy.factory())
    for _ in range(MAX_FETCH_ATTEMPTS - 1):
        poller.drain()
        assert checkpoint(sqlite_url) == 1 and count(sqlite_url, "inbound") == 2
    poller.drain()
    assert checkpoint(sqlite_url) == 2  # past it at last (3 went on the first pass)
    (row,) = rows(sqlite_url, "select status, error, message_id from inbound where status = "
                              "'quarantined'")  # fmt: skip
    assert row[2] == "<nv-1@example.org>"  # its header, kept with the reason
    assert "sent no body for UID 2" in row[1] and "stays in IMAP folder 'Processed'" in row[1]
    assert dovecot.count(imap_user, "Processed") == 3 and dovecot.count(imap_user, "INBOX") == 0


def test_the_daemons_loop_fetches_a_skipped_uid_again_with_nothing_new(
    sqlite_url, dovecot, imap_user, password_file, intake_factory
):
    """A pass with UIDNEXT unchanged normally stops at once; not while a UID waits."""
    from maild.intake.imap import connect

    box = mailbox_table(dovecot, imap_user, password_file)
    intake = intake_factory(sqlite_url, imap_section(box))
    dovecot.append(imap_user, messages(4, "lp"))
    lossy = Lossy({2: 1})
    poller = intake.poller(client_factory=lossy.factory())
    client = connect(poller.mailbox, 10, lossy.factory())
    try:
        poller.sync(client)  # as the thread does between IDLEs, on one connection
        assert count(sqlite_url, "inbound") == 3
        poller.sync(client)
        assert count(sqlite_url, "inbound") == 4 and poller.stats.skipped == 1
        assert dovecot.count(imap_user, "INBOX") == 0
    finally:
        client.logout()


def test_the_same_mail_by_smtp_and_by_imap_is_one_message(
    sqlite_url, dovecot, imap_user, password_file, intake_factory, daemon_factory
):
    """The MX delivers to maild over SMTP and into the mailbox maild also reads."""
    from tests.integration.test_smtp_intake import send, wait_until
    from tests.support.desk import make_message

    running = daemon_factory(sqlite_url)
    raw = make_message(message_id="<both-ways@example.org>", subject="Monitor flickers")
    send(running.port, raw)
    wait_until(lambda: count(sqlite_url, "ticket") == 1, timeout=20)
    # The mailbox copy, as the MX's local delivery wrote it.
    copy = (b"Return-Path: <bob@example.org>\r\nDelivered-To: help@example.com\r\n"
            b"Received: from mx.example.com by imap.example.com (Dovecot) with LMTP\r\n"
            b"\tid 7b3; Mon, 30 Nov 2026 09:00:01 +0000\r\n") + raw  # fmt: skip
    dovecot.append(imap_user, [copy])
    box = mailbox_table(dovecot, imap_user, password_file)
    stats = intake_factory(sqlite_url, imap_section(box)).drain()
    assert stats.stored == 0 and stats.duplicates == 1
    assert count(sqlite_url, "inbound") == 1 and count(sqlite_url, "ticket") == 1
    assert dovecot.count(imap_user, "Processed") == 1
