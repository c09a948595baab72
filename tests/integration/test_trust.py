"""Trust (issue 14): each numbered attack of the issue, made the way an attacker
would, through the real SMTP listener of a running maild; each asserts that
nothing changed that should not and that nobody was told who should not be.

The item numbers follow the issue: 1 ticket takeover, 2 muting by a forged
bounce, 3 acknowledgements as a spam cannon, 4 a security incident's subject
in alerts, 5 agent commands from a header, 6 SMTP AUTH and connection abuse,
7 raw bytes on the terminal and in logs, 8 files anyone can read, 9 one
setting that drops everyone's mail.
"""

from __future__ import annotations

import base64
import email
import email.policy
import os
import select
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from maild.mail.parse import Address
from maild.store.db import make_engine
from maild.store.models import Outbox
from tests.integration.test_smtp_intake import wait_until
from tests.support.desk import make_message, read_maildir, reply_to
from tests.support.serveproc import ServeProcess, base_sections, free_port

ESC = "\x1b"


def maild_cli(workdir: Path, db_url: str, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    config = workdir / "cli.toml"
    config.write_text(
        f'[database]\nurl = "{db_url}"\n[helpdesk]\nsecret_file = "{workdir / "secret.key"}"\n'
        f'[outgoing]\nmaildir = "{workdir / "outgoing"}"\n'
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILD_")}
    return subprocess.run([sys.executable, "-m", "maild", "--config", str(config), *args],
                          capture_output=True, timeout=60, env={**clean, **(env or {})})  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def query(db_url: str, sql: str) -> list:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


def processed(db_url: str, count: int) -> bool:
    """`count` inbound messages, none of them waiting."""
    rows = query(db_url, "select status from inbound")
    return len(rows) == count and all(r[0] not in ("pending", "processing") for r in rows)


def smtp_send(port: int, raw: bytes, *, mail_from: str, rcpt: str = "help@example.com") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(mail_from, [rcpt], raw)


class Outgoing:
    """Mail the desk sent (its Maildir), by recipient, since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0

    def new(self) -> dict[str, list[Any]]:
        mails = read_maildir(self.path)
        out: dict[str, list[Any]] = {}
        for mail in mails[self.seen :]:
            for field in ("To", "Cc"):
                for a in getattr(mail[field], "addresses", ()) if mail[field] else ():
                    out.setdefault(a.addr_spec.lower(), []).append(mail)
        self.seen = len(mails)
        return out

    def wait(self, who: str, timeout: float = 20, *, saying: str = "") -> Any:
        """The next mail to `who` (whose text has `saying`; waits for it); what
        came before it is passed."""

        def find() -> Any:
            mails = read_maildir(self.path)
            for i in range(self.seen, len(mails)):
                mail = mails[i]
                tos = [a.addr_spec.lower() for f in ("To", "Cc") if mail[f]
                       for a in mail[f].addresses]  # fmt: skip
                if who in tos and saying in mail.get_body(("plain",)).get_content():
                    self.seen = i + 1
                    return mail
            return None

        return wait_until(find, timeout=timeout)


AGENTS = [{"email": "anna@example.com", "name": "Anna Agent", "tier": 1},
          {"email": "sara@example.com", "name": "Sara Turva", "tier": 3,
           "groups": ["security"]}]  # fmt: skip


def watchers(db_url: str, number: int) -> list[str]:
    return sorted(r[0] for r in query(db_url, "select c.email from watcher w join contact c "
                                              f"on c.id = w.contact_id where w.ticket_id = {number}"))  # fmt: skip


def ticket_row(db_url: str, number: int) -> dict[str, Any]:
    (row,) = query(db_url, f"select status, priority from ticket where id = {number}")
    return {"status": row[0], "priority": row[1]}


# --- 7. raw bytes reach the terminal --------------------------------------------------------


HOSTILE = (
    f"From: Mallory <mallory@evil.example>\r\nTo: help@example.com\r\n"
    f"Subject: =?utf-8?q?VPN_broken?=\r\nMessage-ID: <{ESC}]0;pwned{ESC}\\@evil.example>\r\n"
    f"X-Evil: {ESC}[31mred\r\n\r\n"
    f"Hello,\r\n{ESC}[2J{ESC}[1;1Hall clear\rhidden\r\nthe VPN drops.\r\n"
).encode()
# Quarantined: no usable sender (no From address, a bare word as envelope sender).
NO_SENDER = (
    f"From: {ESC}[8mnobody\r\nTo: help@example.com\r\nSubject: hi\r\n"
    f"Message-ID: <q{ESC}[5m@evil.example>\r\n\r\nbody\r\n"
).encode()


def test_7_escape_sequences_never_reach_the_terminal_or_the_log(tmp_path):
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'maild.db'}"
    serve = ServeProcess(base_sections(tmp_path, db_url, port), log_path=tmp_path / "serve.log")
    try:
        serve.start()
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("mallory@evil.example", ["help@example.com"], HOSTILE)
            client.sendmail("x", ["help@example.com"], NO_SENDER)
        wait_until(lambda: read_maildir(tmp_path / "outgoing"), timeout=20)
        wait_until(lambda: b"quarantined" in (tmp_path / "serve.log").read_bytes(), timeout=20)
    finally:
        assert serve.stop() == 0
        serve.close()
    log = (tmp_path / "serve.log").read_text()
    assert "pwned" in log and ESC not in log and "\\u001b]0;pwned" in log

    shown = maild_cli(tmp_path, db_url, "ticket", "show", "1")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout.decode()
    assert "the VPN drops." in out and "\\u001b[2J" in out
    assert ESC not in out and "\r" not in out  # no escape, no carriage return overwriting

    listed = maild_cli(tmp_path, db_url, "quarantine", "list")
    assert b"no usable sender" in listed.stdout and ESC.encode() not in listed.stdout
    (qid,) = {line.split()[0] for line in listed.stdout.decode().splitlines()}
    shown = maild_cli(tmp_path, db_url, "quarantine", "show", qid)
    assert b"nobody" in shown.stdout and ESC.encode() not in shown.stdout
    raw = maild_cli(tmp_path, db_url, "quarantine", "show", qid, "--raw")
    assert NO_SENDER in raw.stdout  # --raw is the bytes on purpose


# --- 8. files anyone can read ------------------------------------------------------------


def test_8_files_are_private_and_a_readable_secret_stops_maild(tmp_path):
    work = tmp_path / "work"  # a fresh state directory: maild creates everything in it
    work.mkdir()
    port = free_port()
    db_url = f"sqlite:///{work / 'var' / 'maild.db'}"
    sections = base_sections(work, db_url, port)
    sections["helpdesk"]["secret_file"] = str(work / "var" / "secret.key")
    sections["outgoing"]["maildir"] = str(work / "var" / "outgoing")
    old = os.umask(0o022)  # a usual login umask: maild must not rely on it
    try:
        serve = ServeProcess(sections, log_path=tmp_path / "serve.log")
        try:
            serve.start()
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("bob@example.org", ["help@example.com"],
                                b"From: bob@example.org\r\nSubject: x\r\n\r\nhi\r\n")  # fmt: skip
            wait_until(lambda: read_maildir(work / "var" / "outgoing"), timeout=20)
        finally:
            assert serve.stop() == 0
            serve.close()
    finally:
        os.umask(old)
    var = work / "var"
    assert mode(var) & 0o077 == 0, oct(mode(var))
    for path in [var / "maild.db", var / "secret.key", *var.glob("maild.db-*")]:
        assert mode(path) & 0o077 == 0, f"{path.name}: {oct(mode(path))}"
    outgoing = var / "outgoing"
    for path in [outgoing, *outgoing.iterdir(), *(outgoing / "new").iterdir()]:
        assert mode(path) & 0o077 == 0, f"{path}: {oct(mode(path))}"

    # A secret key others can read: maild refuses to start, naming the key.
    (var / "secret.key").chmod(0o644)
    serve = ServeProcess(sections, log_path=tmp_path / "serve2.log")
    try:
        with pytest.raises(RuntimeError, match="exited with 78"):
            serve.start(timeout=30)
    finally:
        serve.close()
    assert "helpdesk.secret_file" in (tmp_path / "serve2.log").read_text()

    # Relay AUTH in clear text to a host that is not this machine.
    env = {"MAILD_OUTGOING__TRANSPORT": "smtp", "MAILD_OUTGOING__SMTP_HOST": "relay.example.net",
           "MAILD_OUTGOING__SMTP_USERNAME": "maild",
           "MAILD_OUTGOING__SMTP_PASSWORD_FILE": str(var / "secret.key")}  # fmt: skip
    (var / "secret.key").chmod(0o600)
    checked = maild_cli(work, db_url, "check-config", env=env)
    assert checked.returncode == 78 and b"outgoing.smtp_starttls" in checked.stderr
    env["MAILD_OUTGOING__SMTP_STARTTLS"] = "true"
    assert maild_cli(work, db_url, "check-config", env=env).returncode == 0


# --- 9. one setting drops everyone's mail ------------------------------------------------


def test_9_a_mail_client_on_our_message_id_domain_is_not_taken_for_maild(
    sqlite_url, daemon_factory, tmp_path
):
    # helpdesk.domain is the company's own domain (the requesters' one: nothing in
    # the configuration says so). A colleague's Thunderbird writes <uuid@corp.example>.
    running = daemon_factory(sqlite_url, helpdesk={"domain": "corp.example"})
    raw = (b"From: Anna <anna@corp.example>\r\nTo: help@example.com\r\nSubject: Laptop dead\r\n"
           b"Message-ID: <5f0c3e7a-8b52-4c1a-9e3f-1d2c3b4a5e6f@corp.example>\r\n"
           b"User-Agent: Mozilla Thunderbird\r\n\r\nIt does not boot.\r\n")  # fmt: skip
    with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as client:
        client.sendmail("anna@corp.example", ["help@example.com"], raw)
    (ack,) = wait_until(lambda: read_maildir(tmp_path / "outgoing"), timeout=20)
    assert ack["To"] == "anna@corp.example" and "[#1] Laptop dead" in ack["Subject"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAILD_HELPDESK__DOMAIN": "example.com"}, "helpdesk.addresses"),
        ({"MAILD_HELPDESK__DOMAIN": "example.net", "MAILD_TIERS__TIER1": "it@example.net"},
         "tiers.tier1"),
        ({"MAILD_HELPDESK__DOMAIN": "mx.example.com",
          "MAILD_AGENT_MAIL__TRUSTED_AUTHSERV_IDS": "mx.example.com"}, "trusted_authserv_ids"),
    ],
)  # fmt: skip
def test_9_helpdesk_domain_must_be_maild_s_own(tmp_path, sqlite_url, env, named):
    checked = maild_cli(tmp_path, sqlite_url, "check-config", env=env)
    assert checked.returncode == 78, checked.stdout
    assert b"helpdesk.domain" in checked.stderr and named.encode() in checked.stderr


# --- 6. SMTP AUTH blocks the listener; no caps ---------------------------------------------


def _tls_client(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    assert raw.recv(512).startswith(b"220")
    raw.sendall(b"EHLO attacker.example\r\n")
    _reply(raw)
    raw.sendall(b"STARTTLS\r\n")
    assert _reply(raw).startswith(b"220")
    tls = context.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(b"EHLO attacker.example\r\n")
    _reply(tls)
    return tls


def _reply(sock: socket.socket) -> bytes:
    """One complete (possibly multi-line) SMTP reply."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and lines[-2][3:4] == b" ":
            return data


def _plain(user: str, password: str) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()) + b"\r\n"


@pytest.fixture
def auth_daemon(sqlite_url, daemon_factory, tmp_path):
    from maild.intake.smtpauth import hash_password
    from tests.integration.test_smtp_hardening import _cert

    cert, key = _cert(tmp_path)
    users = tmp_path / "users"
    # A deliberately dear hash (about a second here): its cost is what the attack uses.
    users.write_text(f"relay:{hash_password('s3cret', iterations=5_000_000)}\n")
    running = daemon_factory(sqlite_url, smtp={
        "tls_cert_file": str(cert), "tls_key_file": str(key), "auth_users_file": str(users),
        "auth_max_failures": 4, "auth_failure_delay_seconds": 0.01, "max_connections": 6,
        "max_connections_per_ip": 6})  # fmt: skip
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    return running, context


def test_6_auth_hashing_never_stalls_other_sessions(auth_daemon):
    running, context = auth_daemon
    bystander = socket.create_connection(("127.0.0.1", running.port), timeout=30)
    assert bystander.recv(512).startswith(b"220")
    bystander.sendall(b"EHLO client.example.org\r\n")
    _reply(bystander)
    hasher = _tls_client(running.port, context)
    hasher.sendall(_plain("relay", "s3cret"))  # a second of PBKDF2 on the server
    bystander.sendall(b"NOOP\r\n")
    # The bystander's NOOP is answered while the hash is still running: the AUTH
    # answer must not be there yet when the NOOP's is (order of arrival, no clock).
    while True:
        ready, _w, _x = select.select([bystander, hasher], [], [], 30)
        assert ready, "no answer at all"
        if bystander in ready:
            assert hasher not in ready, "AUTH was answered before a NOOP sent after it"
            break
    assert _reply(bystander).startswith(b"250")
    assert _reply(hasher).startswith(b"235")
    bystander.close()
    hasher.close()


def test_6_unknown_users_cost_a_hash_and_failures_are_limited(auth_daemon, monkeypatch):
    from maild.intake import smtpauth

    running, context = auth_daemon
    hashed: list[str] = []
    real = smtpauth.check_password
    monkeypatch.setattr(smtpauth, "check_password",
                        lambda password, stored: hashed.append(stored) or real(password, stored))  # fmt: skip
    client = _tls_client(running.port, context)
    client.sendall(_plain("nosuchuser", "guess"))
    assert _reply(client).startswith(b"535")
    assert len(hashed) == 1  # as dear as a known user's wrong password: no timing oracle
    # A session gets three tries.
    client.sendall(_plain("relay", "guess2"))
    assert _reply(client).startswith(b"535")
    client.sendall(_plain("relay", "guess3"))
    assert _reply(client).startswith(b"421")
    client.close()
    # The source has used up its failures: even the right password is refused now.
    again = _tls_client(running.port, context)
    again.sendall(_plain("relay", "guess4"))
    assert _reply(again).startswith(b"535")
    again.sendall(_plain("relay", "s3cret"))
    assert _reply(again).startswith(b"454")
    again.close()


def test_6_connection_cap_and_command_limit(sqlite_url, daemon_factory):
    running = daemon_factory(sqlite_url, smtp={"max_connections": 3,
                                               "max_connections_per_ip": 2})  # fmt: skip
    # Two sources (all of 127/8 is this machine), three connections in all.
    sources = ("127.0.0.1", "127.0.0.1", "127.0.0.2")
    held = [smtplib.SMTP("127.0.0.1", running.port, timeout=10, source_address=(ip, 0))
            for ip in sources]  # fmt: skip
    with pytest.raises(smtplib.SMTPConnectError) as info:
        smtplib.SMTP("127.0.0.1", running.port, timeout=10, source_address=("127.0.0.2", 0))
    assert info.value.smtp_code == 421 and b"your address" not in info.value.smtp_error
    for client in held:
        client.quit()
    wait_until(lambda: running.daemon.handler.open_connections == 0)
    # 5,000 NOOPs were answered one by one; now the 21st is the last.
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        assert sock.recv(512).startswith(b"220")
        answers = []
        for _ in range(25):
            sock.sendall(b"NOOP\r\n")
            answer = _reply(sock)
            answers.append(answer[:3])
            if not answer or answer.startswith(b"421"):
                break
        assert answers == [b"250"] * 20 + [b"421"]
        assert sock.recv(512) == b""  # and the connection is closed


def test_6_ipv6_clients_count_per_64(sqlite_url, daemon_factory):
    from maild.addresses import network_key

    assert network_key("2001:db8:1:2:aaaa::1") == network_key("2001:db8:1:2:ffff::9")
    assert network_key("2001:db8:1:2:aaaa::1") != network_key("2001:db8:1:3::1")
    assert network_key("::ffff:192.0.2.7") == "192.0.2.7" == network_key("192.0.2.7")
    running = daemon_factory(sqlite_url, smtp={"listen": "[::1]:0", "max_connections_per_ip": 1})
    first = smtplib.SMTP(timeout=10)
    first.connect("::1", running.port)
    assert dict(running.daemon.handler.connections) == {"::/64": 1}
    code, _message = smtplib.SMTP(timeout=10).connect("::1", running.port)
    assert code == 421
    first.quit()


# --- 5. agent commands from a header ------------------------------------------------------


def _agent_reply(note: Any, body: str, *, message_id: str, to: str | None = None,
                 prepend: bytes = b"") -> bytes:  # fmt: skip
    """Anna's reply to her notification, as her mail client writes it."""
    return prepend + make_message(
        sender="Anna Agent <anna@example.com>", to=to or str(note["Reply-To"]),
        subject=f"Re: {note['Subject']}", body=body, message_id=message_id,
        in_reply_to=note["Message-ID"], references=note["Message-ID"])  # fmt: skip


def test_5_a_reply_address_seen_in_a_header_runs_no_command(sqlite_url, daemon_factory, tmp_path):
    running = daemon_factory(sqlite_url, agents=AGENTS)
    out = Outgoing(tmp_path / "outgoing")
    smtp_send(running.port, make_message(), mail_from="bob@example.org")
    note = out.wait("anna@example.com")
    token = note["Reply-To"].addresses[0].addr_spec
    # Eve once saw Anna's reply address (a forwarded mail). She writes "from Anna"
    # with it in To, but delivers to the plain help-desk address.
    forged = _agent_reply(note, "#close\n#priority P1\n", message_id="<eve-1@evil.example>",
                          to=token)  # fmt: skip
    smtp_send(running.port, forged, mail_from="eve@evil.example", rcpt="help@example.com")
    wait_until(lambda: processed(sqlite_url, 2), timeout=20)
    assert ticket_row(sqlite_url, 1) == {"status": "open", "priority": 3}
    # The same words delivered to the address itself are Anna's commands.
    genuine = _agent_reply(note, "#priority P2\n", message_id="<anna-1@example.com>")
    smtp_send(running.port, genuine, mail_from="anna@example.com", rcpt=token)
    wait_until(lambda: ticket_row(sqlite_url, 1)["priority"] == 2, timeout=20)


def test_5_a_forged_verdict_above_the_first_hop_is_not_believed(
    sqlite_url, daemon_factory, tmp_path
):
    # maild is the MX; the admin trusts "mx.example.com" (their filtering relay's
    # name): maild must not believe a verdict the sender wrote at the top of its mail.
    running = daemon_factory(sqlite_url, agents=AGENTS, agent_mail={
        "require_authentication_results": True, "trusted_authserv_ids": ["mx.example.com"]})  # fmt: skip
    out = Outgoing(tmp_path / "outgoing")
    smtp_send(running.port, make_message(), mail_from="bob@example.org")
    note = out.wait("anna@example.com")
    token = note["Reply-To"].addresses[0].addr_spec
    forged_verdict = (b"Authentication-Results: mx.example.com; dkim=pass header.d=example.com;"
                      b" dmarc=pass header.from=example.com\r\n")  # fmt: skip
    forged = _agent_reply(note, "#close\n", message_id="<eve-2@evil.example>",
                          prepend=forged_verdict)  # fmt: skip
    smtp_send(running.port, forged, mail_from="anna@example.com", rcpt=token)
    wait_until(lambda: processed(sqlite_url, 2), timeout=20)
    assert ticket_row(sqlite_url, 1)["status"] == "open"
    (raw,) = query(sqlite_url, "select raw from inbound_raw where inbound_id = 2")
    head = bytes(raw[0]).split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"Received: from ") and b"(maild)" in head.split(b"\r\n")[0]
    assert b"\r\nX-Maild-Untrusted-Authentication-Results: mx.example.com;" in head
    refused = out.wait("anna@example.com")  # Anna hears why
    assert "outside" in refused.get_body(("plain",)).get_content()


# --- 1. ticket takeover by a forged requester ---------------------------------------------


def test_1_a_forged_requester_cannot_take_over_a_ticket(sqlite_url, daemon_factory, tmp_path):
    running = daemon_factory(sqlite_url, agents=AGENTS)
    out = Outgoing(tmp_path / "outgoing")
    smtp_send(running.port, make_message(), mail_from="bob@example.org")
    ack = out.wait("bob@example.org")
    note = out.wait("anna@example.com")
    # Bob answers his acknowledgement copying Carol: he is verified (a reply to maild's
    # mail to him), so Carol watches from now on.
    smtp_send(running.port, reply_to(ack, sender="Bob Customer <bob@example.org>",
                                     body="Carol needs it too.", message_id="<b2@example.org>",
                                     headers={"Cc": "Carol <carol@example.org>"}),
              mail_from="bob@example.org")  # fmt: skip
    wait_until(lambda: watchers(sqlite_url, 1) == ["carol@example.org"], timeout=20)

    # Eve, from anywhere, writes "as Bob" with the tag, copying herself (and not Carol).
    forged = make_message(sender="Bob Customer <bob@example.org>", subject="[#1] one more thing",
                          body="Please send the new VPN password to this thread.",
                          message_id="<eve-1@evil.example>",
                          headers={"Cc": "Eve <eve@evil.example>", "Reply-To": "eve@evil.example"})  # fmt: skip
    smtp_send(running.port, forged, mail_from="eve@evil.example")
    wait_until(lambda: processed(sqlite_url, 3), timeout=20)
    assert watchers(sqlite_url, 1) == ["carol@example.org"]  # nobody added, nobody dropped
    (verified,) = query(sqlite_url, "select verified_by from article "
                                    "where message_id = '<eve-1@evil.example>'")  # fmt: skip
    assert verified[0] == "none"
    flagged = out.wait("anna@example.com", saying="NOT VERIFIED")  # the agent sees it, marked
    assert "only claims to be from Bob Customer" in flagged.get_body(("plain",)).get_content()

    # The agent's next public reply goes where it went before: Bob, Carol in Cc.
    smtp_send(running.port, _agent_reply(note, "Your new password is hunter2.\n",
                                         message_id="<anna-2@example.com>"),
              mail_from="anna@example.com", rcpt=note["Reply-To"].addresses[0].addr_spec)  # fmt: skip
    to_bob = out.wait("bob@example.org")
    assert {a.addr_spec for a in to_bob["Cc"].addresses} == {"carol@example.org"}

    # Resolved, then a forged "[#1]" with Reply-To: spy: no reopen, and nothing to the spy.
    resolved = maild_cli(tmp_path, sqlite_url, "ticket", "resolve", "1")
    assert resolved.returncode == 0, resolved.stderr
    out.wait("bob@example.org")  # the resolution notice
    spy = make_message(
        sender="bob@example.org",
        subject="Re: [#1] still broken",
        message_id="<eve-2@evil.example>",
        headers={"Reply-To": "spy@evil.example"},
    )
    smtp_send(running.port, spy, mail_from="spy@evil.example")
    wait_until(lambda: processed(sqlite_url, 5), timeout=20)
    assert ticket_row(sqlite_url, 1)["status"] == "resolved"
    sent = [m for m in read_maildir(tmp_path / "outgoing")]
    assert not [m for m in sent if "evil.example" in f"{m['To']} {m['Cc']}"]


# --- 3. acknowledgements as a spam cannon ------------------------------------------------


def test_3_an_acknowledgement_goes_to_the_from_only_and_quotes_nothing(
    sqlite_url, daemon_factory, tmp_path
):
    running = daemon_factory(sqlite_url)
    out = Outgoing(tmp_path / "outgoing")
    cc = ", ".join(f"target{i}@example.net" for i in range(20))
    spam = make_message(sender="Cheap Pills www.pills.example <eve@evil.example>",
                        subject="Your invoice", message_id="<spam-1@evil.example>",
                        body="Buy now at http://pills.example/buy " * 20,
                        headers={"Reply-To": "victim@example.net", "Cc": cc})  # fmt: skip
    smtp_send(running.port, spam, mail_from="eve@evil.example")
    ack = out.wait("eve@evil.example")
    wait_until(lambda: processed(sqlite_url, 1), timeout=20)
    assert set(out.new()) == set()  # nobody else: no victim, no Cc
    assert ack["To"] == "eve@evil.example" and ack["Cc"] is None  # no name quoted either
    text = ack.get_body(("plain",)).get_content()
    assert "Your invoice" in text and "pills" not in text.lower()
    assert watchers(sqlite_url, 1) == []


# --- 2. muting anyone with a forged bounce -------------------------------------------------


class Sink:
    """The relay maild sends through: every transaction, envelope included."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))  # fmt: skip
        return "250 2.0.0 queued"

    def wait(self, rcpt: str, *, after: int = 0) -> tuple[str, Any]:
        """(return path, parsed mail) of the next transaction to `rcpt`."""

        def find() -> Any:
            for mail_from, rcpts, data in self.received[after:]:
                if rcpt in rcpts:
                    return mail_from, email.message_from_bytes(data, policy=email.policy.default)
            return None

        return wait_until(find, timeout=20)


@pytest.fixture
def sink() -> Any:
    from aiosmtpd.controller import Controller

    relay = Sink()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield relay, controller.port
    controller.stop()


def dsn(failed: str, original_id: str) -> bytes:
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\nTo: help@example.com\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <{uuid.uuid4().hex}"
        f"@mx.example.org>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        f"--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org"
        f"\r\n\r\nFinal-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{failed}>: Recipient address rejected\r\n\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Help Desk <help@example.com>\r\n"
        f"Message-ID: {original_id}\r\nSubject: [#1] x\r\n\r\n--B--\r\n"
    ).encode()


def bounce_state(db_url: str, address: str) -> str:
    (row,) = query(db_url, f"select bounce_state from contact where email = '{address}'")
    return str(row[0])


def test_2_a_forged_bounce_mutes_nobody(sqlite_url, daemon_factory, sink, tmp_path):
    relay, port = sink
    running = daemon_factory(sqlite_url, agents=AGENTS, outgoing={
        "transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port})  # fmt: skip
    victim = "victim@example.net"
    # Mallory opens a ticket copying the victim, and copies her again in a reply to
    # her acknowledgement (a verified mail): the victim watches the ticket.
    smtp_send(running.port, make_message(sender="mallory@example.org", headers={"Cc": victim}),
              mail_from="mallory@example.org")  # fmt: skip
    _verp, ack = relay.wait("mallory@example.org")
    smtp_send(running.port, reply_to(ack, sender="mallory@example.org", body="+ my colleague",
                                     message_id="<m2@example.org>", headers={"Cc": victim}),
              mail_from="mallory@example.org")  # fmt: skip
    wait_until(lambda: watchers(sqlite_url, 1) == [victim], timeout=20)
    # An agent's reply goes to both: one transaction each, each its own return path.
    _verp, note = relay.wait("anna@example.com")
    seen = len(relay.received)
    smtp_send(running.port, _agent_reply(note, "We are on it.\n", message_id="<a1@example.com>"),
              mail_from="anna@example.com", rcpt=note["Reply-To"].addresses[0].addr_spec)  # fmt: skip
    mallory_verp, reply = relay.wait("mallory@example.org", after=seen)
    victim_verp, _copy = relay.wait(victim, after=seen)
    assert mallory_verp != victim_verp

    # The attack: a DSN with the null sender, to the help-desk address,
    # quoting Mallory's acknowledgement and naming the victim.
    with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as client:
        client.sendmail("", ["help@example.com"], dsn(victim, str(ack["Message-ID"])))
        # ...and to the return path of Mallory's own copy, naming the victim.
        client.sendmail("", [mallory_verp], dsn(victim, str(reply["Message-ID"])))
    wait_until(lambda: processed(sqlite_url, 5), timeout=20)
    assert bounce_state(sqlite_url, victim) == "ok"
    # The victim's own request is acknowledged as ever.
    smtp_send(
        running.port,
        make_message(sender=victim, subject="My own request", message_id="<v1@example.net>"),
        mail_from=victim,
    )
    _verp, own = relay.wait(victim, after=len(relay.received))
    assert "My own request" in own["Subject"]

    # A genuine bounce of the victim's copy (to its own return path) marks her...
    with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as client:
        client.sendmail("", [victim_verp], dsn(victim, str(reply["Message-ID"])))
    wait_until(lambda: bounce_state(sqlite_url, victim) == "hard", timeout=20)
    shown = maild_cli(tmp_path, sqlite_url, "contact", "show", victim)
    assert b"hard" in shown.stdout and b"no automatic mail until" in shown.stdout
    # ...until an operator who knows better says otherwise.
    reset = maild_cli(tmp_path, sqlite_url, "contact", "reset", victim)
    assert reset.returncode == 0 and b"hard -> ok" in reset.stdout
    assert bounce_state(sqlite_url, victim) == "ok"


# --- 3. rate limits per sender and per source, digests, a breaker one source can't trip ----


def start_clocked_daemon(settings: Any, clock: Any) -> Any:
    """The daemon with a clock the test moves (sender in a thread, sweeps as scheduled)."""
    import asyncio
    import threading

    from maild.service.daemon import Daemon
    from tests.conftest import RunningDaemon

    daemon = Daemon(settings, clock=clock)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(daemon.run(install_signals=False))
        except BaseException as exc:
            errors.append(exc)
            daemon.ready.set()

    thread = threading.Thread(target=run, name="daemon", daemon=True)
    thread.start()
    if not daemon.ready.wait(30) or errors:
        raise RuntimeError(f"daemon did not start: {errors}")
    return RunningDaemon(daemon, thread)


def send_from(port: int, source_ip: str, raw: bytes, mail_from: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source_ip, 0)) as client:
        client.sendmail(mail_from, ["help@example.com"], raw)


def test_3_floods_withhold_nobody_s_own_mail_and_trip_no_breaker(sqlite_url, tmp_path):
    from maild.clock import FrozenClock
    from tests.conftest import stop_daemon
    from tests.support.desk import make_settings

    clock = FrozenClock()
    settings = make_settings(tmp_path, sqlite_url, smtp={"listen": "127.0.0.1:0"},
                             sla={"sweep_seconds": 0.3}, limits={
                                 "autoreply_per_address_per_hour": 3,
                                 "autoreply_per_source_per_hour": 6,
                                 "autoreply_global_per_hour": 30})  # fmt: skip
    running = start_clocked_daemon(settings, clock)
    out = Outgoing(tmp_path / "outgoing")
    victim = "victim@example.net"
    try:
        # Ten forged mails "from" the victim, from one source, within the hour.
        for i in range(10):
            send_from(running.port, "127.0.0.1", make_message(
                sender=victim, subject=f"Forged {i}", message_id=f"<f{i}@evil.example>"),
                "x@evil.example")  # fmt: skip
        wait_until(lambda: processed(sqlite_url, 10), timeout=30)
        assert len(wait_until(lambda: out.new().get(victim), timeout=20)) == 3
        # The victim's own mail, from her own server: acknowledged at once.
        send_from(running.port, "127.0.0.2", make_message(
            sender=victim, subject="My laptop is dead", message_id="<own@example.net>"), victim)  # fmt: skip
        own = out.wait(victim)
        assert "My laptop is dead" in own["Subject"]
        # Random senders from one source, faster than the breaker's hourly budget.
        for i in range(40):
            send_from(running.port, "127.0.0.3", make_message(
                sender=f"r{i}@random.example", subject=f"Spam {i}",
                message_id=f"<s{i}@random.example>"), f"r{i}@random.example")  # fmt: skip
        wait_until(lambda: processed(sqlite_url, 51), timeout=60)
        spam_acks = [
            m for m in read_maildir(tmp_path / "outgoing") if "random.example" in str(m["To"])
        ]
        assert len(spam_acks) == 6
        # Someone else still gets an answer: the breaker did not trip.
        send_from(running.port, "127.0.0.4", make_message(
            sender="dora@example.org", subject="Printer", message_id="<d1@example.org>"),
            "dora@example.org")  # fmt: skip
        out.wait("dora@example.org")

        # An hour on, the victim gets the seven held acknowledgements as one digest.
        out.new()
        clock.advance(hours=1, minutes=1)
        digest = out.wait(victim, timeout=30)
        assert "held back" in digest["Subject"].lower() or "held back" in digest["Subject"]
        text = digest.get_body(("plain",)).get_content()
        assert all(f"Forged {i}" in text for i in range(3, 10)) and "Forged 0" not in text
        wait_until(lambda: not query(sqlite_url, "select 1 from held_notice "
                                                  "where sent_at is null"), timeout=10)  # fmt: skip
        assert [m for m in out.new().get(victim, [])] == []  # one digest, not seven mails
    finally:
        stop_daemon(running)


# --- 4. a security incident's subject in alerts, and every template ----------------------


SECRET = "CFO-PASSWORD-LEAK"  # in the subject and text of the security incident


def test_4_alerts_about_a_security_incident_name_nothing_of_it(
    sqlite_url, daemon_factory, sink, tmp_path
):
    relay, port = sink
    running = daemon_factory(sqlite_url, tiers={"tier1": ["tier1@example.com"],
                                                "security": ["sec@example.com"]},
                             limits={"autoreply_per_address_per_hour": 1},
                             outgoing={"transport": "smtp", "smtp_host": "127.0.0.1",
                                       "smtp_port": port})  # fmt: skip
    smtp_send(running.port, make_message(subject=f"Phishing: I typed the {SECRET} into a fake page",
                                         body=f"The {SECRET} went to evil.example."),
              mail_from="bob@example.org")  # fmt: skip
    verp, _ack = relay.wait("bob@example.org")
    assert query(sqlite_url, "select security from ticket where id = 1")[0][0]
    # A second one: its acknowledgement is held back (a suspected loop: more than
    # one an hour), and the tier-1 group is alerted.
    smtp_send(running.port, make_message(subject=f"Phishing again: the {SECRET}",
                                         message_id="<second@example.org>"),
              mail_from="bob@example.org")  # fmt: skip
    wait_until(
        lambda: [
            1
            for _f, rcpts, d in relay.received
            if rcpts == ["tier1@example.com"] and b"] maild: " in d
        ],
        timeout=20,
    )
    # Its requester bounces: the tier-1 group is alerted again.
    with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as client:
        client.sendmail("", [verp], dsn("bob@example.org", str(_ack["Message-ID"])))
    wait_until(lambda: bounce_state(sqlite_url, "bob@example.org") == "hard", timeout=20)

    def alerts() -> list[bytes]:
        return [d for _f, rcpts, d in relay.received
                if rcpts == ["tier1@example.com"] and b"] maild: " in d]  # fmt: skip

    wait_until(lambda: len(alerts()) == 2, timeout=20)
    for alert in alerts():
        assert SECRET.encode() not in alert and b"bob@example.org" not in alert
    to_security = [d for _f, rcpts, d in relay.received if rcpts == ["sec@example.com"]]
    assert to_security and SECRET.encode() in to_security[0]  # the security contacts see it


# Every template maild renders, with every free-text value it takes carrying the
# secret: the internal ones must not show it to an agent outside the security group.
INTERNAL = {
    "agent_confirm": {"steps": [{"label": "#priority P1", "changes": [("priority", 3, 1)],
                                 "mails": 0}], "replied": False},
    "agent_escalated": {"actor": "anna@example.com", "breach": None, "from_tier": 1,
                        "reason": SECRET, "role": "tier"},
    "agent_new": {"hierarchical": False, "parent_id": None, "role": "tier", "summary": SECRET},
    # (what the agent's own commands said, back to that agent)
    "agent_refused": {"errors": ["unknown command #clsoe"], "syntax": ["#close"]},
    "agent_rejected": {"reasons": ["it was not sent to your reply address"],
                       "received_at": datetime(2026, 12, 1, tzinfo=UTC),
                       "sender": f"{SECRET} <bob@example.org>", "subject": SECRET,
                       "summary": SECRET},
    "agent_update": {"actor": "anna@example.com", "author": f"Bob {SECRET}", "event": "reply",
                     "note": SECRET, "old": "P3", "role": "tier", "summary": SECRET,
                     "unverified": SECRET},
    "alert": {"advice": "Look.", "details": [SECRET], "headline": f"{SECRET} is undeliverable"},
    "regulator_reminder": {"elapsed_hours": 24, "left_hours": 48, "overdue": False,
                           "role": "security"},
    "sla_breach": {"role": "tier", "targets": ["first_response"]},
    "sla_warning": {"due": datetime(2026, 12, 1, tzinfo=UTC), "role": "tier",
                    "target": "first_response"},
    "agent_alert": {"event": "new", "role": "tier", "occurrences": 2, "flaps": 0,
                    "alert": {"source": "Nagios", "host": f"{SECRET}-host",
                              "service": f"{SECRET} service", "state": "CRITICAL",
                              "label": f"{SECRET}-host/{SECRET} service", "summary": SECRET}},
    "agent_major": {"event": "opened", "actor": "maild", "note": SECRET,
                    "why": "5 new incidents of category security within 30 minutes",
                    "role": "tier", "children": [{"number": 2, "subject": SECRET}]},
    # (a console sign-in link, about no ticket: maild.web queues it with Applier.queue_mail)
    "web_login": {"agent": {"name": "Anna", "email": "anna@example.com"}, "minutes": 15,
                  "link": "https://help.example.com/login/x"},
}  # fmt: skip
# Not about one ticket: counts per priority, category and status, no subjects.
FIGURES_ONLY = {"weekly_report"}
PUBLIC = {
    "ack": {"copied": 0, "first_response_due": datetime(2026, 12, 1, tzinfo=UTC),
            "hierarchical": False, "notes": [], "parent_id": None, "questions": [],
            "resolution_due": None, "security": True, "summary": SECRET},
    "closed": {"note": ""}, "escalated": {"breach": None, "from_tier": 1},
    "limits": {"notes": ["x"]},
    "meeting": {"agent": {"name": "Anna"}, "end": datetime(2026, 12, 1, 10, tzinfo=UTC),
                "link": "", "start": datetime(2026, 12, 1, 9, tzinfo=UTC)},
    "reply": {"agent": {"name": "Anna"}, "text": "On it."},
    "resolved": {"auto": False, "closes_at": datetime(2026, 12, 4, tzinfo=UTC), "note": ""},
    "status": {"by_reply": False, "event": "in_progress", "note": ""},
    "waiting_reminder": {"resolves_at": datetime(2026, 12, 8, tzinfo=UTC),
                         "waiting_since": datetime(2026, 12, 1, tzinfo=UTC)},
    "watcher_removed": {"removed_by": "bob@example.org"},
    "digest": {"held_since": datetime(2026, 12, 1, tzinfo=UTC),
               "items": [{"number": 1, "subject": "x", "kind": "ack"}]},
    "major_known": {"major": 7},
}  # fmt: skip


def test_4_every_template_on_a_security_ticket(sqlite_url, tmp_path):
    from maild.mail.render import TEMPLATES
    from maild.pipeline.decision import Notice
    from maild.store.models import Ticket
    from maild.store.states import Visibility
    from tests.support.desk import Desk, make_settings

    assert set(INTERNAL) | set(PUBLIC) | FIGURES_ONLY == set(TEMPLATES), (
        "classify the new template here"
    )
    desk = Desk(make_settings(tmp_path, sqlite_url, tiers={"tier1": ["tier1@example.com"],
                                                           "security": ["sec@example.com"]},
                              limits={"autoreply_per_address_per_hour": 1000,
                                      "autoreply_per_ticket_per_10_minutes": 1000}))  # fmt: skip
    try:
        desk.process(make_message(subject=f"Phishing: my {SECRET} was stolen",
                                  body=f"{SECRET} is out."))  # fmt: skip
        for name, context in [*INTERNAL.items(), *PUBLIC.items()]:
            for language in ("en", "fi"):
                internal = name in INTERNAL
                recipients = ("tier1@example.com", "sec@example.com") if internal else (
                    "bob@example.org",)  # fmt: skip
                for rcpt in recipients:
                    with desk.sessions.begin() as session:
                        ticket = session.get(Ticket, 1)
                        assert ticket.security
                        notice = Notice(template=name, to=(Address("", rcpt),), kind=f"t{name}"[:32],
                                        auto_submitted="auto-generated", context=context,
                                        language=language, visibility=Visibility.INTERNAL
                                        if internal else Visibility.PUBLIC)  # fmt: skip
                        outbox_id = desk.applier.queue_notice(
                            session, ticket, notice, desk.clock.now()
                        )
                        raw = session.get(Outbox, outbox_id).raw
                    mail = email.message_from_bytes(raw, policy=email.policy.default)
                    shown = str(mail["Subject"]) + "".join(
                        p.get_content() for p in mail.walk() if p.get_content_maintype() == "text"
                    )
                    where = f"{language}/{name} to {rcpt}"
                    if rcpt == "tier1@example.com":
                        assert SECRET not in shown, where
                        assert "bob@example.org" not in shown, where
                    elif name in ("ack", "agent_new"):
                        assert SECRET in shown, where  # the requester, the security contacts
    finally:
        desk.close()


def test_2_a_hard_bounce_lapses(sqlite_url, tmp_path):
    """A hard bounce stops automatic mail for outgoing.hard_bounce_days, not for ever."""
    from tests.support.desk import Desk, make_settings

    desk = Desk(make_settings(tmp_path, sqlite_url, outgoing={"hard_bounce_days": 30}))
    try:
        desk.process(make_message(sender="ann@example.net"))
        with desk.sessions.begin() as s:
            s.execute(text("update contact set bounce_state = 'hard', bounced_at = :at "
                           "where email = 'ann@example.net'"), {"at": desk.clock.now()})  # fmt: skip
        with desk.ops() as ops:
            ops.set_status(1, "pending_user", actor="anna@cli")
        assert "status_suppressed" in {e["kind"] for e in desk.ticket(1)["events"]}
        sent = len(desk.outgoing())
        desk.clock.advance(days=31)
        with desk.ops() as ops:
            ops.set_status(1, "in_progress", actor="anna@cli")
        (update,) = desk.outgoing()[sent:]
        assert update["To"] == "ann@example.net"
    finally:
        desk.close()
