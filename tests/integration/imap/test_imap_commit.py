"""IMAP moves or flags a message only after its row and the mailbox's UID
checkpoint are committed together.

The database refuses the COMMIT itself (`tests.support.faults`): a poller that
moved or flagged before committing has by then taken the message out of the
inbox (or marked it done) with nothing stored: lost.
"""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from maild.intake.imap import PROCESSED_KEYWORD
from tests.integration.imap.conftest import imap_section, mailbox_table
from tests.integration.imap.test_imap_intake import count, messages, rows
from tests.support.dovecot import NoMoveIMAPClient
from tests.support.faults import refuse_commits


def _flagged(dovecot, user: str) -> list[bool]:
    with dovecot.client(user) as c:
        c.select_folder("INBOX", readonly=True)
        flags = c.get_flags(c.search("ALL"))
    return [b"\\Seen" in f or PROCESSED_KEYWORD.encode() in f for f in flags.values()]


@pytest.mark.parametrize("after", ["move", "copy-expunge", "flag"])
def test_a_failed_commit_leaves_the_messages_untouched_on_the_server(
    db_url, dovecot, imap_user, password_file, intake_factory, after
):
    box = mailbox_table(
        dovecot, imap_user, password_file, after="flag" if after == "flag" else "move"
    )
    intake = intake_factory(db_url, imap_section(box))
    if after == "copy-expunge":
        intake.kwargs["client_factory"] = NoMoveIMAPClient
    dovecot.append(imap_user, messages(3, f"cf-{after}"))
    with refuse_commits(db_url), pytest.raises(DBAPIError):
        intake.drain()  # burst mode: the storage error surfaces
    assert count(db_url, "inbound") == 0
    assert rows(db_url, "select last_uid from imap_checkpoint") in ([], [(0,)])
    assert dovecot.count(imap_user, "INBOX") == 3
    assert _flagged(dovecot, imap_user) == [False] * 3
    if after != "flag":
        assert dovecot.count(imap_user, "Processed") == 0

    # The database is back: the next pass stores each once, then moves or flags it.
    stats = intake.drain()
    assert stats.stored == 3 and count(db_url, "inbound") == 3
    if after == "flag":
        assert _flagged(dovecot, imap_user) == [True] * 3
    else:
        assert dovecot.count(imap_user, "INBOX") == 0
        assert sorted(dovecot.message_ids(imap_user, "Processed")) == sorted(
            f"<cf-{after}-{i}@example.org>" for i in range(3)
        )
