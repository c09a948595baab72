"""What finding the agent's words costs, against the whole agent reply, in the same run.

    python bench/quotes.py [--n 380]

On SQLite through `Desk` (intake, worker, sender), N tickets are opened and each
gets an agent's reply from the client corpus (tests/fixtures/agent_replies: Gmail,
Outlook, Apple, Thunderbird, mutt, ... top-, bottom-posted, interleaved, HTML only),
sent to the ticket's personal reply address. Measured in CPU seconds of this
process (the worker and sender run in it):

* **agent replies**: the whole processing of the N replies (parse, authenticate,
  find the text, run the commands, answer the requester, confirm to the agent);
* **quote handling**: `maild.mail.quotes.split_reply` alone on the same N texts.

Target: quote handling <= 10 % of an agent reply's CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from maild.mail.parse import parse  # noqa: E402
from maild.mail.quotes import phrases, split_reply  # noqa: E402
from maild.store.db import make_engine, upgrade  # noqa: E402
from tests.support.desk import Desk, make_message, make_settings  # noqa: E402

CORPUS = HERE.parent / "tests" / "fixtures" / "agent_replies"
TARGET = 0.10


def run(n: int) -> dict[str, float]:
    fixtures = sorted(CORPUS.glob("*.eml"))
    tmp = Path(tempfile.mkdtemp(prefix="maild-bench-quotes-"))
    url = f"sqlite:///{tmp / 'maild.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    settings = make_settings(tmp, url, agents=[{"email": "anna@example.com", "name": "Anna"}])
    desk = Desk(settings)
    try:
        for i in range(n):  # one requester each: the rate limits count per address
            desk.deliver(make_message(sender=f"Carol {i} <carol{i}@example.net>",
                                      subject=f"VPN drops {i}",
                                      message_id=f"<new-{i}@example.net>"))  # fmt: skip
            if i % 8 == 7:
                desk.clock.advance(hours=2)  # the agent's notifications are rate-limited too
        desk.drain()
        notes = [m for m in desk.outgoing() if "anna@" in str(m["To"])]
        assert len(notes) == n, f"{len(notes)} notifications for {n} tickets"
        replies = []
        for i, note in enumerate(notes):
            address = note["Reply-To"].addresses[0].addr_spec
            number = str(note["Subject"]).split("]")[0].lstrip("[#")
            raw = (fixtures[i % len(fixtures)].read_bytes()
                   .replace(b"@@TO@@", address.encode())
                   .replace(b"@@IN_REPLY_TO@@", str(note["Message-ID"]).encode())
                   .replace(b"@@N@@", number.encode())
                   .replace(b"\r\nMessage-ID: <", f"\r\nMessage-ID: <{i}.".encode()))  # fmt: skip
            replies.append((raw, address))
        texts = [parse(raw).text for raw, _ in replies]
        phrases()  # compiled once at start, as in the daemon

        before = len(desk.outgoing())
        started = time.process_time()
        for raw, address in replies:
            desk.deliver(raw, envelope_to=(address,))
        desk.drain()
        agent_s = time.process_time() - started
        answered = sum(1 for m in desk.outgoing()[before:] if "carol" in str(m["To"]))
        assert answered == n, f"only {answered} of {n} agent replies reached their requester"

        started = time.process_time()
        for text in texts:
            split_reply(text)
        quotes_s = time.process_time() - started
    finally:
        desk.close()
    return {"agent_ms": 1000 * agent_s / n, "quotes_ms": 1000 * quotes_s / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=380)
    args = parser.parse_args()
    r = run(args.n)
    share = r["quotes_ms"] / r["agent_ms"]
    print(f"agent replies (whole):  {r['agent_ms']:.2f} ms CPU/msg")
    print(f"quote handling alone:   {r['quotes_ms']:.3f} ms CPU/msg")
    print(f"share: {100 * share:.1f} % of an agent reply's CPU "
          f"(target <= {100 * TARGET:.0f} %: {'met' if share <= TARGET else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
