"""The migrations build exactly the schema the models describe (both backends)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from maild.db import make_engine
from maild.models import Base


def test_migrated_schema_matches_the_models(db_url):
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
