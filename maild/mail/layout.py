"""Layout of the mail maild writes: text parts wrapped, HTML paragraphs (pure).

Templates write one paragraph per line; `tidy_text` wraps every line longer
than `LIMIT` columns at `WIDTH`, keeping its indentation (a list item or a
field row wraps under its own text, a quoted line keeps its ``>``), collapses
runs of blank lines to one, and drops trailing spaces (not the ``-- ``
signature separator). A word longer than the width (a link) is never broken.
`paragraphs` turns free text (a requester's message, an agent's note) into
HTML paragraphs, so nothing depends on ``white-space: pre-wrap``.
"""

from __future__ import annotations

import html
import re

WIDTH = 76
LIMIT = 78

# Where a wrapped line's continuation starts: after a quote marker, a list
# marker ("- ", "1. "), or the label of a field row ("  Subject:   ").
_HANG = re.compile(
    r"^(?P<quote>(?:> ?)+)"
    r"|^(?P<list>\s*(?:[-*\u2022]|\d{1,3}[.)])\s+)"
    r"|^(?P<field>\s+[^\s:][^:]{0,28}:\s{2,})"
    r"|^(?P<indent>\s+)"
)


def _wrap_line(line: str) -> list[str]:
    """`line` broken at spaces into lines of at most WIDTH columns (a longer word
    stands alone); continuation lines start with the hang (`_HANG`)."""
    m = _HANG.match(line)
    lead = m.group(0) if m is not None else ""
    hang = (m.group("quote") or " " * len(lead)) if m is not None else ""
    out: list[str] = []
    current = lead.rstrip() if not line[len(lead) :].strip() else lead
    bare = True  # nothing but the lead (or hang) on the current line yet
    for word in line[len(lead) :].split():
        if not bare and len(current) + 1 + len(word) > WIDTH:
            out.append(current)
            current, bare = hang + word, False
            continue
        current += word if bare else " " + word
        bare = False
    out.append(current)
    return out


def tidy_text(text: str) -> str:
    out: list[str] = []
    blank = 0
    for raw in text.split("\n"):
        line = raw if raw == "-- " else raw.rstrip()
        if not line:
            blank += 1
            if blank > 1 or not out:
                continue
            out.append("")
            continue
        blank = 0
        if len(line) > LIMIT:
            out.extend(_wrap_line(line))
        else:
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def field_row(label: str, value: object, width: int = 16) -> str:
    """A field row of a text part: two spaces, the label and colon padded to `width`,
    the value ("  Subject:   Printer"); tidy_text wraps a long value under itself."""
    return f"  {label + ':':<{width}} {value}"


_TH = (
    '<tr><th style="text-align: left; vertical-align: top; padding: 0 1em 0.2em 0; '
    'font-weight: normal; color: #555;">'
)
_TD = '</th><td style="padding: 0 0 0.2em 0;">'


def html_row(label: str, value: object) -> str:
    """A field row of an HTML part's table, escaped."""
    return f"{_TH}{html.escape(str(label))}{_TD}{html.escape(str(value))}</td></tr>"


def paragraphs(text: str) -> str:
    """Free text as escaped HTML paragraphs: a blank line ends one, a line break is <br>."""
    parts = [p.strip("\n") for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    return "".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in p.split("\n")) + "</p>\n"
        for p in parts
        if p.strip()
    )
