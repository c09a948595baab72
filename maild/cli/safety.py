"""Rules that keep a command from quietly doing harm to maild's state.

1. A command that writes refuses (exit 78) a relative path for the database, the
   secret or the outgoing Maildir unless the configuration was named
   (``--config`` or ``MAILD_CONFIG``) and sets that path itself: built-in
   defaults and a file found by default would otherwise put a new help desk
   under whatever folder the command happened to run in.
2. Run as root, maild refuses (exit 77) to touch state that belongs to another user
   (the ``maild`` service user): SQLite would leave root-owned ``-wal`` and
   ``-shm`` files, and new files, that the daemon then cannot write. Run it
   as that user instead (``runuser -u maild -- maild ...``).

(That only ``serve`` and ``db upgrade`` create a database is
`maild.store.access`.)
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

from maild.config.settings import Settings
from maild.errors import ConfigError


class Refused(Exception):
    """The command must not run as it was started (exit 77, EX_NOPERM)."""


def state_paths(settings: Settings) -> Iterator[tuple[str, Path]]:
    """(key, path) of every file or folder maild writes."""
    from maild.store.access import sqlite_file  # SQLAlchemy: only once a command runs

    db = sqlite_file(settings.database.url)
    if db is not None:
        yield "database.url", db
    yield "helpdesk.secret_file", settings.helpdesk.secret_file
    if settings.outgoing.transport == "maildir":
        yield "outgoing.maildir", settings.outgoing.maildir


def check(settings: Settings, *, writes: bool, explicit: bool) -> None:
    if writes:
        for key, path in state_paths(settings):
            if path.is_absolute() or (explicit and key in settings.given):
                continue
            why = (
                f"the built-in default; set an absolute path in {settings.source}"
                if explicit
                else f"from {settings.source}, found by default; name the file with --config, "
                "or make the path absolute there"
            )
            raise ConfigError(key, f"is the relative path {path} (here: {path.absolute()}), {why}")
    if os.geteuid() == 0:
        for key, path in state_paths(settings):
            owner = _foreign_owner(path)
            if owner is not None:
                where, uid = owner
                raise Refused(
                    f"running as root, but {where} ({key}) belongs to {_user(uid)}: run maild "
                    f"as that user (runuser -u {_user(uid)} -- maild ...), so the files it "
                    "writes stay theirs"
                )


def _foreign_owner(path: Path) -> tuple[Path, int] | None:
    """The path (or its folder) and its owner, when that is not root."""
    for candidate in (path.absolute(), path.absolute().parent):
        try:
            uid = candidate.stat().st_uid
        except OSError:
            continue
        if uid != 0:
            return candidate, uid
    return None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
