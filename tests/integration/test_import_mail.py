"""`maild import` makes its acknowledgements in a process of its own
(maild.service.renderpool): what commits, and what is sent, is the mail
the worker would have made itself, and a process that dies loses none."""

from __future__ import annotations

import email
import email.policy
import logging
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from sqlalchemy import select

from maild.mail.make import MadeMail, MailJob
from maild.service.renderpool import RenderPool
from maild.store.db import make_engine, upgrade
from maild.store.models import Article, Outbox
from tests.support.desk import Desk, make_message, make_settings

REQUESTS = [
    ("Ann Andersson <ann@example.org>", "Printer on floor 3 jams", "It jams on every page.\n"),
    ("Bo Berg <bo@example.org>", "VPN drops every hour", "The VPN client disconnects.\n"),
    ("Cai Chen <cai@example.org>", "Need a new monitor", "Mine flickers since Monday.\n"),
    ("Dee Dahl <dee@example.org>", "Tulostin ei toimi", "Tulostin ei tulosta mitään.\n"),
]


def _deliver_requests(desk: Desk) -> None:
    for n, (sender, subject, body) in enumerate(REQUESTS):
        desk.deliver(make_message(sender=sender, subject=subject, body=body,
                                  message_id=f"<req-{n}@example.org>"))  # fmt: skip


def _tickets_mail(desk: Desk) -> list[tuple[int, str, str, bytes]]:
    """(ticket, article subject, article text, outbox bytes) per queued mail."""
    with desk.sessions() as session:
        rows = session.execute(
            select(Outbox.ticket_id, Article.subject, Article.text, Outbox.raw)
            .join(Article, Outbox.article_id == Article.id)
            .order_by(Outbox.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _sent_files(tmp_path: Path) -> list[bytes]:
    new = tmp_path / "outgoing" / "new"
    return sorted(p.read_bytes() for p in new.iterdir())


def _body(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def _assert_whole(rows: list[tuple[int, str, str, bytes]], sent: list[bytes]) -> None:
    """Each mail is complete, the ticket shows what was sent, and what was
    sent is the outbox's bytes."""
    assert len(rows) == len(REQUESTS)
    for ticket, subject, text, raw in rows:
        assert subject.startswith(f"[#{ticket}] ")
        assert f"#{ticket}" in text
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert msg["Subject"] == subject
        assert _body(raw) == text
    assert sorted(raw for *_rest, raw in rows) == sent


def _desk_making_elsewhere(tmp_path: Path, url: str) -> tuple[Desk, RenderPool]:
    desk = Desk(make_settings(tmp_path, url))
    pool = RenderPool(desk.renderer, chunk=2)  # two go there, and the rest of a chunk is made here
    pool.start()
    desk.applier.make_elsewhere = pool
    return desk, pool


@pytest.fixture
def made_elsewhere(db_url, tmp_path):
    desk, pool = _desk_making_elsewhere(tmp_path, db_url)
    try:
        yield desk, pool
    finally:
        desk.applier.make_elsewhere = None
        pool.close()
        desk.close()


def test_mail_made_in_another_process_is_complete_and_sent_as_stored(made_elsewhere, tmp_path):
    """Each acknowledgement's article and outbox row are filled in before the
    transaction commits: the ticket shows what was sent, and the bytes sent
    are the outbox's."""
    desk, _pool = made_elsewhere
    _deliver_requests(desk)
    desk.worker.run_batch()
    assert desk.sender.drain().sent == len(REQUESTS)
    rows = _tickets_mail(desk)
    _assert_whole(rows, _sent_files(tmp_path))
    assert any("Tulostin ei toimi" in text for _t, _s, text, _r in rows)


def test_mail_made_in_another_process_is_the_mail_made_here(tmp_path):
    """The same requests on two desks with the same clock: their tickets show
    the same acknowledgements, made by the worker or by the other process."""
    texts = []
    for where in ("elsewhere", "here"):
        path = tmp_path / where
        path.mkdir()
        url = f"sqlite:///{path / 'maild.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        if where == "elsewhere":
            desk, pool = _desk_making_elsewhere(path, url)
        else:
            desk, pool = Desk(make_settings(path, url)), None
        try:
            _deliver_requests(desk)
            desk.worker.run_batch()
            texts.append([(subject, text) for _t, subject, text, _r in _tickets_mail(desk)])
        finally:
            if pool is not None:
                pool.close()
            desk.close()
    assert len(texts[0]) == len(REQUESTS)
    assert texts[0] == texts[1]


def test_mail_whose_process_died_is_made_by_the_worker(made_elsewhere, tmp_path, caplog):
    """The process is killed once it has the first jobs: those mails, and
    every one after, are made by the worker, in the same transaction; none is
    lost or empty."""
    desk, pool = made_elsewhere
    _deliver_requests(desk)
    real_submit = pool.submit
    submitted = []

    def submit_then_die(job):
        future = real_submit(job)
        submitted.append(future)
        if len(submitted) == 2:  # the first chunk is on its way: the process dies
            for process in list(pool._executor._processes.values()):
                process.kill()
                process.join(10)
        return future

    pool.submit = submit_then_die  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        desk.worker.run_batch()
    assert "made here instead" in caplog.text or "makes them itself" in caplog.text
    assert "one by one" not in caplog.text  # the transaction itself went on
    assert desk.sender.drain().sent == len(REQUESTS)
    _assert_whole(_tickets_mail(desk), _sent_files(tmp_path))


class _DiedWithTheJobs:
    """A making process that died with every job in hand. (A real one, killed,
    dies before or after it took the jobs, as timing has it: the test above.)"""

    def submit(self, job: MailJob) -> Future[MadeMail]:
        future: Future[MadeMail] = Future()
        future.set_exception(BrokenProcessPool("the process died"))
        return future

    def finish(self) -> None:
        pass


def test_mail_that_did_not_come_back_is_made_in_the_same_transaction(db_url, tmp_path, caplog):
    desk = Desk(make_settings(tmp_path, db_url))
    desk.applier.make_elsewhere = _DiedWithTheJobs()
    try:
        _deliver_requests(desk)
        with caplog.at_level(logging.WARNING):
            desk.worker.run_batch()
        assert caplog.text.count("made here instead") == len(REQUESTS)
        assert "one by one" not in caplog.text
        assert desk.sender.drain().sent == len(REQUESTS)
        _assert_whole(_tickets_mail(desk), _sent_files(tmp_path))
    finally:
        desk.close()
