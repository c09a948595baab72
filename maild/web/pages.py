"""The console's and the requester's pages: Jinja2 templates under ``templates/web/``.

The one place maild.web meets Jinja2 (as `maild.mail.render` is for mail).
Pages are autoescaped; phrases come from ``templates/web/lang/<code>.toml``
(English and Finnish, like the mail), a missing phrase falls back to
English and then to its key. Dates go through the one formatter
(`maild.mail.dates.format_when`, in the reader's language), so pages and
mail say times alike.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from maild.errors import ConfigError
from maild.mail.dates import format_when
from maild.mail.render import builtin_templates_dir, bytecode_cache

LANGUAGES = ("en", "fi")


def web_dir() -> Path:
    return builtin_templates_dir() / "web"


def _phrases(lang: str) -> dict[str, str]:
    path = web_dir() / "lang" / f"{lang}.toml"
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("templates", f"web phrases {path}: {exc}") from None
    out: dict[str, str] = {}

    def walk(prefix: str, table: Mapping[str, Any]) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                out[f"{prefix}{key}"] = str(value)

    walk("", data)
    return out


def duration(seconds: float) -> str:
    """ "2 h 05 min", "3 d 4 h", "12 min" (a short, language-neutral span)."""
    s = int(abs(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min"


class Pages:
    """Compiled page templates and phrase books, built once per process."""

    def __init__(self, timezone: str = "UTC") -> None:
        self.timezone = timezone
        options = {"autoescape": True, "trim_blocks": True, "lstrip_blocks": True}
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(web_dir())),
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
            bytecode_cache=bytecode_cache(kind="web", **options),
            **options,
        )
        self.env.filters["when"] = jinja2.pass_context(
            lambda ctx, value: self.when(value, ctx.get("lang", "en"))
        )
        self.env.filters["duration"] = duration
        self.env.filters["filesize"] = _filesize
        self.phrases = {lang: _phrases(lang) for lang in LANGUAGES}
        for name in self.env.list_templates(filter_func=lambda n: n.endswith(".html.j2")):
            try:
                self.env.get_template(name)
            except jinja2.TemplateError as exc:
                raise ConfigError("templates", f"web template {name}: {exc}") from None

    def when(self, value: datetime | None, lang: str = "en") -> str:
        """The shared formatter (`maild.mail.dates`): pages write times as mail does."""
        return "" if value is None else format_when(value, self.timezone, lang)

    def translator(self, lang: str) -> Any:
        book = self.phrases.get(lang) or self.phrases["en"]
        english = self.phrases["en"]

        def t(key: str, **values: Any) -> str:
            text = book.get(key) or english.get(key) or key
            return text.format(**values) if values else text

        return t

    def render(self, name: str, lang: str, context: Mapping[str, Any]) -> str:
        lang = lang if lang in LANGUAGES else "en"
        return self.env.get_template(name).render(
            {**context, "t": self.translator(lang), "lang": lang}
        )


def _filesize(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / 1024 / 1024:.1f} MB"
