"""A real, unprivileged Dovecot for tests and benchmarks (IMAP on loopback).

`Dovecot` writes a small configuration into a fresh directory under the
system temp folder (readable by ``nobody``: pytest's own temp folders are not),
starts ``dovecot -F`` as ``nobody`` when we are root (as ourselves otherwise)
on ephemeral loopback ports, and stops it again. Any user name logs in with
the password ``secret`` and gets its own Maildir, so tests isolate themselves
by using a fresh user name. Optionally it offers TLS (a self-signed
certificate made with ``openssl``) on a STARTTLS-capable port plus an
implicit-TLS port, and XOAUTH2/OAUTHBEARER checked against an OAuth2
introspection URL (a test serves that URL: the one third-party service we
cannot run here).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from imapclient import IMAPClient

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
PASSWORD = "secret"


def dovecot_available() -> str | None:
    """None when Dovecot can run here; otherwise why not."""
    if not Path(DOVECOT).exists():
        return "dovecot is not installed (apt-get install dovecot-imapd)"
    if not Path("/usr/lib/dovecot/imap").exists():
        return "dovecot-imapd is not installed (no /usr/lib/dovecot/imap)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> tuple[str, str]:
    """(user, group) the server runs as: nobody when root, else ourselves."""
    if os.geteuid() == 0:
        return "nobody", "nogroup"
    import grp

    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies left unreaped by
    an init that does not reap do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


class Dovecot:
    def __init__(
        self,
        *,
        tls: bool = False,
        oauth2_introspection_url: str | None = None,
        extra_config: str = "",
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="maild-dovecot-"))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.tls = tls
        self.oauth2_url = oauth2_introspection_url
        self.extra_config = extra_config
        self.user, self.group = _run_as()
        self.proc: subprocess.Popen[bytes] | None = None
        # In the greeting: proof that it is this server that answers on the
        # port, not another test's Dovecot that took the port first.
        self.greeting = f"maild-test-{uuid.uuid4().hex[:12]}"
        self._started = False
        self._write_config()

    # --- lifecycle ---------------------------------------------------------

    @property
    def cert(self) -> Path:
        return self.dir / "cert.pem"

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("run", "state", "mail"):
            (d / sub).mkdir(exist_ok=True)
        ssl = "ssl = no"
        imaps = "inet_listener imaps {\n    port = 0\n  }"
        if self.tls:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                 "-keyout", str(d / "key.pem"), "-out", str(self.cert)],
                check=True, capture_output=True,
            )  # fmt: skip
            ssl = f"ssl = yes\nssl_cert = <{self.cert}\nssl_key = <{d / 'key.pem'}"
            imaps = (
                f"inet_listener imaps {{\n    address = 127.0.0.1\n    port = {self.tls_port}\n"
                "    ssl = yes\n  }"
            )
        mechanisms = "plain login"
        passdbs = f"passdb {{\n  driver = static\n  args = password={PASSWORD}\n}}"
        if self.oauth2_url:
            mechanisms += " xoauth2 oauthbearer"
            (d / "oauth2.conf.ext").write_text(
                f"introspection_mode = post\nintrospection_url = {self.oauth2_url}\n"
                "username_attribute = username\nactive_attribute = active\n"
                "active_value = true\nforce_introspection = yes\n"
            )
            passdbs = (
                "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {d / 'oauth2.conf.ext'}\n}}\n"
                "passdb {\n  driver = static\n  mechanisms = plain login\n"
                f"  args = password={PASSWORD}\n}}"
            )
        (d / "dovecot.conf").write_text(f"""\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
login_greeting = {self.greeting}
auth_mechanisms = {mechanisms}
auth_failure_delay = 0
default_internal_user = {self.user}
default_internal_group = {self.group}
default_login_user = {self.user}
mail_privileged_group =
mail_location = maildir:{d}/mail/%n/Maildir
mail_max_userip_connections = 200
namespace inbox {{
  inbox = yes
  separator = /
}}
{passdbs}
userdb {{
  driver = static
  args = uid={self.user} gid={self.group} home={d}/mail/%n
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  {imaps}
}}
service anvil {{
  chroot =
  # No auth penalty (up to 15 s per login from an IP after a failure): the
  # tests fail logins on purpose, all from 127.0.0.1.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{self.extra_config}
""")
        if os.geteuid() == 0:
            shutil.chown(d, self.user, self.group)
            for path in d.rglob("*"):
                shutil.chown(path, self.user, self.group)

    def start(self, timeout: float = 20.0) -> None:
        """Start; the first time, on other ports if the chosen ones were taken
        meanwhile (a restart keeps them: clients know them)."""
        attempts = 1 if self._started else 5
        for attempt in range(attempts):
            try:
                self._start(timeout)
                self._started = True
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
                self.tls_port = free_port() if self.tls else 0
                self._write_config()

    def _start(self, timeout: float) -> None:
        assert self.proc is None, "already running"
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            kwargs = {"user": self.user, "group": self.group, "extra_groups": []}
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.dir / "dovecot.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "ab"),  # noqa: SIM115 - the child keeps it
            start_new_session=True,  # its own process group: stop() ends every child too
            **kwargs,  # type: ignore[arg-type]
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    greeting = s.recv(512)
                    if greeting.startswith(b"* OK") and self.greeting.encode() in greeting:
                        return
                    if greeting.startswith(b"* OK"):  # someone else's server on our port
                        self.stop()
                        raise RuntimeError(f"port {self.port} is taken by another IMAP server")
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not answer within {timeout}s: {self.log()}")
            time.sleep(0.05)

    def stop(self, *, graceful: bool = True) -> None:
        """Stop the server and every process it started (clients are cut off).

        Graceful: SIGTERM, as an admin's restart does (clients get a BYE);
        otherwise SIGKILL at once (tearing a test down)."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # the group this server leads (start_new_session)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM if graceful else signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(15)
        # Dovecot leaves imap, log and stats processes behind its master; end them.
        deadline = time.monotonic() + (1 if graceful else 0)
        while _group_alive(pgid) and time.monotonic() < deadline + 2:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.02)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop(graceful=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        parts = []
        for name in ("dovecot.log", "stderr.log"):
            with contextlib.suppress(OSError):
                parts.append((self.dir / name).read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    # --- talking to it -----------------------------------------------------

    def client(self, user: str) -> IMAPClient:
        c = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=30)
        c.login(user, PASSWORD)
        return c

    def append(self, user: str, messages: Iterable[bytes], folder: str = "INBOX") -> None:
        with self.client(user) as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            for raw in messages:
                c.append(folder, raw)

    def message_ids(self, user: str, folder: str) -> list[str]:
        """The Message-ID header of every message in `folder` (missing: "")."""
        with self.client(user) as c:
            if not c.folder_exists(folder):
                return []
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            if not uids:
                return []
            out = []
            data = c.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
            for uid in sorted(data):
                raw = data[uid][b"BODY[HEADER.FIELDS (MESSAGE-ID)]"]
                value = raw.decode("ascii", "replace").partition(":")[2].strip()
                out.append(value)
            return out

    def count(self, user: str, folder: str) -> int:
        with self.client(user) as c:
            if not c.folder_exists(folder):
                return 0
            return int(c.folder_status(folder, ["MESSAGES"])[b"MESSAGES"])

    def maildir(self, user: str) -> Path:
        return self.dir / "mail" / user / "Maildir"


class NoMoveIMAPClient(IMAPClient):
    """An IMAPClient that does not see MOVE, like a client of a server without
    RFC 6851: maild falls back to COPY + \\Deleted + UID EXPUNGE."""

    def capabilities(self) -> tuple[bytes, ...]:
        return tuple(c for c in super().capabilities() if c.upper() != b"MOVE")
