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

import contextlib
import dataclasses
import ipaddress
import os
import pwd
import re
import shlex
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from maild.addresses import is_valid_address, normalize_address, split_plus
from maild.errors import ConfigError

ENV_PREFIX = "MAILD_"
# A language code as maild names its languages (templates/<code>/, lang/<code>.toml).
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{1,8})?$")
# Read when neither --config nor MAILD_CONFIG names a file; it must exist.
DEFAULT_CONFIG = Path("/etc/maild/maild.toml")


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
    max_recipients: int = 100
    max_connections: int = 1000
    max_connections_per_ip: int = 20
    command_call_limit: int = 20
    max_messages_per_connection: int = 1000
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    require_starttls: bool = False
    auth_users_file: Path | None = None
    auth_required: bool = False
    auth_max_failures: int = 5
    auth_failure_window_seconds: float = 900.0
    auth_failure_delay_seconds: float = 1.0
    drain_seconds: float = 5.0

    @property
    def unix_path(self) -> Path | None:
        """The socket of ``listen = "unix:/run/maild/lmtp.sock"`` (else None)."""
        return Path(self.listen[5:]) if self.listen.startswith("unix:") else None

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


@dataclass(frozen=True)
class HelpdeskSettings:
    name: str = "Help Desk"
    # The desk's name in each language's mail ({ fi = "IT-tuki" }); else `name`.
    names: dict[str, str] = field(default_factory=dict, hash=False)
    addresses: tuple[str, ...] = ("help@example.com",)
    domain: str = "helpdesk.example.com"
    reopen_days: float = 14.0
    default_language: str = "en"
    # IANA zone of the desk: times in mail, #meeting input, sla.business_hours.
    # Empty: the system's own zone (see `system_timezone`), resolved at load.
    timezone: str = ""
    secret_file: Path = Path("var/secret.key")
    # Days the reply address on mail to a requester or watcher stays valid
    # (the expiry is signed into it); 0: it never expires.
    reply_address_days: float = 90.0

    @property
    def primary_address(self) -> str:
        return self.addresses[0]

    def name_in(self, language: str | None) -> str:
        """The desk's name as mail in `language` gives it."""
        return self.names.get(language or "", self.name) or self.name


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
    # A hard bounce (through the VERP return path of our mail) stops automatic
    # mail to the address for this many days, or until they write in again, or
    # `maild contact reset ADDRESS`.
    hard_bounce_days: float = 30.0
    max_attempts: int = 10
    retry_base_seconds: float = 60.0
    batch_size: int = 50
    sender_process: bool = True


@dataclass(frozen=True)
class LimitsSettings:
    max_message_bytes: int = 25 * 1024 * 1024
    max_header_block_bytes: int = 256 * 1024
    max_header_fields: int = 1000
    max_header_bytes: int = 32 * 1024
    max_addresses_per_header: int = 1000
    max_mime_depth: int = 30
    max_mime_parts: int = 500
    max_attachments: int = 100
    max_attachment_bytes: int = 20 * 1024 * 1024
    parse_cpu_seconds: float = 2.0
    parse_memory_mb: int = 256
    autoreply_per_address_per_hour: int = 10
    autoreply_per_ticket_per_10_minutes: int = 3
    autoreply_global_per_hour: int = 10000
    autoreply_per_source_per_hour: int = 200
    # Networks whose mail is not limited per source (your own mail servers,
    # when they are the client maild's trusted hops record), e.g. "10.0.0.0/8".
    autoreply_unlimited_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkerSettings:
    enabled: bool = True
    batch_size: int = 100
    max_attempts: int = 3
    poll_seconds: float = 1.0
    lease_seconds: float = 300.0
    parse_processes: int = -1
    parse_timeout_seconds: float = 10.0
    # Under maild serve: the worker in a process of its own beside the intake
    # (with the sender in its own as well); false: a thread of the daemon.
    process: bool = True


@dataclass(frozen=True)
class TemplatesSettings:
    directory: Path | None = None


def readable_file(key: str, path: Path) -> None:
    """A file maild reads later (a password, a key): it must be there and readable now,
    by the user maild runs as (a root:root 0600 file is not, for the maild user)."""
    if not path.is_file():
        raise ConfigError(key, f"no such file: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror} (maild runs as "
                          f"{_user_name()}; make it root:maild 0640)") from None  # fmt: skip


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _fail(key: str, message: str) -> None:
    raise ConfigError(key, message)


def _per_priority(key: str, values: tuple[float, ...]) -> None:
    if len(values) != 4 or any(v <= 0 for v in values):
        _fail(key, f"needs four positive numbers of hours (P1..P4), got {list(values)!r}")


def _addresses(key: str, values: tuple[str, ...]) -> None:
    for value in values:
        if not is_valid_address(value):
            _fail(key, f"not a mail address: {value!r}")


@dataclass(frozen=True)
class TriageSettings:
    """Classification (maild.triage). Rules: built-in, plus an optional file."""

    rules_file: Path | None = None
    builtin_rules: bool = True
    default_type: Literal["incident", "request"] = "incident"
    default_category: str = "other"
    default_impact: int = 3
    default_urgency: int = 2
    # Rows: impact 1 (many users), 2 (a team), 3 (one user); columns: urgency
    # 1 (high), 2 (normal), 3 (low); cells: priority 1..4.
    priority_matrix: tuple[str, ...] = ("1 2 3", "2 2 3", "2 3 4")
    vip_senders: tuple[str, ...] = ()
    scan_chars: int = 6000

    def __post_init__(self) -> None:
        if self.rules_file is not None:
            readable_file("triage.rules_file", self.rules_file)
        if self.default_impact not in (1, 2, 3):
            _fail("triage.default_impact", "must be 1, 2 or 3")
        if self.default_urgency not in (1, 2, 3):
            _fail("triage.default_urgency", "must be 1, 2 or 3")
        rows = [row.split() for row in self.priority_matrix]
        if len(rows) != 3 or any(len(r) != 3 or any(c not in "1234" for c in r) for r in rows):
            _fail("triage.priority_matrix", 'needs 3 rows of 3 priorities 1..4, e.g. "1 2 3"')
        for sender in self.vip_senders:
            domain_only = sender.startswith("@") and is_valid_address("x" + sender)
            if not (domain_only or is_valid_address(sender)):
                _fail("triage.vip_senders", f"not an address or @domain: {sender!r}")
        if self.scan_chars < 200:
            _fail("triage.scan_chars", "must be at least 200")

    def priority(self, impact: int, urgency: int) -> int:
        return int(self.priority_matrix[impact - 1].split()[urgency - 1])


@dataclass(frozen=True)
class SlaSettings:
    """Targets per priority (P1..P4) and the calendar they run on (maild.sla)."""

    first_response_hours: tuple[float, ...] = (1.0, 1.0, 2.0, 3.0)
    resolution_hours: tuple[float, ...] = (4.0, 8.0, 24.0, 72.0)
    warn_fraction: float = 0.75
    # Empty: 24/7. Otherwise "HH:MM-HH:MM" in helpdesk.timezone, on business_days.
    business_hours: str = ""
    business_days: tuple[int, ...] = (1, 2, 3, 4, 5)  # ISO weekdays, Monday = 1
    holidays: tuple[str, ...] = ()  # "YYYY-MM-DD", no business hours that day
    regulator_deadline_hours: float = 72.0
    regulator_reminder_hours: tuple[float, ...] = (24.0, 48.0, 66.0)
    sweep_seconds: float = 60.0

    def __post_init__(self) -> None:
        _per_priority("sla.first_response_hours", self.first_response_hours)
        _per_priority("sla.resolution_hours", self.resolution_hours)
        if not 0 < self.warn_fraction < 1:
            _fail("sla.warn_fraction", f"must be between 0 and 1, got {self.warn_fraction}")
        if self.business_hours:
            m = re.fullmatch(r"(\d\d):(\d\d)-(\d\d):(\d\d)", self.business_hours)
            if not m:
                _fail("sla.business_hours", f"expected HH:MM-HH:MM, got {self.business_hours!r}")
            assert m is not None
            h1, m1, h2, m2 = (int(x) for x in m.groups())
            if not (h1 * 60 + m1 < h2 * 60 + m2 <= 24 * 60 and m1 < 60 and m2 < 60):
                _fail("sla.business_hours", f"not a day-time range: {self.business_hours!r}")
        if not self.business_days or any(d not in range(1, 8) for d in self.business_days):
            _fail("sla.business_days", "needs ISO weekdays 1 (Monday) .. 7 (Sunday)")
        for day in self.holidays:
            try:
                date.fromisoformat(day)
            except ValueError:
                _fail("sla.holidays", f"not a YYYY-MM-DD date: {day!r}")
        if self.regulator_deadline_hours <= 0:
            _fail("sla.regulator_deadline_hours", "must be greater than 0")
        if any(not 0 < h < self.regulator_deadline_hours for h in self.regulator_reminder_hours):
            _fail("sla.regulator_reminder_hours", "each must lie between 0 and the deadline")
        if self.sweep_seconds <= 0:
            _fail("sla.sweep_seconds", "must be greater than 0")


@dataclass(frozen=True)
class TiersSettings:
    """Group addresses notified per tier (maild.tiers)."""

    tier1: tuple[str, ...] = ()
    tier2: tuple[str, ...] = ()
    tier3: tuple[str, ...] = ()
    duty_manager: tuple[str, ...] = ()
    security: tuple[str, ...] = ()
    language: str = "en"  # a language maild has templates for (checked at start)

    def __post_init__(self) -> None:
        if not LANGUAGE_CODE.match(self.language):
            _fail("tiers.language", f"not a language code (en, fi, sv, ...): {self.language!r}")
        for name in ("tier1", "tier2", "tier3", "duty_manager", "security"):
            _addresses(f"tiers.{name}", getattr(self, name))


@dataclass(frozen=True)
class LifecycleSettings:
    """Reminders, auto-resolve and auto-close (maild.sweeps)."""

    remind_after_days: float = 2.0
    max_reminders: int = 2
    auto_resolve_days: float = 7.0
    close_after_days: float = 3.0

    def __post_init__(self) -> None:
        for name in ("remind_after_days", "auto_resolve_days", "close_after_days"):
            if getattr(self, name) <= 0:
                _fail(f"lifecycle.{name}", "must be greater than 0")
        if self.max_reminders < 0:
            _fail("lifecycle.max_reminders", "must be 0 or more")


@dataclass(frozen=True)
class SearchSettings:
    """The full-text index and past fixes (maild.store.search, maild.desk.apply)."""

    # Past fixes (the most similar resolved tickets) in the new-ticket mail to
    # agents; 0: none (the console and the API still find them).
    suggestions: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.suggestions <= 10:
            _fail("search.suggestions", "must be between 0 and 10")


_GROUP_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
AUTH_METHODS = ("dmarc", "dkim")


@dataclass(frozen=True)
class AgentSettings:
    """One agent of the directory (``[[agents]]``; maild.directory)."""

    email: str
    name: str = ""
    tier: int = 1
    # Free-form group names; "security" makes the agent a security contact,
    # "duty_manager" a duty manager (both as if listed in [tiers]).
    groups: tuple[str, ...] = ()
    language: str = ""  # a language code ("fi", "sv"); empty: tiers.language


@dataclass(frozen=True)
class AgentMailSettings:
    """Agents working tickets by replying to their notifications (maild.agentmail)."""

    # Days a personal reply address stays valid (the expiry is signed into it);
    # 0: it never expires.
    reply_token_days: float = 30.0
    # Also require a DKIM/DMARC pass for the agent's domain in an
    # Authentication-Results header written by one of trusted_authserv_ids.
    # Unset (None): required whenever trusted_authserv_ids is set.
    require_authentication_results: bool | None = None
    trusted_authserv_ids: tuple[str, ...] = ()
    # Received headers our own servers add on top, maild's own included (border
    # MX .. maild); only an Authentication-Results header above the lowest of
    # them counts, and the client that lowest one names is a message's source.
    trusted_hops: int = 1
    authentication_methods: tuple[str, ...] = AUTH_METHODS
    meeting_minutes: int = 30

    @property
    def check_authentication_results(self) -> bool:
        """Whether agents' commands need a trusted DKIM/DMARC pass."""
        if self.require_authentication_results is None:
            return bool(self.trusted_authserv_ids)
        return self.require_authentication_results

    def __post_init__(self) -> None:
        if self.reply_token_days < 0:
            _fail("agent_mail.reply_token_days", "must be 0 (never expires) or more")
        if self.require_authentication_results and not self.trusted_authserv_ids:
            _fail("agent_mail.trusted_authserv_ids",
                  "is required with require_authentication_results")  # fmt: skip
        for authserv in self.trusted_authserv_ids:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", authserv):
                _fail("agent_mail.trusted_authserv_ids", f"not a host name: {authserv!r}")
        if not 1 <= self.trusted_hops <= 20:
            _fail("agent_mail.trusted_hops", "must be between 1 and 20")
        if not self.authentication_methods or any(
            m not in AUTH_METHODS for m in self.authentication_methods
        ):
            _fail("agent_mail.authentication_methods", f"use some of {list(AUTH_METHODS)}")
        if not 5 <= self.meeting_minutes <= 24 * 60:
            _fail("agent_mail.meeting_minutes", "must be between 5 and 1440")


def _build_agents(value: Any) -> tuple[AgentSettings, ...]:
    """``[[agents]]``: an array of tables, each validated; keys named ``agents[N].key``."""
    if not isinstance(value, list):
        raise ConfigError("agents", "must be an array of tables ([[agents]])")
    out: list[AgentSettings] = []
    seen: set[str] = set()
    for i, table in enumerate(value):
        where = f"agents[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(where, "must be a table")
        if "email" not in table:
            raise ConfigError(f"{where}.email", "is required")
        agent = _build_section(where, AgentSettings, table, {})
        email = normalize_address(agent.email)
        if not is_valid_address(email) or "+" in email.partition("@")[0]:
            raise ConfigError(f"{where}.email", f"not a plain mail address: {agent.email!r}")
        if email in seen:
            raise ConfigError(f"{where}.email", f"{email} is listed twice")
        seen.add(email)
        if agent.tier not in (1, 2, 3):
            raise ConfigError(f"{where}.tier", f"must be 1, 2 or 3, got {agent.tier}")
        if any(c in agent.name for c in "\r\n\0") or len(agent.name) > 200:
            raise ConfigError(f"{where}.name", "must be a single line of at most 200 characters")
        for group in agent.groups:
            if not _GROUP_RE.match(group):
                raise ConfigError(f"{where}.groups", f"not a group name: {group!r}")
        if agent.language and not LANGUAGE_CODE.match(agent.language):
            raise ConfigError(f"{where}.language", f"not a language code (en, fi, sv, ...): "
                              f"{agent.language!r}")  # fmt: skip
        out.append(dataclasses.replace(agent, email=email))
    return tuple(out)


@dataclass(frozen=True)
class ImapMailboxSettings:
    """One ``[[imap.mailboxes]]`` entry: a mailbox maild reads tickets from."""

    name: str
    host: str
    username: str
    port: int = 0  # 0: 993 with tls = "implicit", else 143
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    ca_file: Path | None = None
    password_file: Path | None = None
    oauth2_token_command: str = ""
    folder: str = "INBOX"
    after: Literal["move", "flag"] = "move"
    processed_folder: str = "Processed"
    address: str = ""  # the help-desk address it receives for; "": helpdesk.addresses[0]
    # The header field the delivering server writes on top with the envelope
    # recipient (e.g. "Delivered-To", "X-Original-To"); "": none is trusted, so
    # reply and bounce addresses are not taken from this mailbox's mail.
    delivery_header: str = ""
    category: str = ""
    tier: int = 1

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls == "implicit" else 143)


@dataclass(frozen=True)
class ImapSettings:
    mailboxes: tuple[ImapMailboxSettings, ...] = ()
    poll_seconds: float = 60.0
    idle_seconds: float = 1500.0
    batch_size: int = 100
    batch_bytes: int = 16 * 1024 * 1024
    timeout_seconds: float = 60.0
    reconnect_min_seconds: float = 1.0
    reconnect_max_seconds: float = 300.0

    def mailbox(self, name: str) -> ImapMailboxSettings | None:
        return next((m for m in self.mailboxes if m.name == name), None)


@dataclass(frozen=True)
class HttpSettings:
    enabled: bool = True
    listen: str = "127.0.0.1:9325"

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)


@dataclass(frozen=True)
class WebSettings:
    """The workspace (maild.web): console, requester pages, JSON API."""

    enabled: bool = True
    listen: str = "127.0.0.1:8025"
    # The address people reach the console at, used in every link maild
    # mails; "" means "http://" + listen. https here makes cookies Secure.
    base_url: str = ""
    session_idle_minutes: float = 480.0
    session_max_hours: float = 168.0
    login_link_minutes: float = 15.0
    login_per_address_per_hour: int = 5
    login_per_client_per_hour: int = 30
    requester_link_days: float = 90.0
    # Single sign-on by a reverse proxy that authenticates agents and passes
    # their address in this header (e.g. "X-Remote-User"); "" is off. Only
    # honoured on connections from trusted_proxies.
    trusted_proxy_header: str = ""
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    page_size: int = 50

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)

    @property
    def url(self) -> str:
        """The base URL without a trailing slash."""
        return (self.base_url or f"http://{self.listen}").rstrip("/")

    @property
    def secure(self) -> bool:
        return self.url.startswith("https://")


@dataclass(frozen=True)
class ClusterSettings:
    heartbeat_seconds: float = 5.0
    dead_after_seconds: float = 20.0


ALERT_STATE_WORDS_RECOVERED = ("ok", "up", "recovery", "recovered", "resolved")


@dataclass(frozen=True)
class AlertRuleSettings:
    """One ``[[alerts.rules]]`` table: how to read a monitor's mail that is no stock format.

    `subject` and `body` are regular expressions (searched, case-insensitive)
    with named groups ``host``, ``service``, ``state`` (and optionally
    ``severity``); the rule matches when every expression given matches.
    """

    name: str  # the source the incidents are filed under
    subject: str = ""
    body: str = ""
    senders: tuple[str, ...] = ()  # only mail from these (globs); empty: any of alerts.senders
    recovered: tuple[str, ...] = ALERT_STATE_WORDS_RECOVERED  # states that mean "recovered"


@dataclass(frozen=True)
class AlertsSettings:
    """Monitoring mail read as alerts and folded into incidents (maild.alerts)."""

    # Addresses or globs ("*@monitoring.example.com") whose mail is alerts,
    # once maild has verified it came from the monitor: from one of
    # source_networks, or signed for the From domain in the Authentication-Results
    # of one of agent_mail.trusted_authserv_ids (maild.pipeline.verify).
    senders: tuple[str, ...] = ()
    # Networks ("10.0.5.0/24") the monitors' mail comes from, as the client
    # maild's outermost trusted hop records (agent_mail.trusted_hops).
    source_networks: tuple[str, ...] = ()
    # What a recovery (OK, UP, RECOVERY, resolved) does: resolve its incident,
    # or only annotate it for an agent to resolve.
    recovery: Literal["resolve", "annotate"] = "resolve"
    # A problem within this many minutes of its incident's recovery reopens
    # that incident (flapping is folded) instead of opening a new one.
    flap_minutes: float = 30.0
    tier: int = 2
    category: str = "monitoring"
    # The severity table: state or severity words (lower case) per priority.
    p1: tuple[str, ...] = ("disaster",)
    p2: tuple[str, ...] = ("critical", "down", "high", "unreachable", "error")
    p3: tuple[str, ...] = ("warning", "average", "unknown", "firing", "problem")
    p4: tuple[str, ...] = ("information", "info", "not classified", "notice")
    default_priority: int = 3
    # Hosts (globs) whose alerts are one priority higher (CRITICAL: P2 -> P1).
    critical_hosts: tuple[str, ...] = ()
    rules: tuple[AlertRuleSettings, ...] = ()

    def __post_init__(self) -> None:
        for sender in self.senders:
            if not re.fullmatch(r"[^\s@]+@[^\s@]+", sender):
                _fail("alerts.senders", f"not an address or address glob: {sender!r}")
        for value in self.source_networks:
            try:
                network = ipaddress.ip_network(value, strict=False)
            except ValueError:
                _fail("alerts.source_networks", f"not an address or network: {value!r}")
            else:  # maild knows an IPv6 client by its /64 (maild.addresses.network_key)
                if network.version == 6 and "/" in value and network.prefixlen > 64:
                    _fail("alerts.source_networks", f"{value} is narrower than a /64: maild "
                          "knows an IPv6 client by its /64")  # fmt: skip
        if self.flap_minutes < 0:
            _fail("alerts.flap_minutes", "must be 0 (no folding) or more")
        if self.tier not in (1, 2, 3):
            _fail("alerts.tier", f"must be 1, 2 or 3, got {self.tier}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", self.category):
            _fail("alerts.category", f"not a category name: {self.category!r}")
        seen: dict[str, str] = {}
        for key in ("p1", "p2", "p3", "p4"):
            for word in getattr(self, key):
                if word != word.lower().strip() or not word:
                    _fail(f"alerts.{key}", f"write severity words in lower case: {word!r}")
                if word in seen:
                    _fail(f"alerts.{key}", f"{word!r} is also listed in alerts.{seen[word]}")
                seen[word] = key
        if self.default_priority not in (1, 2, 3, 4):
            _fail("alerts.default_priority", "must be 1, 2, 3 or 4")
        names: set[str] = set()
        for i, rule in enumerate(self.rules):
            where = f"alerts.rules[{i}]"
            if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", rule.name):
                _fail(f"{where}.name", f"must be a short lower-case name, got {rule.name!r}")
            if rule.name in names:
                _fail(f"{where}.name", f"another rule is already named {rule.name!r}")
            names.add(rule.name)
            if not rule.subject and not rule.body:
                _fail(f"{where}.subject", "give a subject or a body expression (or both)")
            groups: set[str] = set()
            for part in ("subject", "body"):
                pattern = getattr(rule, part)
                if not pattern:
                    continue
                if len(pattern) > 500:
                    _fail(f"{where}.{part}", "must be at most 500 characters")
                try:
                    compiled = re.compile(pattern)
                except re.error as exc:
                    _fail(f"{where}.{part}", f"not a regular expression: {exc}")
                else:
                    unknown = set(compiled.groupindex) - {"host", "service", "state", "severity"}
                    if unknown:
                        _fail(f"{where}.{part}", f"unknown group {sorted(unknown)[0]!r}: use "
                              "host, service, state, severity")  # fmt: skip
                    groups.update(compiled.groupindex)
            if "state" not in groups:
                _fail(f"{where}.subject", "needs a (?P<state>...) group in subject or body")


@dataclass(frozen=True)
class MajorSettings:
    """Major incidents opened from a burst of reports (maild.majors)."""

    enabled: bool = True
    # This many new incidents of one category (or alert incidents of one
    # host) within window_minutes make a major incident.
    threshold: int = 5
    window_minutes: float = 30.0
    # Categories that never group (besides triage.default_category, which
    # says nothing in common).
    ignore_categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.threshold < 2:
            _fail("major.threshold", "must be at least 2")
        if self.window_minutes <= 0:
            _fail("major.window_minutes", "must be greater than 0")


@dataclass(frozen=True)
class AttachmentsSettings:
    """Files that travel with mail maild sends (agent notices, agents' replies)."""

    # A requester's attachments carried in each agent notice, in all; the rest
    # are listed with the command that gets them (0: list only).
    notify_max_bytes: int = 10 * 1024 * 1024
    # What an agent's reply (by mail or `maild ticket reply --attach`) may send
    # the requester, in all; a reply over it is refused, with the reason.
    reply_max_bytes: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("notify_max_bytes", "reply_max_bytes"):
            if getattr(self, name) < 0:
                _fail(f"attachments.{name}", "must be 0 or more")


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class ReportSettings:
    """The weekly report by mail (maild.desk.weekly)."""

    # The day it is mailed; "" sends none.
    weekly_day: str = "monday"
    # At this time, in helpdesk.timezone ("HH:MM").
    weekly_time: str = "07:00"
    # Who gets it; empty: the duty managers ([tiers] duty_manager, and the
    # agents in group "duty_manager"), each in their language.
    recipients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.weekly_day and self.weekly_day not in WEEKDAYS:
            _fail("report.weekly_day", f"a day of the week in English, or \"\", got "
                  f"{self.weekly_day!r}")  # fmt: skip
        m = re.fullmatch(r"(\d\d):(\d\d)", self.weekly_time)
        if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            _fail("report.weekly_time", f"expected HH:MM, got {self.weekly_time!r}")
        _addresses("report.recipients", self.recipients)


@dataclass(frozen=True)
class RetentionSettings:
    """How long personal data is kept (maild.desk.privacy); 0 keeps it forever."""

    # Raw bytes of mail that became a ticket or a reply (the ticket keeps its text).
    raw_days: float = 90.0
    # Raw bytes of mail that was ignored (loops, auto-replies, bounces) or spam.
    ignored_raw_days: float = 30.0
    # Outgoing mail sent (or given up) this long ago: the row and its bytes.
    outbox_days: float = 90.0
    # Details of audit events (addresses, reasons); the event itself stays.
    event_detail_days: float = 365.0
    # Tickets closed this long ago lose their personal data: requester, texts,
    # attachments; type, category, priority and times stay for the reports.
    closed_ticket_months: float = 24.0
    # How often the retention sweep runs (also once shortly after start).
    sweep_hours: float = 24.0

    def __post_init__(self) -> None:
        for name in ("raw_days", "ignored_raw_days", "outbox_days", "event_detail_days",
                     "closed_ticket_months"):  # fmt: skip
            if getattr(self, name) < 0:
                _fail(f"retention.{name}", "must be 0 (keep forever) or more")
        if self.sweep_hours <= 0:
            _fail("retention.sweep_hours", "must be greater than 0")


@dataclass(frozen=True)
class ScreeningSettings:
    """What screening believes besides the rules themselves (maild.screen)."""

    # SpamAssassin's and rspamd's verdict headers. Believed from anyone: a spam
    # verdict only ever holds back the sender's own mail.
    spam_headers: bool = True
    # A score header (X-Spam-Score, X-Rspamd-Score, the score in X-Spam-Status
    # or X-Spamd-Result) at or above this is spam when no yes/no verdict says
    # otherwise; 0: believe only the yes/no verdicts.
    spam_threshold: float = 5.0
    # Served addresses that are a group or distribution list (Google Groups,
    # Microsoft 365): mail through them carries list headers, and still gets
    # an acknowledgement like mail sent straight to the desk.
    group_addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.spam_threshold < 0:
            _fail("screening.spam_threshold", "must be 0 (scores ignored) or more")
        _addresses("screening.group_addresses", self.group_addresses)


@dataclass(frozen=True)
class LanguagesSettings:
    """Language data beyond the built-in maild/mail/lang/*.toml (maild.mail.language)."""

    directory: Path | None = None

    def __post_init__(self) -> None:
        if self.directory is not None and not self.directory.is_dir():
            _fail("languages.directory", f"no such directory: {self.directory}")


@dataclass(frozen=True)
class LogSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "text": one line per event; "json": one JSON object per line. Under
    # journald both carry the syslog priority ("<4>" for a warning).
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    helpdesk: HelpdeskSettings = field(default_factory=HelpdeskSettings)
    outgoing: OutgoingSettings = field(default_factory=OutgoingSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    templates: TemplatesSettings = field(default_factory=TemplatesSettings)
    triage: TriageSettings = field(default_factory=TriageSettings)
    sla: SlaSettings = field(default_factory=SlaSettings)
    tiers: TiersSettings = field(default_factory=TiersSettings)
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    imap: ImapSettings = field(default_factory=ImapSettings)
    log: LogSettings = field(default_factory=LogSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    agent_mail: AgentMailSettings = field(default_factory=AgentMailSettings)
    agents: tuple[AgentSettings, ...] = ()  # the agent directory, [[agents]]
    http: HttpSettings = field(default_factory=HttpSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    languages: LanguagesSettings = field(default_factory=LanguagesSettings)
    screening: ScreeningSettings = field(default_factory=ScreeningSettings)
    attachments: AttachmentsSettings = field(default_factory=AttachmentsSettings)
    alerts: AlertsSettings = field(default_factory=AlertsSettings)
    major: MajorSettings = field(default_factory=MajorSettings)
    web: WebSettings = field(default_factory=WebSettings)
    source: str = "<defaults>"
    # "section.key" of every value the file or the environment set (not a default).
    given: frozenset[str] = frozenset()


def system_timezone(environ: Mapping[str, str] | None = None, root: Path = Path("/")) -> str:
    """The machine's own zone as an IANA name: ``TZ``, else ``/etc/localtime``
    (a link into the zoneinfo tree), else ``/etc/timezone``, else "UTC"."""
    environ = os.environ if environ is None else environ
    candidates = [environ.get("TZ", "").removeprefix(":")]
    localtime = root / "etc" / "localtime"
    try:
        target = str(localtime.resolve(strict=True))
    except OSError:
        target = ""
    if "/zoneinfo/" in target:
        candidates.append(target.split("/zoneinfo/", 1)[1].removeprefix("posix/"))
    with contextlib.suppress(OSError):
        candidates.append((root / "etc" / "timezone").read_text().strip())
    for name in candidates:
        if not name or name.startswith("/"):
            continue
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return name
    return "UTC"


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
    """Build and validate the settings; raise `ConfigError` naming the bad key.

    The file is `path`, else ``MAILD_CONFIG``, else `DEFAULT_CONFIG`; it must
    exist (built-in defaults alone would put a database wherever maild was
    started).
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get("MAILD_CONFIG") or None
    implicit = path is None
    if path is None:
        path = DEFAULT_CONFIG
    raw: dict[str, Any] = {}
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        if implicit:
            raise ConfigError("config", f"no configuration file at {path} (the default; "
                              "give one with --config PATH or MAILD_CONFIG)") from None  # fmt: skip
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
        if name not in hints or name in ("source", "given"):
            raise ConfigError(name, "unknown section")
    for f in dataclasses.fields(Settings):
        if f.name in ("source", "given"):
            continue
        if f.name == "agents":
            if pending.pop("agents", None):
                raise ConfigError("agents", "cannot be set from the environment")
            sections["agents"] = _build_agents(raw.get("agents", []))
            continue
        table = raw.get(f.name, {})
        if not isinstance(table, dict):
            raise ConfigError(f.name, "must be a table")
        sections[f.name] = _build_section(f.name, hints[f.name], table, pending.pop(f.name, {}))
    if pending:
        section = sorted(pending)[0]
        raise ConfigError(section, "unknown section (from environment)")
    if not sections["helpdesk"].timezone:
        sections["helpdesk"] = dataclasses.replace(sections["helpdesk"], timezone=system_timezone())
    given = {f"{name}.{key}" for name, table in raw.items() if isinstance(table, dict)
             for key in table}  # fmt: skip
    given |= {f"{name}.{key}" for name, table in (overrides or {}).items() for key in table}
    settings = Settings(**sections, source=source, given=frozenset(given))
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
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in table and f.name not in env:
            raise ConfigError(f"{section}.{f.name}", "is required")
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
    if origin is dict:  # "fi=IT-tuki,sv=IT-stöd" or a TOML inline table
        stripped = text.strip()
        if stripped.startswith("{"):
            try:
                return tomllib.loads(f"v = {stripped}")["v"]
            except tomllib.TOMLDecodeError:
                return text
        pairs = [part.partition("=") for part in text.split(",") if part.strip()]
        return {k.strip(): v.strip() for k, _eq, v in pairs}
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
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(key, f"must be a table of strings, got {value!r}")
        return dict(value)
    if origin is Literal:
        if value in args:
            return value
        # In any case: level = "info" means "INFO", as --log-level does.
        same = [a for a in args if isinstance(value, str) and str(a).lower() == value.lower()]
        if len(same) == 1:
            return same[0]
        allowed = ", ".join(repr(a) for a in args)
        raise ConfigError(key, f"must be one of {allowed}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"must be a list, got {value!r}")
        if dataclasses.is_dataclass(args[0]):  # a list of tables: [[section.key]]
            return tuple(_coerce(f"{key}[{i}]", args[0], item) for i, item in enumerate(value))
        return tuple(_coerce(key, args[0], item) for item in value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a table, got {value!r}")
        return _build_section(key, hint, value, {})
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
    # SQLAlchemy's URL parser, imported here and not at the top: the parse
    # processes import this module (for the Settings type) but never validate,
    # and SQLAlchemy would cost each of them memory within its budget.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(s.database.url)
    except ArgumentError:
        raise ConfigError("database.url", f"not a database URL: {s.database.url!r}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError("database.url", "only sqlite:// and postgresql+psycopg:// are supported")
    unix = s.smtp.unix_path
    if unix is not None:
        if not unix.is_absolute():
            raise ConfigError("smtp.listen", f"a UNIX socket needs an absolute path, got {unix}")
    else:
        try:
            split_listen(s.smtp.listen)
        except ValueError as exc:
            raise ConfigError("smtp.listen", f"{exc} (or unix:/PATH)") from None
    _positive("smtp.timeout_seconds", s.smtp.timeout_seconds)
    _positive("smtp.max_recipients", s.smtp.max_recipients)
    _positive("smtp.max_connections_per_ip", s.smtp.max_connections_per_ip)
    _positive("smtp.max_connections", s.smtp.max_connections)
    if s.smtp.max_connections < s.smtp.max_connections_per_ip:
        raise ConfigError("smtp.max_connections", "must be at least max_connections_per_ip")
    if s.smtp.command_call_limit < 5:
        raise ConfigError("smtp.command_call_limit", "must be at least 5 (EHLO, STARTTLS, "
                          "EHLO, AUTH and a NOOP)")  # fmt: skip
    _positive("smtp.max_messages_per_connection", s.smtp.max_messages_per_connection)
    _positive("smtp.auth_max_failures", s.smtp.auth_max_failures)
    _positive("smtp.auth_failure_window_seconds", s.smtp.auth_failure_window_seconds)
    if s.smtp.auth_failure_delay_seconds < 0:
        raise ConfigError("smtp.auth_failure_delay_seconds", "must be 0 or more")
    for key in ("tls_cert_file", "tls_key_file", "auth_users_file"):
        path = getattr(s.smtp, key)
        if path is not None:
            readable_file(f"smtp.{key}", path)
    if (s.smtp.tls_cert_file is None) != (s.smtp.tls_key_file is None):
        raise ConfigError("smtp.tls_key_file", "tls_cert_file and tls_key_file go together")
    if s.smtp.require_starttls and s.smtp.tls_cert_file is None:
        raise ConfigError("smtp.require_starttls", "needs tls_cert_file and tls_key_file")
    if s.smtp.auth_required and s.smtp.auth_users_file is None:
        raise ConfigError("smtp.auth_required", "needs auth_users_file")
    _positive("smtp.drain_seconds", s.smtp.drain_seconds)
    try:
        split_listen(s.http.listen)
    except ValueError as exc:
        raise ConfigError("http.listen", str(exc)) from None
    _validate_web(s)
    _positive("cluster.heartbeat_seconds", s.cluster.heartbeat_seconds)
    if s.cluster.dead_after_seconds < 2 * s.cluster.heartbeat_seconds:
        raise ConfigError("cluster.dead_after_seconds", "must be at least twice heartbeat_seconds")
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
    _validate_own_domain(s)
    if any(c in s.helpdesk.name for c in "\r\n\0"):
        raise ConfigError("helpdesk.name", "must be a single line")
    for code, name in s.helpdesk.names.items():
        if not LANGUAGE_CODE.match(code):
            raise ConfigError("helpdesk.names", f"{code!r} is not a language code (fi, sv, pt-br)")
        if not name or any(c in name for c in "\r\n\0"):
            raise ConfigError(f"helpdesk.names.{code}", "must be a single line, not empty")
    _positive("helpdesk.reopen_days", s.helpdesk.reopen_days)
    if s.helpdesk.reply_address_days < 0:
        raise ConfigError("helpdesk.reply_address_days", "must be 0 (never expires) or more")
    try:
        ZoneInfo(s.helpdesk.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            "helpdesk.timezone", f"unknown time zone {s.helpdesk.timezone!r}"
        ) from None
    # Whether maild has templates in these languages is checked where the
    # templates are (maild.mail.render.Renderer.from_settings): a language is
    # a folder of templates plus its data, not a list in the code.
    if not LANGUAGE_CODE.match(s.helpdesk.default_language):
        raise ConfigError("helpdesk.default_language", "not a language code (en, fi, sv, ...): "
                          f"{s.helpdesk.default_language!r}")  # fmt: skip
    o = s.outgoing
    if o.transport == "smtp":
        if not o.smtp_host:
            raise ConfigError("outgoing.smtp_host", "is required when transport is 'smtp'")
        if o.smtp_password_file is not None and not o.smtp_username:
            raise ConfigError("outgoing.smtp_username", "is required with smtp_password_file")
        if o.smtp_password_file is not None:
            readable_file("outgoing.smtp_password_file", o.smtp_password_file)
        if o.smtp_username and not o.smtp_starttls and not is_loopback_host(o.smtp_host):
            raise ConfigError("outgoing.smtp_starttls", f"must be true to log in to "
                              f"{o.smtp_host}: the password would cross the network in clear "
                              "(AUTH without TLS is allowed to a loopback relay only)")  # fmt: skip
    if not 0 < o.smtp_port <= 65535:
        raise ConfigError("outgoing.smtp_port", f"not a port number: {o.smtp_port}")
    _positive("outgoing.smtp_timeout_seconds", o.smtp_timeout_seconds)
    _positive("outgoing.hard_bounce_days", o.hard_bounce_days)
    _positive("outgoing.max_attempts", o.max_attempts)
    _positive("outgoing.retry_base_seconds", o.retry_base_seconds)
    _positive("outgoing.batch_size", o.batch_size)
    if s.limits.max_message_bytes < 1024:
        raise ConfigError("limits.max_message_bytes", "must be at least 1024")
    for key in ("max_header_block_bytes", "max_header_bytes"):
        if getattr(s.limits, key) < 1024:
            raise ConfigError(f"limits.{key}", "must be at least 1024")
    for key in ("max_header_fields", "max_addresses_per_header", "max_mime_depth",
                "max_mime_parts", "max_attachments", "max_attachment_bytes",
                "parse_cpu_seconds", "parse_memory_mb", "autoreply_per_address_per_hour",
                "autoreply_per_ticket_per_10_minutes", "autoreply_global_per_hour",
                "autoreply_per_source_per_hour"):  # fmt: skip
        _positive(f"limits.{key}", getattr(s.limits, key))
    if s.limits.autoreply_per_source_per_hour >= s.limits.autoreply_global_per_hour:
        raise ConfigError("limits.autoreply_per_source_per_hour", "must be below "
                          "autoreply_global_per_hour: one source must not trip the breaker")  # fmt: skip
    for network in s.limits.autoreply_unlimited_sources:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(
                "limits.autoreply_unlimited_sources", f"not an address or network: {network!r}"
            ) from None
    _positive("worker.batch_size", s.worker.batch_size)
    _positive("worker.max_attempts", s.worker.max_attempts)
    _positive("worker.poll_seconds", s.worker.poll_seconds)
    _positive("worker.lease_seconds", s.worker.lease_seconds)
    if s.worker.parse_processes < -1:
        raise ConfigError("worker.parse_processes", "must be -1 (one per CPU), 0 or more")
    _positive("worker.parse_timeout_seconds", s.worker.parse_timeout_seconds)
    served = {normalize_address(a) for a in s.helpdesk.addresses}
    for name in ("tier1", "tier2", "tier3", "duty_manager", "security"):
        for addr in getattr(s.tiers, name):
            if split_plus(addr)[0] in served:
                raise ConfigError(f"tiers.{name}", f"{addr} is a help-desk address: mail to it "
                                  "would come back to maild")  # fmt: skip
    for addr in s.screening.group_addresses:
        if normalize_address(addr) not in served:
            raise ConfigError("screening.group_addresses", f"{addr} is not one of "
                              "helpdesk.addresses")  # fmt: skip
    for i, agent in enumerate(s.agents):
        if agent.email in served:
            raise ConfigError(f"agents[{i}].email", "is a help-desk address, not an agent's")
    if s.templates.directory is not None and not s.templates.directory.is_dir():
        raise ConfigError("templates.directory", f"no such directory: {s.templates.directory}")
    _validate_imap(s)
    for sender in s.alerts.senders:
        if (
            "*" not in sender
            and "?" not in sender
            and split_plus(normalize_address(sender))[0] in served
        ):
            raise ConfigError("alerts.senders", f"{sender} is a help-desk address")
    if s.alerts.senders and not (s.alerts.source_networks or s.agent_mail.trusted_authserv_ids):
        # A From line proves nothing: without a way to verify the monitor, anyone
        # could open (P1) incidents and page tier 3 by writing its address.
        raise ConfigError("alerts.source_networks", "alerts.senders needs a way to verify the "
                          "monitor: set alerts.source_networks or "
                          "agent_mail.trusted_authserv_ids")  # fmt: skip


def _validate_own_domain(s: Settings) -> None:
    """``helpdesk.domain`` marks maild's own mail (Message-IDs, loop header): it must
    be a domain nobody else writes mail from, or their mail is taken for ours."""
    domain = s.helpdesk.domain.lower()
    uses: list[tuple[str, str]] = [("helpdesk.addresses", a) for a in s.helpdesk.addresses]
    uses += [(f"agents[{i}].email", a.email) for i, a in enumerate(s.agents)]
    for name in ("tier1", "tier2", "tier3", "duty_manager", "security"):
        uses += [(f"tiers.{name}", a) for a in getattr(s.tiers, name)]
    uses += [("triage.vip_senders", a) for a in s.triage.vip_senders]
    for key, address in uses:
        if address.rpartition("@")[2].lower() == domain:
            raise ConfigError("helpdesk.domain", f"{domain} is also the domain of {address} "
                              f"({key}): use a domain of maild's own, e.g. helpdesk.{domain}")  # fmt: skip
    for authserv in s.agent_mail.trusted_authserv_ids:
        if authserv.lower() == domain:
            raise ConfigError("helpdesk.domain", f"{domain} is also a trusted mail server "
                              "(agent_mail.trusted_authserv_ids): use a domain of maild's own")  # fmt: skip


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9-]{1,64}")


def _validate_web(s: Settings) -> None:
    w = s.web
    try:
        split_listen(w.listen)
    except ValueError as exc:
        raise ConfigError("web.listen", str(exc)) from None
    if w.base_url and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[!-~]*)?", w.base_url):
        raise ConfigError("web.base_url", f"not an http(s) URL: {w.base_url!r}")
    for key in ("session_idle_minutes", "session_max_hours", "login_link_minutes",
                "login_per_address_per_hour", "login_per_client_per_hour",
                "requester_link_days", "page_size"):  # fmt: skip
        _positive(f"web.{key}", getattr(w, key))
    if w.session_idle_minutes > w.session_max_hours * 60:
        raise ConfigError("web.session_idle_minutes", "must not exceed session_max_hours")
    if w.page_size > 500:
        raise ConfigError("web.page_size", "must be at most 500")
    if w.trusted_proxy_header and not _HEADER_NAME_RE.fullmatch(w.trusted_proxy_header):
        raise ConfigError(
            "web.trusted_proxy_header", f"not a header name: {w.trusted_proxy_header!r}"
        )
    if w.trusted_proxy_header and not w.trusted_proxies:
        raise ConfigError("web.trusted_proxies", "is required with trusted_proxy_header")


_MAILBOX_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
IDLE_LIMIT_SECONDS = 29 * 60  # RFC 2177: servers may drop an IDLE after 30 minutes


def _validate_imap(s: Settings) -> None:
    i = s.imap
    _positive("imap.poll_seconds", i.poll_seconds)
    _positive("imap.idle_seconds", i.idle_seconds)
    if i.idle_seconds >= IDLE_LIMIT_SECONDS:
        raise ConfigError("imap.idle_seconds", "must be under 1740 (29 minutes): servers "
                          "may end an IDLE after 30")  # fmt: skip
    _positive("imap.batch_size", i.batch_size)
    if i.batch_bytes < 1024 * 1024:
        raise ConfigError("imap.batch_bytes", "must be at least 1048576 (1 MiB)")
    _positive("imap.timeout_seconds", i.timeout_seconds)
    _positive("imap.reconnect_min_seconds", i.reconnect_min_seconds)
    if i.reconnect_max_seconds < i.reconnect_min_seconds:
        raise ConfigError("imap.reconnect_max_seconds", "must be at least reconnect_min_seconds")
    served = {normalize_address(a) for a in s.helpdesk.addresses}
    seen: set[str] = set()
    for n, m in enumerate(i.mailboxes):
        key = f"imap.mailboxes[{n}]"
        if not _MAILBOX_NAME_RE.fullmatch(m.name):
            raise ConfigError(f"{key}.name", "must be 1-64 letters, digits, '.', '_' or '-', "
                              f"got {m.name!r}")  # fmt: skip
        if m.name in seen:
            raise ConfigError(f"{key}.name", f"another mailbox is already named {m.name!r}")
        seen.add(m.name)
        if not m.host or any(c.isspace() for c in m.host):
            raise ConfigError(f"{key}.host", f"not a host name: {m.host!r}")
        if not 0 <= m.port <= 65535:
            raise ConfigError(f"{key}.port", f"not a port number: {m.port}")
        if m.tls == "none" and not is_loopback_host(m.host):
            raise ConfigError(f"{key}.tls", "'none' sends the password in clear: only allowed "
                              "for a loopback host")  # fmt: skip
        if m.ca_file is not None:
            readable_file(f"{key}.ca_file", m.ca_file)
        if not m.username:
            raise ConfigError(f"{key}.username", "is required")
        if (m.password_file is None) == (not m.oauth2_token_command):
            raise ConfigError(f"{key}.password_file",
                              "give exactly one of password_file or oauth2_token_command")  # fmt: skip
        if m.password_file is not None:
            readable_file(f"{key}.password_file", m.password_file)
        if m.oauth2_token_command:
            try:
                argv = shlex.split(m.oauth2_token_command)
            except ValueError as exc:
                raise ConfigError(f"{key}.oauth2_token_command", str(exc)) from None
            if not argv:
                raise ConfigError(f"{key}.oauth2_token_command", "is empty")
        if not m.folder:
            raise ConfigError(f"{key}.folder", "must not be empty")
        if m.after == "move" and (not m.processed_folder or m.processed_folder == m.folder):
            raise ConfigError(f"{key}.processed_folder", "must name a folder other than "
                              f"{m.folder!r} (or set after = \"flag\")")  # fmt: skip
        if m.address and normalize_address(m.address) not in served:
            raise ConfigError(f"{key}.address", f"{m.address!r} is not one of helpdesk.addresses")
        if not 1 <= m.tier <= 3:
            raise ConfigError(f"{key}.tier", f"must be 1, 2 or 3, got {m.tier}")
        if any(c in m.category for c in "\r\n\0"):
            raise ConfigError(f"{key}.category", "must be a single line")
        if m.delivery_header and not re.fullmatch(r"[A-Za-z0-9-]{1,76}", m.delivery_header):
            raise ConfigError(f"{key}.delivery_header", f"not a header name: {m.delivery_header!r}")


def defaults_as_dict() -> dict[str, dict[str, Any]]:
    """The built-in defaults, section by section (for the example-config test)."""
    out: dict[str, dict[str, Any]] = {}
    base = Settings()
    for f in dataclasses.fields(Settings):
        if f.name in ("source", "given", "agents"):  # agents: an array of tables, no defaults
            continue
        out[f.name] = dataclasses.asdict(getattr(base, f.name))
    return out
