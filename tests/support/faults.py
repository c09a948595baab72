"""Faults injected in the database itself, under code that does not know.

`refuse_commits(db_url)` makes every transaction that inserted an ``inbound``
row fail *at its COMMIT*, not before: the INSERTs succeed, the COMMIT is
refused by the database. That is the moment an intake path must not yet have
told anyone "accepted". It works across processes (``maild ingest``,
``maild serve``) because it lives in the database:

- PostgreSQL: a deferred constraint trigger that raises (deferred triggers run
  at commit time).
- SQLite: an AFTER INSERT trigger that adds a row violating a DEFERRABLE
  INITIALLY DEFERRED foreign key (checked at commit; maild turns
  ``foreign_keys`` on for every connection).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from maild.store.db import make_engine

_SQLITE_ON = (
    "CREATE TABLE test_commit_gate_parent (id INTEGER PRIMARY KEY)",
    "CREATE TABLE test_commit_gate (id INTEGER PRIMARY KEY, parent INTEGER "
    "REFERENCES test_commit_gate_parent (id) DEFERRABLE INITIALLY DEFERRED)",
    "CREATE TRIGGER test_commit_gate_inbound AFTER INSERT ON inbound "
    "BEGIN INSERT INTO test_commit_gate (parent) VALUES (-1); END",
)
_SQLITE_OFF = (
    "DROP TRIGGER IF EXISTS test_commit_gate_inbound",
    "DROP TABLE IF EXISTS test_commit_gate",
    "DROP TABLE IF EXISTS test_commit_gate_parent",
)
_PG_ON = (
    "CREATE FUNCTION test_commit_gate() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'commit refused by the test'; END $$",
    "CREATE CONSTRAINT TRIGGER test_commit_gate AFTER INSERT ON inbound "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_commit_gate()",
)
_PG_OFF = (
    "DROP TRIGGER IF EXISTS test_commit_gate ON inbound",
    "DROP FUNCTION IF EXISTS test_commit_gate()",
)


def _run(db_url: str, statements: tuple[str, ...]) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.execute(text(sql))
    finally:
        engine.dispose()


def set_refuse_commits(db_url: str, on: bool) -> None:
    pg = db_url.startswith("postgresql")
    if on:
        _run(db_url, _PG_ON if pg else _SQLITE_ON)
    else:
        _run(db_url, _PG_OFF if pg else _SQLITE_OFF)


@contextmanager
def refuse_commits(db_url: str) -> Iterator[None]:
    """Inside: any COMMIT of a new inbound row fails (the database refuses it)."""
    set_refuse_commits(db_url, True)
    try:
        yield
    finally:
        set_refuse_commits(db_url, False)
