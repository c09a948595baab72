"""Duplicates by content, not by Message-ID alone, through the SMTP listener and
`maild ingest`: a redelivery is one message; a reused Message-ID on other
content is a new message, stored and flagged."""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
from datetime import UTC, datetime

from tests.integration.test_fates import cli_config, maild, outgoing, query, settled
from tests.integration.test_smtp_intake import wait_until
from tests.support.desk import make_message

SCAN = datetime(2026, 11, 30, 9, 15, 2, tzinfo=UTC)


def send(port: int, raw: bytes, sender: str = "bob@example.org") -> bytes:
    """The final answer to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.mail(sender)
        client.rcpt("help@example.com")
        code, answer = client.data(raw)
        assert code == 250, answer
        return answer


def relayed(raw: bytes, hop: str) -> bytes:
    """The same message as another relay hands it on: its trace fields on top."""
    trace = (f"Return-Path: <bob@example.org>\r\nReceived: from {hop} ({hop} [192.0.2.7])\r\n"
             f"\tby mx2.example.com (Postfix) with ESMTPS id 9Q{hop[:3]}\r\n"
             f"\tfor <help@example.com>; Mon, 30 Nov 2026 09:20:00 +0000 (UTC)\r\n")  # fmt: skip
    return trace.encode() + raw


def test_a_redelivery_through_another_relay_is_one_message(db_url, daemon_factory, tmp_path):
    running = daemon_factory(db_url)
    raw = make_message(message_id="<once@example.org>", date=SCAN)
    assert b"stored as inbound 1" in send(running.port, raw)
    # The backup MX delivers its copy too, with its own Received and Return-Path,
    # and a relay that left trailing spaces on the last line.
    again = relayed(raw, "backup-mx.example.com").replace(b"Bob\r\n", b"Bob  \r\n")
    assert b"duplicate of inbound 1" in send(running.port, again)
    # And an MTA pipes a third copy to `maild ingest`, with bare LF line endings.
    piped = relayed(raw, "mx3.example.com").replace(b"\r\n", b"\n")
    proc = subprocess.run([sys.executable, "-m", "maild", "--config",
                           str(cli_config(tmp_path, db_url)), "ingest"],
                          input=piped, capture_output=True, timeout=60, env=os.environ.copy())  # fmt: skip
    assert proc.returncode == 0 and b"duplicate of inbound 1" in proc.stderr
    wait_until(lambda: settled(db_url, 1), timeout=30)
    assert query(db_url, "select count(*) from inbound")[0][0] == 1
    assert query(db_url, "select count(*) from ticket")[0][0] == 1
    wait_until(lambda: outgoing(tmp_path), timeout=10)
    assert len(outgoing(tmp_path)) == 1


def scan(number: int, when: datetime) -> bytes:
    """A scanner that writes the same fixed Message-ID on every mail."""
    return make_message(sender="Scanner 3F <scanner-3f@example.org>",
                        subject=f"Scan from 3rd floor MFP ({number})",
                        body=f"Scanned document {number} attached.\n", message_id="<msg1>",
                        date=when)  # fmt: skip


def test_a_reused_message_id_on_other_content_is_a_new_message(db_url, daemon_factory,
                                                                tmp_path):  # fmt: skip
    running = daemon_factory(db_url)
    assert b"stored as inbound 1" in send(running.port, scan(1, SCAN), "scanner-3f@example.org")
    later = SCAN.replace(minute=40)
    assert b"stored as inbound 2" in send(running.port, scan(2, later), "scanner-3f@example.org")
    # The second one resent (a client retry) is a duplicate of the second, not the first.
    assert b"duplicate of inbound 2" in send(running.port, scan(2, later),
                                             "scanner-3f@example.org")  # fmt: skip
    wait_until(lambda: settled(db_url, 2), timeout=30)
    assert sorted(r[0] for r in query(db_url, "select subject from ticket")) == [
        "Scan from 3rd floor MFP (1)", "Scan from 3rd floor MFP (2)"]  # fmt: skip
    rows = json.loads(maild(cli_config(tmp_path, db_url), "inbound", "list", "--json").stdout)
    assert [(r["id"], r["fate"], r["message_id_clash"]) for r in rows] == [
        (2, "ticket", 1), (1, "ticket", None)]  # fmt: skip
    shown = maild(cli_config(tmp_path, db_url), "inbound", "show", "2").stdout
    assert "reused Message-ID: inbound 1 has the same one with other content" in shown


def test_a_list_copy_of_a_recorded_message_is_not_a_second_ticket(sqlite_url, daemon_factory):
    running = daemon_factory(sqlite_url)
    direct = make_message(to="users@lists.example.org, help@example.com",
                          message_id="<post-7@example.org>", date=SCAN,
                          subject="VPN drops every hour")  # fmt: skip
    send(running.port, direct)
    # The list's copy: the same Message-ID, From and Date, a subject tag and a footer.
    copy = make_message(to="users@lists.example.org", message_id="<post-7@example.org>",
                        date=SCAN, subject="[users] VPN drops every hour",
                        body="Hello,\n\nthe printer on the 3rd floor shows error E42.\n\nBob\n"
                             "--\nusers mailing list\n",
                        headers={"Cc": "help@example.com",
                                 "List-Id": "<users.lists.example.org>"})  # fmt: skip
    assert b"stored as inbound 2" in send(running.port, copy)
    wait_until(lambda: settled(sqlite_url, 2), timeout=30)
    assert query(sqlite_url, "select count(*) from ticket")[0][0] == 1
    assert query(sqlite_url, "select status, rule, message_id_clash from inbound where id = 2") == [
        ("ignored", "already_recorded", 1)]  # fmt: skip
