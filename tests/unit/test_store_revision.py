"""The head revision read from the migration files is Alembic's (the CLI reads
it without importing Alembic)."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from maild.store.db import MIGRATIONS, head_of_files


def test_head_of_files_is_alembics_head():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert head_of_files() == ScriptDirectory.from_config(cfg).get_current_head()
