"""`maild import` keeps the past: an old desk's archive (mbox) gets its own dates
on tickets, articles and events, SLA deadlines from them without alarms now,
the old desk's replies as outgoing articles on their threads, and
`--close-before` closes the old tickets."""

from __future__ import annotations

import mailbox
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from pathlib import Path

from tests.integration.test_fates import cli_config, outgoing, query
from tests.support.desk import make_message

DESK = "Old Help Desk <help@example.com>"


def archive(path: Path) -> Path:
    """The old desk's mailbox, exported as mbox: requests, its own acknowledgement
    and reply, the requester's answer, in the order they happened."""
    d = lambda *a: datetime(*a, tzinfo=UTC)  # noqa: E731
    msgs = [
        make_message(message_id="<a1@example.org>", subject="VPN fails from home",
                     body="The VPN client says authentication failed.\n", date=d(2025, 3, 3, 9)),
        make_message(sender=DESK, to="bob@example.org", subject="Re: VPN fails from home",
                     message_id="<ack-a1@olddesk.example>", in_reply_to="<a1@example.org>",
                     references="<a1@example.org>", body="We received your request.\n",
                     date=d(2025, 3, 3, 9, 0, 5), headers={"Auto-Submitted": "auto-replied"}),
        make_message(sender=DESK, to="bob@example.org", subject="Re: VPN fails from home",
                     message_id="<r1@olddesk.example>", in_reply_to="<a1@example.org>",
                     references="<a1@example.org>", date=d(2025, 3, 3, 10, 30),
                     body="Your password expired; reset it at https://pw.example.com.\n"),
        make_message(subject="Re: VPN fails from home", message_id="<a2@example.org>",
                     in_reply_to="<r1@olddesk.example>",
                     references="<a1@example.org> <r1@olddesk.example>",
                     body="That was it, thanks!\n", date=d(2025, 3, 4, 8)),
        make_message(sender="Carol Customer <carol@example.org>", message_id="<c1@example.org>",
                     subject="Docking station dead", body="My docking station is dead.\n",
                     date=d(2025, 11, 20, 14)),
        make_message(sender="Dave <dave@example.org>", message_id="<f1@example.org>",
                     subject="Keyboard missing keys", body="Two keys came off.\n",
                     date=d(2099, 1, 1, 12)),  # a broken clock: taken as now
    ]  # fmt: skip
    box = mailbox.mbox(path)
    for raw in msgs:
        box.add(raw)
    box.flush()
    box.close()
    return path


def maild(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy())  # fmt: skip


def test_import_keeps_the_past(db_url, tmp_path):
    cfg = cli_config(tmp_path, db_url)
    started = datetime.now(UTC)
    done = maild(cfg, "import", str(archive(tmp_path / "old.mbox")), "--close-before",
                 "2025-06-01")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tickets created:   3" in done.stdout
    assert "replies threaded:  3 (2 the help desk's own)" in done.stdout
    assert "closed (last message before 2025-06-01): 1" in done.stdout

    tickets = {r[0]: r[1:] for r in query(db_url, "select subject, created_at, status, "
                                                  "first_response_at, first_response_due, "
                                                  "closed_at from ticket")}  # fmt: skip
    vpn = tickets["VPN fails from home"]
    assert str(vpn[0]).startswith("2025-03-03 09:00")  # the archive's date
    assert vpn[1] == "closed" and str(vpn[4]).startswith("2025-03-04 08:00")  # its last message
    assert str(vpn[2]).startswith("2025-03-03 10:30")  # the old desk's reply, not its ack
    assert str(vpn[3]).startswith("2025-03-03")  # the deadline from the archive's date
    assert str(tickets["Docking station dead"][0]).startswith("2025-11-20 14:00")
    assert tickets["Docking station dead"][1] == "open"
    keyboard = tickets["Keyboard missing keys"][0]
    keyboard = keyboard if isinstance(keyboard, datetime) else datetime.fromisoformat(str(keyboard))
    assert keyboard.replace(tzinfo=UTC) >= started.replace(microsecond=0)

    # The old desk's mail: outgoing articles on the thread, with their own dates.
    rows = query(db_url, "select message_id, direction, kind, visibility, created_at "
                         "from article where ticket_id = 1 and inbound_id is not null "
                         "order by id")  # fmt: skip
    assert [tuple(r[:4]) for r in rows] == [
        ("<a1@example.org>", "in", "message", "public"),
        ("<ack-a1@olddesk.example>", "out", "notification", "public"),
        ("<r1@olddesk.example>", "out", "message", "public"),
        ("<a2@example.org>", "in", "message", "public"),
    ]
    assert [str(r[4])[:16] for r in rows] == ["2025-03-03 09:00", "2025-03-03 09:00",
                                              "2025-03-03 10:30", "2025-03-04 08:00"]  # fmt: skip
    # What happened in the archive is dated there; the mail the import sent, today.
    events = {r[0]: str(r[1])[:10] for r in query(
        db_url, "select kind, max(at) from event where ticket_id = 1 group by kind")}  # fmt: skip
    assert {k: v for k, v in events.items() if not k.endswith("_queued")} == {
        "created": "2025-03-03", "article_added": "2025-03-04", "first_response": "2025-03-03",
        "status": "2025-03-04"}  # fmt: skip
    assert events["ack_queued"] == started.date().isoformat()

    # Past deadlines raise no alarm now: the sweep finds nothing to say.
    acks = len(outgoing(tmp_path))  # the acknowledgements of the import (it notified)
    swept = maild(cfg, "sweep")
    assert swept.returncode == 0, swept.stderr
    assert len(outgoing(tmp_path)) == acks
    assert query(db_url, "select count(*) from event where kind like 'sla%'") == [(0,)]

    # Importing it again stores nothing twice.
    again = maild(cfg, "import", str(tmp_path / "old.mbox"))
    assert "already stored:    6" in again.stdout
    assert query(db_url, "select count(*) from article where inbound_id is not null") == [(6,)]


def burst_archive(path: Path, start: datetime, tag: str) -> Path:
    """Six people report one e-mail outage, three minutes apart from `start`."""
    box = mailbox.mbox(path)
    for i, (who, subject, body) in enumerate(OUTAGE):
        box.add(make_message(sender=who, subject=subject, body=body,
                             message_id=f"<{tag}-{i}@example.org>",
                             date=start + timedelta(minutes=3 * i)))  # fmt: skip
    box.flush()
    box.close()
    return path


OUTAGE = [
    ("Alice <alice@example.org>", "Email not working", "I cannot send any email since 9:00."),
    ("Bob <bob@example.org>", "Outlook cannot connect", "Outlook cannot connect to the server."),
    ("Carl <carl@example.org>", "e-mail down?", "My e-mail is not working, error 0x800CCC0E."),
    ("Dana <dana@example.org>", "Cannot receive email", "No new email in my inbox all morning."),
    ("Eve <eve@example.org>", "Outlook error", "Outlook keeps asking for my password."),
    ("Finn <finn@example.org>", "Mail broken", "My email has stopped working since this morning."),
]  # fmt: skip


def import_with_majors(cfg: Path, mbox: Path) -> subprocess.CompletedProcess[str]:
    """`maild import` with major incidents on (tests/conftest.py turns them off)."""
    return subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), "import",
                           str(mbox)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MAILD_MAJOR__ENABLED": "true"})  # fmt: skip


def test_an_outage_in_todays_backlog_is_a_major_incident(db_url, tmp_path):
    """A burst from the last half hour (a mailbox that piled up while maild was
    down) is today's outage: one major incident over the six, tier 3 told."""
    cfg = cli_config(tmp_path, db_url)
    with cfg.open("a") as fh:
        fh.write('tier3 = ["tier3@example.com"]\nduty_manager = ["duty@example.com"]\n')
    start = datetime.now(UTC) - timedelta(minutes=20)
    done = import_with_majors(cfg, burst_archive(tmp_path / "backlog.mbox", start, "today"))
    assert done.returncode == 0, done.stderr
    assert query(db_url, "select count(*) from ticket where major")[0][0] == 1
    assert query(db_url, "select count(*) from ticket where major_id is not null")[0][0] == 6
    told = {a for _n, a in getaddresses([str(m["To"]) for m in outgoing(tmp_path)])}
    assert "tier3@example.com" in told, told


def test_an_old_outage_in_an_archive_joins_nothing_of_today(db_url, tmp_path):
    """Today's outage is a major incident; then last year's archive is imported,
    with the same outage in it. Its six incidents stay old tickets of their own:
    none joins today's major incident (nor makes one), and nobody is told of them
    beyond each requester's acknowledgement."""
    cfg = cli_config(tmp_path, db_url)
    with cfg.open("a") as fh:
        fh.write('tier3 = ["tier3@example.com"]\nduty_manager = ["duty@example.com"]\n')
    today = burst_archive(tmp_path / "backlog.mbox", datetime.now(UTC) - timedelta(minutes=20),
                          "today")  # fmt: skip
    assert import_with_majors(cfg, today).returncode == 0
    before = len(outgoing(tmp_path))
    old = burst_archive(tmp_path / "old.mbox", datetime(2025, 5, 6, 9, tzinfo=UTC), "old")
    done = import_with_majors(cfg, old)
    assert done.returncode == 0, done.stderr
    assert "tickets created:   6" in done.stdout
    assert query(db_url, "select count(*) from ticket where major")[0][0] == 1
    old_tickets = query(db_url, "select major_id from ticket where created_at < '2026-01-01'")
    assert len(old_tickets) == 6 and all(m is None for (m,) in old_tickets), old_tickets
    sent = outgoing(tmp_path)[before:]
    told = [a for _n, a in getaddresses([str(m["To"]) for m in sent])]
    requesters = sorted(who.split("<")[1].rstrip(">") for who, _s, _b in OUTAGE)
    assert sorted(a for a in told if not a.startswith("tier1@")) == requesters, told  # acks only
