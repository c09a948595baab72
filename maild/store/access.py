"""Opening the database the way a command needs it, without surprises.

Only ``maild serve`` and ``maild db upgrade`` create a database. Every other
command opens one that exists and is at this maild's schema revision, or
stops with a `ConfigError` on ``database.url`` saying what is wrong ("no
database at /home/anna/var/maild.db"): a command run from the wrong folder
must not start a second, empty help desk there.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from maild.errors import ConfigError, TransientError
from maild.store.db import (
    ensure_schema,
    head_of_files,
    head_revision,
    is_empty,
    make_engine,
    stored_revision,
)
from maild.store.models import Ticket


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _where(url: str) -> str:
    path = sqlite_file(url)
    if path is not None:
        return str(path.absolute())
    return make_url(url).render_as_string(hide_password=True)


def _unreachable(url: str, exc: OperationalError) -> TransientError:
    lines = str(exc.orig).strip().splitlines() or [type(exc.orig).__name__]
    return TransientError(f"cannot reach the database at {_where(url)}: {lines[0][:200]}")


def open_existing(url: str) -> Engine:
    """An engine on a database that exists and has this maild's schema."""
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise ConfigError("database.url", f"no database at {path.absolute()} (create it with "
                          "'maild db upgrade', or name the right file with --config)")  # fmt: skip
    engine = make_engine(url)
    try:
        try:
            empty = is_empty(engine)
        except OperationalError as exc:
            raise _unreachable(url, exc) from None
        if empty:
            raise ConfigError("database.url", f"no maild database at {_where(url)} (create "
                              "it with 'maild db upgrade')")  # fmt: skip
        current = stored_revision(engine)
        head = head_of_files() or head_revision(engine)
        if current != head:
            raise ConfigError("database.url", f"the database at {_where(url)} is at schema "
                              f"revision {current}, this maild needs {head}: run "
                              "'maild db upgrade'")  # fmt: skip
    except BaseException:
        engine.dispose()
        raise
    return engine


def open_or_create(url: str, *, prompt: bool = False) -> Engine:
    """An engine on the database, created (or refused when behind) as ``maild serve`` does.

    `prompt`: see `maild.store.db.make_engine`."""
    engine = make_engine(url, prompt=prompt)
    try:
        try:
            ensure_schema(engine)
        except OperationalError as exc:
            raise _unreachable(url, exc) from None
    except BaseException:
        engine.dispose()
        raise
    return engine


def has_tickets(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.scalar(select(Ticket.id).limit(1)) is not None


def guard_secret(secret_file: Path, engine: Engine) -> None:
    """Refuse to mint a new signing secret for a help desk that already has tickets.

    A missing secret file next to a database full of tickets is a mistake (a
    wrong path, a lost file): a new secret would silently invalidate every
    reply and bounce address maild has handed out.
    """
    if secret_file.exists() or not has_tickets(engine):
        return
    raise ConfigError("helpdesk.secret_file", f"no secret at {secret_file.absolute()}, but the "
                      "database has tickets: restore the file (a new secret would invalidate "
                      "every reply address maild has sent)")  # fmt: skip
