"""The baseline `maild import` is measured against: the least a durable help desk
must do to import an archive, with the standard library alone.

    python bench/baseline_import.py MAILDIR DATABASE [--compat32]

For each message, in delivery order: parse it with ``email`` (the documented
modern API, ``policy.default``, and ``get_body().get_content()``; with
``--compat32`` the legacy parser, the cheapest the standard library has, for
the floor), take its text body, thread it
(In-Reply-To and References looked up in an indexed table, else a new thread),
INSERT it and COMMIT (SQLite, WAL, ``synchronous=FULL``: durable per message,
as maild is). Timed as a user would time it: the whole process, start-up
included. Prints one JSON line: messages, threads, seconds (inside the
process, for reference).
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import sqlite3
import sys
import time
from pathlib import Path

IDS = re.compile(r"<[^<>\s]+>")


def main(maildir: Path, database: Path, compat32: bool) -> None:
    started = time.perf_counter()
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE message (id INTEGER PRIMARY KEY, message_id TEXT, thread INTEGER,"
               " sender TEXT, subject TEXT, body TEXT, raw BLOB)")  # fmt: skip
    db.execute("CREATE INDEX ix_message_id ON message (message_id)")
    files = sorted((maildir / "new").iterdir(), key=lambda p: p.name)
    threads = 0
    for path in files:
        raw = path.read_bytes()
        body = ""
        if compat32:
            msg = email.message_from_bytes(raw)
            for part in msg.walk():
                if part.get_content_maintype() == "text" and not part.get_filename():
                    payload = part.get_payload(decode=True) or b""
                    body = payload.decode(part.get_content_charset() or "utf-8", "replace")
                    break
        else:
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            part = msg.get_body(preferencelist=("plain", "html"))
            body = part.get_content() if part is not None else ""
        refs = IDS.findall(f"{msg.get('In-Reply-To', '')} {msg.get('References', '')}")
        thread = None
        if refs:
            marks = ",".join("?" * len(refs))
            row = db.execute(f"SELECT thread FROM message WHERE message_id IN ({marks}) LIMIT 1",
                             refs).fetchone()  # fmt: skip
            thread = row[0] if row else None
        db.execute("BEGIN")
        cur = db.execute(
            "INSERT INTO message (message_id, thread, sender, subject, body, raw)"
            " VALUES (?,?,?,?,?,?)",
            (str(msg.get("Message-ID", "")).strip(), thread, str(msg.get("From", "")),
             str(msg.get("Subject", "")), body, raw),
        )  # fmt: skip
        if thread is None:
            threads += 1
            db.execute("UPDATE message SET thread = id WHERE id = ?", (cur.lastrowid,))
        db.execute("COMMIT")
    db.close()
    seconds = time.perf_counter() - started
    print(json.dumps({"messages": len(files), "threads": threads, "seconds": seconds}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), "--compat32" in sys.argv[3:])
