"""The README's first promise, on every intake path: nobody is told "accepted"
before the commit that holds their message.

The database refuses the COMMIT itself (`tests.support.faults.refuse_commits`:
the INSERTs go through, the COMMIT fails), so an intake path that answers
before its commit has already said 250 / exit 0 by then, and these tests see
it. IMAP's counterpart (move only after the commit) is in
``tests/integration/imap/test_imap_commit.py``. The slow kill -9 crash suite
checks the same promise statistically; these check it directly.
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_smtp_intake import counts, send, wait_until
from tests.support.desk import make_message
from tests.support.faults import refuse_commits


def test_smtp_answers_451_when_the_commit_fails_and_250_once_it_succeeds(db_url, daemon_factory):
    running = daemon_factory(db_url)
    raw = make_message(message_id="<commit-smtp@example.org>")
    with refuse_commits(db_url):
        with pytest.raises(smtplib.SMTPDataError) as info:
            send(running.port, raw)
        assert info.value.smtp_code == 451, info.value
        assert info.value.smtp_error.startswith(b"4.3.0")
        assert counts(db_url)["inbound"] == 0
    # The client retries, as a 451 tells it to: now it is stored, once.
    assert send(running.port, raw) == {}
    assert counts(db_url)["inbound"] == 1
    wait_until(lambda: counts(db_url)["ticket"] == 1)


def test_lmtp_answers_451_for_every_recipient_when_the_commit_fails(sqlite_url, daemon_factory):
    running = daemon_factory(sqlite_url, smtp={"lmtp": True},
                             helpdesk={"addresses": ["help@example.com", "it@example.com"]})  # fmt: skip
    with refuse_commits(sqlite_url), smtplib.LMTP("127.0.0.1", running.port, timeout=10) as client:
        client.ehlo("mx.example.org")
        client.mail("bob@example.org")
        for rcpt in ("help@example.com", "it@example.com"):
            assert client.rcpt(rcpt)[0] == 250
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(make_message() + b".\r\n")
        # RFC 2033: one reply per accepted recipient, each of them a refusal.
        replies = [client.getreply(), client.getreply()]
    assert [code for code, _ in replies] == [451, 451], replies
    assert counts(sqlite_url)["inbound"] == 0


def _ingest(config: Path, raw: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "maild", "--config", str(config), "ingest"],
                          input=raw, capture_output=True, timeout=120)  # fmt: skip


def test_ingest_exits_75_when_the_commit_fails_and_0_once_it_succeeds(db_url, tmp_path):
    config = tmp_path / "maild.toml"
    config.write_text(
        f'[database]\nurl = "{db_url}"\n'
        f'[helpdesk]\naddresses = ["help@example.com"]\nsecret_file = "{tmp_path / "key"}"\n'
        f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n'
    )
    raw = make_message(message_id="<commit-ingest@example.org>")
    with refuse_commits(db_url):
        proc = _ingest(config, raw)
        assert proc.returncode == 75, proc.stderr  # EX_TEMPFAIL: the MTA keeps it and retries
        assert b"try again later" in proc.stderr and b"Traceback" not in proc.stderr
        assert counts(db_url)["inbound"] == 0
    proc = _ingest(config, raw)
    assert proc.returncode == 0, proc.stderr
    assert b"stored as inbound" in proc.stderr
    assert counts(db_url)["inbound"] == 1
