"""Sentences maild makes for people, in any language (pure).

A limits note ("attachment scan.pdf (31 MB) is larger than 20 MB and was
dropped"), an agent command error, the reason a mail in an agent's name was
not accepted, an alert: code that finds such a thing says it as a `Phrase`,
a key and its arguments::

    Phrase("limits.attachment_too_large", filename="scan.pdf", size=31e6, limit=20971520)

A `Phrase` *is* its English text (a `str`), so logs, events, the CLI and the
web API keep working with it as a string; a mail template says it in its own
language with ``{{ note|say }}``. The texts are language data: the
``[phrases]`` section of ``maild/mail/lang/<code>.toml``, one table per area
(``[phrases.limits]``, ``[phrases.commands]``, ...), each value a
`str.format` template over the arguments::

    [phrases.limits]
    attachment_too_large = "liite {filename} ({size:size}) on suurempi kuin {limit:size}, joten se jätettiin pois"

Format specs: ``size`` (bytes, written "20 Mt"), ``date``/``datetime``/``time``
(`maild.mail.dates.format_when`). A value may be a table ``{ one = "...",
other = "..." }`` chosen by the argument ``count``. A phrase an argument holds
(a refused command's reason) is said in the same language. A language without
the key says it in English; a key no language has shows as the key and its
arguments, never an error.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maild.mail.dates import format_size, format_when
from maild.mail.language import Languages, load_languages

FALLBACK = "en"


class Phrase(str):
    """A sentence: its English text, plus the key and arguments to say it in any language."""

    key: str
    args: tuple[tuple[str, Any], ...]

    def __new__(cls, key: str, /, **args: Any) -> Phrase:
        obj = super().__new__(cls, say(key, args, FALLBACK))
        obj.key = key
        obj.args = tuple(args.items())
        return obj

    def __reduce__(self) -> tuple[Any, ...]:  # pickled into and out of the parse processes
        return (_rebuild, (self.key, self.args))

    def __repr__(self) -> str:
        return f"Phrase({self.key!r}, {str(self)!r})"

    def said_in(self, language: str, tz: str = "UTC", languages: Languages | None = None) -> str:
        return say(self.key, dict(self.args), language, tz, languages)


def _rebuild(key: str, args: tuple[tuple[str, Any], ...]) -> Phrase:
    return Phrase(key, **dict(args))


def in_language(
    value: Any, language: str, tz: str = "UTC", languages: Languages | None = None
) -> str:
    """`value` said in `language` if it is a `Phrase`, else as it is."""
    if isinstance(value, Phrase):
        return value.said_in(language, tz, languages)
    return str(value)


def lookup(key: str, language: str, languages: Languages) -> Any:
    """The raw text (or plural table) of `key` in `language`; None if it has none."""
    lang = languages.get(language) or languages.get(language.split("-")[0])
    if lang is None:
        return None
    node: Any = lang.table("phrases")
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


class _Formatter(string.Formatter):
    def __init__(self, language: str, tz: str, languages: Languages) -> None:
        super().__init__()
        self.language, self.tz, self.languages = language, tz, languages

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Phrase):
            value = value.said_in(self.language, self.tz, self.languages)
        if format_spec == "size" and isinstance(value, int | float):
            return format_size(value, self.language)
        if format_spec in ("date", "datetime", "time"):
            return format_when(value, self.tz, self.language, format_spec)  # type: ignore[arg-type]
        return str(super().format_field(value, format_spec))


def say(
    key: str,
    args: Mapping[str, Any],
    language: str,
    tz: str = "UTC",
    languages: Languages | None = None,
    directory: Path | None = None,
) -> str:
    """Phrase `key` with `args` in `language` (else English, else the key itself)."""
    languages = languages if languages is not None else load_languages(directory)
    used = language
    text = lookup(key, language, languages)
    if text is None:
        used, text = FALLBACK, lookup(key, FALLBACK, languages)
    if isinstance(text, Mapping):
        text = text.get("one" if args.get("count") == 1 else "other")
    if not isinstance(text, str):
        return key + "".join(f" {k}={v}" for k, v in args.items())
    try:
        return _Formatter(used, tz, languages).vformat(text, (), dict(args))
    except (KeyError, IndexError, ValueError, AttributeError):
        return text
