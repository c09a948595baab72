"""Templates for every mail maild writes (Jinja2, compiled once).

A message template named ``ack`` in language ``fi`` is three files:
``fi/ack.subject.j2``, ``fi/ack.txt.j2`` and ``fi/ack.html.j2`` (HTML
autoescaped). Lookup order: the admin's ``templates.directory``, then the
built-in ``templates/``; a language without the template falls back to
English. `Renderer.reload()` (SIGHUP) builds a fresh environment.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from maild import __version__
from maild.config.settings import Settings
from maild.errors import ConfigError
from maild.mail.dates import (
    PARTS,
    Part,
    format_size,
    format_span,
    format_when,
    set_styles,
    styles_from,
)  # fmt: skip
from maild.mail.language import builtin_templates_dir, load_languages, spoken_languages
from maild.mail.layout import field_row, html_row, paragraphs, tidy_text
from maild.mail.phrases import in_language

__all__ = ["TEMPLATES", "Rendered", "Renderer", "builtin_templates_dir", "format_when",
           "spoken_languages"]  # fmt: skip

# Every message template maild renders. Each must exist in English (the
# fallback of every language) as NAME.subject.j2 and NAME.txt.j2; the HTML part
# is optional. Checked when the templates are loaded: a missing one stops maild
# at start (exit 78, naming it), never a message in the quarantine.
TEMPLATES = (
    "ack", "agent_alert", "agent_confirm", "agent_escalated", "agent_major", "agent_new",
    "agent_refused", "agent_rejected", "agent_update", "alert", "closed", "escalated", "limits",
    "major_known", "meeting", "regulator_reminder",
    "reply", "resolved", "sla_breach", "sla_warning", "status", "waiting_reminder",
    "watcher_removed", "digest", "weekly_report", "web_login",
)  # fmt: skip


log = logging.getLogger(__name__)


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja's cache of compiled templates, which can only make a start faster.

    A template is compiled again when its source changed (Jinja keeps a
    checksum of it). A cache file that cannot be read or written is the same
    as no cache: the template is compiled, and nothing fails.
    """

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except (OSError, ValueError, EOFError):
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError as exc:
            log.debug("template cache not written: %s", exc)


def bytecode_cache(**options: Any) -> jinja2.BytecodeCache | None:
    """Where compiled templates are kept between runs (compiling all of them
    is half a second of every start, bench/run.py).

    The folder is systemd's ``CacheDirectory=`` (``$CACHE_DIRECTORY``), else
    Jinja's own folder for this user in the temporary directory, which Jinja
    creates 0700 and refuses when another user owns it. The file names carry
    maild's version and the environment's `options`, which change what a
    template compiles to. None (no cache) when there is no such folder.
    """
    tag = hashlib.sha256(repr(sorted(options.items())).encode()).hexdigest()[:12]
    pattern = f"maild-{__version__}-{tag}-%s.cache"
    try:
        where = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
        if where:
            folder = Path(where) / "templates"
            folder.mkdir(mode=0o700, exist_ok=True)
            return _BytecodeCache(str(folder), pattern)
        return _BytecodeCache(None, pattern)
    except (OSError, RuntimeError) as exc:  # RuntimeError: Jinja found no safe folder
        log.debug("no template cache: %s", exc)
        return None


class _Environment(jinja2.Environment):
    """Each template's globals in one dict, not a ChainMap over the environment's.

    Jinja copies a template's globals into every render's context, and copying
    a ChainMap walks all of its maps: a third of rendering an acknowledgement
    (bench/run.py). maild sets its globals before it loads a template and never
    after, so a copy made at load time is the same.
    """

    def make_globals(self, d: Any) -> Any:
        return dict(super().make_globals(d))


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


def _autoescape(name: str | None) -> bool:
    return bool(name and name.endswith(".html.j2"))


def template_language(name: str | None) -> str:
    """The language a template is written in: its folder ("fi/ack.txt.j2" -> "fi")."""
    return (name or "en").partition("/")[0] if name and "/" in name else "en"


class _Template(jinja2.Template):
    """Imports (``{% import "en/_names.j2" as n %}``) without a per-render check.

    Jinja compares the importing context's globals with the imported
    template's on every import, in case a render added globals the cached
    module lacks. Here every template has exactly the environment's globals
    and a render adds none, so the cached module is always the right one;
    the check was a fifth of rendering an acknowledgement (bench/run.py).
    """

    def _get_default_module(self, ctx: Any = None) -> Any:
        return super()._get_default_module(None)


class Renderer:
    def __init__(
        self,
        override_dir: Path | None = None,
        timezone: str = "UTC",
        languages_dir: Path | None = None,
    ) -> None:
        self._override_dir = override_dir
        self._timezone = timezone
        self._languages_dir = languages_dir
        self._lock = threading.Lock()
        self._env = self._build()

    @property
    def recipe(self) -> tuple[Path | None, str, Path | None]:
        """The arguments that build this renderer again (in another process:
        `maild.service.renderpool`)."""
        return (self._override_dir, self._timezone, self._languages_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> Renderer:
        """The renderer for `settings`; a `ConfigError` when a configured language
        (helpdesk.default_language, tiers.language, an agent's) has no templates."""
        renderer = cls(
            settings.templates.directory, settings.helpdesk.timezone, settings.languages.directory
        )
        configured = [
            ("helpdesk.default_language", settings.helpdesk.default_language),
            ("tiers.language", settings.tiers.language),
            *((f"agents[{i}].language", a.language) for i, a in enumerate(settings.agents)),
        ]
        for key, code in configured:
            if code and code not in renderer.languages:
                raise ConfigError(key, f"maild has no templates in {code!r} (it writes "
                                  f"{', '.join(renderer.languages)})")  # fmt: skip
        return renderer

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages maild writes mail in (a template folder each)."""
        return spoken_languages(self._override_dir)

    def _build(self, override_dir: Path | None = None, *, keep: bool = True) -> jinja2.Environment:
        if keep:
            override_dir = self._override_dir
        spoken_languages.cache_clear()  # a reload may bring a new language folder
        self._languages = load_languages(self._languages_dir)
        set_styles(styles_from(self._languages))
        paths = [str(p) for p in (override_dir, builtin_templates_dir()) if p is not None]
        options = {"trim_blocks": True, "lstrip_blocks": True, "keep_trailing_newline": True}
        env = _Environment(
            loader=jinja2.FileSystemLoader(paths),
            autoescape=_autoescape,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
            cache_size=-1,
            bytecode_cache=bytecode_cache(kind="mail", **options),
            **options,
        )
        env.template_class = _Template
        env.filters["when"] = jinja2.pass_context(
            lambda ctx, value, part="datetime", zone=None: self._when(ctx, value, part, zone)
        )
        env.filters["span"] = jinja2.pass_context(
            lambda ctx, start, end: format_span(
                start, end, self._timezone, template_language(ctx.name)
            )
        )
        env.filters["size"] = jinja2.pass_context(
            lambda ctx, value: format_size(value, template_language(ctx.name))
        )
        env.globals["field_row"] = field_row
        env.globals["html_row"] = lambda label, value: markupsafe.Markup(html_row(label, value))
        env.filters["paragraphs"] = lambda text: markupsafe.Markup(paragraphs(str(text)))
        env.filters["say"] = jinja2.pass_context(lambda ctx, value: self._say(ctx, value))
        # Compile everything now: a broken template fails at start, not per message.
        # (templates/web/ holds the console's pages: maild.web.pages compiles those)
        found = set(env.list_templates(
            filter_func=lambda n: n.endswith(".j2") and not n.startswith("web/")))  # fmt: skip
        for name in sorted(found):
            try:
                env.get_template(name)
            except jinja2.TemplateError as exc:
                raise ConfigError("templates.directory", f"template {name}: {exc}") from None
        missing = [
            f"en/{name}.{part}.j2"
            for name in TEMPLATES
            for part in ("subject", "txt")
            if f"en/{name}.{part}.j2" not in found
        ]
        if missing:
            where = ", ".join(paths) or "nowhere"
            raise ConfigError(
                "templates.directory",
                f"template {missing[0]!r} is missing (looked in {where})"
                + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""),
            )
        return env

    def _when(
        self, ctx: jinja2.runtime.Context, value: datetime | None, part: Part, zone: bool | None
    ) -> str:
        """``{{ due|when }}``, ``{{ closes_at|when("date") }}``, ``{{ end|when("time") }}``.

        Written the way the template's own language writes it (its folder):
        a template that fell back to English shows English dates.
        """
        if part not in PARTS:
            raise ValueError(f"when: part must be one of {PARTS}, got {part!r}")
        return format_when(value, self._timezone, template_language(ctx.name), part, zone=zone)

    def _say(self, ctx: jinja2.runtime.Context, value: Any) -> str:
        """``{{ note|say }}``: a sentence maild made (a limits note, a command error) in
        the template's language; any other value as it is."""
        return in_language(value, template_language(ctx.name), self._timezone, self._languages)

    def reload(self) -> None:
        env = self._build()
        with self._lock:
            self._env = env

    def prepare(self, override_dir: Path | None) -> Any:
        """Compile the templates of `override_dir` (and the built-in ones); raise
        `ConfigError` when one does not compile or is missing. Nothing changes
        until `use`."""
        return (override_dir, self._build(override_dir, keep=False))

    def use(self, prepared: Any) -> None:
        override_dir, env = prepared
        with self._lock:
            self._override_dir, self._env = override_dir, env

    def _template(self, name: str, language: str, part: str) -> jinja2.Template | None:
        env = self._env
        for lang in (language, "en"):
            try:
                return env.get_template(f"{lang}/{name}.{part}.j2")
            except jinja2.TemplateNotFound:
                continue
        return None

    def render(self, name: str, language: str, context: Mapping[str, Any]) -> Rendered:
        subject_t = self._template(name, language, "subject")
        text_t = self._template(name, language, "txt")
        if subject_t is None or text_t is None:
            raise ConfigError("templates.directory", f"template {name!r} is missing")
        html_t = self._template(name, language, "html")
        subject = " ".join(subject_t.render(context).split())
        return Rendered(
            subject=subject,
            text=tidy_text(text_t.render(context)),
            html=html_t.render(context) if html_t is not None else None,
        )
