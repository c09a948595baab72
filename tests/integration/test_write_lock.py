"""The daemon's SQLite engine takes the write lock from other processes
promptly (`maild.store.db._begin_promptly`): it waits for another program's
transaction as SQLite's busy handler would, as long as the busy timeout, and
the transaction it begins keeps that timeout for its statements. How much
sooner intake gets the lock is measured by ``bench/run.py`` (SMTP p99).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from maild.store import db
from maild.store.db import make_engine, upgrade


def _holder(path: Path) -> sqlite3.Connection:
    """Another program with the write lock."""
    other = sqlite3.connect(path, timeout=1, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_prompt_writer_waits_for_another_program_and_keeps_the_busy_timeout(tmp_path):
    path = tmp_path / "maild.db"
    engine = make_engine(f"sqlite:///{path}", prompt=True)
    upgrade(engine)
    other = _holder(path)
    letting_go = threading.Event()

    def let_go() -> None:
        letting_go.set()
        other.execute("ROLLBACK")

    released = threading.Timer(0.3, let_go)
    released.start()
    try:
        with engine.begin() as conn:
            assert letting_go.is_set()  # it began only once the other let go
            assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == 60000
            conn.execute(text("CREATE TABLE written (n INTEGER)"))
            conn.execute(text("INSERT INTO written VALUES (1)"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT n FROM written")).scalar_one() == 1
    finally:
        released.join()
        other.close()
        engine.dispose()


def test_a_prompt_writer_gives_up_after_the_busy_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "_LOCK_TIMEOUT", 0.3)
    path = tmp_path / "maild.db"
    engine = make_engine(f"sqlite:///{path}", prompt=True)
    upgrade(engine)
    other = _holder(path)
    try:
        with pytest.raises(Exception, match="database is locked"), engine.begin() as conn:
            conn.execute(text("SELECT 1"))
        other.execute("ROLLBACK")
        with engine.begin() as conn:  # the lock and the connection are fine afterwards
            assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == 60000
    finally:
        other.close()
        engine.dispose()
