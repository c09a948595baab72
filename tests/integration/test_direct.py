"""`maild.store.db.Direct` behaves as SQLAlchemy would: values, defaults, errors (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from maild.store.db import Direct, make_engine, session_factory
from maild.store.models import Contact

INSERT = Direct(insert(Contact).returning(Contact.id))
BY_EMAIL = Direct(
    select(Contact.id, Contact.name, Contact.bounce_state, Contact.created_at).where(
        Contact.email == bindparam("email")
    )
)
MISSING = Direct(select(Contact.id).where(Contact.email == bindparam("email")))


def test_direct_statements_round_trip_like_sqlalchemy(db_url):
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    when = datetime(2026, 11, 29, 12, 30, 15, 123456, tzinfo=UTC)
    try:
        with sessions.begin() as session:
            # name and bounce_state are left to their column defaults
            new_id = INSERT.scalar_one(session, {"email": "ann@example.org", "created_at": when})
            assert BY_EMAIL.one(session, {"email": "ann@example.org"}) == (new_id, "", "ok", when)
            assert MISSING.first(session, {"email": "nobody@example.org"}) is None
        with sessions() as session:  # committed, and read back through the ORM alike
            contact = session.scalars(select(Contact).where(Contact.id == new_id)).one()
            assert (contact.name, contact.bounce_state, contact.created_at) == ("", "ok", when)
    finally:
        engine.dispose()


def test_a_driver_error_comes_out_as_sqlalchemys_and_rolls_back(db_url):
    """Callers (the worker's retry, the 451 path) only know SQLAlchemy's exceptions."""
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    try:
        with sessions.begin() as session:
            INSERT.scalar_one(session, {"email": "dup@example.org", "created_at": now})
        with pytest.raises(IntegrityError), sessions.begin() as session:
            INSERT.scalar_one(session, {"email": "new@example.org", "created_at": now})
            INSERT.scalar_one(session, {"email": "dup@example.org", "created_at": now})
        with sessions() as session:  # the whole transaction went, not half of it
            emails = set(session.scalars(select(Contact.email)))
        assert emails == {"dup@example.org"}
    finally:
        engine.dispose()


def test_date_times_are_converted_right_when_one_repeats_and_others_follow(db_url):
    """Each date-time column remembers its last conversion (a message's ``now``
    goes into many columns): a new value, equal or not, is converted afresh,
    and an aware non-UTC time still lands as the same instant."""
    from datetime import timedelta, timezone

    engine = make_engine(db_url)
    sessions = session_factory(engine)
    first = datetime(2026, 11, 29, 12, 0, 0, 1, tzinfo=UTC)
    later = first + timedelta(minutes=5)
    helsinki = later.astimezone(timezone(timedelta(hours=2)))  # the same instant
    values = [first, first, later, first, helsinki, datetime(2026, 11, 29, 12, 0, 0, 1, tzinfo=UTC)]
    try:
        with sessions.begin() as session:
            ids = [
                INSERT.scalar_one(session, {"email": f"c{i}@example.org", "created_at": when})
                for i, when in enumerate(values)
            ]
        with sessions() as session:
            stored = [BY_EMAIL.one(session, {"email": f"c{i}@example.org"})[3] for i in range(6)]
        assert len(set(ids)) == 6
        assert stored == [first, first, later, first, later, first]
    finally:
        engine.dispose()
