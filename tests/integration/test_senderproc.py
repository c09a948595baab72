"""The sender's own process: set up before the daemon says it is ready."""

from __future__ import annotations

import logging

from maild.service.senderproc import SenderProcess
from tests.support.desk import make_settings


def test_start_returns_once_the_sender_is_set_up(tmp_path, sqlite_url):
    settings = make_settings(tmp_path, sqlite_url)
    proc = SenderProcess(settings, 0.2, settle=0.0)
    proc.start()
    try:
        # Importing and setting up took place inside start(): the Maildir exists.
        assert (tmp_path / "outgoing" / "new").is_dir()
        assert proc.healthy()
    finally:
        assert proc.stop()


def test_a_sender_that_cannot_start_is_reported_not_waited_for(tmp_path, sqlite_url, caplog):
    blocker = tmp_path / "outgoing"
    blocker.write_text("a file where the Maildir should be")
    settings = make_settings(tmp_path, sqlite_url)
    proc = SenderProcess(settings, 0.2, settle=0.0)
    with caplog.at_level(logging.ERROR, logger="maild.senderproc"):
        proc.start()
    try:
        assert not proc.healthy()
        assert "sender process exited while starting (status 1)" in caplog.text
    finally:
        proc.stop()
