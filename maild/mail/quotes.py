"""What an agent wrote, without the quoted mail and the signature (pure).

The only module that imports mail-parser-reply: its multilingual patterns
find where a reply's quoted part starts (Gmail/Apple "On … wrote:", Outlook
"-----Original Message-----" and "From: … Sent: …" blocks, and their
translations). maild adds Finnish to them ("… kirjoitti:", "Lähettäjä: …
Lähetetty: …"). Around that:

- every ``>``-quoted line goes, wherever it stands (interleaved answers
  keep the agent's lines only): a quote may carry the internal notification
  the agent is answering;
- the reply ends at the first quote header, at an Outlook underscore line,
  at a ``-- `` signature delimiter or a "Sent from my iPhone" line;
- a closing ("Best regards", "Ystävällisin terveisin") is cut with the few
  short lines after it, only when nothing longer follows.

Indentation and line breaks of what is kept are left alone. Only the first
`MAX_CHARS` characters are looked at.
"""

from __future__ import annotations

import re

from mailparser_reply import constants as _mpr
from mailparser_reply.parser import EmailMessage

MAX_CHARS = 64 * 1024
_Q = _mpr.QUOTED_MATCH_INCLUDE

# Finnish, in mail-parser-reply's format (its language table is open for additions).
_FINNISH = {
    # Gmail: "su 29.11.2026 klo 12.00 Help Desk <help@example.com> kirjoitti:"
    # Apple Mail: "29.11.2026 kello 12.00, Help Desk <help@example.com> kirjoitti:"
    # Thunderbird: "Help Desk kirjoitti 29.11.2026 klo 12.00:"
    "wrote_header": r"^(" + _Q + r"[^\n]{0,200}\skirjoitti(?:\s[^\n]{0,120})?:)$",
    "from_header": r"((?:(?:^|\n|\n" + _Q + r")[* ]*(?:Lähettäjä|Lähetetty|Vastaanottaja|Aihe"
                   r"|Kopio|Päivämäärä|Päiväys):[ *]*(?:\s{,2}).*){2,}(?:\n.*){,1})",
    "disclaimers": ["Luottamuksellinen:", "Huomautus:"],
    "signatures": ["Ystävällisin terveisin", "Parhain terveisin", "Terveisin", "Kiittäen"],
    "sent_from": "Lähetetty (?:iPhonesta|iPadista|Android|mobiililaitteesta|Outlook)",
}  # fmt: skip
_mpr.MAIL_LANGUAGES.setdefault("fi", _FINNISH)
LANGUAGES = ("en", "fi")

_HEADER_RE = EmailMessage(text="", languages=list(LANGUAGES)).HEADER_REGEX
_QUOTED_LINE = re.compile(r"^[ \t]*>")
_SEPARATOR = re.compile(r"^[ \t]*_{20,}[ \t]*$")
_SIG_DELIMITER = re.compile(r"^-- ?$")
_SENT_FROM = re.compile(
    r"^[ \t]*(?:" + "|".join(_mpr.MAIL_LANGUAGES[lang]["sent_from"] for lang in LANGUAGES)
    + r")\b.{0,60}$", re.IGNORECASE,
)  # fmt: skip
_CLOSING = re.compile(
    r"^[ \t]*(?:best regards|kind regards|warm regards|regards|best wishes|best|thanks"
    r"|thank you|cheers|br|ystävällisin terveisin|parhain terveisin|terveisin|kiittäen"
    r"|kiitos|t\.|mvh|med vänlig hälsning)[ \t]*[,.!]?[ \t]*$",
    re.IGNORECASE,
)
_SIGNATURE_LINES = 4  # a closing followed by at most this many short lines
_HEADER_LINE_CHARS = 160


def strip_reply(text: str) -> str:
    """The new text of a reply: no quoted mail, no signature."""
    text = text[:MAX_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    lines = [line for line in lines if not _QUOTED_LINE.match(line)]
    lines = lines[: _quote_header_line(lines)]
    out: list[str] = []
    for line in lines:
        if _SEPARATOR.match(line) or _SIG_DELIMITER.match(line) or _SENT_FROM.match(line):
            break
        out.append(line)
    out = _drop_closing(out)
    return "\n".join(out).strip("\n").rstrip()


def _quote_header_line(lines: list[str]) -> int:
    """The index of the line where the quoted mail begins (len(lines): none).

    The patterns backtrack badly on very long lines; a quote header is a
    short line, so each line is searched in its first `_HEADER_LINE_CHARS`.
    """
    probe = "\n".join(line[:_HEADER_LINE_CHARS] for line in lines)
    match = _HEADER_RE.search(probe)
    if match is None:
        return len(lines)
    start = match.start()
    while start < len(probe) and probe[start] == "\n":  # the match may begin with a break
        start += 1
    return probe.count("\n", 0, start)


def _drop_closing(lines: list[str]) -> list[str]:
    """Cut "Best regards,\\nAnna" at the end; keep a closing followed by real text."""
    content = [i for i, line in enumerate(lines) if line.strip()]
    tail = content[-(_SIGNATURE_LINES + 1) :]
    for n, i in enumerate(tail):
        if i == content[0] or not _CLOSING.match(lines[i]):
            continue
        if all(len(lines[j].strip()) <= 60 for j in tail[n + 1 :]):
            return lines[:i]
    return lines
