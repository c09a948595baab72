"""Benchmark: how well triage decides, and what triage and the SLA sweeps cost.

0. Precision on the labelled English, Finnish and Swedish set
   (tests/fixtures/triage/labelled.toml, 150+ cases, 50+ near misses): the
   rules were tuned looking at the tuning half only; the held-out half gives
   the figures to quote. Printed: security precision and recall, type
   accuracy, the confusion tables, the misses.
1. Classification per message, as a ratio to parsing the same message (the
   pipeline's one unavoidable per-message cost), over the realistic corpus of
   ``bench/corpus.py`` and over worst-case 6,000-character bodies.
2. An idle SLA sweep (nothing due: what runs every minute) over a small and a
   large archive of open tickets on SQLite: the ratio shows whether the cost
   grows with the archive (it should not: the sweep reads indexed deadlines).

Usage: ``python bench/triage.py [--n 2000] [--tickets 20000]``. Timings on a
shared machine are noisy; the ratios are what to compare between runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import generate

from maild.mail.parse import parse
from tests.support.desk import make_message


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_classify(n: int) -> None:
    from maild.config.settings import settings_from_mapping
    from maild.pipeline.triage import Rulebook, classify

    settings = settings_from_mapping({})
    rules = Rulebook.from_settings(settings)
    raws = [m.raw for m in generate(n, seed=1)]
    parsed = [parse(raw) for raw in raws]
    t_parse = best_of(lambda: [parse(raw) for raw in raws])
    t_triage = best_of(lambda: [classify(m, "help@example.com", settings, rules) for m in parsed])
    print(f"corpus of {n} messages: parse {t_parse / n * 1e3:.3f} ms/msg (baseline), "
          f"triage {t_triage / n * 1e3:.3f} ms/msg, ratio {t_triage / t_parse:.2f}")  # fmt: skip
    long_raws = [make_message(body=("The printer on the third floor is not working and shows "
                                    "error E42 again. ") * 80, message_id=f"<l{i}@x.org>")
                 for i in range(200)]  # fmt: skip
    long_parsed = [parse(raw) for raw in long_raws]
    t_parse = best_of(lambda: [parse(raw) for raw in long_raws])
    t_triage = best_of(
        lambda: [classify(m, "help@example.com", settings, rules) for m in long_parsed]
    )
    print(f"200 messages of 6.6 KB: parse {t_parse / 200 * 1e3:.3f} ms/msg (baseline), "
          f"triage {t_triage / 200 * 1e3:.3f} ms/msg, ratio {t_triage / t_parse:.2f}")  # fmt: skip


def bench_labelled() -> None:
    from maild.config.settings import settings_from_mapping
    from maild.pipeline.triage import Rulebook
    from tests.support.labelled import cases, evaluate

    settings = settings_from_mapping({})
    rules = Rulebook.from_settings(settings)
    for half, name in (("tune", "tuning half"), ("held_out", "held-out half (the figures)")):
        figures = evaluate(cases(half), settings, rules)
        print(f"labelled set, {name}: {figures.summary()}")
        print("\n".join("  " + line for line in figures.tables().splitlines()))
        print("\n".join(figures.misses) or "  no misses")


def bench_sweep(tickets: int) -> None:
    from sqlalchemy import insert

    from maild.clock import FrozenClock
    from maild.config.settings import settings_from_mapping
    from maild.desk.apply import Applier
    from maild.desk.sweeps import sweep_sla
    from maild.mail.render import Renderer
    from maild.store.db import make_engine, session_factory, upgrade
    from maild.store.models import Contact, Ticket

    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    results = {}
    for count in (tickets // 100, tickets):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            engine = make_engine(url)
            upgrade(engine)
            sessions = session_factory(engine)
            with sessions.begin() as session:
                session.execute(insert(Contact).values(id=1, email="bob@example.org", name="Bob",
                                                       bounce_state="ok", created_at=now))  # fmt: skip
                far = now + timedelta(days=30)
                rows = [dict(type="incident", category="other", impact=3, urgency=2, priority=3,
                             tier=1, status="open", requester_id=1, subject=f"t{i}",
                             security=False, language="en", address="help@example.com",
                             loop_suspected=False, created_at=now, updated_at=now,
                             first_response_due=far, first_response_warn_at=far,
                             resolution_due=far, resolution_warn_at=far)
                        for i in range(count)]  # fmt: skip
                session.execute(insert(Ticket), rows)
            settings = settings_from_mapping({"database": {"url": url}})
            applier = Applier(settings, Renderer.from_settings(settings))
            clock = FrozenClock(now)
            results[count] = best_of(lambda: sweep_sla(sessions, applier, clock), repeat=5)  # noqa: B023
            engine.dispose()
    small, large = tickets // 100, tickets
    print(f"idle SLA sweep: {small} open tickets {results[small] * 1e3:.2f} ms (baseline), "
          f"{large} open tickets {results[large] * 1e3:.2f} ms, "
          f"ratio {results[large] / results[small]:.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="corpus messages to classify")
    ap.add_argument("--tickets", type=int, default=20000, help="open tickets for the sweep")
    args = ap.parse_args()
    bench_labelled()
    bench_classify(args.n)
    bench_sweep(args.tickets)


if __name__ == "__main__":
    main()
