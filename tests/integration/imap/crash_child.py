"""The child of the kill -9 tests: maild's IMAP intake for one mailbox, in
burst mode, that SIGKILLs itself the `nth` time it reaches step `point`.

    python crash_child.py CONFIG POINT NTH imap|nomove

Exits 0 when the folder is empty (printing the poller's counters), or dies
of SIGKILL at the named step: "after_fetch", "after_commit", "after_copy"
(COPY done, \\Deleted and EXPUNGE not yet: needs "nomove"), "after_move".
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict

from imapclient import IMAPClient

from maild.clock import SystemClock
from maild.config.settings import load_settings
from maild.intake.imap import MailboxPoller
from maild.store.db import make_engine, session_factory
from tests.support.dovecot import NoMoveIMAPClient


def main(argv: list[str]) -> int:
    config, point, nth, client = argv[1], argv[2], int(argv[3]), argv[4]
    settings = load_settings(config, environ={})
    engine = make_engine(settings.database.url)
    reached = 0

    def hook(step: str) -> None:
        nonlocal reached
        if step == point:
            reached += 1
            if reached == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    poller = MailboxPoller(
        settings.imap.mailboxes[0],
        settings,
        session_factory(engine),
        SystemClock(),
        client_factory=NoMoveIMAPClient if client == "nomove" else IMAPClient,
        hook=hook,
    )
    stats = poller.drain()
    print(json.dumps(asdict(stats)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
