"""Alembic environment: runs on the engine maild hands over (see maild.db)."""

from alembic import context
from sqlalchemy import create_engine

from maild.store.models import Base
from maild.store.search import is_index_object

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # plain `alembic` command line: needs sqlalchemy.url
    engine = create_engine(config.get_main_option("sqlalchemy.url"))

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=is_index_object,  # the FTS5 tables, tsvector columns, GIN indexes
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
