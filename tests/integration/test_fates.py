"""Every message has a visible fate: spam verdicts, list and group mail, and
`maild inbound list / show / replay`, through the daemon's real SMTP listener
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from maild.store.db import make_engine
from tests.integration.test_smtp_intake import send, wait_until
from tests.support.desk import make_message, read_maildir, reply_to

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_RETURN_PATH = re.compile(rb"^Return-Path: <([^>]*)>", re.MULTILINE)


def query(db_url: str, sql: str) -> list:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


def settled(db_url: str, total: int) -> bool:
    done = query(db_url, "select count(*) from inbound where status not in "
                         "('pending', 'processing')")[0][0]  # fmt: skip
    return done == total


def fixture(name: str) -> tuple[bytes, str]:
    raw = (FIXTURES / name).read_bytes()
    found = _RETURN_PATH.search(raw)
    return raw, found.group(1).decode() if found else "bob@example.org"


def cli_config(tmp_path: Path, db_url: str) -> Path:
    cfg = tmp_path / "cli.toml"
    cfg.write_text(
        f'[database]\nurl = "{db_url}"\n'
        '[helpdesk]\naddresses = ["help@example.com"]\ndomain = "helpdesk.example.com"\n'
        f'secret_file = "{tmp_path / "secret.key"}"\n'
        f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n'
        '[worker]\nparse_processes = 0\n[tiers]\ntier1 = ["tier1@example.com"]\n'
    )
    return cfg


def maild(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "USER": "olga"})  # fmt: skip


def outgoing(tmp_path: Path) -> list:
    return read_maildir(tmp_path / "outgoing")


def test_spam_is_stored_as_spam_never_ticketed_or_answered(db_url, daemon_factory, tmp_path):
    running = daemon_factory(db_url, tiers={"tier1": ["tier1@example.com"]})
    names = ["spam/spamassassin_yes.eml", "spam/rspamd_add_header.eml",
             "spam/rspamd_score_only.eml", "spam/spamassassin_no.eml"]  # fmt: skip
    for name in names:
        raw, mail_from = fixture(name)
        send(running.port, raw, sender=mail_from)
    wait_until(lambda: settled(db_url, len(names)), timeout=30)

    # Only the ham is a ticket: one acknowledgement to Carol, one notice to tier 1.
    assert query(db_url, "select subject from ticket") == [
        ("Scanner on 2nd floor sends empty PDFs",)
    ]
    wait_until(lambda: len(outgoing(tmp_path)) == 2, timeout=10)
    assert sorted(m["To"].addresses[0].addr_spec for m in outgoing(tmp_path)) == [
        "carol@example.org", "tier1@example.com"
    ]  # fmt: skip

    listed = maild(cli_config(tmp_path, db_url), "inbound", "list", "--outcome", "spam", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(r["subject"] for r in rows) == [
        "80% off printer toner, this week only", "Double your savings in a week",
        "Your mailbox will be suspended - verify now"]  # fmt: skip
    assert {r["fate"] for r in rows} == {"spam"} and {r["rule"] for r in rows} == {
        "has_spam_verdict"
    }
    reasons = {r["subject"][:4]: r["reason"] for r in rows}
    assert "X-Spam-Flag: YES" in reasons["Your"]
    assert "X-Spam: Yes" in reasons["80% "]
    assert "12.3" in reasons["Doub"] and "spam_threshold" in reasons["Doub"]


def test_spam_reply_leaves_a_trace_and_a_person_can_replay_it(sqlite_url, daemon_factory,
                                                             tmp_path):  # fmt: skip
    running = daemon_factory(sqlite_url)
    send(running.port, make_message(message_id="<req-1@example.org>"))
    (ack,) = wait_until(lambda: outgoing(tmp_path), timeout=10)
    # The requester's reply, which the MX scored as spam (a false positive).
    reply = reply_to(ack, sender="Bob Customer <bob@example.org>", body="Still broken: see logs.",
                     headers={"X-Spam-Status": "Yes, score=6.1 required=5.0 tests=X"})  # fmt: skip
    send(running.port, reply)
    spammy_new = make_message(sender="Zed <zed@example.net>", subject="Cheap licences",
                              message_id="<zz-1@example.net>", headers={"X-Spam-Flag": "YES"})  # fmt: skip
    send(running.port, spammy_new, sender="zed@example.net")
    wait_until(lambda: settled(sqlite_url, 3), timeout=30)
    assert query(sqlite_url, "select count(*) from article where message_id = "
                             "'<reply-1@example.org>'")[0][0] == 0  # fmt: skip
    (held,) = query(sqlite_url, "select ticket_id, detail from event where kind = 'spam_held'")
    assert held[0] == 1 and '"inbound": 2' in held[1]
    assert len(outgoing(tmp_path)) == 1

    cfg = cli_config(tmp_path, sqlite_url)
    shown = maild(cfg, "inbound", "show", "2")
    assert shown.returncode == 0 and "spam (ticket #1)" in shown.stdout
    assert "has_spam_verdict: spam: X-Spam-Status: Yes" in shown.stdout

    done = maild(cfg, "inbound", "replay", "2", "3", "1", "99")
    # (whether this command or the running daemon processed them, the same fate)
    assert "inbound 2: recorded on ticket #1" in done.stdout
    assert "inbound 3: opened ticket #2" in done.stdout
    assert "inbound 1: not replayed: already on ticket #1" in done.stdout
    assert "inbound 99: not replayed: no such inbound message" in done.stdout
    assert done.returncode == 66
    # Now on the ticket, and the new one acknowledged, each with who chose it.
    assert query(sqlite_url, "select ticket_id, kind from article where message_id = "
                             "'<reply-1@example.org>'") == [(1, "message")]  # fmt: skip
    replays = query(sqlite_url, "select ticket_id, actor, detail from event where kind = "
                                "'replayed' order by ticket_id")  # fmt: skip
    assert [(t, a) for t, a, _d in replays] == [(1, "olga@cli"), (2, "olga@cli")]
    assert "spam (has_spam_verdict)" in replays[0][2]
    acks = [
        m for m in outgoing(tmp_path) if str(m["To"]) == "zed@example.net"
    ]  # unverified: no name
    assert len(acks) == 1 and acks[0]["Subject"].startswith("[#2]")
    listed = json.loads(maild(cfg, "inbound", "list", "--json").stdout)
    assert [(r["id"], r["fate"], r["replayed_by"]) for r in listed] == [
        (3, "ticket", "olga@cli"), (2, "reply", "olga@cli"), (1, "ticket", None)
    ]  # fmt: skip


def test_group_mail_is_a_ticket_without_acknowledgement(db_url, daemon_factory, tmp_path):
    running = daemon_factory(db_url, tiers={"tier1": ["tier1@example.com"]})
    for name in ("lists/google_groups.eml", "lists/group_bcc.eml", "mail/list_mail.eml"):
        raw, mail_from = fixture(name)
        send(running.port, raw, sender=mail_from)
    wait_until(lambda: settled(db_url, 3), timeout=30)
    assert sorted(r[0] for r in query(db_url, "select subject from ticket")) == [
        "Cannot log in to the build server", "Door badge reader in lobby B is dead"
    ]  # fmt: skip
    assert {r[0] for r in query(db_url, "select status from ticket")} == {"open"}
    # Nothing to the requesters (it would have gone to the whole group); the tier is told.
    wait_until(lambda: len(outgoing(tmp_path)) == 2, timeout=10)
    mails = outgoing(tmp_path)
    assert {m["To"].addresses[0].addr_spec for m in mails} == {"tier1@example.com"}
    body = mails[0].get_body(preferencelist=("plain",)).get_content()
    assert "no acknowledgement" in body and "list or group" in body
    # The list we only subscribe to is ignored, visibly, with its rule.
    rows = json.loads(maild(cli_config(tmp_path, db_url), "inbound", "list", "--outcome",
                            "ignored", "--json").stdout)  # fmt: skip
    assert [(r["subject"], r["rule"]) for r in rows] == [
        ("[users] Release 4.2 is out", "is_list_mail")
    ]
    assert "not addressed to us" in rows[0]["reason"]


def test_a_group_address_can_be_acknowledged_anyway(sqlite_url, daemon_factory, tmp_path):
    running = daemon_factory(sqlite_url, screening={"group_addresses": ["help@example.com"]})
    raw, mail_from = fixture("lists/google_groups.eml")
    # Google Groups may set Reply-To to the group itself: the answer still goes to Dave.
    raw = raw.replace(b"To: help@example.com\r\n",
                      b"To: help@example.com\r\nReply-To: help@example.com\r\n")  # fmt: skip
    send(running.port, raw, sender=mail_from)
    (ack,) = wait_until(lambda: outgoing(tmp_path), timeout=10)
    # (to the From, never the Reply-To; no display name: nothing verifies Dave, issue 14)
    assert str(ack["To"]) == "dave@example.org"
    assert ack["Subject"].startswith("[#1] Cannot log in")


def test_inbound_list_filters(sqlite_url, daemon_factory, tmp_path):
    running = daemon_factory(sqlite_url)
    send(running.port, make_message())
    send(running.port, make_message(message_id="<ooo@example.org>", headers={
        "Auto-Submitted": "auto-replied"}, subject="Out of office"))  # fmt: skip
    wait_until(lambda: settled(sqlite_url, 2), timeout=30)
    cfg = cli_config(tmp_path, sqlite_url)
    both = json.loads(maild(cfg, "inbound", "list", "--outcome", "ticket", "--outcome",
                            "ignored", "--json").stdout)  # fmt: skip
    assert [(r["fate"], r["rule"]) for r in both] == [
        ("ignored", "is_auto_submitted"),
        ("ticket", None),
    ]
    assert json.loads(maild(cfg, "inbound", "list", "--since", "2999-01-01", "--json").stdout) == []
    plain = maild(cfg, "inbound", "list")
    assert "is_auto_submitted: automated: Auto-Submitted: auto-replied" in plain.stdout
    bad = maild(cfg, "inbound", "list", "--since", "yesterday")
    assert bad.returncode == 64 and "--since" in bad.stderr
