"""SIGHUP as an admin uses it: certbot renewed the certificate, a user was added
to the SMTP users file, someone broke the configuration (issue 17)."""

from __future__ import annotations

import hashlib
import shutil
import signal
import smtplib
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from maild.intake.smtpauth import hash_password
from tests.conftest import service_missing
from tests.support.serveproc import ServeProcess, base_sections, free_port


def make_cert(where: Path, name: str) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        service_missing("openssl")
    cert, key = where / f"{name}.crt", where / f"{name}.key"
    proc = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                           "-subj", f"/CN={name}.mx.test", "-keyout", str(key), "-out", str(cert)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return cert, key


def install(cert: Path, key: Path, tls: Path) -> None:
    """As certbot's deploy hook would: new files renamed into place."""
    for src, name in ((cert, "cert.pem"), (key, "key.pem")):
        shutil.copy(src, tls / f".{name}.new")
        (tls / f".{name}.new").rename(tls / name)


def fingerprint(port: int, *, login: tuple[str, str] | None = None) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.starttls(context=context)
        der = client.sock.getpeercert(binary_form=True)
        if login is not None:
            client.login(*login)
    return hashlib.sha256(der).hexdigest()


def der_fingerprint(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


class Log:
    def __init__(self, path: Path) -> None:
        self.path = path

    def count(self, needle: str) -> int:
        return self.path.read_text(errors="replace").count(needle) if self.path.exists() else 0

    def wait(self, needle: str, n: int, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while self.count(needle) < n:
            assert time.monotonic() < deadline, (
                f"{needle!r} x{n} not logged:\n" + (self.path.read_text()[-3000:])
            )
            time.sleep(0.05)
        return self.path.read_text()


@pytest.fixture
def tls_serve(sqlite_url, tmp_path):
    tls = tmp_path / "tls"
    tls.mkdir()
    first, second = make_cert(tmp_path, "first"), make_cert(tmp_path, "second")
    install(*first, tls)
    users = tmp_path / "smtp-users"
    users.write_text(f"anna:{hash_password('anna-pw', iterations=1000)}\n")
    port = free_port()
    sections = base_sections(tmp_path, sqlite_url, port, smtp={
        "tls_cert_file": str(tls / "cert.pem"), "tls_key_file": str(tls / "key.pem"),
        "auth_users_file": str(users)})  # fmt: skip
    serve = ServeProcess(sections, log_path=tmp_path / "serve.log")
    serve.start()
    yield serve, port, tls, first, second, users, Log(tmp_path / "serve.log")
    serve.close()


def test_sighup_takes_a_renewed_certificate_and_new_users(tls_serve):
    serve, port, tls, first, second, users, log = tls_serve
    assert fingerprint(port, login=("anna", "anna-pw")) == der_fingerprint(first[0])
    # A session open across the reload keeps working.
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    open_session = smtplib.SMTP("127.0.0.1", port, timeout=10)
    open_session.starttls(context=context)

    install(*second, tls)
    users.write_text(users.read_text() + f"bert:{hash_password('bert-pw', iterations=1000)}\n")
    serve.signal(signal.SIGHUP)
    text = log.wait("SIGHUP: configuration reloaded", 1)
    assert "TLS certificate " + der_fingerprint(second[0])[:16] in text
    assert "SMTP users: 2 (added 1, removed 0, changed 0)" in text

    assert fingerprint(port, login=("bert", "bert-pw")) == der_fingerprint(second[0])
    assert fingerprint(port, login=("anna", "anna-pw")) == der_fingerprint(second[0])
    assert open_session.noop()[0] == 250
    open_session.quit()
    assert serve.running


def test_a_broken_renewal_or_config_is_refused_and_the_old_one_kept(tls_serve):
    serve, port, tls, first, _second, _users, log = tls_serve
    (tls / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n")  # a failed renewal
    serve.signal(signal.SIGHUP)
    text = log.wait("SIGHUP: the new configuration is refused", 1)
    assert "smtp.tls_key_file" in text.splitlines()[-1] or "smtp.tls_key_file" in text
    assert fingerprint(port, login=("anna", "anna-pw")) == der_fingerprint(first[0])

    install(*first, tls)
    config = Path(serve.env()["MAILD_CONFIG"])
    config.write_text("[smtp\nthis is not TOML\n")
    serve.signal(signal.SIGHUP)
    text = log.wait("SIGHUP: the new configuration is refused", 2)
    assert "is not valid TOML" in text
    config.write_text('[helpdesk]\nname = "Renamed Desk"\n[smtp]\nlmtp = true\n')
    serve.signal(signal.SIGHUP)
    text = log.wait("SIGHUP: configuration reloaded", 1)
    assert "takes effect only after a restart: smtp.lmtp, helpdesk.name" in text
    assert fingerprint(port, login=("anna", "anna-pw")) == der_fingerprint(first[0])
    assert serve.running
    assert "Traceback" not in text
