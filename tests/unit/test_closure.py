"""Reading a requester's reply to a resolved ticket: ratings, thank-yous, still broken."""

from __future__ import annotations

import pytest

from maild.mail.language import load_languages
from maild.pipeline.closure import Reading, read

LANGS = load_languages()
QUOTE = "\n\nOn Mon, 7 Dec 2026 the Help Desk wrote:\n> Your ticket #12 has been resolved.\n"


@pytest.mark.parametrize("code", ["en", "fi", "sv"])
def test_every_thank_you_of_the_data_confirms_and_none_reopens(code):
    for phrase in LANGS[code].strings("thanks", "phrases"):
        for reply in (phrase, f"{phrase.capitalize()}!", f"{phrase.capitalize()}.\n\n-- \nBob"):
            reading = read(reply + QUOTE)
            assert reading.kind == Reading.THANKS, (code, reply, reading)


@pytest.mark.parametrize("code", ["en", "fi", "sv"])
def test_every_still_broken_phrase_reopens_even_after_thanks(code):
    thanks = LANGS[code].strings("thanks", "phrases")[0]
    for phrase in LANGS[code].strings("still_broken", "phrases"):
        for reply in (phrase, f"{thanks.capitalize()}, but {phrase}."):
            assert read(reply + QUOTE).kind == Reading.STILL_BROKEN, (code, reply)


@pytest.mark.parametrize(
    "reply, score, comment",
    [("5", 5, ""), ("4/5 quick help", 4, "quick help"), ("Rating: 5 - thanks!", 5, "thanks!"),
     ("3 - ok but slow", 3, "ok but slow"), ("5 stars", 5, ""), ("★★★★", 4, ""),
     ("Hi Anna,\n\n5", 5, ""), ("Arvosana 4, kiitos nopeasta avusta", 4, "kiitos nopeasta avusta"),
     ("Hei!\n4 tähteä", 4, ""), ("Betyg: 5, toppen", 5, "toppen"), ("2", 2, "")],
)  # fmt: skip
def test_ratings(reply, score, comment):
    reading = read(reply + QUOTE)
    assert (reading.kind, reading.score, reading.comment) == (Reading.RATING, score, comment)


@pytest.mark.parametrize(
    "reply",
    ["5 printers on floor 2 are broken now", "1. open Outlook\n2. click send: error 0x80",
     "Thanks! One more question: how do I add the printer at home?",
     "The screen flickers when I open Excel and then it crashes after a while with an error, "
     "and the same happens on my colleague's laptop since this morning",
     "6", "0 - nothing happened"],
)  # fmt: skip
def test_substantive_replies_reopen(reply):
    assert read(reply + QUOTE).kind == Reading.OTHER


def test_a_low_rating_that_says_it_is_still_broken_is_both():
    reading = read("1, still not fixed" + QUOTE)
    assert (reading.kind, reading.score, reading.still_broken) == (Reading.RATING, 1, True)


def test_only_the_new_text_counts():
    assert read("Thanks!\n\nOn Monday Anna wrote:\n> Is it still broken?\n").kind == Reading.THANKS
