"""What trust costs per message (issue 14), against the same pipeline without it.

    python bench/trust.py [--n 1200] [--rounds 3] [--seed 1]

The corpus of `run.py` (`corpus.py`: new requests and replies that thread by
References), each message stamped with the Received line maild's SMTP intake
writes (each sender always from the same one of 40 client addresses), goes
through `Desk` on SQLite: intake commit, then worker and sender, parsing in
this process. Measured in CPU seconds of the process (`time.process_time`),
worker and sender included, per message:

* **trust**: the code as it is: the sender verified (`maild.pipeline.verify`:
  the requester's reply address, the References against the recipients of our
  own mail (a join in the Message-ID lookup), the Authentication-Results),
  the message's source from its Received lines, the per-source and per
  sender-and-source counts of the rate limits, a contact's bounce mark
  cleared when they write in;
* **baseline**: the same code with those parts replayed instead of done: the
  verdicts and sources recorded in an unmeasured first pass are looked up by
  Message-ID, the lookups and counts run as they did before issue 14. Both make
  the same decisions and send the same mail (checked).

Rounds alternate baseline and trust, each on a fresh database. Target: trust
<= 1.05 x baseline CPU per message (the median ratio over the rounds).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from corpus import generate  # noqa: E402
from sqlalchemy import bindparam, func, literal, null, select  # noqa: E402

import maild.desk.autoreply as autoreply  # noqa: E402
import maild.pipeline.decide as decide  # noqa: E402
import maild.service.worker as worker  # noqa: E402
from maild.clock import FrozenClock  # noqa: E402
from maild.desk.apply import Applier  # noqa: E402
from maild.mail.trace import received_line  # noqa: E402
from maild.store.db import Direct, make_engine, upgrade  # noqa: E402
from maild.store.models import Article, AutoreplyLog, Contact  # noqa: E402
from tests.support.desk import Desk, make_settings  # noqa: E402

TARGET = 1.05
SOURCES = 40


def stamped(n: int, seed: int) -> list[tuple[bytes, str]]:
    """(raw, envelope sender) with our Received line, one client address per sender."""
    clock = FrozenClock()
    out = []
    for m in generate(n, seed=seed):
        ip = f"198.51.100.{zlib.crc32(m.sender.encode()) % SOURCES + 1}"
        line = received_line(by="mx.example.com", protocol="ESMTP", now=clock.now(),
                             helo="client.example.net", ip=ip)  # fmt: skip
        out.append((line + m.raw, m.sender))
    return out


# --- the baseline: verdicts replayed, lookups and counts as before issue 14 --------------

Recorded = dict[str, Any]


@contextlib.contextmanager
def recording(verdicts: Recorded) -> Iterator[None]:
    real_verify, real_source = decide.verify_sender, decide.message_source

    def verify(msg: Any, facts: Any, settings: Any, **kw: Any) -> Any:
        out = real_verify(msg, facts, settings, **kw)
        verdicts[f"v{msg.message_id}{kw['ticket_id']}"] = out
        return out

    def source(msg: Any, settings: Any) -> Any:
        out = real_source(msg, settings)
        verdicts[f"s{msg.message_id}"] = out
        return out

    with _patched([(decide, "verify_sender", verify), (decide, "message_source", source)]):
        yield


@functools.cache
def _old_known_ids(n: int) -> Direct:
    keys = [bindparam(k) for k in worker._ID_KEYS[:n]]
    # The lookup without trust's join on the outbox (the recipients of our mail);
    # author and date are issue 15's (a reused Message-ID is not a duplicate).
    return Direct(select(Article.message_id, Article.ticket_id, Article.direction,
                         Article.author_email, Article.sent_at, null())
                  .where(Article.message_id.in_(keys)))  # fmt: skip


@functools.cache
def _old_counts(n: int) -> Direct:
    keys = [bindparam(f"e{i}") for i in range(n)]
    return Direct(select(
        select(func.count()).select_from(Contact)
        .where(Contact.email.in_(keys), Contact.bounce_state == "hard",
               Contact.bounced_at > bindparam("hard_since")).scalar_subquery(),
        select(func.count()).select_from(AutoreplyLog)
        .where(AutoreplyLog.at > bindparam("hour_ago")).scalar_subquery(),
        select(func.count()).select_from(AutoreplyLog)
        .where(AutoreplyLog.ticket_id == bindparam("ticket_id"),
               AutoreplyLog.at > bindparam("ten_ago")).scalar_subquery(),
        select(func.count()).select_from(AutoreplyLog)
        .where(AutoreplyLog.address.in_(keys), AutoreplyLog.at > bindparam("hour_ago"))
        .group_by(AutoreplyLog.address).order_by(func.count().desc()).limit(1)
        .scalar_subquery(),
        literal(0),
    ))  # fmt: skip


@contextlib.contextmanager
def baseline(verdicts: Recorded) -> Iterator[None]:
    patches: list[tuple[Any, str, Any]] = [
        (decide, "verify_sender",
         lambda msg, facts, settings, **kw: verdicts[f"v{msg.message_id}{kw['ticket_id']}"]),
        (decide, "message_source", lambda msg, settings: verdicts[f"s{msg.message_id}"]),
        (worker, "find_requester_token", lambda *a, **kw: None),
        (worker, "_known_ids", _old_known_ids),
        (autoreply, "_counts", _old_counts),
        (Applier, "_clear_bounce", lambda self, *a, **kw: None),
    ]  # fmt: skip
    with _patched(patches):
        yield


@contextlib.contextmanager
def _patched(patches: list[tuple[Any, str, Any]]) -> Iterator[None]:
    saved = [(obj, name, getattr(obj, name)) for obj, name, _new in patches]
    for obj, name, new in patches:
        setattr(obj, name, new)
    try:
        yield
    finally:
        for obj, name, old in saved:
            setattr(obj, name, old)


# --- one measured pass --------------------------------------------------------------------


def one_pass(messages: list[tuple[bytes, str]], mode: Callable[[], Any]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="maild-bench-trust-"))
    url = f"sqlite:///{tmp / 'maild.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    desk = Desk(make_settings(tmp, url))
    try:
        for raw, sender in messages:
            desk.deliver(raw, envelope_from=sender)
        with mode():
            started, wall = time.process_time(), time.perf_counter()
            processed, sent = desk.drain()
            cpu, wall = time.process_time() - started, time.perf_counter() - wall
        with desk.sessions() as session:
            unverified = session.scalar(select(func.count()).select_from(Article)
                                        .where(Article.verified_by == "none"))  # fmt: skip
        return {"cpu_s": cpu, "wall_s": wall, "processed": len(processed), "sent": sent.sent,
                "tickets": len(desk.tickets()), "unverified_articles": unverified}  # fmt: skip
    finally:
        desk.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    messages = stamped(args.n, args.seed)
    verdicts: Recorded = {}
    warm = one_pass(messages, lambda: recording(verdicts))  # records; warms caches
    rows = []
    for _ in range(args.rounds):
        base = one_pass(messages, lambda: baseline(verdicts))
        trust = one_pass(messages, contextlib.nullcontext)
        for key in ("processed", "sent", "tickets", "unverified_articles"):
            assert base[key] == trust[key] == warm[key], (key, base[key], trust[key], warm[key])
        rows.append((base, trust))
    ratios = [t["cpu_s"] / b["cpu_s"] for b, t in rows]
    ratio = statistics.median(ratios)
    per_msg = [(b["cpu_s"] / args.n * 1e3, t["cpu_s"] / args.n * 1e3) for b, t in rows]
    print(
        f"trust: {args.n} messages ({warm['tickets']} tickets, {warm['sent']} mails sent, "
        f"{warm['unverified_articles']} articles from unverified senders), {args.rounds} rounds"
    )
    for (b_ms, t_ms), r in zip(per_msg, ratios, strict=True):
        print(f"  baseline {b_ms:.3f} ms CPU/msg   trust {t_ms:.3f} ms CPU/msg   ratio {r:.3f}")
    met = ratio <= TARGET
    print(f"trust / baseline CPU per message: median {ratio:.3f} (target <= {TARGET}): "
          f"{'met' if met else 'NOT met'}")  # fmt: skip
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "trust.json").write_text(json.dumps({"n": args.n, "ratios": ratios, "median": ratio,
                                                "per_message_ms": per_msg, "target": TARGET,
                                                "met": met}, indent=2))  # fmt: skip
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
