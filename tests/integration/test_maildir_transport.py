"""Outgoing mail into a Maildir: durable before it appears in new/, a batch at a time."""

from __future__ import annotations

import shutil

from sqlalchemy import select

from maild.store.models import Outbox
from tests.support.desk import Desk, make_message, make_settings


def test_a_batch_appears_complete_in_new_and_a_failed_flush_is_retried(tmp_path, sqlite_url):
    desk = Desk(make_settings(tmp_path, sqlite_url, outgoing={"batch_size": 50},
                              limits={"autoreply_per_address_per_hour": 1000}))  # fmt: skip
    try:
        for i in range(20):  # a batch big enough for one syncfs instead of a fsync per file
            desk.deliver(make_message(sender=f"u{i}@example.org", message_id=f"<m{i}@x>"))
        desk.worker.drain()
        new, tmp = tmp_path / "outgoing" / "new", tmp_path / "outgoing" / "tmp"
        stats = desk.sender.run_batch()
        assert stats.sent == 20
        files = sorted(new.iterdir())
        assert len(files) == 20 and not list(tmp.iterdir())
        with desk.sessions() as s:
            raws = {r.id: r.raw for r in s.execute(select(Outbox.id, Outbox.raw))}
        for f in files:  # each file is the outbox row's bytes, whole
            assert f.read_bytes() == raws[int(f.name.split(".")[0])]

        # new/ cannot be written: nothing of the batch is delivered, all retried.
        desk.deliver(make_message(sender="late@example.org", message_id="<late@x>"))
        desk.worker.drain()
        shutil.rmtree(new)
        new.write_text("not a folder")
        stats = desk.sender.run_batch()
        assert stats.sent == 0 and stats.retried == 1
        with desk.sessions() as s:
            row = s.execute(select(Outbox.status, Outbox.attempts, Outbox.last_error)
                            .order_by(Outbox.id.desc())).first()  # fmt: skip
        assert row.status == "pending" and row.attempts == 1 and "maildir" in row.last_error
        new.unlink()
        new.mkdir()
        desk.clock.advance(hours=1)
        assert desk.sender.run_batch().sent == 1
        assert len(list(new.iterdir())) == 1 and not list(tmp.iterdir())
    finally:
        desk.close()
