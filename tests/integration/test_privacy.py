"""Privacy duties (issue 17): retention, a person's data exported and erased.

The erasure test scans the SQLite database file and its WAL byte by byte
after ``maild contact erase``: the person's address, name, words and
attachment must be nowhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select, text

from maild.desk.privacy import retention_sweep
from maild.store.models import Inbound, InboundRaw, Outbox
from maild.store.states import Outcome
from tests.support.desk import Desk, make_message, make_settings, reply_to

NAME = "Bobbington Quuxley"
ADDRESS = "bob.quuxley@example.org"
WORD = "zebracornflakes"
ATTACHMENT = b"ATTACHMENT-SECRET-" + b"7" * 64
AGENTS = [{"email": "anna@example.com", "name": "Anna Agent"}]


def with_attachment(**kw) -> bytes:
    msg = EmailMessage()
    msg["From"] = kw.get("sender", f"{NAME} <{ADDRESS}>")
    msg["To"] = "help@example.com"
    msg["Subject"] = kw.get("subject", f"Printer {WORD} broken")
    msg["Message-ID"] = kw.get("message_id", "<bob-1@example.org>")
    if "cc" in kw:
        msg["Cc"] = kw["cc"]
    msg.set_content(kw.get("body", f"Hello, the printer says {WORD}.\n\n{NAME}\n"))
    msg.add_attachment(ATTACHMENT, maintype="application", subtype="octet-stream",
                       filename="quuxley-scan.bin")  # fmt: skip
    return msg.as_bytes()


def config(tmp_path: Path, db_url: str) -> Path:
    cfg = tmp_path / "maild.toml"
    cfg.write_text(
        f'[database]\nurl = "{db_url}"\n'
        f'[helpdesk]\nsecret_file = "{tmp_path / "secret.key"}"\n'
        f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n'
        "[worker]\nparse_processes = 0\n"
        '[[agents]]\nemail = "anna@example.com"\nname = "Anna Agent"\n'
    )
    return cfg


def maild(cfg: Path, *args: str, stdin: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), *args],
                          input=stdin, capture_output=True, timeout=120)  # fmt: skip


@pytest.fixture
def people(tmp_path, db_url):
    """Bob's ticket (#1, with an attachment and an agent's reply); Carol's ticket
    (#2) with Bob in Cc, who replies there too; Dave's ticket (#3), no Bob."""
    desk = Desk(make_settings(tmp_path, db_url, agents=AGENTS))
    desk.process(with_attachment())
    with desk.ops() as ops:
        ops.reply(1, agent=_agent(), text=f"Dear {NAME}, try turning it off.")
    desk.process(make_message(sender="Carol <carol@example.org>", subject="VPN down",
                              message_id="<carol-1@example.org>"))  # fmt: skip
    # Carol copies Bob in, replying to her acknowledgement (a first mail's Cc is
    # not verified: it makes nobody a watcher, issue 14).
    (ack,) = [x for x in desk.outgoing() if "carol@example.org" in str(x["To"])]
    desk.process(reply_to(ack, sender="Carol <carol@example.org>", body="Bob has it too.",
                          message_id="<carol-2@example.org>",
                          headers={"Cc": f"{NAME} <{ADDRESS}>"}))  # fmt: skip
    desk.process(make_message(sender=f"{NAME} <{ADDRESS}>", subject="Re: VPN down",
                              body=f"Same here, {WORD} again.\n", message_id="<bob-2@example.org>",
                              in_reply_to="<carol-1@example.org>"))  # fmt: skip
    desk.process(make_message(sender="Dave <dave@example.org>", subject="Mouse",
                              message_id="<dave-1@example.org>"))  # fmt: skip
    yield config(tmp_path, db_url), desk
    desk.close()


def _agent():
    from maild.mail.parse import Address

    return Address(name="Anna Agent", email="anna@example.com")


def test_export_gives_everything_about_the_person(people):
    cfg, _desk = people
    proc = maild(cfg, "contact", "export", ADDRESS.upper(), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["contact"]["email"] == ADDRESS and data["contact"]["name"] == NAME
    (ticket,) = data["tickets"]
    assert ticket["number"] == 1
    texts = " ".join(a["text"] for a in ticket["articles"])
    assert WORD in texts and f"Dear {NAME}" in texts
    assert [att["filename"] for a in ticket["articles"] for att in a["attachments"]] == [
        "quuxley-scan.bin"
    ]
    assert ticket["events"]
    assert [w["ticket"] for w in data["watching"]] == [2]
    (elsewhere,) = data["articles_on_other_tickets"]
    assert elsewhere["ticket"] == 2 and WORD in elsewhere["text"]
    assert {m["kind"] for m in data["mail_sent_to_them"]} >= {"ack", "reply"}
    assert {m["message_id"] for m in data["mail_received_from_them"]} == {
        "<bob-1@example.org>", "<bob-2@example.org>"}  # fmt: skip
    summary = maild(cfg, "contact", "export", ADDRESS)
    assert summary.returncode == 0 and b"tickets opened:          1" in summary.stdout
    unknown = maild(cfg, "contact", "export", "nobody@example.org")
    assert unknown.returncode == 66 and b"no contact nobody@example.org" in unknown.stderr


def _all_text(db_url: str, desk: Desk) -> str:
    """Every value of every table, as text (what a query can still find)."""
    out = []
    with desk.engine.connect() as conn:
        for table in ("contact", "ticket", "article", "attachment", "blob", "inbound",
                      "inbound_raw", "outbox", "event", "watcher", "autoreply_log",
                      "search_doc", "similar_doc"):  # fmt: skip
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                for value in row:
                    out.append(value.decode("latin-1") if isinstance(value, bytes | memoryview)
                               and not isinstance(value, str) else str(value))  # fmt: skip
    return "\n".join(str(bytes(v)) if isinstance(v, memoryview) else v for v in out)


def test_erase_removes_the_person_and_keeps_the_counts(people, db_url):
    cfg, desk = people
    before = json.loads(maild(cfg, "report", "--json").stdout)
    proc = maild(cfg, "contact", "erase", ADDRESS, "--yes", "--as", "dpo@cli", "--json")
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    assert done["tickets_anonymized"] == 1 and done["articles_blanked"] == 1
    assert done["storage_clean"] is True
    everything = _all_text(db_url, desk)
    for needle in (ADDRESS, NAME, "Bobbington", "Quuxley", "quuxley", WORD):
        assert needle not in everything, needle
    assert ATTACHMENT.decode() not in everything
    # Carol and Dave keep everything of theirs.
    assert "carol@example.org" in everything and "VPN down" in everything
    assert "dave@example.org" in everything and "Mouse" in everything
    # The tickets stay for the reports; their audit trail says what happened, not who.
    tickets = {t["number"]: t for t in json.loads(maild(cfg, "tickets", "list", "--json").stdout)}
    assert set(tickets) == {1, 2, 3}
    assert tickets[1]["subject"] == "" and tickets[1]["anonymized_at"]
    assert tickets[1]["requester"]["email"].endswith("@erased.invalid")
    shown = json.loads(maild(cfg, "ticket", "show", "1", "--json").stdout)
    assert [e["kind"] for e in shown["events"]][-1] == "anonymized"
    assert shown["events"][-1]["actor"] == "dpo@cli"
    carol = json.loads(maild(cfg, "ticket", "show", "2", "--json").stdout)
    assert carol["watchers"] == [] and carol["events"][-1]["kind"] == "contact_erased"
    assert ADDRESS not in json.dumps(carol["events"][-1])
    after = json.loads(maild(cfg, "report", "--json").stdout)
    for key in ("tickets", "by_priority", "by_type", "by_category", "backlog"):
        assert after[key] == before[key], key
    # Erased is erased: no such contact any more.
    assert maild(cfg, "contact", "export", ADDRESS).returncode == 66
    assert maild(cfg, "contact", "erase", ADDRESS, "--yes").returncode == 66


# Another program with the database open and idle (the daemon): SQLite may then
# not checkpoint and delete the WAL when `maild contact erase` closes its own.
IDLE_READER = (
    "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); "
    "c.execute('select count(*) from ticket').fetchone(); print('open', flush=True); "
    "time.sleep(120)"
)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_erase_leaves_no_bytes_in_the_database_file_or_its_wal(people, tmp_path):
    cfg, desk = people
    db = tmp_path / "maild.db"
    raw_before = b"".join(p.read_bytes() for p in tmp_path.glob("maild.db*"))
    assert ADDRESS.encode() in raw_before and ATTACHMENT in raw_before  # the scan can see
    # The daemon's connections stay open (idle) meanwhile, as in production: one
    # held here too, so SQLite's own checkpoint on the last close cannot help.
    idle = subprocess.Popen([sys.executable, "-c", IDLE_READER, str(db)], stdout=subprocess.PIPE)
    assert idle.stdout is not None and idle.stdout.readline() == b"open\n"
    try:
        proc = maild(cfg, "contact", "erase", ADDRESS, "--yes")
        assert proc.returncode == 0, proc.stderr
        files = sorted(tmp_path.glob("maild.db*"))
        assert db in files
        wal = tmp_path / "maild.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0
        for path in files:
            data = path.read_bytes()
            for needle in (ADDRESS.encode(), NAME.encode(), b"Quuxley", WORD.encode(), ATTACHMENT,
                           ATTACHMENT[:24]):  # fmt: skip
                assert needle not in data, f"{needle!r} left in {path.name}"
    finally:
        idle.kill()
        idle.wait()
    # Still a working help desk: new mail from Bob is a new, first contact.
    desk.process(make_message(sender=ADDRESS, subject="Back again", message_id="<bob-3@x>"))
    assert len(desk.tickets()) == 4


def test_erase_asks_first(people):
    cfg, _desk = people
    proc = maild(cfg, "contact", "erase", ADDRESS)  # stdin is not a terminal
    assert proc.returncode == 64 and b"--yes" in proc.stderr
    assert json.loads(maild(cfg, "contact", "export", ADDRESS, "--json").stdout)["tickets"]


def test_retention_sweep_applies_each_limit_in_turn(tmp_path, db_url):
    desk = Desk(make_settings(tmp_path, db_url, agents=AGENTS))
    bob = desk.process(with_attachment())
    ignored = desk.process(make_message(sender="robot@example.net", subject="Out of office",
                                        message_id="<ooo@example.net>",
                                        headers={"Auto-Submitted": "auto-replied"}))  # fmt: skip
    assert ignored.outcome == Outcome.IGNORED
    held = desk.deliver(b"\x00\x01 not mail at all")  # quarantined: kept for a human
    desk.drain()
    dave = desk.process(make_message(sender="dave@example.org", message_id="<d@x>"))
    retention = desk.settings.retention

    def raw_kept(inbound_id: int) -> bool:
        with desk.sessions() as s:
            return s.scalar(select(InboundRaw.inbound_id).where(
                InboundRaw.inbound_id == inbound_id)) is not None  # fmt: skip

    def sweep() -> dict[str, int]:
        return retention_sweep(desk.sessions, retention, desk.clock)

    assert sweep() == {k: 0 for k in sweep()}  # nothing is old yet
    desk.clock.advance(days=31)
    done = sweep()
    assert done["raw_ignored"] == 1 and done["raw_processed"] == 0
    assert not raw_kept(ignored.inbound_id) and raw_kept(bob.inbound_id)
    assert raw_kept(held.inbound_id)
    with desk.sessions() as s:
        assert s.scalar(select(Inbound.status).where(Inbound.id == ignored.inbound_id)) == "ignored"
    desk.clock.advance(days=60)
    done = sweep()
    assert done["raw_processed"] == 2 and done["outbox"] >= 2
    assert not raw_kept(bob.inbound_id) and raw_kept(held.inbound_id)
    with desk.sessions() as s:
        assert s.scalar(select(Outbox.id).limit(1)) is None
    assert desk.ticket(bob.ticket_id)["articles"][0]["text"]  # the ticket keeps its text
    assert sweep() == {k: 0 for k in done}  # idempotent
    # Closed tickets lose their personal data after closed_ticket_months.
    with desk.ops() as ops:
        ops.close(bob.ticket_id, actor="anna@example.com", note="done")
    desk.clock.advance(days=400)
    done = sweep()
    assert done["event_details"] > 0 and done["tickets_anonymized"] == 0
    desk.clock.advance(days=24 * 31)
    done = sweep()
    assert done["tickets_anonymized"] == 1
    t = desk.ticket(bob.ticket_id)
    assert t["subject"] == "" and all(a["text"] == "" for a in t["articles"])
    assert not [att for a in t["articles"] for att in a["attachments"]]
    assert t["requester"]["email"].endswith("@erased.invalid")
    assert t["type"] and t["priority"] and t["closed_at"]  # what reports count stays
    assert desk.ticket(dave.ticket_id)["subject"]  # still open: untouched
    assert sweep()["tickets_anonymized"] == 0
    desk.close()


def test_sweep_command_reports_retention(tmp_path, sqlite_url):
    cfg = config(tmp_path, sqlite_url)
    proc = maild(cfg, "sweep", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data["retention"]) >= {"raw_processed", "raw_ignored", "outbox",
                                      "event_details", "tickets_anonymized"}  # fmt: skip
    assert os.path.exists(tmp_path / "maild.db")


def test_erase_redacts_why_maild_kept_their_mail_as_a_note(tmp_path, sqlite_url):
    """A reply from someone who takes no part in a ticket is kept as an internal
    note, and the message's recorded fate names them: erasure redacts that too."""
    desk = Desk(make_settings(tmp_path, sqlite_url, agents=AGENTS))
    desk.process(with_attachment())  # Bob's own ticket: he is a contact
    desk.process(make_message(sender="Carol <carol@example.org>", subject="VPN down",
                              message_id="<carol-1@example.org>"))  # fmt: skip
    desk.process(make_message(sender=f"{NAME} <{ADDRESS}>", subject="Re: VPN down",
                              body=f"Same here, {WORD} again.\n", message_id="<bob-2@example.org>",
                              in_reply_to="<carol-1@example.org>"))  # fmt: skip
    desk.close()
    cfg = config(tmp_path, sqlite_url)
    before = maild(cfg, "inbound", "list", "--json")
    assert ADDRESS.encode() in before.stdout  # the fate names them until erased
    assert maild(cfg, "contact", "erase", ADDRESS, "--yes").returncode == 0
    after = maild(cfg, "inbound", "list", "--json")
    assert after.returncode == 0 and ADDRESS.encode() not in after.stdout


def test_someone_who_only_wrote_as_a_stranger_can_be_exported_and_erased(tmp_path, db_url):
    """Dora never opened a ticket: she only answered someone else's thread, and
    maild kept her mail as a note. She has no contact of her own, yet maild
    holds her words, name, address and raw mail: export shows them, erase
    removes them."""
    desk = Desk(make_settings(tmp_path, db_url, agents=AGENTS))
    desk.process(make_message(sender="Carol <carol@example.org>", subject="VPN down",
                              message_id="<carol-1@example.org>"))  # fmt: skip
    desk.process(make_message(sender="Dora Stranger-Smith <dora@example.net>",
                              subject="Re: VPN down", body=f"Same here, {WORD} again.\n",
                              message_id="<dora-1@example.net>",
                              in_reply_to="<carol-1@example.org>"))  # fmt: skip
    desk.close()
    cfg = config(tmp_path, db_url)
    shown = maild(cfg, "contact", "export", "dora@example.net", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["contact"]["email"] == "dora@example.net"
    assert any(WORD in a["text"] for a in data["articles_on_other_tickets"])
    assert data["mail_received_from_them"]
    erased = maild(cfg, "contact", "erase", "dora@example.net", "--yes")
    assert erased.returncode == 0, erased.stderr
    dump = maild(cfg, "ticket", "show", "1", "--json").stdout
    assert WORD.encode() not in dump and b"dora@example.net" not in dump, dump
    assert maild(cfg, "contact", "export", "dora@example.net", "--json").returncode != 0
    assert maild(cfg, "contact", "export", "nobody@example.net", "--json").returncode != 0
