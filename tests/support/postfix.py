"""A private Postfix instance for tests (as root; no systemd, nothing on port 25).

Its own configuration, queue and log in a temporary folder; smtpd on a
loopback port of our choosing; mail for the help-desk domain goes over LMTP to
maild (TCP or a UNIX socket) exactly as docs/admin.md tells an admin to set
it up (``transport_maps``, ``recipient_delimiter = +``); other domains go
where the test says (an SMTP sink, or bounce).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

MASTER_CF = """\
{smtpd_listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """`start()`, `queue()`, `flush()`, `stop()`; the maillog in `log`."""

    def __init__(self, base: Path, smtpd_port: int, transports: dict[str, str],
                 relay_domains: tuple[str, ...] = ("example.com",)) -> None:  # fmt: skip
        self.base = base
        self.etc = base / "etc"
        self.port = smtpd_port
        self.log = base / "log" / "maillog"
        for sub in ("etc", "spool", "data", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(base / "data", "postfix", "postfix")
        table = ", ".join(f"{domain}={where}" for domain, where in transports.items())
        (self.etc / "main.cf").write_text(
            f"compatibility_level = 3.6\n"
            f"config_directory = {self.etc}\n"
            f"queue_directory = {base / 'spool'}\n"
            f"data_directory = {base / 'data'}\n"
            f"maillog_file = {self.log}\n"
            f"maillog_file_prefixes = {base / 'log'}\n"
            "myhostname = mx.test.invalid\n"
            "inet_interfaces = loopback-only\ninet_protocols = ipv4\n"
            "mynetworks = 127.0.0.0/8\nmydestination =\nlocal_recipient_maps =\n"
            "alias_maps =\nalias_database =\n"
            # docs/admin.md: the two lines that route maild's plus-addresses.
            "recipient_delimiter = +\n"
            f"relay_domains = {' '.join(relay_domains)}\n"
            f"transport_maps = inline:{{ {table} }}\n"
            "default_transport = error:no outbound mail in tests\n"
            "smtpd_peername_lookup = no\n"
            "queue_run_delay = 5s\nminimal_backoff_time = 5s\nmaximal_backoff_time = 30s\n"
            "lmtp_connect_timeout = 5s\nsmtp_connect_timeout = 5s\n"
            "lmtp_destination_concurrency_limit = 5\n"
        )
        (self.etc / "master.cf").write_text(
            MASTER_CF.format(smtpd_listen=f"127.0.0.1:{smtpd_port}")
        )

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        for cmd in (["postfix", "-c", str(self.etc), "check"],
                    ["postfix", "-c", str(self.etc), "start"]):  # fmt: skip
            proc = self._run(*cmd)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)}: {proc.stdout}{proc.stderr}{self.maillog()}")
        deadline = time.monotonic() + 30

        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix smtpd not answering on {self.port}:\n{self.maillog()}")

    def maillog(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def queue(self) -> str:
        """``postqueue -p``: empty when the queue is."""
        out = self._run("postqueue", "-c", str(self.etc), "-p").stdout
        return "" if "Mail queue is empty" in out else out

    def flush(self) -> None:
        self._run("postqueue", "-c", str(self.etc), "-f")

    def stop(self) -> None:
        self._run("postfix", "-c", str(self.etc), "stop")
