"""A requester's reply to a resolved ticket: a rating, a thank-you, or more trouble (pure).

The resolved notice asks the requester to confirm the fix and to rate the help
from 1 to 5. Their reply, without the quoted mail and the signature, is read in
this order (the phrases are language data: ``[thanks]``, ``[still_broken]`` and
``[rating]`` of ``maild/mail/lang/<code>.toml``, every language at once):

1. **a rating** — the first line after any greeting starts with a number from
   1 to 5, alone or with "/5", a rating word, punctuation and a comment
   ("5", "4/5 quick help", "Rating: 5 - thanks!", "★★★★"); a numbered list
   ("1. ... 2. ...") is no rating;
2. **still broken** — a ``[still_broken]`` phrase anywhere ("still broken",
   "ei vieläkään toimi"): the ticket reopens, as any other text does;
3. **thanks** — a ``[thanks]`` phrase in a short reply (at most `SHORT_WORDS`
   words, no question mark): the fix is confirmed;
4. **other** — anything substantive: the ticket reopens.

A rating is kept with the rest of the text as its comment, even when that
text says the problem is still there (then the ticket reopens all the same).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from maild.mail.language import fold, load_languages, phrase_pattern
from maild.mail.quotes import strip_reply

SCAN_CHARS = 4000  # of the reply's new text
SHORT_WORDS = 30  # a thank-you is short
COMMENT_CHARS = 1000
_STARS = re.compile(r"^\s*([\u2605\u2b50]{1,5})(?:\s*([\u2606]{0,4}))?\s*(.*)$", re.S)
_LIST_ITEM = re.compile(r"^\s*\d{1,2}\s*[.)]\s+\S")


class Reading(StrEnum):
    RATING = "rating"
    THANKS = "thanks"
    STILL_BROKEN = "still_broken"
    OTHER = "other"


@dataclass(frozen=True)
class ReplyReading:
    kind: Reading
    score: int | None = None
    comment: str = ""
    still_broken: bool = False  # a rating whose text also says it is not fixed


@dataclass(frozen=True)
class Phrases:
    thanks: re.Pattern[str]
    still_broken: re.Pattern[str]
    greeting: re.Pattern[str]
    rating: re.Pattern[str]


def _words(pattern: str) -> str:
    return rf"(?<!\w)(?:{pattern})(?!\w)"


@lru_cache(maxsize=8)
def phrases(directory: Path | None = None) -> Phrases:
    """The closure phrases of every language, compiled once (`ConfigError` on bad data)."""
    langs = load_languages(directory)
    words = phrase_pattern(langs.strings("rating", "words"))
    return Phrases(
        thanks=re.compile(_words(phrase_pattern(langs.strings("thanks", "phrases")))),
        still_broken=re.compile(_words(phrase_pattern(langs.strings("still_broken", "phrases")))),
        greeting=re.compile(
            rf"^(?:{phrase_pattern(langs.strings('thanks', 'greetings'))})(?!\w)[^\n]{{0,40}}$"
        ),
        # "Rating: 4 great", "4", "4/5 quick", "4 stars", "4 - comment", "5! comment";
        # after a bare number only punctuation starts a comment ("5 printers" is no rating).
        rating=re.compile(
            rf"^(?P<lead>(?:{words})\s*[:=-]?\s*)?(?P<score>[1-5])"
            rf"(?P<qual>\s*/\s*5|\s*(?:{words}))?"
            r"(?P<sep>\s*[.!,:;)\-–—]+\s*|\s+|$)(?P<rest>.*)$",
            re.S,
        ),
    )


def read(text: str, directory: Path | None = None) -> ReplyReading:
    """What the requester's reply (its raw text, quotes and all) says."""
    own = strip_reply(text[: SCAN_CHARS * 4])[:SCAN_CHARS].strip()
    p = phrases(directory)
    folded = fold(own)
    broken = p.still_broken.search(folded) is not None
    rating = _rating(own, p)
    if rating is not None:
        score, comment = rating
        return ReplyReading(Reading.RATING, score, comment, still_broken=broken)
    if broken:
        return ReplyReading(Reading.STILL_BROKEN, comment=own[:COMMENT_CHARS])
    short = len(own.split()) <= SHORT_WORDS and "?" not in own
    if short and p.thanks.search(folded) is not None:
        return ReplyReading(Reading.THANKS, comment=own[:COMMENT_CHARS])
    return ReplyReading(Reading.OTHER)


def _rating(own: str, p: Phrases) -> tuple[int, str] | None:
    lines = [line.strip() for line in own.split("\n")]
    lines = [line for line in lines if line]
    while lines and p.greeting.match(fold(lines[0])):
        lines = lines[1:]
    if not lines:
        return None
    first, rest = lines[0], lines[1:]
    if _LIST_ITEM.match(first) and rest and _LIST_ITEM.match(rest[0]):
        return None  # "1. open Outlook / 2. ...": a numbered list, not a rating
    stars = _STARS.match(first)
    if stars is not None:
        score, tail = len(stars.group(1)), stars.group(3)
    else:
        m = p.rating.match(fold(first))
        if m is None:
            return None
        if m["rest"] and not m["sep"].strip() and not (m["lead"] or m["qual"]):
            return None  # "5 printers are broken"
        score = int(m["score"])
        rest_folded = m["rest"] or ""
        # The comment in the reply's own letters where folding kept the length ("ß" does not).
        same = len(fold(first)) == len(first)
        tail = (
            (first[len(first) - len(rest_folded) :] if same else rest_folded) if rest_folded else ""
        )
    comment = "\n".join([tail.strip(), *rest]).strip()
    return score, comment[:COMMENT_CHARS]
