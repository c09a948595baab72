"""Dates, times and sizes as each language writes them: the one formatter (Babel, CLDR).

Every place maild shows a time to a person (mail templates, the CLI's text
output, the report, the web console) calls `format_when`, so a deadline reads
the same everywhere: in the desk's zone (``helpdesk.timezone``), in the
reader's language::

    fi  pe 4.12.2026 klo 9.45          (date alone: 4.12.2026)
    sv  fre 4.12.2026 kl. 9.45         (date alone: 4.12.2026)
    en  Fri 4 Dec 2026, 09:45 EET      (date alone: 4 December 2026)

The zone's name is added only where the reader may not share it: a language
lists the zones its readers live in (`DateStyle.home_zones`); a Finnish reader
of a desk in Europe/Helsinki needs no "EET", an English one does.

A language's patterns are data: the ``[dates]`` section of its
``maild/mail/lang/<code>.toml`` (CLDR pattern syntax, e.g. ``"EEE d.M.y 'klo'
H.mm"``), read into a `DateStyle`; a language without one gets its CLDR
locale's own medium date and short time, so any language code Babel knows
reads naturally with no code change. Sizes ("20 Mt") are written here too.
Babel enters maild here and nowhere else.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import DateTimePattern, parse_pattern
from babel.units import format_unit

from maild.errors import ConfigError
from maild.mail.language import CONFIG_KEY, Languages, load_languages

Part = Literal["datetime", "date", "time", "clock"]
PARTS: tuple[Part, ...] = ("datetime", "date", "time", "clock")


@dataclass(frozen=True)
class DateStyle:
    """How one language writes dates: a CLDR locale and patterns (None: the locale's own)."""

    locale: str
    datetime: str | None = None
    date: str | None = None
    time: str | None = None
    home_zones: tuple[str, ...] = ()  # zones whose readers need no zone name
    clock: str | None = None  # the bare time, for the end of a span ("9.45–10.15")


_lock = threading.Lock()
_styles: dict[str, DateStyle] | None = None  # from the language data, on first use


def styles_from(languages: Languages) -> dict[str, DateStyle]:
    """Each language's style from the ``[dates]`` section of its data (maild.mail.language)."""
    out: dict[str, DateStyle] = {}
    for code, language in languages.items():
        table = language.table("dates")
        if not table:
            continue
        where = " or ".join(language.files) or f"{code}.toml"
        patterns: dict[str, str | None] = {}
        for key in ("datetime", "date", "time", "clock"):
            value = table.get(key)
            if value is not None and (not isinstance(value, str) or check_pattern(value)):
                why = check_pattern(value) if isinstance(value, str) else "not a string"
                raise ConfigError(CONFIG_KEY, f"{where}: [dates] {key}: {why}")
            patterns[key] = value
        locale = table.get("locale", code)
        if not isinstance(locale, str) or not known_locale(locale):
            raise ConfigError(
                CONFIG_KEY, f"{where}: [dates] locale {locale!r} is not a CLDR locale"
            )
        zones = language.strings("dates", "home_zones")
        out[code] = DateStyle(locale, home_zones=zones, **patterns)
    return out


def set_styles(styles: Mapping[str, DateStyle]) -> None:
    """Use these styles (the language data with the admin's, at start and on SIGHUP)."""
    global _styles
    with _lock:
        _styles = dict(styles)
        _compiled.cache_clear()
        format_when.cache_clear()


def _all_styles() -> dict[str, DateStyle]:
    global _styles
    if _styles is None:
        with _lock:
            if _styles is None:
                _styles = styles_from(load_languages())
    return _styles


def style_for(language: str) -> DateStyle:
    styles = _all_styles()
    return styles.get(language) or styles.get(language.split("-")[0]) or DateStyle(language)


@dataclass(frozen=True)
class _Compiled:
    locale: Locale
    patterns: Mapping[str, DateTimePattern]
    home_zones: frozenset[str]


@functools.lru_cache(maxsize=64)
def _compiled(language: str) -> _Compiled:
    style = style_for(language)
    try:
        locale = Locale.parse(style.locale.replace("-", "_"))
    except (UnknownLocaleError, ValueError):  # a code CLDR does not know: write as English
        style = style_for("en")
        locale = Locale.parse(style.locale)
    date = style.date or locale.date_formats["medium"].pattern
    time = style.time or locale.time_formats["short"].pattern
    clock = style.clock or locale.time_formats["short"].pattern
    both = style.datetime or str(locale.datetime_formats["medium"]).replace("{1}", date).replace(
        "{0}", time
    )
    return _Compiled(
        locale,
        {
            "datetime": parse_pattern(both),
            "date": parse_pattern(date),
            "time": parse_pattern(time),
            "clock": parse_pattern(clock),
        },
        frozenset(style.home_zones),
    )


def check_pattern(pattern: str) -> str | None:
    """Why `pattern` is not a usable CLDR date pattern (None when it is)."""
    try:
        parse_pattern(pattern).apply(datetime(2026, 12, 4, 9, 45, tzinfo=UTC), Locale("en"))
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        return str(exc) or type(exc).__name__
    return None


def known_locale(code: str) -> bool:
    try:
        Locale.parse(code.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=4096)
def format_when(
    value: datetime | date | None,
    tz: str = "UTC",
    language: str = "en",
    part: Part = "datetime",
    *,
    zone: bool | None = None,
) -> str:
    """`value` in zone `tz`, written the way `language` writes it.

    `part`: "datetime", "date" (the day alone, where the hour adds nothing),
    "time" ("klo 9.45") or "clock" (the bare "9.45"). `zone`: add the zone's abbreviation ("EET", "UTC"); None adds
    it unless `tz` is one of the language's home zones (a date alone never
    gets one). A naive `value` is taken as UTC; None is shown as "-".
    """
    if value is None:
        return "-"
    if not isinstance(value, datetime):  # a calendar day: no zone to convert from
        c = _compiled(language)
        return c.patterns["date"].apply(value, c.locale)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    local = value.astimezone(ZoneInfo(tz))
    c = _compiled(language)
    text = c.patterns[part].apply(local, c.locale)
    if zone is None:
        zone = part in ("datetime", "time") and tz not in c.home_zones
    if zone:
        text += " " + (local.tzname() or tz)
    return text


def format_span(start: datetime, end: datetime, tz: str = "UTC", language: str = "en") -> str:
    """A span of time: "la 5.12.2026 klo 9.45–10.15" within a day, else two full times."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    zone = ZoneInfo(tz)
    if start.astimezone(zone).date() != end.astimezone(zone).date():
        return f"{format_when(start, tz, language)} – {format_when(end, tz, language)}"
    first = format_when(start, tz, language, zone=False)
    last = format_when(end, tz, language, "clock", zone=False)
    named = tz not in _compiled(language).home_zones
    return f"{first}–{last}" + (f" {end.astimezone(zone).tzname() or tz}" if named else "")


def format_size(size: float, language: str = "en") -> str:
    """A size in bytes the way `language` writes it: "20 MB", "20 Mt", "1,5 MB", "512 kB"."""
    c = _compiled(language)
    if size >= 1024 * 1024:
        value, unit = size / (1024 * 1024), "digital-megabyte"
    elif size >= 1024:
        value, unit = size / 1024, "digital-kilobyte"
    else:
        value, unit = size, "digital-byte"
    pattern = "#,##0" if value >= 100 or value == int(value) else "#,##0.#"
    length = "long" if unit == "digital-byte" else "short"
    return str(format_unit(value, unit, length=length, format=pattern, locale=c.locale))
