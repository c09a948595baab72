"""SQLite's WAL is copied into the database beside intake, not in its commits."""

from __future__ import annotations

import mailbox
import shutil
import sqlite3
from pathlib import Path

from maild.store.db import CHECKPOINT_BACKSTOP_PAGES
from tests.integration.test_fates import cli_config, maild
from tests.integration.test_smtp_intake import counts, send
from tests.support.desk import make_message
from tests.support.waiting import wait_until


def _rows_in_the_database_file(db: Path, copy: Path, table: str = "inbound") -> int:
    """Rows of `table` in the database file itself, without its WAL (what a
    checkpoint has copied there)."""
    shutil.copyfile(db, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute(f"select count(*) from {table}").fetchone()[0])
    except sqlite3.DatabaseError:  # copied in the middle of a checkpoint: look again
        return -1
    finally:
        conn.close()
        copy.unlink()


def test_what_intake_commits_reaches_the_database_file_while_it_runs(
    sqlite_url, daemon_factory, tmp_path
):
    """The intake's own commits no longer checkpoint (they would make the
    SMTP sessions waiting on them wait for the copy and its fsyncs too); a
    thread of the daemon does, within a second, far below the backstop."""
    running = daemon_factory(sqlite_url)
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    for i in range(20):
        send(running.port, make_message(message_id=f"<wal-{i}@example.org>"))
    wait_until(lambda: counts(sqlite_url)["inbound"] == 20)
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size < CHECKPOINT_BACKSTOP_PAGES * 4096 / 8  # far below it
    assert running.daemon.checkpointer is not None
    wait_until(lambda: _rows_in_the_database_file(db, tmp_path / "copy.db") == 20, timeout=10)
    assert running.thread.is_alive()


def test_an_import_beside_the_daemon_leaves_what_it_imported_in_the_database_file(
    sqlite_url, tmp_path
):
    """`maild import` copies its WAL into the database with a thread of its own
    (its commits leave it to that thread): with the daemon's connections open,
    as they are when an admin imports beside it, the tickets are in the file
    when the command returns, not only in a WAL the import leaves behind."""
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    mbox = tmp_path / "archive.mbox"
    box = mailbox.mbox(mbox)
    for i in range(12):
        box.add(make_message(message_id=f"<imp-{i}@example.org>", subject=f"Printer {i}"))
    box.flush()
    box.close()
    daemon_reader = sqlite3.connect(db)  # its open connection: no checkpoint on close
    try:
        daemon_reader.execute("select count(*) from ticket").fetchone()
        done = maild(cli_config(tmp_path, sqlite_url), "import", str(mbox))
        assert done.returncode == 0, done.stderr
        assert "tickets created:   12" in done.stdout
        wal = db.with_name(db.name + "-wal")
        assert wal.exists()  # the daemon's connection keeps it
        assert _rows_in_the_database_file(db, tmp_path / "copy.db", table="ticket") == 12
    finally:
        daemon_reader.close()
