"""The daemon's /metrics shows when each IMAP mailbox was last polled successfully."""

from __future__ import annotations

import time

from tests.integration.imap.conftest import imap_section, mailbox_table, wait_until
from tests.integration.test_metrics import scrape, value
from tests.support.desk import make_message


def test_last_successful_poll_per_mailbox(
    sqlite_url, dovecot, imap_user, password_file, daemon_factory
):
    box = mailbox_table(dovecot, imap_user, password_file)
    before = time.time()
    running = daemon_factory(sqlite_url, imap=imap_section(box))
    port = running.daemon.http.port
    name = ("maild_imap_last_successful_poll_timestamp_seconds", (("mailbox", "support"),))
    first = wait_until(lambda: scrape(port).get(name), timeout=10)
    assert first >= before - 1
    dovecot.append(imap_user, [make_message(message_id="<polled@example.org>")])
    # The new message is picked up (IDLE) by a fresh, complete sync.
    wait_until(lambda: value(scrape(port), "maild_inbound_processed_total", source="imap",
                             outcome="new_ticket") == 1, timeout=10)  # fmt: skip
    wait_until(lambda: scrape(port)[name] > first, timeout=10)
    assert scrape(port)[name] <= time.time()
