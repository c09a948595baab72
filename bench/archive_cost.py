"""Per-message ingestion cost with 10 k vs 1 M messages already stored (SQLite).

The archive is generated with bulk SQL (a recursive CTE, not through SMTP):
N stored inbound messages and their articles, N/2 tickets with one
acknowledgement each in the outbox, 20 k contacts, all through the real
schema and its indexes. Then the same 1,000 fresh messages (70 % new
requests, 30 % replies to random archived messages, so correlation must find
their tickets among N) go through intake, worker and sender in process
(`maild.testing.Desk`), three rounds each; the median cost per message at
1 M is compared with 10 k (target: within 15 %).

    python bench/archive_cost.py [--sizes 10000,1000000] [--messages 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from maild.clock import SystemClock  # noqa: E402
from maild.store.db import make_engine, upgrade  # noqa: E402
from tests.support.desk import Desk, make_message, make_settings  # noqa: E402

CONTACTS = 20_000

ARCHIVE_SQL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})
INSERT INTO {table} ({names}) SELECT {columns} FROM n;
"""

NAMES = {
    "contact": "id, email, name, language, bounce_state, bounced_at, created_at",
    "ticket": "id, type, category, impact, urgency, priority, tier, status, requester_id, "
    "assignee_id, subject, security, language, address, parent_id, loop_suspected, created_at, "
    "updated_at, first_response_due, first_response_at, resolution_due, resolved_at, closed_at",
    "inbound": "id, source, mailbox, envelope_from, envelope_to, recipient, size, sha256, "
    "message_id, dedupe_key, received_at, status, attempts, claimed_at, processed_at, error, "
    "outcome, notify, ticket_id, claimed_by",
    "inbound_raw": "inbound_id, raw",
    "article": "id, ticket_id, direction, visibility, kind, author_email, author_name, "
    "message_id, in_reply_to, subject, text, html, sent_at, created_at, inbound_id",
    "outbox": "id, ticket_id, article_id, kind, message_id, mail_from, rcpt_to, raw, status, "
    "attempts, next_attempt_at, claimed_at, last_error, created_at, sent_at, claimed_by",
}

TABLES = [
    (
        "contact",
        CONTACTS,
        "i, 'person' || i || '@archive.example', 'Person ' || i, 'en', 'ok', "
        "NULL, '2025-01-01 00:00:00'",
    ),
    (
        "ticket",
        "{half}",
        "i, 'incident', 'other', 3, 2, 3, 1, 'closed', 1 + i % {contacts}, "
        "NULL, 'Archived case ' || i, 0, 'en', 'help@example.com', NULL, 0, "
        "'2025-01-01 00:00:00', '2025-01-02 00:00:00', NULL, NULL, NULL, "
        "'2025-01-02 00:00:00', '2025-01-03 00:00:00'",
    ),
    (
        "inbound",
        "{n}",
        "i, 'smtp', NULL, 'person' || (1 + i % {contacts}) || '@archive.example', "
        "'[\"help@example.com\"]', 'help@example.com', 60, "
        "printf('%064d', i), '<arch-' || i || '@archive.example>', "
        "printf('%064x', i), '2025-01-01 00:00:00', 'done', 1, NULL, "
        "'2025-01-01 00:00:01', NULL, 'new_ticket', 1, 1 + (i - 1) / 2, NULL",
    ),
    (
        "inbound_raw",
        "{n}",
        "i, CAST('From: person@archive.example' || char(13,10) || "
        "'Subject: archived ' || i || char(13,10,13,10) || 'body' AS BLOB)",
    ),
    (
        "article",
        "{n}",
        "i, 1 + (i - 1) / 2, 'in', 'public', 'message', "
        "'person' || (1 + i % {contacts}) || '@archive.example', 'Person', "
        "'<arch-' || i || '@archive.example>', NULL, 'archived ' || i, 'body', "
        "NULL, NULL, '2025-01-01 00:00:00', i",
    ),
    (
        "outbox",
        "{half}",
        "i, i, NULL, 'ack', '<ack-' || i || '@helpdesk.example.com>', "
        "'help@example.com', '[\"person@archive.example\"]', "
        "CAST('ack' AS BLOB), 'sent', 0, '2025-01-01 00:00:00', NULL, NULL, "
        "'2025-01-01 00:00:00', '2025-01-01 00:00:01', NULL",
    ),
]


def build_archive(db: Path, n: int) -> float:
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    started = time.perf_counter()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA foreign_keys=OFF")
    for table, count, columns in TABLES:
        fmt = {"n": n, "half": n // 2, "contacts": CONTACTS}
        sql = ARCHIVE_SQL.format(names=NAMES[table], table=table, count=str(count).format(**fmt),
                                 columns=columns.format(**fmt))  # fmt: skip
        conn.execute(sql)
        conn.commit()
    conn.execute("ANALYZE")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the archive in the database, not the WAL
    conn.close()
    return time.perf_counter() - started


def fresh_messages(n_archive: int, count: int, round_no: int) -> list[bytes]:
    rng = random.Random(round_no)
    out = []
    for k in range(count):
        mid = f"<fresh-{round_no}-{k}@example.org>"
        if k % 10 < 3:  # a reply to an archived message: must find its ticket
            target = rng.randrange(1, n_archive + 1)
            ref = f"<arch-{target}@archive.example>"
            out.append(make_message(sender=f"person{1 + target % CONTACTS}@archive.example",
                                    subject=f"Re: archived {target}", message_id=mid,
                                    in_reply_to=ref, references=ref))  # fmt: skip
        else:
            out.append(make_message(sender=f"new{round_no}-{k}@example.org",
                                    subject=f"New problem {k}", message_id=mid))  # fmt: skip
    return out


def measure(db: Path, n_archive: int, count: int, rounds: int, work: Path) -> list[float]:
    desk = Desk(make_settings(work, f"sqlite:///{db}"), clock=SystemClock())
    costs = []
    try:
        for r in range(rounds):
            msgs = fresh_messages(n_archive, count, r)
            started = time.perf_counter()
            for raw in msgs:
                desk.deliver(raw)
            processed, sent = desk.drain()
            elapsed = time.perf_counter() - started
            outcomes = {str(p.outcome) for p in processed}
            assert len(processed) == count and outcomes <= {"new_ticket", "appended"}, outcomes
            appended = sum(p.outcome == "appended" for p in processed)
            assert appended == count * 3 // 10, f"{appended} replies threaded"
            costs.append(elapsed / count * 1000)
    finally:
        desk.close()
    return costs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=HERE / "out" / "archive_cost.json")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, object] = {"messages": args.messages, "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="maild-archive-") as tmp:
        for n in sizes:
            work = Path(tmp) / str(n)
            work.mkdir()
            db = work / "maild.db"
            built = build_archive(db, n)
            costs = measure(db, n, args.messages, args.rounds, work)
            results[str(n)] = {"build_seconds": round(built, 1),
                               "db_mb": round(db.stat().st_size / 2**20, 1),
                               "ms_per_message": [round(c, 3) for c in costs],
                               "median_ms": round(statistics.median(costs), 3),
                               "loadavg": os.getloadavg()}  # fmt: skip
            print(f"{n:>9} stored: built in {built:.0f}s ({db.stat().st_size / 2**20:.0f} MB), "
                  f"cost per message {', '.join(f'{c:.2f}' for c in costs)} ms "
                  f"(median {statistics.median(costs):.2f})")  # fmt: skip
    if len(sizes) == 2:
        small, big = (results[str(s)]["median_ms"] for s in sizes)  # type: ignore[index]
        ratio = big / small
        results["ratio"] = round(ratio, 3)
        print(f"cost at {sizes[1]:,} / cost at {sizes[0]:,} = {ratio:.2f} "
              f"(target <= 1.15: {'met' if ratio <= 1.15 else 'NOT met'})")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
