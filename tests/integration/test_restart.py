"""`maild serve` as a real child process: stopped, killed, restarted.

Every message that got a 250 is stored, processed and acknowledged exactly
once, whatever happened to the daemon in between.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.support.desk import make_message, read_maildir
from tests.support.ports import listening_socket
from tests.support.serveproc import activated, wait_greeting
from tests.support.waiting import wait_settled, wait_until


class Server:
    """`maild serve` in a child process, on its own port and database."""

    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.listener = listening_socket()  # ours for the whole test, across restarts
        self.port = self.listener.getsockname()[1]
        self.db_url = db_url
        self.outgoing = tmp_path / "outgoing"
        self.config = tmp_path / "maild.toml"
        self.config.write_text(
            f'[database]\nurl = "{db_url}"\n'
            f'[helpdesk]\nsecret_file = "{tmp_path / "secret.key"}"\n'
            f'[outgoing]\nmaildir = "{self.outgoing}"\n'
            # A short lease: on PostgreSQL (possibly several instances) rows a
            # killed daemon had in hand come back when their lease runs out.
            "[worker]\npoll_seconds = 0.2\nparse_processes = 1\nlease_seconds = 4\n"
            # Not the default metrics port 9325: another run may hold it.
            "[http]\nenabled = false\n"
        )
        self.log = open(tmp_path / "serve.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv, fds = activated(self.listener, "--config", str(self.config), "serve")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, pass_fds=fds,
                                     start_new_session=True)  # fmt: skip
        wait_greeting(self.port, self.proc, 30)

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # the parse processes die with it
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self.listener.close()
        self.log.close()


def db_rows(db_url: str, sql: str) -> list[tuple]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def assert_exactly_once(server: Server, message_ids: set[str]) -> None:
    inbound = Counter(r[0] for r in db_rows(server.db_url, "select message_id from inbound"))
    assert set(inbound) == message_ids
    assert max(inbound.values()) == 1, "a message was stored twice"
    per_ticket = db_rows(server.db_url, "select a.message_id, count(distinct a.ticket_id) from "
                                        "article a where a.direction = 'in' group by a.message_id")  # fmt: skip
    missing = message_ids - {m for m, _ in per_ticket}
    if missing:
        quoted = ", ".join(f"'{m}'" for m in sorted(missing)[:5])
        detail = db_rows(server.db_url, "select message_id, status, attempts, error from inbound "
                                        f"where message_id in ({quoted})")  # fmt: skip
        raise AssertionError(f"{len(missing)} message(s) on no ticket: {detail}")
    assert all(n == 1 for _, n in per_ticket)
    assert db_rows(server.db_url, "select count(*) from ticket")[0][0] == len(message_ids)
    acks = db_rows(server.db_url, "select ticket_id, status from outbox")
    assert len(acks) == len(message_ids) and {s for _, s in acks} == {"sent"}
    # On disk: one acknowledgement per ticket, none twice.
    mails = read_maildir(server.outgoing)
    assert Counter(m["In-Reply-To"] for m in mails) == Counter({m: 1 for m in message_ids})


def send(port: int, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("bob@example.org", ["help@example.com"], raw)


def test_sigterm_after_250_then_restart_loses_and_doubles_nothing(db_url, tmp_path):
    server = Server(tmp_path, db_url)
    try:
        server.start()
        ids = {f"<term-{i}@example.org>" for i in range(8)}
        for mid in sorted(ids):
            send(server.port, make_message(message_id=mid, sender=f"u{mid[6]}@example.org"))
        assert server.terminate() == 0
        server.start()
        wait_settled(db_url)
        assert_exactly_once(server, ids)
    finally:
        server.close()


def test_kill_9_while_a_client_streams(db_url, tmp_path):
    """A client streams messages like an MTA (retrying what got no 250) while
    the daemon is killed with SIGKILL again and again."""
    server = Server(tmp_path, db_url)
    total = 150
    acknowledged: set[str] = set()
    stop = threading.Event()

    def client() -> None:
        i = 0
        while i < total and not stop.is_set():
            mid = f"<k9-{i}@example.org>"
            raw = make_message(message_id=mid, sender=f"user{i % 17}@example.org",
                               subject=f"Issue {i}")  # fmt: skip
            try:
                send(server.port, raw)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the daemon is down: try the same message again
                continue
            acknowledged.add(mid)
            i += 1

    try:
        server.start()
        streamer = threading.Thread(target=client)
        streamer.start()
        # Kills paced by the stream, not the clock: each comes after another
        # fifth of the messages got their 250, so all four happen mid-stream
        # on a fast machine and a slow one alike.
        kills = 0
        for fifth in range(1, 5):
            wait_until(lambda f=fifth: len(acknowledged) >= total * f // 5
                       or not streamer.is_alive(), timeout=120)  # fmt: skip
            assert streamer.is_alive(), "the client stopped early"
            server.kill()
            kills += 1
            server.start()
        streamer.join(120)
        stop.set()
        assert len(acknowledged) == total and kills == 4
        wait_settled(db_url)
        assert_exactly_once(server, acknowledged)
    finally:
        stop.set()
        server.close()
