"""The agent directory: who the agents are, from ``[[agents]]`` in the config.

`Directory` is the frozen, in-memory view the pure stages use: who is in
which tier, who is a security contact, is this From one of our agents or a
look-alike of one. `maild.desk.agents` builds it from the ``agent`` table after
syncing that with the configuration; the `Applier` holds the current one.
"""

from __future__ import annotations

import contextlib
import unicodedata
from dataclasses import dataclass, field
from email.header import decode_header, make_header

from maild.mail.parse import Address

__all__ = ["EMPTY", "GROUP_DUTY_MANAGER", "GROUP_SECURITY", "AgentEntry", "Directory",
           "skeleton"]  # fmt: skip

# Directory groups that act like the [tiers] lists of the same name.
GROUP_SECURITY = "security"
GROUP_DUTY_MANAGER = "duty_manager"


@dataclass(frozen=True)
class AgentEntry:
    id: int
    email: str
    name: str
    tier: int
    groups: tuple[str, ...]
    language: str  # the language of their mails ("en"/"fi")
    active: bool = True

    @property
    def address(self) -> Address:
        return Address(name=self.name, email=self.email)

    @property
    def label(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True)
class Directory:
    """Every agent maild knows; lookups see the active ones only."""

    agents: tuple[AgentEntry, ...] = ()
    _by_email: dict[str, AgentEntry] = field(default_factory=dict, init=False, repr=False,
                                             compare=False)  # fmt: skip
    _by_id: dict[int, AgentEntry] = field(default_factory=dict, init=False, repr=False,
                                          compare=False)  # fmt: skip
    _skeletons: dict[str, AgentEntry] = field(default_factory=dict, init=False, repr=False,
                                              compare=False)  # fmt: skip

    def __post_init__(self) -> None:
        for agent in self.agents:
            if agent.active:
                self._by_email[agent.email] = agent
                self._by_id[agent.id] = agent
                self._skeletons.setdefault(skeleton(agent.email), agent)

    @property
    def active(self) -> tuple[AgentEntry, ...]:
        return tuple(a for a in self.agents if a.active)

    @property
    def emails(self) -> frozenset[str]:
        return frozenset(self._by_email)

    def by_email(self, email: str) -> AgentEntry | None:
        return self._by_email.get(email)

    def by_id(self, agent_id: int | None) -> AgentEntry | None:
        return None if agent_id is None else self._by_id.get(agent_id)

    def for_tier(self, tier: int) -> tuple[AgentEntry, ...]:
        return tuple(a for a in self.active if a.tier == tier)

    def in_group(self, group: str) -> tuple[AgentEntry, ...]:
        return tuple(a for a in self.active if group in a.groups)

    def lookalike(self, email: str) -> AgentEntry | None:
        """The agent whose address `email` imitates (same skeleton, other spelling)."""
        if not email or email in self._by_email:
            return None
        return self._skeletons.get(skeleton(email))

    def find(self, query: str) -> AgentEntry | None:
        """An agent by address, or by a name or local part that only one agent has."""
        q = query.strip().lower()
        if not q:
            return None
        if (exact := self._by_email.get(q)) is not None:
            return exact
        matches = [a for a in self.active
                   if q in (a.name.lower(), a.email.partition("@")[0])]  # fmt: skip
        return matches[0] if len(matches) == 1 else None


EMPTY = Directory()


# --- look-alike addresses -------------------------------------------------------------

# Characters that render like ASCII letters (Cyrillic, Greek, Latin variants)
# and ASCII that is easily misread: one "skeleton" per visual shape, in the
# spirit of Unicode TR 39 confusables, for the letters that matter in addresses.
_CONFUSABLES = str.maketrans({
    "а": "a", "ɑ": "a", "α": "a", "в": "b", "ь": "b", "с": "c", "ϲ": "c", "ԁ": "d",
    "е": "e", "ё": "e", "ε": "e", "һ": "h", "і": "l", "ї": "l", "ι": "l", "ӏ": "l",
    "ј": "j", "к": "k", "κ": "k", "м": "m", "н": "h", "п": "n", "η": "n", "о": "o",
    "ο": "o", "σ": "o", "р": "p", "ρ": "p", "ԛ": "q", "г": "r", "ѕ": "s", "т": "t",
    "τ": "t", "υ": "u", "ս": "u", "ν": "v", "ѵ": "v", "ԝ": "w", "ω": "w", "х": "x",
    "χ": "x", "у": "y", "γ": "y", "ү": "y", "ᴢ": "z", "0": "o", "1": "l", "i": "l",
    "|": "l", "ı": "l",
})  # fmt: skip


def _unidna(domain: str) -> str:
    labels = []
    for label in domain.split("."):
        if label.startswith("xn--"):
            with contextlib.suppress(UnicodeError):
                label = label.encode("ascii").decode("idna")
        labels.append(label)
    return ".".join(labels)


def skeleton(address: str) -> str:
    """What an address looks like to a reader: `аnna@exаmple.com` (Cyrillic а),
    `anna@xn--exmple-4nf.com` and `anna@examp1e.com` share the skeleton of
    `anna@example.com`."""
    if "=?" in address:  # an encoded-word where no encoding belongs
        with contextlib.suppress(Exception):
            address = str(make_header(decode_header(address)))
    local, _at, domain = address.strip().rpartition("@")
    text = unicodedata.normalize("NFKD", f"{local}@{_unidna(domain)}").casefold()
    text = "".join(c for c in text if unicodedata.category(c) not in ("Mn", "Me", "Cf", "Zs"))
    text = text.translate(_CONFUSABLES)
    return text.replace("rn", "m").replace("vv", "w")
