"""Agent commands: the leading ``#`` lines of an agent's reply (pure).

    #status pending_user
    #priority P2
    #assign anna@example.com      (or a name or local part only one agent has)
    #take
    #escalate [tier]
    #category network
    #type incident|request
    #resolve [note]
    #close [note]
    #reopen [note]
    #note [text]                  (the whole reply stays internal)
    #meeting YYYY-MM-DD HH:MM[-HH:MM] [https://link]   (or D.M.YYYY [klo] H.MM[-H.MM])
    #link 123
    #helpful 123                  (past fix #123 helped with this ticket)
    #major [N]                    (declare this ticket a major incident, or attach it to #N)
    #attach N / #detach N         (link or unlink report N to this major incident)

Only leading lines count (blank lines between them are fine); a ``#`` further
down is text. Every value is checked here, before anything runs: a line
with control characters, an unknown command, a bad value, or a header-like
line right after a command (a line break smuggled into a value: ``Bcc:``)
refuses the whole reply. What the command then does is `maild.pipeline.agentmail`'s
business, through `maild.desk.actions.TicketOps`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from maild.mail.phrases import Phrase
from maild.pipeline.directory import Directory

MAX_COMMANDS = 20
MAX_LINE = 500

STATUSES = ("open", "in_progress", "escalated", "pending_user", "resolved", "closed")
NAMES = ("status", "priority", "assign", "take", "escalate", "category", "type", "resolve",
         "close", "reopen", "note", "meeting", "link", "helpful", "major", "attach",
         "detach")  # fmt: skip
# The syntax of each, as the agent is shown it when a command is refused.
SYNTAX = tuple(Phrase(f"syntax.{name}") for name in (
    "status", "priority", "assign", "take", "escalate", "category", "type", "resolve", "close",
    "reopen", "note", "meeting", "link", "helpful", "major", "attach", "detach",
))  # fmt: skip
_HEADER_LIKE = re.compile(
    r"^(?:to|cc|bcc|from|reply-to|subject|sender|date|content-type|content-transfer-encoding"
    r"|mime-version|message-id|return-path|received|x-[a-z0-9-]+)\s*:",
    re.IGNORECASE,
)
_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_LINK = re.compile(r"^https?://[!-~]{1,400}$")
# "2026-12-04 14:00-14:45 LINK", or as Finns and Swedes write it: "4.12.2026 klo 14.00".
_WHEN = re.compile(
    r"^(?:(\d{4})-(\d{1,2})-(\d{1,2})|(\d{1,2})\.(\d{1,2})\.(\d{4}))(?:T|\s+(?:klo\s+|kl\.?\s*)?)"
    r"(\d{1,2})[:.](\d{2})(?:\s*[-\u2013]\s*(\d{1,2})[:.](\d{2}))?(?:\s+(\S+))?$"
)


@dataclass(frozen=True)
class Command:
    name: str  # one of NAMES
    line: str  # as written (for the confirmation)
    value: Any = None  # the parsed argument (see `_parse_one`)


@dataclass(frozen=True)
class Meeting:
    start: datetime  # UTC
    end: datetime
    link: str


@dataclass(frozen=True)
class CommandBlock:
    commands: tuple[Command, ...]
    errors: tuple[str, ...]  # one sentence per refused line (a `Phrase`)
    body: str  # the text after the command lines

    @property
    def internal(self) -> bool:
        return any(c.name == "note" for c in self.commands)


def _bad_chars(line: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn")
               for c in line if c != "\t")  # fmt: skip


def parse(
    text: str, directory: Directory, *, now: datetime, timezone: str = "UTC",
    meeting_minutes: int = 30,
) -> CommandBlock:  # fmt: skip
    """Split `text` into its leading commands (checked) and the rest."""
    lines = text.split("\n")
    commands: list[Command] = []
    errors: list[str] = []
    i = 0
    previous_was_command = False
    while i < len(lines):
        raw = lines[i]
        line = raw.strip()
        if not line:
            previous_was_command = False
            i += 1
            continue
        if previous_was_command and _HEADER_LIKE.match(line):
            errors.append(Phrase("commands.header_like", line=_shown(line[:60])))
            previous_was_command = False
            i += 1
            continue
        if not line.startswith("#"):
            break
        i += 1
        previous_was_command = True
        if len(commands) + len(errors) >= MAX_COMMANDS:
            errors.append(Phrase("commands.too_many", limit=MAX_COMMANDS))
            continue
        if _bad_chars(raw) or len(line) > MAX_LINE:
            errors.append(Phrase("commands.bad_line", line=_shown(line)))
            continue
        try:
            commands.append(_parse_one(line, directory, now, timezone, meeting_minutes))
        except ValueError as exc:
            errors.append(Phrase("commands.refused", line=_shown(line), reason=exc.args[0]))
    body = "\n".join(lines[i:]).strip("\n")
    return CommandBlock(tuple(commands), tuple(errors), body)


def _shown(line: str) -> str:
    clean = "".join(c if c.isprintable() else "?" for c in line)
    return clean if len(clean) <= 80 else clean[:77] + "..."


def _parse_one(
    line: str, directory: Directory, now: datetime, timezone: str, minutes: int
) -> Command:
    word, _sp, arg = line[1:].strip().partition(" ")
    name = word.lower()
    arg = " ".join(arg.split())
    if name not in NAMES:
        raise ValueError(Phrase("commands.unknown", word=word))
    if name == "status":
        status = arg.lower().replace(" ", "_").replace("-", "_")
        if status not in STATUSES:
            raise ValueError(Phrase("commands.status", choices=", ".join(STATUSES)))
        return Command(name, line, status)
    if name == "priority":
        text = arg.upper().removeprefix("P")
        if text not in ("1", "2", "3", "4"):
            raise ValueError(Phrase("commands.priority"))
        return Command(name, line, int(text))
    if name == "assign":
        agent = directory.find(arg)
        if agent is None:
            raise ValueError(Phrase("commands.no_agent", name=arg) if arg else
                             Phrase("commands.assign_whom"))  # fmt: skip
        return Command(name, line, agent.email)
    if name == "take" and arg:
        raise ValueError(Phrase("commands.take_argument"))
    if name == "escalate":
        if not arg:
            return Command(name, line, None)
        tier = arg.lower().removeprefix("tier").strip().removeprefix("t")
        if tier not in ("1", "2", "3"):
            raise ValueError(Phrase("commands.tier"))
        return Command(name, line, int(tier))
    if name == "category":
        if not _CATEGORY.match(arg.lower()):
            raise ValueError(Phrase("commands.category"))
        return Command(name, line, arg.lower())
    if name == "type":
        if arg.lower() not in ("incident", "request"):
            raise ValueError(Phrase("commands.type"))
        return Command(name, line, arg.lower())
    if name == "meeting":
        return Command(name, line, _meeting(arg, now, timezone, minutes))
    if name in ("link", "helpful", "attach", "detach") or (name == "major" and arg):
        number = arg.removeprefix("#")
        if not number.isdigit() or len(number) > 12:
            raise ValueError(Phrase("commands.number", command=name))
        return Command(name, line, int(number))
    if name == "major":
        return Command(name, line, None)
    return Command(name, line, arg)  # take, resolve, close, reopen, note: free text


def _meeting(arg: str, now: datetime, timezone: str, minutes: int) -> Meeting:
    m = _WHEN.match(arg)
    if m is None:
        raise ValueError(Phrase("commands.meeting_format"))
    iy, im, id_, fd, fm, fy, h, mi, eh, em, link = m.groups()
    year, month, day = (iy, im, id_) if iy else (fy, fm, fd)
    zone = ZoneInfo(timezone)
    try:
        start = datetime(int(year), int(month), int(day), int(h), int(mi), tzinfo=zone)
        end = (start.replace(hour=int(eh), minute=int(em)) if eh
               else start + timedelta(minutes=minutes))  # fmt: skip
    except ValueError:
        raise ValueError(
            Phrase("commands.meeting_time", when=f"{arg.split()[0]} {h}:{mi}")
        ) from None
    if end <= start:
        raise ValueError(Phrase("commands.meeting_order"))
    if start.astimezone(UTC) < now:
        raise ValueError(Phrase("commands.meeting_past"))
    if start.astimezone(UTC) > now + timedelta(days=366):
        raise ValueError(Phrase("commands.meeting_far"))
    if link and not _LINK.match(link):
        raise ValueError(Phrase("commands.meeting_link"))
    return Meeting(start.astimezone(UTC), end.astimezone(UTC), link or "")


def parse_meeting(text: str, now: datetime, timezone: str = "UTC", minutes: int = 30) -> Meeting:
    """``YYYY-MM-DD HH:MM[-HH:MM] [link]`` as #meeting reads it; ValueError says what is wrong."""
    return _meeting(" ".join(text.split()), now, timezone, minutes)
