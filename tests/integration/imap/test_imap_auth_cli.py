"""XOAUTH2 against Dovecot's oauth2 passdb, and `maild mailbox check`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from maild.cli.main import cmd_mailbox_check
from maild.config.settings import load_settings
from maild.intake.imap import LoginFailed
from tests.integration.imap.conftest import (
    Intake,
    imap_section,
    mailbox_table,
    start_dovecot,
    write_config,
)
from tests.support.desk import make_message

GOOD_TOKEN = "ya29.good-token"


class _Introspection(BaseHTTPRequestHandler):
    """The OAuth2 token-introspection endpoint (RFC 7662) Dovecot asks.

    This mock stands in for Microsoft's or Google's authorization server, the
    one party of the XOAUTH2 login we cannot run here; Dovecot and its oauth2
    passdb, the SASL exchange and maild's token command are all real."""

    tokens_seen: list[str] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        token = parse_qs(body).get("token", [""])[0]
        self.tokens_seen.append(token)
        ok = token == GOOD_TOKEN
        data = json.dumps({"active": True, "username": "support@example.com"} if ok
                          else {"active": False}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def _oauth_dovecot() -> Iterator:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Introspection)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    dovecot = start_dovecot(
        oauth2_introspection_url=f"http://127.0.0.1:{server.server_port}/introspect"
    )
    yield dovecot
    dovecot.close()
    server.shutdown()
    server.server_close()


@pytest.fixture
def oauth_dovecot(_oauth_dovecot):
    _Introspection.tokens_seen = []
    return _oauth_dovecot


def token_command(tmp_path: Path, body: str) -> str:
    script = tmp_path / "token.py"
    script.write_text(body)
    return f"{sys.executable} {script}"


def test_xoauth2_login_with_a_token_command(sqlite_url, oauth_dovecot, tmp_path, intake_factory):
    command = token_command(tmp_path, f"print({GOOD_TOKEN!r})\n")
    box = mailbox_table(oauth_dovecot, "support@example.com", "",
                        oauth2_token_command=command)  # fmt: skip
    intake = intake_factory(sqlite_url, imap_section(box))
    oauth_dovecot.append("support@example.com", [make_message()])
    assert intake.drain().stored == 1
    assert _Introspection.tokens_seen == [GOOD_TOKEN]
    assert "method=XOAUTH2" in oauth_dovecot.log()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("print('revoked-token')\n", "AUTHENTICATIONFAILED"),
        ("import sys\nsys.exit('no refresh token: run the consent flow')\n",
         "oauth2_token_command exited with status 1: no refresh token: run the consent flow"),
        ("print('')\n", "printed no single-line access token"),
    ],
)  # fmt: skip
def test_xoauth2_failures_say_why(sqlite_url, oauth_dovecot, tmp_path, intake_factory, body,
                                  needle):  # fmt: skip
    box = mailbox_table(oauth_dovecot, "support@example.com", "",
                        oauth2_token_command=token_command(tmp_path, body))  # fmt: skip
    intake = intake_factory(sqlite_url, imap_section(box))
    started = time.monotonic()
    with pytest.raises(LoginFailed) as info:
        intake.drain()
    assert needle in str(info.value)
    # One attempt, no retries: well under the command's own 60 s time limit.
    assert time.monotonic() - started < 45


# --- maild mailbox check ------------------------------------------------------------------


def maild(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def check(cfg: Path, name: str | None, capsys) -> tuple[int, str, str]:
    """`maild mailbox check` in-process (the subprocess path is tested once below)."""
    capsys.readouterr()
    code = cmd_mailbox_check(load_settings(cfg, environ={}), name)
    out, err = capsys.readouterr()
    return code, out, err


def test_mailbox_check_reports_what_an_admin_needs(
    sqlite_url, dovecot, imap_user, password_file, tmp_path, capsys
):
    dovecot.append(imap_user, [make_message(), make_message(message_id="<two@example.org>")])
    wrong = tmp_path / "wrong"
    wrong.write_text("guess\n")
    cfg = write_config(
        tmp_path, sqlite_url,
        mailbox_table(dovecot, imap_user, password_file),
        mailbox_table(dovecot, imap_user, wrong, name="wrongpw"),
        mailbox_table(dovecot, imap_user, password_file, name="nofolder", folder="Nope"),
        mailbox_table(dovecot, imap_user, password_file, name="down", port=1),
    )  # fmt: skip
    code, out, _ = check(cfg, "support", capsys)
    assert code == 0, out
    assert f"mailbox support: 127.0.0.1:{dovecot.port} (no TLS) as {imap_user}" in out
    assert "login:        ok (password)" in out
    assert "capabilities: IDLE yes, MOVE yes, UIDPLUS yes" in out
    assert "INBOX (reads): 2 message(s), 2 unseen" in out
    assert "Processed (moves to): missing, created at first run" in out
    assert "checkpoint:   none yet" in out
    assert dovecot.count(imap_user, "INBOX") == 2  # a check changes nothing
    intake = Intake(load_settings(cfg, environ={}))
    intake.drain()
    intake.close()
    code, out, _ = check(cfg, "support", capsys)
    assert "INBOX (reads): 0 message(s)" in out and "Processed (moves to): 2 message(s)" in out
    assert "checkpoint:   UIDVALIDITY " in out and ", last UID 2" in out

    code, out, _ = check(cfg, "wrongpw", capsys)
    assert code == 77
    assert "login:        FAILED (password): login as" in out
    assert "AUTHENTICATIONFAILED" in out and "guess" not in out

    code, out, _ = check(cfg, "nofolder", capsys)
    assert code == 66 and "Nope (reads): MISSING" in out

    code, out, _ = check(cfg, "down", capsys)
    assert code == 69 and "connect:      FAILED: cannot connect" in out

    code, _, err = check(cfg, "nosuch", capsys)
    assert code == 64
    assert "no mailbox named 'nosuch'" in err and "support" in err

    # The real command line, every mailbox at once.
    every = maild(cfg, "mailbox", "check")
    assert every.returncode == 77, every.stderr  # the first failure's status
    assert every.stdout.count("\nmailbox ") == 3 and every.stdout.startswith("mailbox support")

    checked = maild(cfg, "check-config")
    assert checked.returncode == 0
    assert f"support: {imap_user} at 127.0.0.1:{dovecot.port}, INBOX, then move to Processed" in (
        checked.stdout
    )
