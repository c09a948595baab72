"""What an agent's reply by mail costs, against a requester's reply in the same run.

    python bench/agents.py [--n 300] [--seed 1]

On SQLite (WAL, synchronous=FULL), through `Desk` (intake, worker, sender):
N tickets are opened, then

* **requester replies**: N replies threaded by In-Reply-To (the requester's
  text, a quoted acknowledgement), each telling the agent of the ticket;
* **agent replies**: N replies from the agent's mail client to the personal
  reply address of each ticket: ``#priority P2`` and ``#status pending_user``,
  a few lines for the requester, a signature and the quoted notification.
  Each is authenticated (signed address, strict From), its commands run
  through TicketOps under a savepoint, the text is quote-stripped and sent
  to the requester, and the agent gets a confirmation.

Reported: ms per message of each and their ratio. Figures move with the
machine and its load; only the ratio of the same run means anything.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from maild.store.db import make_engine, upgrade  # noqa: E402
from tests.support.desk import Desk, make_message, make_settings, reply_to  # noqa: E402

QUOTE = "\n".join(f"> line {i} of the notification, as the client quotes it" for i in range(30))


def run(n: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="maild-bench-agents-"))
    url = f"sqlite:///{tmp / 'maild.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    settings = make_settings(tmp, url, agents=[{"email": "anna@example.com", "name": "Anna"}])
    desk = Desk(settings)
    try:
        for i in range(n):  # one requester each: the rate limits count per address
            desk.deliver(make_message(sender=f"Bob {i} <bob{i}@example.org>",
                                      subject=f"Printer {i} not working",
                                      message_id=f"<new-{i}@example.org>"))  # fmt: skip
        desk.drain()
        mails = desk.outgoing()
        acks = {m["In-Reply-To"]: m for m in mails if "bob" in str(m["To"])}
        notes = [m for m in mails if "anna@" in str(m["To"])]
        requester = [
            reply_to(
                acks[f"<new-{i}@example.org>"],
                sender=f"Bob {i} <bob{i}@example.org>",
                body=f"Still broken.\n\nOn Mon, Help Desk wrote:\n{QUOTE}\n",
                message_id=f"<bob-{i}@example.org>",
            )  # fmt: skip
            for i in range(n)
        ]
        agent = [
            (reply_to(note, sender="Anna <anna@example.com>",
                      body="#priority P2\n#status pending_user\n\nHi Bob, which room is it in?\n"
                           f"\n-- \nAnna, IT\n\nOn Mon, Help Desk wrote:\n{QUOTE}\n",
                      message_id=f"<anna-{i}@example.com>"),
             note["Reply-To"].addresses[0].addr_spec)
            for i, note in enumerate(notes)
        ]  # fmt: skip
        started = time.perf_counter()
        for raw in requester:
            desk.deliver(raw)
        desk.drain()
        requester_s = time.perf_counter() - started
        started = time.perf_counter()
        for raw, address in agent:
            desk.deliver(raw, envelope_to=(address,))
        desk.drain()
        agent_s = time.perf_counter() - started
        changed = sum(1 for t in desk.tickets() if t["priority"] == "P2")
        assert changed == n, f"only {changed} of {n} agent replies took effect"
    finally:
        desk.close()
    return {"requester_ms": 1000 * requester_s / n, "agent_ms": 1000 * agent_s / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    r = run(args.n)
    print(f"requester replies: {r['requester_ms']:.2f} ms/msg")
    print(f"agent replies:     {r['agent_ms']:.2f} ms/msg")
    print(f"ratio agent/requester: {r['agent_ms'] / r['requester_ms']:.2f}")


if __name__ == "__main__":
    main()
