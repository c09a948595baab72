"""The full-text index: search, past fixes, #helpful (maild.store.search).

Real SQLite (FTS5) and PostgreSQL (GIN) through `db_url`; tickets made by
the whole pipeline (`Desk`), agents' replies and resolutions through the
same desk actions the mail commands use.
"""

from __future__ import annotations

import json
from email import message_from_bytes
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import text

from maild.desk.actions import ActionRefused, TicketOps
from maild.mail.parse import Address
from maild.store import search
from tests.support.desk import Desk, make_message, make_settings, reply_to

ANNA = Address(name="Anna Agent", email="anna@example.com")
AGENTS = [
    {"email": "anna@example.com", "name": "Anna Agent", "tier": 1},
    {"email": "sara@example.com", "name": "Sara Turva", "tier": 3, "language": "fi",
     "groups": ["security"]},
]  # fmt: skip


@pytest.fixture
def desk(db_url, tmp_path):
    d = Desk(make_settings(tmp_path, db_url, agents=AGENTS))
    yield d
    d.close()


_seq = iter(range(1, 10_000))


def new_ticket(desk: Desk, subject: str, body: str, sender: str = "Bob Customer <bob@example.org>",
               **kw: Any) -> int:  # fmt: skip
    p = desk.process(make_message(sender=sender, subject=subject, body=body,
                                  message_id=f"<t{next(_seq)}@example.org>", **kw))  # fmt: skip
    assert p.ticket_id is not None
    return p.ticket_id


def resolve(desk: Desk, number: int, note: str = "", reply: str = "") -> None:
    with desk.ops() as ops:
        if reply:
            ops.reply(number, agent=ANNA, text=reply)
        ops.resolve(number, actor=ANNA.email, note=note)


def find(desk: Desk, query: str, **kw: Any) -> list[int]:
    with desk.sessions() as session:
        return [h.number for h in search.search_tickets(session, query, **kw)]


def fixes(desk: Desk, what: int | str, **kw: Any) -> list[search.PastFix]:
    with desk.sessions() as session:
        return search.similar_resolved(session, what, **kw)


FILLER = [
    ("Password expired", "My password expired and I cannot log in."),
    ("New laptop for Maria", "Maria starts on Monday and needs a laptop."),
    ("Calendar invites missing", "Meeting invitations do not show up in my calendar."),
    ("Excel macro error", "The budget sheet macro stops with a runtime error."),
    ("Access to HR folder", "Please give me access to the HR folder."),
    ("Phone headset broken", "The left ear of my headset is silent."),
]


def filler(desk: Desk) -> None:
    """Other tickets, as any desk has (BM25 needs a collection to tell rare from common)."""
    for subject, text_ in FILLER:
        new_ticket(desk, subject, text_, sender="Dan Filler <dan@example.org>")


def body(mail: EmailMessage) -> str:
    return mail.get_body(("plain",)).get_content().replace("\r\n", "\n")


# --- search ------------------------------------------------------------------------


def test_search_finds_tickets_by_subject_body_requester_and_number_best_first(desk):
    filler(desk)
    vpn = new_ticket(desk, "VPN drops every hour", "The VPN client disconnects hourly.")
    body_only = new_ticket(desk, "Third floor", "The printer prints blank pages since Monday.",
                           sender="Carol Jones <carol@example.net>")  # fmt: skip
    subject = new_ticket(desk, "Printer jammed", "Paper stuck in the printer on floor 2.")
    assert find(desk, "printer") == [subject, body_only]  # the subject weighs more
    assert find(desk, "printing") == [body_only]  # "prints", by stem
    assert find(desk, "carol printer") == [body_only]  # requester and text together
    assert find(desk, "carol@example.net") == [body_only]
    assert find(desk, "printer -blank") == [subject]
    assert find(desk, '"blank pages"') == [body_only]
    assert find(desk, "disconn*") == [vpn]
    assert find(desk, f"#{vpn}")[0] == vpn
    assert find(desk, "the of and") == []  # nothing searchable
    with desk.sessions() as session:
        (hit,) = search.search_tickets(session, "blank")
    assert (hit.number, hit.subject, hit.status, hit.priority) == (body_only, "Third floor",
                                                                   "open", 3)  # fmt: skip
    assert "blank pages" in hit.snippet
    assert [hit.snippet[s:e] for s, e in hit.highlights] == ["blank"]


def test_finnish_inflections_are_found_by_stem(desk):
    printer = new_ticket(desk, "Tulostin ei toimi", "Tulostimessa on paperitukos, eikä se "
                         "tulosta mitään.")  # fmt: skip
    password = new_ticket(desk, "Salasanan vaihto", "En pääse vaihtamaan salasanaani "
                          "verkkosivulla, yhteyden muodostaminen epäonnistuu.")  # fmt: skip
    assert find(desk, "tulostin") == [printer]
    assert find(desk, "tulostimen paperitukoksen") == [printer]
    assert find(desk, "salasana") == [password]
    assert find(desk, "yhteys") == [password]
    assert find(desk, "printer") == []


def test_pages_follow_each_other_without_gaps_or_repeats(desk):
    numbers = {new_ticket(desk, f"Monitor flickers ({i})", "The monitor flickers " * (i + 1))
               for i in range(5)}  # fmt: skip
    seen: list[int] = []
    after = None
    with desk.sessions() as session:
        while True:
            page = search.search_tickets(session, "monitor flicker", limit=2, after=after)
            if not page:
                break
            seen += [h.number for h in page]
            after = page[-1].cursor
    assert sorted(seen) == sorted(numbers) and len(seen) == len(set(seen))
    with desk.sessions() as session, pytest.raises(ValueError):
        search.search_tickets(session, "monitor", after="garbage")


def test_internal_notes_are_searched_only_for_callers_who_see_them(desk):
    n = new_ticket(desk, "Laptop slow", "It takes ages to boot.")
    with desk.ops() as ops:
        ops.applier.index_article(
            ops.session, ops.get(n), None,
            _note("Suspect the firmware, see vendor bulletin"), ops.now)  # fmt: skip
    assert find(desk, "firmware") == [n]
    assert find(desk, "firmware", include_internal=False) == []


def _note(text_: str) -> Any:
    from maild.pipeline.decision import ArticleSpec
    from maild.store.states import ArticleKind, Direction, Visibility

    return ArticleSpec(kind=ArticleKind.NOTE, visibility=Visibility.INTERNAL, author=ANNA,
                       subject="", text=text_, html=None, message_id=None, in_reply_to=None,
                       sent_at=None, direction=Direction.IN)  # fmt: skip


def test_agent_replies_are_indexed_as_written_and_notifications_are_not(desk):
    n = new_ticket(desk, "Outlook crashes", "Outlook closes when I open the calendar.")
    with desk.ops() as ops:
        ops.reply(n, agent=ANNA, text="Please start Outlook in safe mode once.")
    assert find(desk, "safe mode") == [n]
    # The acknowledgement's wording is in no document.
    assert find(desk, "received") == []


@pytest.mark.parametrize("parse_processes", [0, 1], ids=["in-thread", "parse-process"])
def test_a_reply_is_found_by_its_own_words_not_by_the_mail_it_quotes(
    db_url, tmp_path, parse_processes
):
    """A reply is indexed without the history it quotes: with parse processes
    (as the daemon and `maild import` run) the reply's own words are worked
    out beside the parse, and must be the same as in the worker."""
    settings = make_settings(tmp_path, db_url, worker={"parse_processes": parse_processes})
    desk = Desk(settings)
    try:
        first = make_message(subject="Scanner offline", body="The scanner shows offline.\n",
                             message_id="<scan-1@example.org>")  # fmt: skip
        opened = desk.process(first)
        assert opened.ticket_id is not None
        quoting = ("It works again after a restart.\n\n"
                   "On Mon, 7 Dec 2026 at 09:00, Bob Customer <bob@example.org> wrote:\n"
                   "> The scanner shows offline.\n> Also the toner warning blinks.\n")  # fmt: skip
        reply = reply_to(message_from_bytes(first), sender="Bob Customer <bob@example.org>",
                         body=quoting, message_id="<scan-2@example.org>")  # fmt: skip
        assert desk.process(reply).ticket_id == opened.ticket_id
        assert find(desk, "restart") == [opened.ticket_id]
        assert find(desk, "toner") == []  # only in what it quotes
    finally:
        desk.close()


def test_security_tickets_never_reach_a_caller_who_may_not_see_them(desk):
    sec = new_ticket(desk, "Phishing mail about invoices", "Suspicious email with an invoice "
                     "link, I clicked it.")  # fmt: skip
    assert desk.ticket(sec)["security"]
    plain = new_ticket(desk, "Invoice template", "Where is the invoice template?")
    assert find(desk, "invoice") == [plain]
    assert find(desk, f"#{sec} invoice") == [plain]
    assert sorted(find(desk, "invoice", include_security=True)) == [sec, plain]
    resolve(desk, sec, note="Reset the password and blocked the sender domain.")
    resolve(desk, plain, note="Sent the invoice template link.")
    assert [f.number for f in fixes(desk, "invoice link")] == [plain]
    assert {f.number for f in fixes(desk, "invoice link", include_security=True)} == {sec, plain}


# --- the same transaction -------------------------------------------------------------


def _index_count(desk: Desk, term: str) -> int:
    with desk.engine.connect() as conn:
        if desk.engine.dialect.name == "sqlite":
            return conn.scalar(text("SELECT count(*) FROM search_fts WHERE search_fts MATCH :t"),
                               {"t": f'"{term}"'})  # fmt: skip
        return conn.scalar(text("SELECT count(*) FROM search_doc "
                                "WHERE tsv @@ to_tsquery('simple', :t)"), {"t": term})  # fmt: skip


def test_a_rolled_back_transaction_leaves_no_index_entry(desk):
    n = new_ticket(desk, "Scanner offline", "The scanner is offline.")
    with pytest.raises(RuntimeError), desk.sessions.begin() as session:
        ops = TicketOps(session, desk.applier, desk.clock.now())
        ops.reply(n, agent=ANNA, text="Replace the zebracrossing cable.")
        ops.resolve(n, actor=ANNA.email)
        assert [h.number for h in search.search_tickets(session, "zebracrossing")] == [n]
        assert [f.number for f in search.similar_resolved(session, "scanner offline")] == [n]
        raise RuntimeError("the transaction fails after the index rows were written")
    assert _index_count(desk, "zebracross") == 0
    assert find(desk, "zebracrossing") == []
    assert fixes(desk, "scanner offline") == []
    assert desk.ticket(n)["status"] == "open"


# --- past fixes ------------------------------------------------------------------------


def test_similar_resolved_tickets_come_with_their_resolution(desk):
    filler(desk)
    toner = new_ticket(desk, "Printer prints faded pages", "Everything comes out pale grey.")
    vpn = new_ticket(desk, "VPN will not connect", "Error 809 when connecting from home.")
    wifi = new_ticket(desk, "Wifi slow in meeting room", "Video calls freeze in room B.")
    resolve(desk, toner, note="Replaced the toner cartridge.")
    resolve(desk, vpn, reply="Allow UDP 500 and 4500 on your home router, then retry.")
    open_one = new_ticket(desk, "Printer faded output again", "Pages are pale.")
    got = fixes(desk, "The printer prints very faded, pale pages", limit=3)
    assert got[0].number == toner
    assert got[0].resolution == "Replaced the toner cartridge."
    assert open_one not in [f.number for f in got] and wifi not in [f.number for f in got]
    (v,) = fixes(desk, "Cannot connect to VPN, error 809", limit=1)
    assert (v.number, v.resolution) == (vpn, "Allow UDP 500 and 4500 on your home router, "
                                              "then retry.")  # fmt: skip
    # By ticket number: its own text, never itself.
    assert [f.number for f in fixes(desk, open_one)][:1] == [toner]
    # Reopened: no longer a past fix; resolved again: back, with the new resolution.
    with desk.ops() as ops:
        ops.reopen(toner, actor=ANNA.email)
    assert toner not in [f.number for f in fixes(desk, "printer faded pale pages")]
    resolve(desk, toner, note="Cleaned the drum unit.")
    assert fixes(desk, "printer faded pale pages")[0].resolution == "Cleaned the drum unit."


def test_a_requester_reply_that_reopens_a_ticket_takes_it_out_of_the_past_fixes(desk):
    n = new_ticket(desk, "Keyboard keys stick", "The space bar sticks.")
    resolve(desk, n, note="Swapped the keyboard.")
    assert [f.number for f in fixes(desk, "keyboard space bar sticks")] == [n]
    ack = next(m for m in desk.outgoing() if m["Subject"].startswith("[#") and "resolved"
               in body(m).lower())  # fmt: skip
    desk.process(reply_to(ack, sender="Bob Customer <bob@example.org>",
                          body="Still sticking, sorry.", message_id="<again@example.org>"))  # fmt: skip
    assert desk.ticket(n)["status"] == "open"
    assert fixes(desk, "keyboard space bar sticks") == []


def test_new_ticket_mail_to_agents_carries_past_fixes_and_helpful_is_counted(desk):
    old = new_ticket(desk, "Shared drive missing", "The S: drive is gone after the update.")
    resolve(desk, old, note="Reconnect S: with 'net use S: \\\\files\\shared' and log in again.")
    other = new_ticket(desk, "Projector no signal", "HDMI projector shows no signal.")
    resolve(desk, other, note="Use the USB-C adapter from the drawer.")
    desk.outgoing()  # (read below from here on)
    before = len(desk.outgoing())
    n = new_ticket(desk, "S: drive disappeared", "My shared S: drive disappeared this morning.")
    mails = desk.outgoing()[before:]
    to_anna = next(m for m in mails if m["To"].addresses[0].addr_spec == "anna@example.com")
    text_ = body(to_anna)
    assert "Past fixes" in text_
    assert f"#{old} Shared drive missing" in text_
    assert "net use S:" in text_
    assert "Projector" not in text_
    html = to_anna.get_body(("html",)).get_content()
    assert f"#{old} Shared drive missing" in html
    t = desk.ticket(n)
    assert t["suggestions"][0]["number"] == old and not t["suggestions"][0]["helpful"]
    # Anna replies "#helpful N" to her notification.
    rcpt = to_anna["Reply-To"].addresses[0].addr_spec
    p = desk.process(reply_to(to_anna, sender="Anna Agent <anna@example.com>",
                              body=f"#helpful {old}\n", message_id="<h1@example.com>"),
                     envelope_to=(rcpt,))  # fmt: skip
    assert p.outcome == "appended"
    t = desk.ticket(n)
    assert t["suggestions"][0] | {"helpful_by": None} == {
        "number": old, "subject": "Shared drive missing", "position": 1, "helpful": True,
        "helpful_by": None}  # fmt: skip
    assert t["suggestions"][0]["helpful_by"] == "anna@example.com"
    assert desk.ticket(old)["helpful_count"] == 1
    assert any(e["kind"] == "helpful" and e["new"] == str(old) for e in t["events"])
    # Counted once per ticket, however often said.
    with desk.ops() as ops:
        assert not ops.helpful(n, old, actor="anna@example.com").changed
    assert desk.ticket(old)["helpful_count"] == 1
    assert fixes(desk, "shared S: drive gone")[0].helpful == 1
    with desk.ops() as ops, pytest.raises(ActionRefused):
        ops.helpful(n, n, actor="anna@example.com")


def test_finnish_new_ticket_mail_in_finnish_with_past_fixes(desk):
    old = new_ticket(desk, "Sähköposti ei toimi puhelimessa",
                     "Hei, sähköpostit eivät tule puhelimeeni enää.")  # fmt: skip
    resolve(desk, old, note="Poistimme tilin puhelimesta ja lisäsimme sen uudelleen.")
    before = len(desk.outgoing())
    new_ticket(desk, "Puhelimen sähköposti", "Hei, puhelimen sähköposti lakkasi toimimasta.",
               sender="Liisa <liisa@example.fi>")  # fmt: skip
    to_sara = [m for m in desk.outgoing()[before:]
               if m["To"].addresses[0].addr_spec == "sara@example.com"]  # fmt: skip
    to_anna = next(m for m in desk.outgoing()[before:]
                   if m["To"].addresses[0].addr_spec == "anna@example.com")  # fmt: skip
    assert f"#{old} Sähköposti ei toimi puhelimessa" in body(to_anna)
    assert "Poistimme tilin" in body(to_anna)
    assert to_sara == []  # tier 3: not told of a tier-1 ticket


def test_suggestions_can_be_turned_off(db_url, tmp_path):
    d = Desk(make_settings(tmp_path, db_url, agents=AGENTS, search={"suggestions": 0}))
    try:
        old = new_ticket(d, "Mouse not working", "The mouse does not move the pointer.")
        resolve(d, old, note="New batteries.")
        before = len(d.outgoing())
        n = new_ticket(d, "Mouse pointer stuck", "Mouse does not move.")
        assert all("Past fixes" not in body(m) for m in d.outgoing()[before:])
        assert d.ticket(n)["suggestions"] == []
    finally:
        d.close()


# --- the migration's backfill and reindex -----------------------------------------------


def test_migration_backfills_tickets_stored_before_it(desk):
    from alembic import command

    from maild.store.db import _alembic_config

    n = new_ticket(desk, "Docking station dead", "No power on the docking station.")
    m = new_ticket(desk, "Teams audio", "Nobody hears me in Teams calls.")
    with desk.ops() as ops:
        ops.reply(m, agent=ANNA, text="Pick the headset as the microphone in Teams settings.")
    resolve(desk, m)  # no note: the reply is the resolution
    resolve(desk, n, note="Swapped the power brick.")
    config = _alembic_config(desk.engine)
    desk.engine.dispose()
    command.downgrade(config, "0006_inbound_raw")
    command.upgrade(config, "head")
    desk.engine.dispose()
    assert find(desk, "docking") == [n]
    assert find(desk, "headset microphone") == [m]
    assert find(desk, "received") == []  # notifications stay out
    (fix,) = fixes(desk, "docking station has no power", limit=1)
    assert (fix.number, fix.resolution) == (n, "Swapped the power brick.")
    (fix,) = fixes(desk, "teams audio nobody hears me", limit=1)
    assert (fix.number, fix.resolution) == (m, "Pick the headset as the microphone in Teams "
                                                "settings.")  # fmt: skip


def test_cli_search_find_similar_and_reindex(desk, tmp_path, capsys):
    from maild.cli.main import main

    cfg = tmp_path / "maild.toml"
    cfg.write_text(f'[database]\nurl = "{desk.settings.database.url}"\n'
                   f'[helpdesk]\nsecret_file = "{tmp_path / "secret.key"}"\n'
                   f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n')  # fmt: skip
    n = new_ticket(desk, "Badge reader broken", "The badge reader at door 3 blinks red.")
    resolve(desk, n, note="Reset the door controller.")
    assert main(["--config", str(cfg), "search", "reindex"]) == 0
    capsys.readouterr()
    assert main(["--config", str(cfg), "search", "find", "badge", "--json"]) == 0
    (hit,) = json.loads(capsys.readouterr().out)
    assert (hit["number"], hit["priority"]) == (n, "P3")
    assert main(["--config", str(cfg), "search", "similar", "--text", "door badge red",
                 "--json"]) == 0  # fmt: skip
    (fix,) = json.loads(capsys.readouterr().out)
    assert (fix["number"], fix["resolution"]) == (n, "Reset the door controller.")
