"""`maild import` keeps the past: an old desk's archive (mbox) gets its own dates
on tickets, articles and events, SLA deadlines from them without alarms now,
the old desk's replies as outgoing articles on their threads, and
`--close-before` closes the old tickets."""

from __future__ import annotations

import mailbox
import os
import subprocess
import sys
from datetime import UTC, datetime
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
