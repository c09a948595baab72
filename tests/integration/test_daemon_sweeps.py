"""``maild serve`` runs the sweeps on its scheduler and reloads triage rules on SIGHUP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from maild.store.db import make_engine, session_factory
from maild.store.models import Ticket
from tests.integration.test_smtp_intake import send, wait_until
from tests.support.desk import make_message, read_maildir


def test_scheduler_sweeps_warn_and_escalate(db_url, daemon_factory, tmp_path):
    running = daemon_factory(
        db_url,
        sla={"sweep_seconds": 0.2},
        tiers={"tier1": ["tier1@example.com"], "tier2": ["tier2@example.com"]},
    )
    send(running.port, make_message())
    outgoing = tmp_path / "outgoing"
    wait_until(lambda: len(read_maildir(outgoing)) == 2)  # ack + tier 1
    # Pretend the first-response target has run out (the daemon runs on the wall clock).
    engine = make_engine(db_url)
    past = datetime.now(UTC) - timedelta(minutes=1)
    with session_factory(engine).begin() as session:
        session.execute(update(Ticket).values(first_response_due=past, first_response_warn_at=past))
    engine.dispose()
    mails = wait_until(lambda: (m := read_maildir(outgoing)) and len(m) >= 5 and m)
    by_to = sorted((str(m["To"]).split("<")[-1].rstrip(">"), m["Subject"].split(":")[0])
                   for m in mails[2:])  # fmt: skip
    assert by_to == [
        ("bob@example.org", "[#1] Passed to our specialists"),
        ("tier1@example.com", "[#1] P3 SLA BREACH"),
        ("tier2@example.com", "[#1] P3 escalated"),
    ]


def test_sighup_reloads_triage_rules(db_url, daemon_factory, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[category]]\nname = "facilities"\npatterns = ["coffee"]\n')
    running = daemon_factory(db_url, triage={"rules_file": str(rules)})
    send(running.port, make_message(subject="Coffee machine broken", message_id="<c1@example.org>"))
    rules.write_text('[[category]]\nname = "kitchen"\npatterns = ["coffee"]\n')
    running.daemon.reload()  # what SIGHUP does
    send(running.port, make_message(subject="Coffee machine broken", message_id="<c2@example.org>"))
    engine = make_engine(db_url)

    def categories() -> list[str] | None:
        with session_factory(engine)() as session:
            got = list(session.scalars(select(Ticket.category).order_by(Ticket.id)))
        return got if len(got) == 2 else None

    try:
        got = wait_until(categories)
    finally:
        engine.dispose()
    assert got == ["facilities", "kitchen"]
    # A broken rules file keeps the old rules (and says so in the log).
    rules.write_text('[[category]]\nname = "x"\npatterns = ["(a+)+"]\n')
    running.daemon.reload()
    assert running.daemon.worker.rules.category("kitchen") is not None
