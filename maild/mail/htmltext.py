"""HTML to readable plain text, for messages that come without a text part.

Small on purpose: block elements become line breaks, list items get a bullet,
links keep their target, scripts and styles vanish, entities are decoded.
Quoted mail keeps its mark: each line inside a ``<blockquote>`` starts with
``> `` (one per level), as a plain-text client would write it, so a reply
written in HTML only is read like any other (`maild.mail.quotes`).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "div",
        "dl",
        "dt",
        "dd",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    ]
)
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
_VOID_SKIP_DEPTH_LIMIT = 10_000
_QUOTE_IN, _QUOTE_OUT = "\x01", "\x02"  # blockquote edges, marked while extracting
_MAX_QUOTE_DEPTH = 20


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0
        self.href: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip = min(self.skip + 1, _VOID_SKIP_DEPTH_LIMIT)
            return
        if tag == "blockquote":
            self.out.append(f"\n{_QUOTE_IN}\n")
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("td", "th"):
            self.out.append("\t")
        elif tag in _BLOCK:
            self.out.append("\n\n" if tag in ("p", "h1", "h2", "h3", "table") else "\n")
        if tag == "pre":
            self.pre += 1
        if tag == "a":
            self.href.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(self.skip - 1, 0)
            return
        if tag == "pre":
            self.pre = max(self.pre - 1, 0)
        if tag == "blockquote":
            self.out.append(f"\n{_QUOTE_OUT}\n")
        if tag == "a" and self.href:
            href = self.href.pop()
            if href and href.startswith(("http://", "https://", "mailto:")):
                self.out.append(f" <{href.removeprefix('mailto:')}>")
        if tag in _BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        data = data.replace(_QUOTE_IN, "").replace(_QUOTE_OUT, "")
        if not self.pre:
            data = re.sub(r"[ \t\r\n\f\v]+", " ", data)
        self.out.append(data.replace("\xa0", " "))


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    lines = []
    depth = 0
    for line in text.split("\n"):
        if line == _QUOTE_IN:
            depth += 1
            continue
        if line == _QUOTE_OUT:
            depth = max(depth - 1, 0)
            continue
        line = line.strip(" ")
        mark = "> " * min(depth, _MAX_QUOTE_DEPTH)
        lines.append(f"{mark}{line}".rstrip() if depth else line)
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()
