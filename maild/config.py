"""One typed settings object, built once from a TOML file and the environment.

Sources, later wins: built-in defaults, the TOML file (``--config PATH`` or
``MAILD_CONFIG``), then ``MAILD_<SECTION>__<KEY>`` environment variables
(``MAILD_DATABASE__URL=postgresql+psycopg://...``). Every key is validated once
at start; a bad value raises `ConfigError` naming the key, which the CLI turns
into one line and exit status 78 (EX_CONFIG).

Every default here is documented in ``config/maild.example.toml``; a test
checks that the two agree.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from maild.addresses import is_valid_address, normalize_address
from maild.errors import ConfigError

ENV_PREFIX = "MAILD_"


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///var/maild.db"


@dataclass(frozen=True)
class SmtpSettings:
    enabled: bool = True
    listen: str = "127.0.0.1:2525"
    lmtp: bool = False
    hostname: str = "localhost"
    timeout_seconds: float = 300.0

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


@dataclass(frozen=True)
class HelpdeskSettings:
    name: str = "Help Desk"
    addresses: tuple[str, ...] = ("help@example.com",)
    domain: str = "helpdesk.example.com"
    first_response_hours: float = 3.0
    reopen_days: float = 14.0
    default_language: str = "en"
    timezone: str = "UTC"
    secret_file: Path = Path("var/secret.key")

    @property
    def primary_address(self) -> str:
        return self.addresses[0]


@dataclass(frozen=True)
class OutgoingSettings:
    transport: Literal["maildir", "smtp"] = "maildir"
    maildir: Path = Path("var/outgoing")
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password_file: Path | None = None
    smtp_timeout_seconds: float = 30.0
    max_attempts: int = 10
    retry_base_seconds: float = 60.0
    batch_size: int = 50


@dataclass(frozen=True)
class LimitsSettings:
    max_message_bytes: int = 25 * 1024 * 1024


@dataclass(frozen=True)
class WorkerSettings:
    batch_size: int = 100
    max_attempts: int = 3
    poll_seconds: float = 1.0
    lease_seconds: float = 300.0
    parse_processes: int = -1
    parse_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class TemplatesSettings:
    directory: Path | None = None


@dataclass(frozen=True)
class LogSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    helpdesk: HelpdeskSettings = field(default_factory=HelpdeskSettings)
    outgoing: OutgoingSettings = field(default_factory=OutgoingSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    templates: TemplatesSettings = field(default_factory=TemplatesSettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: str = "<defaults>"


def split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


# --- loading ---------------------------------------------------------------


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build and validate the settings; raise `ConfigError` naming the bad key."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("MAILD_CONFIG") or None
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("config", f"file not found: {path}") from None
        except OSError as exc:
            raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    return settings_from_mapping(raw, _env_overrides(environ), source=source)


def settings_from_mapping(
    raw: Mapping[str, Any],
    overrides: Mapping[str, Mapping[str, str]] | None = None,
    *,
    source: str = "<mapping>",
) -> Settings:
    """Settings from parsed TOML tables plus string overrides; validated."""
    pending = {k: dict(v) for k, v in (overrides or {}).items()}
    sections: dict[str, Any] = {}
    hints = typing.get_type_hints(Settings)
    for name in raw:
        if name not in hints or name == "source":
            raise ConfigError(name, "unknown section")
    for f in dataclasses.fields(Settings):
        if f.name == "source":
            continue
        table = raw.get(f.name, {})
        if not isinstance(table, dict):
            raise ConfigError(f.name, "must be a table")
        sections[f.name] = _build_section(f.name, hints[f.name], table, pending.pop(f.name, {}))
    if pending:
        section = sorted(pending)[0]
        raise ConfigError(section, "unknown section (from environment)")
    settings = Settings(**sections, source=source)
    validate(settings)
    return settings


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        out.setdefault(section.lower(), {})[key.lower()] = value
    return out


def _build_section(section: str, cls: type, table: dict[str, Any], env: dict[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(f"{section}.{key}", "unknown key")
        values[key] = _coerce(f"{section}.{key}", hints[key], value)
    for key, text in env.items():
        if key not in hints:
            raise ConfigError(f"{section}.{key}", "unknown key (from environment)")
        values[key] = _coerce(f"{section}.{key}", hints[key], _parse_env(hints[key], text))
    return cls(**values)


def _parse_env(hint: Any, text: str) -> Any:
    """Environment values are strings; lists may be TOML arrays or comma lists."""
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                return tomllib.loads(f"v = {stripped}")["v"]
            except tomllib.TOMLDecodeError:
                return text
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _coerce(key: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        non_none = [a for a in args if a is not type(None)]
        if value in ("", None):
            return None
        return _coerce(key, non_none[0], value)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(key, f"must be one of {allowed}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"must be a list, got {value!r}")
        return tuple(_coerce(key, args[0], item) for item in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
            return False
        raise ConfigError(key, f"must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"must be an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(key, f"must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"must be a number, got {value!r}") from None
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, f"must be a path, got {value!r}")
        return Path(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported setting type {hint!r}")  # pragma: no cover


# --- validation ------------------------------------------------------------


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(key, f"must be greater than 0, got {value!r}")


def validate(s: Settings) -> None:
    """Cross-field and value checks; each failure names its key."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(s.database.url)
    except ArgumentError:
        raise ConfigError("database.url", f"not a database URL: {s.database.url!r}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError("database.url", "only sqlite:// and postgresql+psycopg:// are supported")
    try:
        split_listen(s.smtp.listen)
    except ValueError as exc:
        raise ConfigError("smtp.listen", str(exc)) from None
    _positive("smtp.timeout_seconds", s.smtp.timeout_seconds)
    if not s.helpdesk.addresses:
        raise ConfigError("helpdesk.addresses", "at least one address is needed")
    for addr in s.helpdesk.addresses:
        if not is_valid_address(addr) or "+" in addr.partition("@")[0]:
            raise ConfigError("helpdesk.addresses", f"not a plain mail address: {addr!r}")
    if len({normalize_address(a) for a in s.helpdesk.addresses}) != len(s.helpdesk.addresses):
        raise ConfigError("helpdesk.addresses", "lists the same address twice")
    domain = s.helpdesk.domain
    if not domain or "." not in domain or not is_valid_address(f"x@{domain}"):
        raise ConfigError("helpdesk.domain", f"not a domain name: {domain!r}")
    if any(c in s.helpdesk.name for c in "\r\n\0"):
        raise ConfigError("helpdesk.name", "must be a single line")
    _positive("helpdesk.first_response_hours", s.helpdesk.first_response_hours)
    _positive("helpdesk.reopen_days", s.helpdesk.reopen_days)
    try:
        ZoneInfo(s.helpdesk.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            "helpdesk.timezone", f"unknown time zone {s.helpdesk.timezone!r}"
        ) from None
    if s.helpdesk.default_language not in ("en", "fi"):
        raise ConfigError("helpdesk.default_language", "must be 'en' or 'fi'")
    o = s.outgoing
    if o.transport == "smtp":
        if not o.smtp_host:
            raise ConfigError("outgoing.smtp_host", "is required when transport is 'smtp'")
        if o.smtp_password_file is not None and not o.smtp_username:
            raise ConfigError("outgoing.smtp_username", "is required with smtp_password_file")
        if o.smtp_password_file is not None and not o.smtp_password_file.is_file():
            raise ConfigError(
                "outgoing.smtp_password_file", f"no such file: {o.smtp_password_file}"
            )
    if not 0 < o.smtp_port <= 65535:
        raise ConfigError("outgoing.smtp_port", f"not a port number: {o.smtp_port}")
    _positive("outgoing.smtp_timeout_seconds", o.smtp_timeout_seconds)
    _positive("outgoing.max_attempts", o.max_attempts)
    _positive("outgoing.retry_base_seconds", o.retry_base_seconds)
    _positive("outgoing.batch_size", o.batch_size)
    if s.limits.max_message_bytes < 1024:
        raise ConfigError("limits.max_message_bytes", "must be at least 1024")
    _positive("worker.batch_size", s.worker.batch_size)
    _positive("worker.max_attempts", s.worker.max_attempts)
    _positive("worker.poll_seconds", s.worker.poll_seconds)
    _positive("worker.lease_seconds", s.worker.lease_seconds)
    if s.worker.parse_processes < -1:
        raise ConfigError("worker.parse_processes", "must be -1 (one per CPU), 0 or more")
    _positive("worker.parse_timeout_seconds", s.worker.parse_timeout_seconds)
    if s.templates.directory is not None and not s.templates.directory.is_dir():
        raise ConfigError("templates.directory", f"no such directory: {s.templates.directory}")


def defaults_as_dict() -> dict[str, dict[str, Any]]:
    """The built-in defaults, section by section (for the example-config test)."""
    out: dict[str, dict[str, Any]] = {}
    base = Settings()
    for f in dataclasses.fields(Settings):
        if f.name == "source":
            continue
        out[f.name] = dataclasses.asdict(getattr(base, f.name))
    return out
