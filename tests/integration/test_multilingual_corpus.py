"""The multilingual corpus through the daemon's real SMTP listener: every
auto-reply and relay bounce is recorded on its ticket (or ignored with the
rule that set it aside), none opens a ticket, none is answered."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from sqlalchemy import text

from maild.store.db import make_engine
from tests.integration.test_smtp_intake import send, wait_until
from tests.support.desk import make_message, read_maildir

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "multilingual"
MANIFEST = tomllib.loads((CORPUS / "MANIFEST.toml").read_text())
_RETURN_PATH = re.compile(rb"^Return-Path: <([^>]*)>", re.MULTILINE)
_FROM = re.compile(rb"^From: .*<([^>]+)>", re.MULTILINE)


def query(db_url: str, sql: str) -> list:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


def test_every_auto_reply_and_bounce_is_recorded_and_none_answered(
    sqlite_url, daemon_factory, tmp_path
):
    running = daemon_factory(sqlite_url)
    send(running.port, make_message(message_id="<request-1@example.org>"))
    (ack,) = wait_until(lambda: read_maildir(tmp_path / "outgoing"), timeout=10)
    ack_id = ack["Message-ID"].encode()

    sent: dict[str, str] = {}  # file -> Message-ID
    for name in sorted(MANIFEST):
        raw = (CORPUS / name).read_bytes().replace(b"<ACK_MESSAGE_ID>", ack_id)
        found = _RETURN_PATH.search(raw) or _FROM.search(raw)
        assert found is not None, name
        send(running.port, raw, sender=found.group(1).decode())
        mid = re.search(rb"^Message-ID: (<[^>]+>)", raw, re.MULTILINE)
        assert mid is not None
        sent[name] = mid.group(1).decode()

    total = len(MANIFEST) + 1
    wait_until(lambda: query(sqlite_url, "select count(*) from inbound where status not in "
                                         "('pending', 'processing')")[0][0] == total,
               timeout=60)  # fmt: skip

    assert query(sqlite_url, "select count(*) from ticket")[0][0] == 1
    assert query(sqlite_url, "select status from ticket")[0][0] == "open"
    assert len(read_maildir(tmp_path / "outgoing")) == 1  # the acknowledgement only
    assert query(sqlite_url, "select count(*) from outbox")[0][0] == 1
    inbound = {r[0]: (r[1], r[2]) for r in query(
        sqlite_url, "select message_id, status, outcome from inbound")}  # fmt: skip
    articles = {r[0]: (r[1], r[2]) for r in query(
        sqlite_url, "select message_id, kind, visibility from article")}  # fmt: skip
    wrong = []
    for name, mid in sent.items():
        kind = "automated" if MANIFEST[name]["kind"] == "autoreply" else "bounce"
        status, outcome = inbound[mid]
        if status == "done":
            if articles.get(mid) != (kind, "internal"):
                wrong.append(f"{name}: recorded as {articles.get(mid)}, not a {kind} note")
        elif status != "ignored":
            wrong.append(f"{name}: {status} / {outcome}")
    assert not wrong, "\n".join(wrong)
    # Those that name our acknowledgement are on the ticket; only the text-only bounces are not.
    on_ticket = {n for n, mid in sent.items() if inbound[mid][0] == "done"}
    assert on_ticket == {n for n in sent if "text_only" not in n}
