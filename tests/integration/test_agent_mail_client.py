"""A real mail client works a ticket: mutt (batch mode) replies to the agent's
notification from a Maildir, msmtp hands the reply to the daemon's SMTP
listener. Also the agent directory: ``maild agents list`` and SIGHUP."""

from __future__ import annotations

import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from maild.config.settings import load_settings
from maild.mail.parse import parse
from maild.store import views
from tests.conftest import service_missing, start_daemon, stop_daemon
from tests.support.desk import Desk, make_message, read_maildir

AGENTS = [{"email": "anna@example.com", "name": "Anna Agent", "tier": 1}]


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def outgoing_to(outdir: Path, address: str) -> list[Path]:
    files = sorted((outdir / "new").glob("*")) if (outdir / "new").is_dir() else []
    return [f for f in files if any(a.email == address for a in parse(f.read_bytes()).to)]


def mutt_reply(home: Path, message: Path, port: int, *, sender: str, text: str,
               below: bool = False) -> None:  # fmt: skip
    """mutt replies to `message` (put into a Maildir), writing `text` above the quote
    (or, `below`, under it: the "reply below the quote" habit)."""
    if shutil.which("mutt") is None or shutil.which("msmtp") is None:
        service_missing("mutt and msmtp (apt-get install mutt msmtp)")
    box = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(message, box / "new" / f"{time.time_ns()}.notification")
    words = home / "reply.txt"
    words.write_text(text)
    editor = home / "editor.sh"  # puts the agent's words above (or below) mutt's quote
    order = f'"$1" "{words}"' if below else f'"{words}" "$1"'
    editor.write_text(f'#!/bin/sh\ncat {order} > "$1.new" && mv "$1.new" "$1"\n')
    editor.chmod(0o755)
    address = sender.rpartition("<")[2].rstrip(">")
    muttrc = home / "muttrc"
    muttrc.write_text(
        f"set mbox_type=Maildir folder={home} spoolfile={box} header_cache={home}/cache\n"
        f'set from="{sender}" use_from=yes realname="{sender.partition(" <")[0]}"\n'
        f'set sendmail="/usr/bin/msmtp --host=127.0.0.1 --port={port} --auth=off --tls=off '
        f'-f {address}"\n'
        "set include=yes fast_reply=yes askcc=no askbcc=no edit_headers=no reply_to=yes\n"
        f'set editor="{editor}"\n'
        'set postpone=no abort_unmodified=no record="" copy=no quit=yes wait_key=no\n'
        'set move=no mark_old=no charset=utf-8 send_charset="us-ascii:utf-8"\n'
    )
    command = f"mutt -n -F {muttrc} -f {box} -e 'push <reply><send-message><quit>'"
    env = {**os.environ, "TERM": "xterm", "HOME": str(home)}
    done = subprocess.run(["script", "-qec", command, "/dev/null"], env=env, timeout=60,
                          capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]


def test_mutt_reply_through_the_smtp_listener(daemon_factory, db_url, tmp_path):
    running = daemon_factory(db_url, agents=AGENTS)
    outdir = tmp_path / "outgoing"
    smtp = smtplib.SMTP("127.0.0.1", running.port)
    smtp.sendmail("bob@example.org", ["help@example.com"], make_message())
    smtp.quit()
    (notification,) = wait_for(lambda: outgoing_to(outdir, "anna@example.com"))
    due = running.daemon.clock.now()
    mutt_reply(tmp_path / "anna", notification, running.port, sender="Anna Agent <anna@example.com>",
               text="#priority P2\n#status pending_user\n\nHi Bob, which room is the printer "
                    "in?\n\n-- \nAnna Agent, IT\n+358 40 123 4567\n\n")  # fmt: skip
    confirm = wait_for(lambda: outgoing_to(outdir, "anna@example.com")[1:])
    assert b"priority: P3 -> P2" in confirm[0].read_bytes()
    mails = read_maildir(outdir)
    to_bob = [m for m in mails if m["To"].addresses[0].addr_spec == "bob@example.org"]
    ack, reply = to_bob
    text = reply.get_body(("plain",)).get_content()
    assert text.startswith("Hi Bob, which room is the printer in?")
    for gone in ("#priority", "wrote:", "+358", "Requester:", "anna@"):
        assert gone not in text
    for name, value in reply.items():
        # (Bob's own reply address, help+1.r..., is his to use: issue 14)
        value = re.sub(r"help\+\d+\.r\d*\.[a-z2-7]{26}@", "", str(value))
        assert "anna" not in value.lower() and "help+" not in value, name
    assert reply["In-Reply-To"] == "<orig-1@example.org>"
    with running.daemon.sessions() as session:
        t = views.show_ticket(session, 1)
    assert (t["priority"], t["status"]) == ("P2", "pending_user")
    assert datetime.fromisoformat(t["first_response_at"]) >= due  # the clock stopped
    agent_mail = [a for a in t["articles"] if a["from"]["email"] == "anna@example.com"]
    assert agent_mail[0]["visibility"] == "internal" and "wrote:" in agent_mail[0]["text"]


def test_mutt_reply_below_the_quote_through_the_smtp_listener(daemon_factory, db_url, tmp_path):
    """Bottom-posting: mutt's "On … wrote:" and the quoted notification first, the
    agent's commands and answer under it."""
    running = daemon_factory(db_url, agents=AGENTS)
    outdir = tmp_path / "outgoing"
    smtp = smtplib.SMTP("127.0.0.1", running.port)
    smtp.sendmail("bob@example.org", ["help@example.com"], make_message())
    smtp.quit()
    (notification,) = wait_for(lambda: outgoing_to(outdir, "anna@example.com"))
    mutt_reply(tmp_path / "anna", notification, running.port, sender="Anna Agent <anna@example.com>",
               text="\n#priority P2\n#status pending_user\n\nHi Bob, which room is the "
                    "printer in?\n\n-- \nAnna Agent, IT\n", below=True)  # fmt: skip
    confirm = wait_for(lambda: outgoing_to(outdir, "anna@example.com")[1:])
    assert b"priority: P3 -> P2" in confirm[0].read_bytes()
    mails = read_maildir(outdir)
    to_bob = [m for m in mails if m["To"].addresses[0].addr_spec == "bob@example.org"]
    ack, reply = to_bob
    text = reply.get_body(("plain",)).get_content()
    assert text.startswith("Hi Bob, which room is the printer in?")
    for gone in ("#priority", "wrote:", "Requester:", "A new ticket", "> ", "Anna Agent, IT"):
        assert gone not in text
    with running.daemon.sessions() as session:
        t = views.show_ticket(session, 1)
    assert (t["priority"], t["status"]) == ("P2", "pending_user")
    agent_mail = [a for a in t["articles"] if a["from"]["email"] == "anna@example.com"]
    body = agent_mail[0]["text"]
    assert body.index("wrote:") < body.index("#priority P2")  # it really was below the quote


def test_agents_list_and_sighup_reload(sqlite_url, tmp_path):
    config = tmp_path / "maild.toml"

    def write(agents: str) -> None:
        config.write_text(
            f'[database]\nurl = "{sqlite_url}"\n[helpdesk]\nsecret_file = "{tmp_path}/secret"\n'
            f'[smtp]\nlisten = "127.0.0.1:0"\n[outgoing]\nmaildir = "{tmp_path}/out"\n'
            f"[worker]\nparse_processes = 0\n{agents}"
        )

    write('[[agents]]\nemail = "Anna@Example.com"\nname = "Anna Agent"\n'
          '[[agents]]\nemail = "bert@example.com"\ntier = 2\ngroups = ["security"]\n'
          'language = "fi"\n')  # fmt: skip
    cli = [sys.executable, "-m", "maild", "--config", str(config)]
    listed = subprocess.run([*cli, "agents", "list", "--json"], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert [(a["email"], a["tier"], a["groups"], a["language"], a["active"])
            for a in json.loads(listed.stdout)] == [
        ("anna@example.com", 1, [], "en", True), ("bert@example.com", 2, ["security"], "fi", True)
    ]  # fmt: skip
    table = subprocess.run([*cli, "agents", "list"], capture_output=True, text=True, timeout=60)
    assert "anna@example.com" in table.stdout and "Anna Agent" in table.stdout
    running = start_daemon(load_settings(config, environ={}))
    try:
        assert running.daemon.applier.directory.by_email("bert@example.com") is not None
        write('[[agents]]\nemail = "bert@example.com"\ntier = 3\n'
              '[[agents]]\nemail = "cecilia@example.com"\n')  # fmt: skip
        running.daemon.reload()  # what SIGHUP runs
        directory = running.daemon.applier.directory
        assert directory.by_email("anna@example.com") is None  # deactivated, not deleted
        assert [a.email for a in directory.agents if not a.active] == ["anna@example.com"]
        assert directory.by_email("bert@example.com").tier == 3
        assert directory.by_email("cecilia@example.com") is not None
        write("[[agents]]\nemail = 'not an address'\n")
        running.daemon.reload()  # a bad file keeps the directory it had
        assert running.daemon.applier.directory.by_email("cecilia@example.com") is not None
    finally:
        stop_daemon(running)
    bad = subprocess.run([*cli, "agents", "list"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 78 and "agents[0].email" in bad.stderr


@pytest.mark.parametrize("where", ["envelope", "delivered-to", "to"])
def test_reply_address_counts_only_as_the_envelope_recipient(sqlite_url, tmp_path, where):
    """The reply address works where the mail was delivered to it (RCPT TO, `maild
    ingest --to`, an IMAP mailbox's delivery_header), never from a header the
    sender wrote (issue 14, item 5)."""
    from tests.support.desk import make_settings

    desk = Desk(make_settings(tmp_path, sqlite_url, agents=AGENTS))
    try:
        desk.process(make_message())
        note = next(m for m in desk.outgoing() if "anna" in str(m["To"]))
        token = note["Reply-To"].addresses[0].addr_spec
        headers = {"Delivered-To": token} if where == "delivered-to" else {}
        to = token if where == "to" else "Help Desk <help@example.com>"
        reply = make_message(sender="Anna Agent <anna@example.com>", to=to, subject="Re: x",
                             body="#priority P1\n", message_id="<a@example.com>", headers=headers)  # fmt: skip
        envelope = (token,) if where == "envelope" else ("help@example.com",)
        desk.process(reply, recipient="help@example.com", envelope_to=envelope)
        assert desk.ticket(1)["priority"] == ("P1" if where == "envelope" else "P3")
    finally:
        desk.close()
