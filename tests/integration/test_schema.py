"""The migrations build exactly the schema the models describe (both backends)."""

from __future__ import annotations

import socket
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from maild.store.db import _alembic_config, current_revision, make_engine, upgrade
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


def test_serve_refuses_a_database_at_an_older_revision(db_url, tmp_path):
    """README: `maild serve` never upgrades (nor runs on) a database behind its
    schema; it says to run `maild db upgrade`, exits 78 and changes nothing."""
    engine = make_engine(db_url)
    script = ScriptDirectory.from_config(_alembic_config(engine))
    head = script.get_current_head()
    older = script.get_revision(head).down_revision
    assert isinstance(older, str)
    engine.dispose()
    # The fixture's database is at head: start again from an empty one.
    if db_url.startswith("postgresql"):
        with create_engine(db_url).begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    else:
        db_url = f"sqlite:///{tmp_path / 'older.db'}"
    engine = make_engine(db_url)
    upgrade(engine, older)
    assert current_revision(engine) == older

    # The SMTP port is taken: a maild that got past the schema check would not
    # run on, it would fail to listen (and say something else).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        config = tmp_path / "maild.toml"
        config.write_text(
            f'[database]\nurl = "{db_url}"\n'
            f'[smtp]\nlisten = "127.0.0.1:{taken.getsockname()[1]}"\n'
            f"[http]\nenabled = false\n[worker]\nparse_processes = 0\n"
            f'[helpdesk]\nsecret_file = "{tmp_path / "key"}"\n'
            f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n'
        )
        proc = subprocess.run([sys.executable, "-m", "maild", "--config", str(config), "serve"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maild: configuration error: database.url:")
    assert f"at revision {older}" in lines[0] and f"needs {head}" in lines[0]
    assert "maild db upgrade" in lines[0]
    assert current_revision(engine) == older  # not upgraded behind the admin's back
    engine.dispose()


def test_requester_links_stored_before_0013_are_taken_off_the_tickets(desk):
    """Before 0013 the ticket's copy of an acknowledgement kept the requester's
    link (which acts as them); the upgrade replaces it there and nowhere else."""
    from alembic import command
    from sqlalchemy import text

    from maild.mail.make import LINK_NOT_STORED
    from maild.store.db import _alembic_config
    from tests.support.desk import make_message

    desk.process(make_message(message_id="<link@example.org>", subject="Printer jam"))
    old = "Follow your ticket and answer online: http://desk.example:8025/r/1/mkq3x2.abcdefghijklmnopqrstuvwxyz.\n"
    note = "See http://wiki.example/r/1/setup for the printer guide.\n"  # not a requester link
    with desk.engine.begin() as conn:
        ack = conn.execute(text("SELECT id FROM article WHERE kind = 'notification' "
                                "AND direction = 'out' ORDER BY id LIMIT 1")).scalar_one()  # fmt: skip
        mine = conn.execute(text("SELECT id FROM article WHERE direction = 'in'")).scalar_one()
        for row, value in ((ack, old + note), (mine, old)):
            conn.execute(text("UPDATE article SET text = :t WHERE id = :i"), {"t": value, "i": row})
    config = _alembic_config(desk.engine)
    desk.engine.dispose()
    command.downgrade(config, "0012_web")
    command.upgrade(config, "head")
    desk.engine.dispose()
    with desk.engine.connect() as conn:
        texts = dict(conn.execute(text("SELECT id, text FROM article")).all())
    assert texts[ack] == f"Follow your ticket and answer online: {LINK_NOT_STORED}.\n" + note
    assert texts[mine] == old  # a person's own words are theirs: only maild's copies change
