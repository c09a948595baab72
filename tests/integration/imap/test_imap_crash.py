"""kill -9 of maild's IMAP intake at each step of a batch, on a real Dovecot
and a real database: afterwards every message is in the database exactly once
and in the processed folder exactly once, and none is left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.imap.conftest import mailbox_table, write_config
from tests.integration.imap.test_imap_intake import rows
from tests.support.desk import Desk, make_message
from tests.support.dovecot import Dovecot

CHILD = Path(__file__).with_name("crash_child.py")
MESSAGES = 30
BATCH = 10


def run_until_done(cfg: Path, point: str, nth: int, client: str = "imap") -> int:
    """Run the child again and again until one finishes; return how many were killed."""
    kills = 0
    for _ in range(12):
        proc = subprocess.run([sys.executable, str(CHILD), str(cfg), point, str(nth), client],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        if proc.returncode == 0:
            return kills
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        kills += 1
    raise AssertionError(f"the intake never finished ({kills} kills)")


def assert_exactly_once(db_url: str, dovecot: Dovecot, user: str, cfg: Path, expected: list[str]):
    stored = [r[0] for r in rows(db_url, "select message_id from inbound order by id")]
    assert sorted(stored) == sorted(expected), "inbound rows: missing or duplicated"
    assert stored == expected  # and in arrival order
    assert sorted(dovecot.message_ids(user, "Processed")) == sorted(expected)
    assert dovecot.count(user, "INBOX") == 0
    from maild.config.settings import load_settings

    desk = Desk(load_settings(cfg, environ={}))
    try:
        desk.drain()
        assert len(desk.tickets()) == len(expected)
    finally:
        desk.close()


def mail(n: int, tag: str) -> tuple[list[bytes], list[str]]:
    ids = [f"<{tag}-{i:03d}@example.org>" for i in range(n)]
    raws = [make_message(message_id=mid, subject=f"Crash test {i}",
                         sender=f"User {i} <user{i}@example.org>")
            for i, mid in enumerate(ids)]  # fmt: skip
    return raws, ids


@pytest.mark.parametrize(
    ("point", "kills"), [("after_fetch", 2), ("after_commit", 1), ("after_move", 1)]
)
def test_kill_9_at_each_step(db_url, dovecot, imap_user, password_file, tmp_path, point, kills):
    cfg = write_config(tmp_path, db_url, mailbox_table(dovecot, imap_user, password_file),
                       batch_size=BATCH)  # fmt: skip
    raws, ids = mail(MESSAGES, point)
    dovecot.append(imap_user, raws)
    # Killed at the second time it reaches the step, every run, until a run finishes.
    assert run_until_done(cfg, point, nth=2) == kills
    assert_exactly_once(db_url, dovecot, imap_user, cfg, ids)


def test_kill_9_between_copy_and_expunge_without_move(
    sqlite_url, dovecot, imap_user, password_file, tmp_path
):
    cfg = write_config(tmp_path, sqlite_url, mailbox_table(dovecot, imap_user, password_file),
                       batch_size=BATCH)  # fmt: skip
    raws, ids = mail(MESSAGES, "copy")
    dovecot.append(imap_user, raws)
    # Each run dies right after its first COPY: the copies are in Processed, the
    # originals still in INBOX, marked nothing yet.
    assert run_until_done(cfg, "after_copy", nth=1, client="nomove") == 3
    assert_exactly_once(sqlite_url, dovecot, imap_user, cfg, ids)
