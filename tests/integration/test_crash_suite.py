"""Crash and fault suite: kill -9 under load, database gone, disk full, bad relays.

Loopback only, bounded in count and time. The daemon is the real command
(``python -m maild serve``) in a child process; the clients are real SMTP
clients that retry until they get a 250, as MTAs do. Sizes for CI are
smaller; ``make bench`` runs the full size through the environment:

    MAILD_CRASH_MESSAGES (CI 1000, full 5000)   messages sent
    MAILD_CRASH_KILLS    (CI 20, full 300)      SIGKILLs, every 0.05-0.4 s

The promises checked: every message that got a 250 is stored and becomes
exactly one ticket (or one reply on its original's ticket); every outbox row
ends ``sent`` or ``dead``; mail sent twice carries the same Message-ID.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import resource
import shutil
import smtplib
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text

from maild.store.db import make_engine, upgrade
from tests.conftest import service_missing
from tests.support.desk import make_message
from tests.support.ports import start_on_free_port
from tests.support.serveproc import ServeProcess, base_sections, send_until_accepted

pytestmark = pytest.mark.slow

MESSAGES = int(os.environ.get("MAILD_CRASH_MESSAGES", "1000"))
KILLS = int(os.environ.get("MAILD_CRASH_KILLS", "20"))
SENDERS = 8
REPLY_EVERY = 5  # every 5th message is a reply to the one its sender sent before


@dataclass
class Load:
    """Messages to send: originals, and replies to an earlier original."""

    total: int
    accepted: set[int] = field(default_factory=set)
    sent: set[int] = field(default_factory=set)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def message_id(self, i: int) -> str:
        return f"<crash-{i}@example.org>"

    def is_reply(self, i: int) -> bool:
        return (i // SENDERS) % REPLY_EVERY == REPLY_EVERY - 1

    def original_of(self, i: int) -> int:
        """A reply refers to its sender's previous message, committed before it was sent."""
        return i - SENDERS

    def raw(self, i: int) -> bytes:
        # One requester per thread: the per-address limit on automatic mail
        # (limits.autoreply_per_address_per_hour) must not hold back acks.
        sender = f"user{self.original_of(i) if self.is_reply(i) else i}@example.org"
        if self.is_reply(i):
            orig = self.original_of(i)
            return make_message(sender=sender, subject=f"Re: Case {orig}",
                                body=f"More about case {orig} (message {i}).\n",
                                message_id=self.message_id(i),
                                in_reply_to=self.message_id(orig),
                                references=self.message_id(orig))  # fmt: skip
        return make_message(sender=sender, subject=f"Case {i}",
                            body=f"Problem number {i}.\n", message_id=self.message_id(i))  # fmt: skip


def _send_all(load: Load, ports: list[int], deadline: float, keep_on: threading.Event) -> None:
    """SENDERS threads; thread k sends messages k, k+8, k+16, ... in order.

    At least `load.total` messages, and more while `keep_on` is set (so that
    every kill happens under load); `load.total` is then the number sent.
    """
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            i = k
            while i < load.total or keep_on.is_set():
                ok, tries = send_until_accepted(lambda: random.choice(ports), load.raw(i),
                                                deadline=deadline,
                                                sender=f"user{i % SENDERS}@example.org")  # fmt: skip
                with load.lock:
                    load.sent.add(i)
                    load.attempts += tries
                    if ok:
                        load.accepted.add(i)
                if not ok:
                    return
                i += SENDERS
                if i >= load.total:  # extra load while the kills go on: paced
                    time.sleep(0.25)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    load.total = len(load.sent)


def _killer(instances: list[ServeProcess], kills: int, done: threading.Event) -> list[float]:
    """SIGKILL an instance every 0.05-0.4 s (alternating), restart it; until `done`."""
    rng = random.Random(7)
    downtimes: list[float] = []
    for k in range(kills):
        if done.wait(rng.uniform(0.05, 0.4)):
            break
        victim = instances[k % len(instances)]
        started = time.monotonic()
        victim.kill()
        victim.start()
        downtimes.append(time.monotonic() - started)
    return downtimes


def _query(db_url: str, sql: str) -> list[tuple]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql)).all()]
    finally:
        engine.dispose()


def _wait_settled(db_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ((busy,),) = _query(db_url, "select count(*) from inbound where status in "
                                    "('pending', 'processing')")  # fmt: skip
        ((due,),) = _query(db_url, "select count(*) from outbox where status = 'pending'")
        if busy == 0 and due == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"queues not empty after {timeout}s: {busy} inbound, {due} outbox")


def check_no_loss_no_duplicates(db_url: str, load: Load, outgoing: Path | None) -> dict:
    """The promises, checked on the database (and the outgoing Maildir)."""
    mids = {mid: (status, ticket) for mid, status, ticket in _query(
        db_url, "select message_id, status, ticket_id from inbound")}  # fmt: skip
    missing = [i for i in load.accepted if load.message_id(i) not in mids]
    assert not missing, f"{len(missing)} message(s) got 250 and are not stored: {missing[:10]}"
    statuses = Counter(status for status, _t in mids.values())
    assert set(statuses) == {"done"}, f"not all processed: {statuses}"
    ticket_of = {mid: t for mid, (_s, t) in mids.items()}
    originals = [i for i in load.accepted if not load.is_reply(i)]
    replies = [i for i in load.accepted if load.is_reply(i)]
    ((tickets,),) = _query(db_url, "select count(*) from ticket")
    assert tickets == len(originals), f"{tickets} tickets for {len(originals)} new messages"
    assert len({ticket_of[load.message_id(i)] for i in originals}) == len(originals)
    for i in replies:
        assert ticket_of[load.message_id(i)] == ticket_of[load.message_id(load.original_of(i))], (
            f"reply {i} not on the ticket of its original"
        )
    per_mid = _query(db_url, "select message_id, count(*) from article where direction = 'in' "
                             "group by message_id having count(*) > 1")  # fmt: skip
    assert per_mid == [], f"articles stored twice: {per_mid[:5]}"
    acks = _query(db_url, "select ticket_id, count(*), min(status), max(status) from outbox "
                          "group by ticket_id")  # fmt: skip
    assert len(acks) == tickets and all(n == 1 for _t, n, _a, _b in acks), "one ack per ticket"
    assert all(a == b == "sent" for _t, _n, a, b in acks)
    if outgoing is not None:
        files = list((outgoing / "new").iterdir())
        assert len(files) == tickets, f"{len(files)} files in the outgoing Maildir"
    return {"tickets": tickets, "replies": len(replies)}


@pytest.fixture
def crash_db(request, tmp_path, _postgres) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'maild.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    name = _postgres.create()
    yield _postgres.url_for(name)
    _postgres.drop(name)


@pytest.mark.parametrize(
    ("crash_db", "instances"), [("sqlite", 1), ("postgresql", 2)], indirect=["crash_db"]
)
def test_kill_9_under_load_loses_nothing_and_duplicates_nothing(crash_db, instances, tmp_path):
    load = Load(MESSAGES if instances == 1 else MESSAGES // 2)
    kills = KILLS if instances == 1 else max(KILLS // 2, 6)  # a PostgreSQL restart is slower
    procs = []
    for n in range(instances):
        # Every message comes from this machine: loopback is a relay of ours here,
        # or the per-source cap (limits.autoreply_per_source_per_hour) holds acks back.
        sections = base_sections(tmp_path, crash_db,
                                 worker={"poll_seconds": 0.2, "lease_seconds": 600},
                                 cluster={"heartbeat_seconds": 2, "dead_after_seconds": 10},
                                 limits={"autoreply_unlimited_sources": ["127.0.0.0/8", "::1"]})  # fmt: skip
        procs.append(ServeProcess(sections, log_path=tmp_path / f"serve{n}.log"))
    done = threading.Event()
    killing = threading.Event()
    killing.set()
    downtimes: list[float] = []
    try:
        for p in procs:
            p.start()

        def kill_loop() -> None:
            downtimes.extend(_killer(procs, kills, done))
            killing.clear()

        killer = threading.Thread(target=kill_loop)
        killer.start()
        started = time.monotonic()
        _send_all(load, [p.port for p in procs], deadline=started + 600, keep_on=killing)
        done.set()
        killer.join()
        elapsed = time.monotonic() - started
        assert load.accepted == load.sent, "the clients gave up before every 250"
        assert len(downtimes) == kills
        _wait_settled(crash_db, timeout=180)
        for p in procs:
            assert p.stop() == 0
        summary = check_no_loss_no_duplicates(crash_db, load, tmp_path / "outgoing")
    finally:
        done.set()
        for p in procs:
            p.close()
    print(f"\n{load.total} messages, {len(downtimes)} kills in {elapsed:.1f}s, "
          f"{load.attempts - load.total} client retries; {summary}")  # fmt: skip


# --- database unavailable ------------------------------------------------------------


class PrivateCluster:
    """A PostgreSQL cluster of our own (initdb in a temp dir) that we can stop."""

    def __init__(self) -> None:
        initdb = _pg_bin("initdb") or shutil.which("initdb")
        if initdb is None:
            service_missing("PostgreSQL server binaries (initdb)")
        self.bin = Path(initdb).resolve().parent
        self.dir = Path(tempfile.mkdtemp(prefix="maild-pg-"))
        os.chmod(self.dir, 0o777)
        self.data = self.dir / "data"
        self.port = 0
        self.user = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "maild", "--no-sync")
        # pg_ctl -w waits for *this* postmaster (its pid file): a port someone
        # took meanwhile fails the start, and another port is tried.
        start_on_free_port(self._start_on)
        self._run("createdb", "-h", str(self.dir), "-p", str(self.port), "-U", "maild", "maild")
        self.url = f"postgresql+psycopg://maild@127.0.0.1:{self.port}/maild"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.user, str(self.bin / tool), *args], check=True,
                       capture_output=True, timeout=60)  # fmt: skip

    def _start_on(self, port: int) -> None:
        self.port = port
        self.start()

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.dir / "pg.log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin(tool: str) -> str | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for v in versions:
        if (v / tool).exists():
            return str(v / tool)
    return None


def _data_reply(port: int, raw: bytes) -> tuple[int, bytes]:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("bob@example.org", ["help@example.com"], raw)
        return 250, b""
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code, exc.smtp_error


def test_database_down_answers_451_and_recovers_by_itself(tmp_path):
    pg = PrivateCluster()
    serve = ServeProcess(base_sections(tmp_path, pg.url,
                                       http={"enabled": True, "listen": "127.0.0.1:0"}),
                         log_path=tmp_path / "serve.log")  # fmt: skip
    try:
        serve.start()
        http = serve.metrics_port()
        assert _data_reply(serve.port, make_message(message_id="<up@example.org>"))[0] == 250
        pg.stop()
        code, reply = _data_reply(serve.port, make_message(message_id="<down@example.org>"))
        assert (code, reply[:5]) == (451, b"4.3.0")
        assert _healthz(http) == 503
        pg.start()
        # No restart of maild: the same message is accepted once the database is back.
        deadline = time.monotonic() + 30
        while _data_reply(serve.port, make_message(message_id="<down@example.org>"))[0] != 250:
            assert time.monotonic() < deadline, "maild did not recover within 30 s"
            time.sleep(0.5)
        assert _healthz(http) == 200
        _wait_settled(pg.url, timeout=30)
        rows = _query(pg.url, "select message_id, status from inbound order by id")
        assert rows == [("<up@example.org>", "done"), ("<down@example.org>", "done")]
        assert _query(pg.url, "select count(*) from ticket") == [(2,)]
        assert serve.stop() == 0
    finally:
        serve.close()
        pg.close()


def _healthz(port: int) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=15) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# --- disk full -------------------------------------------------------------------------


def test_disk_full_answers_452_and_keeps_the_database_intact(sqlite_url, tmp_path):
    db_file = Path(sqlite_url.removeprefix("sqlite:///"))
    serve = ServeProcess(base_sections(tmp_path, sqlite_url), log_path=tmp_path / "serve.log")
    port = serve.port
    accepted: list[str] = []
    try:
        serve.start()
        limit = db_file.stat().st_size + 600_000
        # The file-size limit of the running daemon: every file it writes is "full" past it.
        resource.prlimit(serve.proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
        body = "".join(f"line {n} of a long report about the broken printer\n" for n in range(800))
        codes: Counter[int] = Counter()
        replies = []
        for i in range(200):
            mid = f"<full-{i}@example.org>"
            code, reply = _data_reply(port, make_message(message_id=mid, body=body))
            codes[code] += 1
            if code == 250:
                accepted.append(mid)
            else:
                replies.append(reply)
            if codes[452] + codes[451] >= 3:
                break
        assert accepted, "nothing was accepted before the disk filled"
        assert codes[452] >= 1, f"no 452 when the disk was full: {codes} {replies[:2]}"
        assert all(r.startswith((b"4.3.1", b"4.3.0")) for r in replies)
        assert serve.running, "the daemon died of a full disk"
        serve.kill()
        conn = sqlite3.connect(db_file)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {r[0] for r in conn.execute("select message_id from inbound")}
        conn.close()
        assert set(accepted) <= stored  # every 250 is there
        # Room again: the same daemon command starts and works off the backlog.
        serve.start()
        assert _data_reply(port, make_message(message_id="<after@example.org>"))[0] == 250
        _wait_settled(sqlite_url, timeout=30)
        assert serve.stop() == 0
        assert _query(sqlite_url, "select count(*) from ticket") == [(len(accepted) + 1,)]
    finally:
        serve.close()


# --- outbox against a misbehaving relay ----------------------------------------------


def _postfix_dir() -> Path:
    path = os.environ.get("MAILD_TEST_POSTFIX_DIR")
    if not path or not (Path(path) / "usr/sbin/smtp-sink").exists():
        service_missing("Postfix smtp-sink (set MAILD_TEST_POSTFIX_DIR; .ci/run extracts it)")
    return Path(path)


class Sink:
    """Postfix's smtp-sink on a fixed port, restarted in each failure mode."""

    MODES = {
        "4xx": ["-r", "DATA"],  # 450 to DATA
        "5xx": ["-f", "RCPT"],  # 550 to RCPT
        "drop": ["-q", "."],  # hang up after the final dot, no reply
        "hang": ["-W", ".:10"],  # answer the final dot only after 10 s
        "ok": [],
    }

    def __init__(self, postfix: Path, dump: Path) -> None:
        self.exe = postfix / "usr/sbin/smtp-sink"
        self.env = {**os.environ, "LD_LIBRARY_PATH": str(postfix / "usr/lib/postfix")}
        self.dump = dump
        self.port = 0  # chosen by the first mode(), then kept: maild's config names it
        self.name = f"sink-{uuid.uuid4().hex[:12]}.test"  # in its greeting: this sink, no other
        self.proc: subprocess.Popen[bytes] | None = None

    def mode(self, name: str) -> None:
        self.stop()
        if self.port:
            self._start(name, self.port)
        else:
            start_on_free_port(lambda port: self._start(name, port))

    def _start(self, name: str, port: int) -> None:
        user = ["-u", "nobody"] if os.getuid() == 0 else []
        self.proc = subprocess.Popen(
            [str(self.exe), *user, "-h", self.name, *self.MODES[name], "-d", f"{self.dump}/msg.",
             f"127.0.0.1:{port}", "128"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as probe:
                    if not probe.recv(512).startswith(b"220 " + self.name.encode()):
                        break  # something else answers on that port
                    probe.sendall(b"QUIT\r\n")
                    self.port = port
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"smtp-sink did not start on port {port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def received(self) -> list[tuple[str, bytes]]:
        """(Message-ID, message as received) for every dumped transaction.

        A transaction cut off before DATA leaves an empty file: not a delivery.
        """
        out = []
        for f in sorted(self.dump.iterdir()):
            data = f.read_bytes()
            if b"Received: " not in data:
                continue
            # smtp-sink writes its own X-* records and a three-line Received first.
            body = data.split(b"Received: ", 1)[1].split(b"\n", 3)[3]
            mid = re.search(rb"^Message-ID: (<[^>]+>)", body, re.M | re.I)
            assert mid, f"no Message-ID in {f.name}"
            out.append((mid.group(1).decode(), body))
        return out


def test_outbox_against_a_failing_relay_ends_sent_or_dead(sqlite_url, tmp_path):
    sink = Sink(_postfix_dir(), Path(tempfile.mkdtemp(prefix="maild-sink-")))
    os.chmod(sink.dump, 0o777)
    sink.mode("5xx")
    outgoing = {"transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": sink.port,
                "smtp_timeout_seconds": 1.5, "retry_base_seconds": 0.1, "max_attempts": 30,
                "batch_size": 5}  # fmt: skip
    serve = ServeProcess(base_sections(tmp_path, sqlite_url, outgoing=outgoing),
                         log_path=tmp_path / "serve.log")  # fmt: skip
    rng = random.Random(3)
    try:
        serve.start()
        for i in range(5):  # their acknowledgements meet a 550: dead, never retried
            assert _data_reply(serve.port, make_message(
                sender=f"gone{i}@example.org", message_id=f"<r5-{i}@example.org>"))[0] == 250  # fmt: skip
        _wait_outbox(sqlite_url, lambda rows: sum(s == "dead" for s in rows.values()) == 5)
        for phase in ("4xx", "drop", "hang"):
            sink.mode(phase)
            for _ in range(5):
                n = rng.randrange(10**9)
                assert _data_reply(serve.port, make_message(
                    sender=f"u{n}@example.org", message_id=f"<{phase}-{n}@example.org>"))[0] == 250  # fmt: skip
            time.sleep(rng.uniform(0.5, 1.5))
            serve.kill()  # in the middle of whatever the sender was doing
            serve.start()
        sink.mode("ok")
        rows = _wait_outbox(sqlite_url, lambda rows: "pending" not in rows.values(), timeout=90)
        assert serve.stop() == 0
    finally:
        serve.close()
        sink.stop()
    statuses = Counter(rows.values())
    assert statuses == {"dead": 5, "sent": 15}, statuses
    received = sink.received()
    got = Counter(mid for mid, _b in received)
    sent_ids = {mid for mid, s in rows.items() if s == "sent"}
    assert set(got) == sent_ids  # every sent row arrived; nothing we did not send
    by_mid: dict[str, list[bytes]] = {}
    for mid, body in received:
        by_mid.setdefault(mid, []).append(body)
    for mid, bodies in by_mid.items():  # a copy cut off by a kill is a prefix of the others
        full = max(bodies, key=len)
        assert all(full.startswith(b) for b in bodies), f"a resend of {mid} differed"
    dupes = sum(n - 1 for n in got.values())
    print(f"\nrelay faults: {statuses}, {len(received)} deliveries, {dupes} duplicate(s), "
          "all with the same Message-ID and bytes")  # fmt: skip
    shutil.rmtree(sink.dump, ignore_errors=True)


def _wait_outbox(db_url: str, ready, timeout: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        rows = dict(_query(db_url, "select message_id, status from outbox"))
        if rows and ready(rows):
            return rows
        assert time.monotonic() < deadline, f"outbox not settled: {Counter(rows.values())}"
        time.sleep(0.2)
