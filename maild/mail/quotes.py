"""What an agent (or a requester) wrote in a reply, wherever the client put it (pure).

Mail clients lay a reply out in three ways: the new text above the quoted mail
(top-posting: Outlook, Gmail, Apple Mail, phones), below it (bottom-posting:
Thunderbird's and mutt's "reply below the quote"), or between quoted blocks
(interleaved answers). `split_reply` classifies each line, the way talon does:

- ``q`` a quoted line (``>``), wherever it stands;
- ``h`` a quote header: an attribution ("On … wrote:", "… kirjoitti:", "Am …
  schrieb …:", "Le … a écrit :", "… написал:", wrapped over up to three
  lines), the start of an Outlook header block ("From: … Sent: … To: …" and
  its translations, on separate lines or one), a separator ("-----Original
  Message-----", a line of underscores, "Begin forwarded message:");
- ``s`` the start of a signature: ``-- ``, or a mobile client's "Sent from my
  iPhone" / "Lähetetty iPhonesta" line (always dropped with what follows it,
  up to the next quote);
- ``t`` text, and blank lines.

Then: a header followed by ``>`` lines introduces that quote, and text after
the quote is the writer's again (bottom-posting, interleaved); a header not
followed by ``>`` lines starts the unmarked history Outlook writes, and
everything from there on is history. The writer's text is every text block
outside the history; when more than one of them answers a quote (or there is
text above the quote as well as below it), the reply is interleaved and each
answer keeps the quoted lines it answers (the last quoted paragraph before
it, up to `QUESTION_LINES`), so the requester sees what each answer refers to.
A closing ("Best regards,\\nAnna") at the end is cut.

When the writer's text cannot be told apart from the history with confidence
(nothing of theirs is left, yet there is unquoted text inside what looks like
history), the reply is taken whole minus the ``>`` lines, and `Reply.certain`
is False so the agent can be told. Words are never dropped for want of a rule.

The phrases are data: the ``[quotes]`` section of every language file
(``maild/mail/lang/<code>.toml``), read through `maild.mail.language`; an
admin's `languages.directory` adds more. mail-parser-reply's own multilingual
attribution and header patterns are a second opinion for ``h`` lines. This is
the only module that imports mail-parser-reply. Only the first `MAX_CHARS`
characters are looked at, and each line only in its first
`HEADER_LINE_CHARS` for headers (the patterns backtrack on long lines).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailparser_reply import constants as _mpr
from mailparser_reply.parser import EmailMessage

from maild.mail.language import fold, load_languages, phrase_pattern

MAX_CHARS = 64 * 1024
HEADER_LINE_CHARS = 200
QUESTION_LINES = 6  # quoted lines kept above each interleaved answer
ATTRIBUTION_LINES = 3  # an attribution may wrap over this many lines
ATTRIBUTION_TAIL = 120  # characters between its verb and its closing ":"
HEADER_BLOCK_LINES = 6  # an Outlook header block's fields lie within this many lines
_SIGNATURE_LINES = 4  # a closing followed by at most this many short lines is cut

QUOTED, HEADER, SIGNATURE, TEXT, EMPTY = "q", "h", "s", "t", "e"

# mail-parser-reply knows these languages' attribution and header patterns.
_MPR_LANGUAGES = [lang for lang in ("en", "de", "fr", "es", "it", "nl", "sv", "da", "pl", "cs")
                  if lang in _mpr.MAIL_LANGUAGES]  # fmt: skip
_MPR_HEADER = EmailMessage(text="", languages=_MPR_LANGUAGES).HEADER_REGEX
_QUOTED_LINE = re.compile(r"^[ \t]*>")
_UNDERSCORES = re.compile(r"^[ \t]*_{20,}[ \t]*$")
_SIG_DELIMITER = re.compile(r"^-- ?$")


@dataclass(frozen=True)
class Part:
    """One block of the writer's text, with the quoted lines it answers (if kept)."""

    text: str
    question: tuple[str, ...] = ()  # quoted lines, without their ">" marks


@dataclass(frozen=True)
class Reply:
    parts: tuple[Part, ...]
    layout: str  # "plain" | "top" | "bottom" | "interleaved" | "uncertain" | "empty"
    certain: bool = True  # False: the quote could not be told apart; the whole reply was kept

    @property
    def text(self) -> str:
        """The reply as the requester reads it: each answer under its question."""
        return render(self.parts)


@dataclass(frozen=True)
class Phrases:
    """The ``[quotes]`` phrases of every language, compiled once."""

    attribution: re.Pattern[str]  # the verbs of attribution lines ("wrote", "kirjoitti", ...)
    header_from: frozenset[str]  # folded labels that start an Outlook header block
    header_fields: frozenset[str]  # every folded label of such a block
    separator: re.Pattern[str]
    mobile: re.Pattern[str]
    closing: re.Pattern[str]

    @classmethod
    def from_lists(
        cls, *, attribution: Sequence[str], header_from: Sequence[str],
        header_fields: Sequence[str], separators: Sequence[str], mobile: Sequence[str],
        closings: Sequence[str],
    ) -> Phrases:  # fmt: skip
        fields = {fold(f).strip() for f in [*header_fields, *header_from] if f.strip()}
        return cls(
            attribution=re.compile(rf"(?<!\w)(?:{phrase_pattern(list(attribution))})(?!\w)"),
            header_from=frozenset(fold(f).strip() for f in header_from if f.strip()),
            header_fields=frozenset(fields),
            separator=re.compile(
                rf"^\s*(?:-{{2,}}|_{{2,}}|\*{{2,}})?\s*(?:{phrase_pattern(list(separators))})"
                rf"\s*:?\s*(?:-{{2,}}|_{{2,}}|\*{{2,}})?\s*$"
            ),
            mobile=re.compile(rf"^\s*(?:{phrase_pattern(list(mobile))})(?!\w)"),
            closing=re.compile(rf"^\s*(?:{phrase_pattern(list(closings))})\s*[,.!]?\s*$"),
        )


@functools.cache
def phrases(directory: Path | None = None) -> Phrases:
    """The built-in phrases plus those of `languages.directory` (cached per folder)."""
    langs = load_languages(directory)
    return Phrases.from_lists(
        attribution=langs.strings("quotes", "attribution"),
        header_from=langs.strings("quotes", "header_from"),
        header_fields=langs.strings("quotes", "header_fields"),
        separators=langs.strings("quotes", "separators"),
        mobile=langs.strings("quotes", "mobile_signatures"),
        closings=langs.strings("quotes", "closings"),
    )


# --- classifying lines ---------------------------------------------------------------

_LABEL = re.compile(r"^[\s*>]*([^\W\d_][^:\n]{0,30}?)\s*\**\s*:")
_LABELS_IN_LINE = re.compile(r"(?:^|\s)\**([^\W\d_][\w .'-]{0,30}?)\**\s*:")


def _label(line: str) -> str | None:
    m = _LABEL.match(line)
    return fold(m.group(1)).strip() if m else None


def _header_block(lines: list[str], i: int, p: Phrases) -> bool:
    """Does an Outlook header block ("From: … Sent: … To: … Subject: …") start at line i?"""
    head = lines[i][:HEADER_LINE_CHARS]
    if _label(head) not in p.header_from:
        return False
    # All on one line ("Från: X Skickat: Y Till: Z Ämne: W"), as some clients flatten it.
    inline = [fold(m.group(1)).strip() for m in _LABELS_IN_LINE.finditer(head)]
    if sum(label in p.header_fields for label in inline) >= 3:
        return True
    seen = 0
    for line in lines[i + 1 : i + HEADER_BLOCK_LINES]:
        label = _label(line[:HEADER_LINE_CHARS])
        if label in p.header_fields:
            seen += 1
            if seen >= 2:
                return True
    return False


def _attribution(lines: list[str], i: int, p: Phrases) -> int:
    """How many lines (1..ATTRIBUTION_LINES) an attribution starting at line i spans; 0: none.

    An attribution ends with ":" within `ATTRIBUTION_TAIL` characters after one of
    the verbs ("… wrote:", "Am … schrieb Bob <bob@…>:"). It names a date or an
    address (a digit or "@"), unless a quote follows at once: that keeps a
    sentence such as "As I wrote: restart it" text.
    """
    joined = ""
    for n in range(ATTRIBUTION_LINES):
        if i + n >= len(lines) or not lines[i + n].strip():
            return 0
        part = lines[i + n][:HEADER_LINE_CHARS].strip()
        joined = f"{joined} {part}" if joined else part
        if not joined.endswith(":"):
            continue
        folded = fold(joined)
        ends = [m.end() for m in p.attribution.finditer(folded)]
        if not ends or len(folded) - ends[-1] > ATTRIBUTION_TAIL:
            return 0
        if any(c.isdigit() or c == "@" for c in joined):
            return n + 1
        follows = next((ln for ln in lines[i + n + 1 :] if ln.strip()), "")
        return n + 1 if _QUOTED_LINE.match(follows) else 0
    return 0


def _mpr_header(line: str) -> bool:
    return _MPR_HEADER.match(line[:HEADER_LINE_CHARS]) is not None


def classify(lines: list[str], p: Phrases) -> list[str]:
    """One kind per line: quoted, header, signature start, text or empty."""
    kinds = [EMPTY] * len(lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            kinds[i] = EMPTY
        elif _QUOTED_LINE.match(line):
            kinds[i] = QUOTED
        elif _SIG_DELIMITER.match(line) or p.mobile.match(fold(line[:HEADER_LINE_CHARS])):
            kinds[i] = SIGNATURE
        elif (
            _UNDERSCORES.match(line)
            or p.separator.match(fold(line[:HEADER_LINE_CHARS]))
            or _header_block(lines, i, p)
        ):
            kinds[i] = HEADER
        else:
            span = _attribution(lines, i, p)
            if span:
                kinds[i : i + span] = [HEADER] * span
                i += span
                continue
            kinds[i] = HEADER if _mpr_header(line) else TEXT
        i += 1
    return kinds


# --- splitting a reply -----------------------------------------------------------------


@dataclass
class _Block:
    lines: list[str]
    question: list[str]  # the quote block right before it ([] if none)
    after_quote: bool


def _next_kind(kinds: list[str], i: int, skip: tuple[str, ...]) -> str | None:
    while i < len(kinds) and kinds[i] in skip:
        i += 1
    return kinds[i] if i < len(kinds) else None


def _question(quote: list[str]) -> tuple[str, ...]:
    """The last quoted paragraph (what an interleaved answer answers), marks removed."""
    lines = [re.sub(r"^[ \t]*(?:>[ \t]?)+", "", q).rstrip() for q in quote]
    while lines and not lines[-1].strip():
        lines.pop()
    start = len(lines)
    while start > 0 and lines[start - 1].strip():
        start -= 1
    return tuple(lines[start:][-QUESTION_LINES:])


def _is_signoff(lines: list[str], p: Phrases) -> bool:
    """A block that is only a closing and a name ("Regards,\\nAnna")."""
    content = [ln.strip() for ln in lines if ln.strip()]
    if not content or len(content) > _SIGNATURE_LINES + 1:
        return False
    return bool(p.closing.match(fold(content[0]))) and all(len(c) <= 60 for c in content[1:])


def _drop_closing(lines: list[str], p: Phrases) -> list[str]:
    """Cut "Best regards,\\nAnna" at the end; keep a closing followed by real text."""
    content = [i for i, line in enumerate(lines) if line.strip()]
    if not content:
        return lines
    tail = content[-(_SIGNATURE_LINES + 1) :]
    for n, i in enumerate(tail):
        if i == content[0] or not p.closing.match(fold(lines[i])):
            continue
        if all(len(lines[j].strip()) <= 60 for j in tail[n + 1 :]):
            return lines[:i]
    return lines


def _trim(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n").rstrip()


def split_reply(text: str, p: Phrases | None = None) -> Reply:
    """The writer's own words in a reply, by layout (see the module's docstring)."""
    p = p or phrases()
    text = text[:MAX_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    kinds = classify(lines, p)

    blocks: list[_Block] = []
    quote: list[str] = []
    history_from: int | None = None
    current: _Block | None = None
    in_signature = False
    i = 0
    while i < len(lines):
        kind = kinds[i]
        if kind == HEADER:
            if _next_kind(kinds, i + 1, (EMPTY, HEADER)) != QUOTED:
                history_from = i  # Outlook's unmarked history: the rest is not the writer's
                break
            current, in_signature = None, False
        elif kind == QUOTED:
            if current is not None or not quote or kinds[i - 1] not in (QUOTED, EMPTY, HEADER):
                quote = []
            quote.append(lines[i])
            current, in_signature = None, False
        elif kind == SIGNATURE:
            current, in_signature = None, True
        elif kind == TEXT and not in_signature:
            if current is None:
                current = _Block([], quote, after_quote=bool(quote))
                blocks.append(current)
                quote = []
            current.lines.append(lines[i])
        elif kind == EMPTY and current is not None:
            current.lines.append("")
        i += 1

    blocks = [b for b in blocks if _trim(b.lines)]
    if len(blocks) >= 2 and blocks[-1].after_quote and _is_signoff(blocks[-1].lines, p):
        blocks.pop()
    if blocks:
        blocks[-1].lines = _drop_closing(blocks[-1].lines, p)
        blocks = [b for b in blocks if _trim(b.lines)]

    if not blocks:
        after = [] if history_from is None else lines[history_from:]
        leftover = [ln for ln, k in zip(after, kinds[history_from or 0 :], strict=False)
                    if k == TEXT]  # fmt: skip
        if leftover:
            whole = [ln for ln in lines if not _QUOTED_LINE.match(ln)]
            return Reply((Part(_trim(whole)),), "uncertain", certain=False)
        return Reply((), "empty")
    answered = [b for b in blocks if b.after_quote]
    interleaved = len(answered) >= 2 or (bool(answered) and not blocks[0].after_quote)
    if interleaved:
        parts = tuple(Part(_trim(b.lines), _question(b.question) if b.after_quote else ())
                      for b in blocks)  # fmt: skip
        return Reply(parts, "interleaved")
    if answered:
        layout = "bottom"
    elif history_from is not None or QUOTED in kinds or HEADER in kinds:
        layout = "top"
    else:
        layout = "plain"
    return Reply((Part("\n\n".join(_trim(b.lines) for b in blocks)),), layout)


def render(parts: Sequence[Part]) -> str:
    """Parts as one text: each answer under the quoted lines it answers."""
    out = []
    for part in parts:
        question = "\n".join(f"> {q}" if q else ">" for q in part.question)
        out.append(f"{question}\n{part.text}" if question else part.text)
    return "\n\n".join(t for t in out if t).strip()


def strip_reply(text: str, p: Phrases | None = None) -> str:
    """The new text of a reply: no quoted history, no signature."""
    return split_reply(text, p).text
