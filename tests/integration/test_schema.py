"""The migrations build exactly the schema the models describe (both backends)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from maild.store.db import make_engine
from maild.store.models import Base
from maild.store.search import is_index_object


def test_migrated_schema_matches_the_models(db_url):
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": is_index_object})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_raw_bytes_survive_the_move_to_their_own_table_and_back(desk):
    """Migration 0006 on a database with mail in it (articles refer to the
    inbound rows): the bytes move out of ``inbound`` and back, unchanged."""
    from alembic import command
    from sqlalchemy import text

    from maild.store.db import _alembic_config
    from tests.support.desk import make_message

    first = make_message(message_id="<before@example.org>", subject="Printer jam")
    held = desk.deliver(b"\x00\x01 not mail at all")  # quarantined: kept, bytes and all
    desk.process(first)
    desk.drain()
    config = _alembic_config(desk.engine)
    desk.engine.dispose()

    command.downgrade(config, "0005_outbox")
    with desk.engine.connect() as conn:
        raws = [bytes(r[0]) for r in conn.execute(text("SELECT raw FROM inbound ORDER BY id"))]
    assert raws == [b"\x00\x01 not mail at all", first]

    command.upgrade(config, "head")
    desk.engine.dispose()
    assert desk.inbound(held.inbound_id).raw == b"\x00\x01 not mail at all"
    later = make_message(message_id="<after@example.org>", subject="Re: Printer jam",
                         in_reply_to="<before@example.org>")  # fmt: skip
    processed = desk.process(later)
    assert processed.outcome is not None and processed.ticket_id == 1
    assert desk.inbound(processed.inbound_id).raw == later
