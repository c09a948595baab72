"""The SMTP listener under abuse: connection cap, idle timeout, recipient cap,
bare LF and SMTP smuggling, STARTTLS and AUTH (real smtplib client)."""

from __future__ import annotations

import shutil
import smtplib
import socket
import ssl
import subprocess

import pytest
from sqlalchemy import text

from maild.store.db import make_engine
from tests.conftest import service_missing
from tests.support.desk import make_message
from tests.support.waiting import wait_until


def inbound_rows(db_url: str) -> list[bytes]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return [
                bytes(r[0])
                for r in conn.execute(text("select raw from inbound_raw order by inbound_id"))
            ]
    finally:
        engine.dispose()


def chat(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    return sock.recv(4096)


def test_connections_per_ip_are_capped(sqlite_url, daemon_factory):
    running = daemon_factory(sqlite_url, smtp={"max_connections_per_ip": 2})
    first = smtplib.SMTP("127.0.0.1", running.port, timeout=5)
    second = smtplib.SMTP("127.0.0.1", running.port, timeout=5)
    with pytest.raises(smtplib.SMTPConnectError) as info:
        smtplib.SMTP("127.0.0.1", running.port, timeout=5)
    assert info.value.smtp_code == 421 and info.value.smtp_error.startswith(b"4.7.0")
    first.quit()
    # A slot is free again once the server has seen the first one go.
    third = wait_until(lambda: _connect_or_none(running.port))
    assert third.sendmail("bob@example.org", ["help@example.com"], make_message()) == {}
    third.quit()
    second.quit()


def _connect_or_none(port: int) -> smtplib.SMTP | None:
    try:
        return smtplib.SMTP("127.0.0.1", port, timeout=10)
    except smtplib.SMTPConnectError:
        return None


def test_idle_client_is_told_421_and_dropped(sqlite_url, daemon_factory):
    running = daemon_factory(sqlite_url, smtp={"timeout_seconds": 0.5})
    # A generous read timeout: the server, not this socket, must end the session.
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        assert sock.recv(1024).startswith(b"220")
        assert chat(sock, b"EHLO client.example.org\r\n").startswith(b"250")
        data = b""
        while chunk := sock.recv(1024):
            data += chunk
        assert data.splitlines()[-1].startswith(b"421 4.4.2")


def test_recipient_cap_answers_452_and_the_message_still_goes_through(sqlite_url, daemon_factory):
    running = daemon_factory(sqlite_url, smtp={"max_recipients": 3})
    with smtplib.SMTP("127.0.0.1", running.port, timeout=5) as client:
        client.ehlo()
        client.mail("bob@example.org")
        codes = [client.rcpt(f"help+{i}@example.com") for i in range(5)]
        assert [c for c, _m in codes] == [250, 250, 250, 452, 452]
        assert codes[3][1].startswith(b"4.5.3")
        code, _ = client.data(make_message())
        assert code == 250
    wait_until(lambda: len(inbound_rows(sqlite_url)) == 1)


def test_bare_lf_dot_does_not_end_data_so_nothing_is_smuggled(sqlite_url, daemon_factory):
    """SMTP smuggling: "\\n.\\n", "\\n.\\r\\n" and "\\r.\\r" are content, never end of DATA."""
    running = daemon_factory(sqlite_url)
    smuggled = (b"From: Bob <bob@example.org>\r\nTo: help@example.com\r\nSubject: outer\r\n"
                b"Message-ID: <outer@example.org>\r\n\r\nfirst line\n.\nMAIL FROM:<ceo@example.com>\r\n"
                b"RCPT TO:<help@example.com>\r\nDATA\r\nFrom: ceo@example.com\r\nSubject: smuggled\r\n"
                b"\r\nwire money\n.\r\nand\r.\rmore\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.recv(1024)
        for line in (b"HELO x\r\n", b"MAIL FROM:<bob@example.org>\r\n",
                     b"RCPT TO:<help@example.com>\r\n", b"DATA\r\n"):  # fmt: skip
            assert chat(sock, line)[:1] in (b"2", b"3")
        reply = chat(sock, smuggled + b".\r\n")
        assert reply.startswith(b"250")
        # The 221 comes after the answer to every transaction before it, each
        # given after its commit: a smuggled second message would be stored now.
        assert chat(sock, b"QUIT\r\n").startswith(b"221")
    rows = inbound_rows(sqlite_url)
    assert len(rows) == 1  # one message, whose body holds the would-be second one
    assert b"Subject: smuggled" in rows[0] and b"first line\n.\nMAIL FROM" in rows[0]


def _cert(tmp_path):
    if shutil.which("openssl") is None:
        service_missing("openssl (to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


def test_starttls_and_auth(sqlite_url, daemon_factory, tmp_path):
    from maild.intake.smtpauth import hash_password

    cert, key = _cert(tmp_path)
    users = tmp_path / "users"
    users.write_text(f"# test users\nrelay:{hash_password('s3cret', iterations=1000)}\n")
    running = daemon_factory(sqlite_url, smtp={
        "tls_cert_file": str(cert), "tls_key_file": str(key), "require_starttls": True,
        "auth_users_file": str(users), "auth_required": True})  # fmt: skip
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    with smtplib.SMTP("127.0.0.1", running.port, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls") and not client.has_extn("auth")  # no AUTH in clear
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            client.sendmail("bob@example.org", ["help@example.com"], make_message())
        assert info.value.smtp_code == 530  # STARTTLS first
    with smtplib.SMTP("127.0.0.1", running.port, timeout=5) as client:
        client.starttls(context=context)
        client.ehlo()
        assert client.has_extn("auth")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("relay", "wrong")
    with smtplib.SMTP("127.0.0.1", running.port, timeout=5) as client:
        client.starttls(context=context)
        client.ehlo()
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            client.sendmail("bob@example.org", ["help@example.com"], make_message())
        assert info.value.smtp_code == 530  # authentication required
    with smtplib.SMTP("127.0.0.1", running.port, timeout=5) as client:
        client.starttls(context=context)
        client.login("relay", "s3cret")
        assert client.sendmail("bob@example.org", ["help@example.com"], make_message()) == {}
    wait_until(lambda: len(inbound_rows(sqlite_url)) == 1)
