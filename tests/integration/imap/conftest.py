"""A real Dovecot for the IMAP tests, and helpers to point maild at it.

One Dovecot (plain IMAP, STARTTLS and implicit TLS on loopback ports) serves
the whole session; each test logs in as its own fresh user, which Dovecot
gives its own empty Maildir. Tests that stop the server start their own.
Without Dovecot the tests skip locally and fail in CI.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from maild.clock import SystemClock
from maild.config.settings import Settings
from maild.intake.imap import MailboxPoller
from maild.store.db import make_engine, session_factory
from tests.conftest import service_missing
from tests.support.desk import make_settings
from tests.support.dovecot import PASSWORD, Dovecot, dovecot_available
from tests.support.waiting import wait_until

__all__ = ["wait_until"]  # imported from here by the IMAP tests


def start_dovecot(**kwargs: Any) -> Dovecot:
    why = dovecot_available()
    if why:
        service_missing(why)
    server = Dovecot(**kwargs)
    try:
        server.start()
    except Exception as exc:
        server.close()
        service_missing(f"dovecot does not start: {exc}")
    return server


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    server = start_dovecot(tls=True)
    yield server
    server.close()


@pytest.fixture
def own_dovecot() -> Iterator[Dovecot]:
    """A Dovecot of this test's own, free to be stopped and restarted."""
    server = start_dovecot()
    yield server
    server.close()


@pytest.fixture
def pg_url(_postgres: Any) -> Iterator[str]:
    """A fresh PostgreSQL database only (for what only PostgreSQL does)."""
    name = _postgres.create()
    yield _postgres.url_for(name)
    _postgres.drop(name)


@pytest.fixture
def imap_user() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "imap-password"
    path.write_text(PASSWORD + "\n")
    return path


def mailbox_table(server: Dovecot, user: str, password_file: Path | str, **overrides: Any) -> dict:
    table: dict[str, Any] = {
        "name": "support",
        "host": "127.0.0.1",
        "port": server.port,
        "tls": "none",
        "username": user,
        "password_file": str(password_file),
    }
    table.update(overrides)
    return table


def write_config(tmp_path: Path, db_url: str, *mailboxes: dict, **imap: Any) -> Path:
    lines = [
        "[database]",
        f'url = "{db_url}"',
        "[helpdesk]",
        'addresses = ["help@example.com"]',
        f'secret_file = "{tmp_path / "secret.key"}"',
        # Thirty look-alike reports at once would open a major incident (maild.majors).
        "[major]",
        "enabled = false",
    ]
    if imap:
        lines.append("[imap]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in imap.items())
    for box in mailboxes:
        lines.append("[[imap.mailboxes]]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in box.items())
    cfg = tmp_path / "maild.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def imap_section(*mailboxes: dict, **overrides: Any) -> dict:
    section: dict[str, Any] = {
        "mailboxes": list(mailboxes),
        "reconnect_min_seconds": 0.2,
        "reconnect_max_seconds": 1.0,
        # In IDLE too, the poller looks again this often: Dovecot misses
        # announcing a message appended in the instant the poller enters IDLE.
        "poll_seconds": 2.0,
        "timeout_seconds": 10.0,
    }
    section.update(overrides)
    return section


class Intake:
    """A `MailboxPoller` on a real database, driven in burst mode."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database.url)
        self.sessions = session_factory(self.engine)
        self.kwargs = kwargs

    def poller(self, name: str = "support", **kwargs: Any) -> MailboxPoller:
        box = self.settings.imap.mailbox(name)
        assert box is not None
        return MailboxPoller(box, self.settings, self.sessions, SystemClock(),
                             **{**self.kwargs, **kwargs})  # fmt: skip

    def drain(self, name: str = "support", **kwargs: Any) -> Any:
        return self.poller(name, **kwargs).drain()

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def intake_factory(tmp_path: Path) -> Iterator[Callable[..., Intake]]:
    made: list[Intake] = []

    def factory(db_url: str, imap: dict, **sections: Any) -> Intake:
        intake = Intake(make_settings(tmp_path, db_url, imap=imap, **sections))
        made.append(intake)
        return intake

    yield factory
    for intake in made:
        intake.close()
