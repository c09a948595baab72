"""The workspace under load, side by side with SMTP intake (SQLite).

An archive of 100,000 tickets and 300,000 articles (bulk SQL through the real
schema and its indexes; 5 % of the tickets open, with deadlines, assignees and
tiers spread out) behind a real ``maild serve``, which starts ``maild web`` as
its child. Then, in this one run:

1. intake alone: SMTP at a steady 300 messages/s (20 sessions) for
   ``--seconds``; p99 from the end of DATA to the 250;
2. the same intake while 20 signed-in agents each load a page every 5 s (the
   queue, a ticket, a search, in turn); p95 per page kind, and intake's p99
   again, as a ratio to (1);
3. the web process's resident memory (VmRSS of the child) at the end.

(1) and (2) take turns in ``--windows`` windows each, in the order A B B A
(repeated): run one after the other, the second was slower even with no agent
at all (1.6x its p99: the database grows, the worker's backlog with it), so a
drift over the run falls on both alike. The agents keep their 5 s rhythm
throughout and load a page only in the windows of (2).

Targets (issue 13): queue p95 <= 100 ms, search p95 <= 150 ms, ticket p95 <= 80 ms,
intake p99 with the web busy within 10 % of intake alone, web RSS <= 120 MB.

    python bench/web.py [--tickets 100000] [--seconds 30] [--rate 300] [--windows 6]
                        [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from smtpclient import Result, _data, _reply  # noqa: E402

from maild.config.settings import WebSettings  # noqa: E402
from maild.mail.tokens import load_or_create_secret  # noqa: E402
from maild.store.db import make_engine, session_factory, upgrade  # noqa: E402
from maild.web import auth  # noqa: E402
from tests.support.serveproc import ServeProcess, base_sections, free_port  # noqa: E402

AGENTS = 20
CONTACTS = 20_000
WORDS = ["printer", "toner", "vpn", "laptop", "password", "mailbox", "outlook", "screen", "keyboard", "network", "wifi", "badge", "license", "excel", "teams", "invoice", "phone", "monitor", "backup", "disk"]  # fmt: skip

FILL = [
    ("contact", CONTACTS, "id, email, name, language, bounce_state, bounced_at, created_at",
     "i, 'person' || i || '@archive.example', 'Person ' || i, 'en', 'ok', NULL, "
     "'2025-01-01 00:00:00'"),
    ("ticket", "{tickets}",
     "id, type, category, impact, urgency, priority, tier, status, requester_id, assignee_id, "
     "subject, security, language, address, parent_id, loop_suspected, created_at, updated_at, "
     "first_response_due, first_response_at, resolution_due, resolved_at, closed_at, "
     "first_response_warn_at, resolution_warn_at, sla_paused_seconds, reminders_sent, "
     "regulator_reminders_sent",
     "i, CASE i % 3 WHEN 0 THEN 'request' ELSE 'incident' END, "
     "CASE (i / 20) % 5 WHEN 0 THEN 'network' WHEN 1 THEN 'hardware' WHEN 2 THEN 'software' "
     "WHEN 3 THEN 'email' ELSE 'access' END, 3, 2, 1 + (i / 20) % 4, 1 + (i / 20) % 3, "
     "CASE WHEN i % 20 != 0 THEN 'closed' WHEN i % 40 = 0 THEN 'open' WHEN i % 60 = 0 "
     "THEN 'pending_user' ELSE 'in_progress' END, 1 + i % {contacts}, "
     "CASE WHEN (i / 20) % 3 = 0 THEN NULL ELSE 1 + (i / 20) % {agents} END, "
     "'Case ' || i || ' ' || {word_a} || ' ' || {word_b}, 0, 'en', 'help@example.com', NULL, 0, "
     "datetime('{now}', '-' || (i % 900) || ' hours'), datetime('{now}', '-' || (i % 90) || ' hours'), "
     "datetime('{now}', '+' || ((i * 7) % 400 - 100) || ' minutes'), NULL, "
     "datetime('{now}', '+' || ((i * 13) % 4000 - 500) || ' minutes'), "
     "CASE WHEN i % 20 != 0 THEN datetime('{now}', '-' || (i % 800) || ' hours') END, "
     "CASE WHEN i % 20 != 0 THEN datetime('{now}', '-' || (i % 700) || ' hours') END, "
     "datetime('{now}', '+' || ((i * 7) % 400 - 160) || ' minutes'), "
     "datetime('{now}', '+' || ((i * 13) % 4000 - 1500) || ' minutes'), 0, 0, 0"),
    ("article", "{articles}",
     "id, ticket_id, direction, visibility, kind, author_email, author_name, message_id, "
     "in_reply_to, subject, text, html, sent_at, created_at, inbound_id",
     "i, 1 + (i - 1) / 3, CASE i % 3 WHEN 1 THEN 'in' ELSE 'out' END, "
     "CASE i % 3 WHEN 0 THEN 'internal' ELSE 'public' END, "
     "CASE i % 3 WHEN 1 THEN 'message' ELSE 'notification' END, "
     "'person' || (1 + i % {contacts}) || '@archive.example', 'Person', "
     "'<arch-' || i || '@archive.example>', NULL, 'Case', "
     "'Hello, the ' || {word_a} || ' on floor ' || (i % 9) || ' shows error E' || (i % 97) || "
     "'. It started after the ' || {word_b} || ' update and affects ' || (i % 30) || "
     "' people. Please help, this blocks our work today.', NULL, NULL, "
     "datetime('{now}', '-' || (i % 900) || ' hours'), NULL"),
]  # fmt: skip


def _word(expr: str) -> str:
    cases = " ".join(f"WHEN {k} THEN '{w}'" for k, w in enumerate(WORDS))
    return f"(CASE ({expr}) % {len(WORDS)} {cases} END)"


def build(db: Path, tickets: int) -> float:
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    started = time.perf_counter()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA foreign_keys=OFF")
    for k in range(1, AGENTS + 1):
        conn.execute("INSERT INTO agent (id, email, name, tier, groups, language, active) "
                     "VALUES (?, ?, ?, ?, '[]', 'en', 1)",
                     (k, f"agent{k}@example.com", f"Agent {k}", 1 + k % 3))  # fmt: skip
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    fmt = {"tickets": tickets, "articles": tickets * 3, "contacts": CONTACTS, "agents": AGENTS,
           "now": now, "word_a": _word("i"), "word_b": _word("i / 7")}  # fmt: skip
    for table, count, names, columns in FILL:
        sql = (f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
               f"{str(count).format(**fmt)}) INSERT INTO {table} ({names}) "
               f"SELECT {columns.format(**fmt)} FROM n")  # fmt: skip
        conn.execute(sql)
        conn.commit()
    conn.execute("ANALYZE")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started


def sessions_for_agents(db_url: str) -> list[str]:
    """One console session per agent, made as a sign-in would (the cookie secrets)."""
    engine = make_engine(db_url)
    out = []
    with session_factory(engine).begin() as session:
        for k in range(1, AGENTS + 1):
            secret, _ = auth.start_session(session, WebSettings(), k, "127.0.0.1", "bench",
                                           datetime.now(UTC))  # fmt: skip
            out.append(secret)
    engine.dispose()
    return out


# --- SMTP at a steady rate ---------------------------------------------------------------


async def _paced_session(port: int, count: int, interval: float, offset: float, tag: str,
                         result: Result) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader)
    writer.write(b"EHLO bench.example.org\r\n")
    await _reply(reader)
    start = time.perf_counter() + offset
    for n in range(count):
        delay = start + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        raw = (f"From: Load {tag} <load{n % 500}@example.net>\r\nTo: help@example.com\r\n"
               f"Subject: load {tag} {n}\r\nMessage-ID: <{uuid.uuid4().hex}@example.net>\r\n"
               f"\r\nThe {random.choice(WORDS)} is broken again.\r\n").encode()  # fmt: skip
        writer.write(b"MAIL FROM:<load@example.net>\r\nRCPT TO:<help@example.com>\r\n")
        await _reply(reader)
        await _reply(reader)
        writer.write(b"DATA\r\n")
        await _reply(reader)
        writer.write(_data(raw))
        await writer.drain()
        t0 = time.perf_counter()
        code = await _reply(reader)
        result.latencies.append(time.perf_counter() - t0)
        result.codes[code] = result.codes.get(code, 0) + 1
    writer.write(b"QUIT\r\n")
    await _reply(reader)
    writer.close()


def intake(port: int, rate: float, seconds: float, tag: str, sessions: int = 20) -> Result:
    per = int(rate * seconds / sessions)
    interval = sessions / rate
    result = Result()

    async def main() -> None:
        result.started = time.perf_counter()
        await asyncio.gather(*(_paced_session(port, per, interval, i * interval / sessions,
                                              f"{tag}{i}", result) for i in range(sessions)))  # fmt: skip
        result.ended = time.perf_counter()

    asyncio.run(main())
    return result


# --- agents refreshing pages ----------------------------------------------------------------


def intake_windows(port: int, rate: float, seconds: float, count: int,
                   busy: threading.Event) -> tuple[Result, Result]:  # fmt: skip
    """Intake alone and with the agents busy (`busy` set), `count` windows of
    each (``seconds`` in all per condition), in the order A B B A, repeated."""
    alone, with_web = Result(), Result()
    span = seconds / count
    order = ([False, True, True, False] * count)[: 2 * count]
    took = {False: 0.0, True: 0.0}
    for i, web_busy in enumerate(order):
        (busy.set if web_busy else busy.clear)()
        window = intake(port, rate, span, f"{'busy' if web_busy else 'alone'}{i}-")
        into = with_web if web_busy else alone
        into.latencies += window.latencies
        for code, n in window.codes.items():
            into.codes[code] = into.codes.get(code, 0) + n
        took[web_busy] += window.ended - window.started
    busy.clear()
    for result, web_busy in ((alone, False), (with_web, True)):
        result.started, result.ended = 0.0, took[web_busy]
    return alone, with_web


def agents_load(web_url: str, secrets: list[str], tickets: int, stop: threading.Event,
                out: dict[str, list[float]],
                busy: threading.Event | None = None) -> list[threading.Thread]:  # fmt: skip
    """Each agent loads a page every 5 s (while `busy` is set, if given)."""
    kinds = ("queue", "ticket", "search")

    def agent(k: int, secret: str) -> None:
        rng = random.Random(k)
        opener = urllib.request.build_opener()
        opener.addheaders = [("Cookie", f"maild_session={secret}")]
        n = k
        time.sleep(rng.uniform(0, 5))
        while not stop.is_set():
            if busy is not None and not busy.is_set():
                stop.wait(5.0)
                continue
            kind = kinds[n % 3]
            if kind == "queue":
                view = ("open", "mine", "breaching", "unassigned", "tiers", "waiting")[n % 6]
                path = f"/?view={view}"
            elif kind == "ticket":
                path = f"/tickets/{rng.randrange(1, tickets + 1)}"
            else:
                path = f"/search?q={rng.choice(WORDS)}+{rng.choice(WORDS)}"
            t0 = time.perf_counter()
            with opener.open(web_url + path, timeout=30) as r:
                r.read()
                if r.status != 200 or "/login" in r.url:
                    raise RuntimeError(f"{path}: {r.status} {r.url}")
            out[kind].append(time.perf_counter() - t0)
            n += 1
            stop.wait(5.0)

    threads = [threading.Thread(target=agent, args=(k, s), daemon=True)
               for k, s in enumerate(secrets)]  # fmt: skip
    for t in threads:
        t.start()
    return threads


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def web_rss_mb(serve_pid: int) -> float | None:
    """VmRSS of the `maild web` child of `maild serve`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == serve_pid and b"web" in cmdline:
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return None


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer") from None
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tickets", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--windows", type=int, default=6,
                    help="windows of each condition (alone, with agents), taking turns")  # fmt: skip
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="maild-bench-web-") as tmp:
        work = Path(tmp)
        db = work / "maild.db"
        # The desk's signing secret before its tickets: maild never makes a new
        # one for a database that has tickets (issue 17).
        load_or_create_secret(work / "secret.key")
        built = build(db, args.tickets)
        print(f"archive: {args.tickets} tickets, {args.tickets * 3} articles in {built:.0f}s")
        url = f"sqlite:///{db}"
        secrets = sessions_for_agents(url)
        web_port = free_port()
        sections = base_sections(work, url, free_port(), web={
            "enabled": True, "listen": f"127.0.0.1:{web_port}"})  # fmt: skip
        config = work / "agents.toml"  # [[agents]] cannot come from the environment
        config.write_text("".join(
            f'[[agents]]\nemail = "agent{k}@example.com"\nname = "Agent {k}"\ntier = {1 + k % 3}\n'
            for k in range(1, AGENTS + 1)))  # fmt: skip
        serve = ServeProcess(sections, log_path=work / "serve.log",
                             extra_env={"MAILD_LOG__LEVEL": "WARNING",
                                        "MAILD_CONFIG": str(config)})  # fmt: skip
        serve.start()
        web_url = f"http://127.0.0.1:{web_port}"
        try:
            wait_http(f"{web_url}/login")
            pages: dict[str, list[float]] = {"queue": [], "ticket": [], "search": []}
            stop, web_busy = threading.Event(), threading.Event()
            threads = agents_load(web_url, secrets, args.tickets, stop, pages, web_busy)
            intake(serve.port, args.rate, 5, "warm")  # meanwhile every agent has started
            alone, busy = intake_windows(serve.port, args.rate, args.seconds, args.windows,
                                         web_busy)  # fmt: skip
            stop.set()
            for t in threads:
                t.join(40)
            assert serve.proc is not None
            rss = web_rss_mb(serve.proc.pid)
        finally:
            serve.stop()
            serve.close()
    figures: dict[str, Any] = {
        "tickets": args.tickets, "articles": args.tickets * 3, "rate": args.rate,
        "windows": args.windows,
        "intake_alone": alone.summary(), "intake_with_web": busy.summary(),
        "intake_p99_ratio": round(busy.pct(99) / alone.pct(99), 3),
        "pages": {k: {"n": len(v), "p50_ms": round(pct(v, 50) * 1000, 1),
                      "p95_ms": round(pct(v, 95) * 1000, 1)} for k, v in pages.items()},
        "web_rss_mb": round(rss, 1) if rss else None,
    }  # fmt: skip
    targets = {
        "queue p95 <= 100 ms": figures["pages"]["queue"]["p95_ms"] <= 100,
        "search p95 <= 150 ms": figures["pages"]["search"]["p95_ms"] <= 150,
        "ticket p95 <= 80 ms": figures["pages"]["ticket"]["p95_ms"] <= 80,
        "intake p99 with web within 10 %": figures["intake_p99_ratio"] <= 1.10,
        "web RSS <= 120 MB": rss is not None and rss <= 120,
    }
    figures["targets"] = targets
    print(json.dumps(figures, indent=2))
    for name, ok in targets.items():
        print(f"{'met' if ok else 'MISSED':>6}  {name}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
