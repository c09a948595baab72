"""Waiting in tests: on an event, or polling with a generous deadline; never
``time.sleep(x)`` and then an assertion that something did *not* happen.

A sleep proves nothing about absence: on a loaded machine the thing may
happen just after the sleep, and on a fast one the sleep is wasted time.
Instead, wait for the moment after which it can no longer happen, then
assert:

- `wait_settled(db_url)`: every inbound message processed and every due
  outgoing mail sent. After that, nothing more comes of what was sent
  (sweeps aside), so "still one ticket", "no second acknowledgement" are
  facts, not hopes.
- an answer that follows the thing in question on the same connection (the
  221 to QUIT follows the 250 of every transaction before it);
- the other party saying it refused (a log line, a counter), e.g. a second
  instance logging that it waits for a lock.

``make lint`` (tests/lint_waits.py) rejects a ``time.sleep(...)`` statement
followed directly by an ``assert``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import text

from maild.store.db import make_engine

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str | Callable[[], str] = "",
) -> T:
    """Poll `predicate` until it returns something true (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(
                f"condition not met within {timeout}s" + (f": {detail}" if detail else "")
            )
        time.sleep(interval)


def unsettled(db_url: str) -> dict[str, int]:
    """What is still to do: inbound messages not yet processed, outgoing mail not yet sent."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            inbound = conn.execute(
                text("select count(*) from inbound where status in ('pending', 'processing')")
            ).scalar_one()
            outbox = conn.execute(
                text("select count(*) from outbox where status = 'pending'")
            ).scalar_one()
    finally:
        engine.dispose()
    return {k: v for k, v in (("inbound", inbound), ("outbox", outbox)) if v}


def wait_settled(db_url: str, timeout: float = 60.0) -> None:
    """Until every inbound message is processed and every due mail sent."""
    last: dict[str, Any] = {}

    def settled() -> bool:
        last["left"] = unsettled(db_url)
        return not last["left"]

    wait_until(settled, timeout, 0.1, what=lambda: f"still to do: {last.get('left')}")
