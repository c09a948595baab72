"""Triage (DESIGN §6): type, category, impact, urgency, priority, tier.

Rule-driven and pure. A `Rulebook` is compiled once (at start, and again on
SIGHUP) from the built-in rules and the admin's ``triage.rules_file``. The
built-in rules are ``maild/pipeline/rules/triage.toml`` (the rules, their
flags and the patterns every language shares) and one file per language,
``rules/<code>.toml`` (``en.toml``, ``fi.toml``, ``sv.toml``: that language's
words, and the questions and advice the acknowledgement gives in it), merged
into the rule of the same name: adding a language is adding its file.
`classify` scores a message against them:

- **type**: incident vs service request, the family with more hits;
- **category**: the best-scoring category (a security category wins
  whenever it scores); a category may force type, priority and tier. A
  rule's ``unless`` patterns count against it: "phishing" scores for
  security, "phishing awareness training" does not;
- **impact** (1 many users, 2 a team, 3 one user) and **urgency** (1 high,
  2 normal, 3 low; VIP senders are high) give the **priority** through
  ``triage.priority_matrix``;
- **tier**: 1, unless the category says otherwise (security: 3).

Matching stays linear: each rule family is one compiled alternation, a
pattern may not nest repetitions or use back-references, and only the
subject and the first ``triage.scan_chars`` characters of the body are read.
"""

from __future__ import annotations

import re
import tomllib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from maild.config.settings import Settings, TriageSettings
from maild.errors import ConfigError
from maild.mail.parse import ParsedMessage
from maild.store.states import TicketType

RULES_DIR = Path(__file__).with_name("rules")
BUILTIN_RULES = RULES_DIR / "triage.toml"
MAX_PATTERN_CHARS = 300
SUBJECT_WEIGHT = 2
ADDRESS_WEIGHT = 10
FAMILIES = ("type", "category", "impact", "urgency")


@dataclass(frozen=True)
class Triage:
    type: TicketType
    category: str
    impact: int
    urgency: int
    priority: int
    tier: int
    security: bool = False
    matched: tuple[str, ...] = ()  # why: "category:email=3", "urgency:1=2", ...


@dataclass(frozen=True)
class Rule:
    name: str  # type name, category name, or the level as a string
    patterns: tuple[str, ...] = ()
    addresses: frozenset[str] = frozenset()
    senders: frozenset[str] = frozenset()  # address or @domain
    security: bool = False
    type: TicketType | None = None
    priority: int | None = None
    tier: int | None = None
    questions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Patterns that count against the rule (routine or training context).
    unless: tuple[str, ...] = ()
    # Instructions the acknowledgement gives before the questions, per language.
    advice: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class Family:
    """The rules of one family, each pattern compiled with a fast prefilter.

    A pattern that starts with ``\\b`` defeats the regex engine's literal-prefix
    scan (50x slower here); ``\\b`` is zero-width, so the same pattern without
    it matches a superset and serves as a prefilter: the exact pattern runs
    only where the prefilter found something.
    """

    def __init__(self, name: str, rules: Iterable[Rule]) -> None:
        self.name = name
        self.rules = tuple(rules)
        self._patterns = [
            (r_index, _anchors(p), re.compile(_without_boundaries(p)), re.compile(p), sign)
            for r_index, rule in enumerate(self.rules)
            for sign, patterns in ((1, rule.patterns), (-1, rule.unless))
            for p in patterns
        ]
        self._all_anchors = tuple({a for _, anchors, _, _, _ in self._patterns for a in anchors})
        # Only patterns one of whose anchors occurs in a text can match it: index
        # them by anchor, so a message looks at a handful of patterns, not all.
        self._by_anchor: dict[str, list[int]] = {}
        self._unanchored: list[int] = []
        for index, (_, anchors, _, _, _) in enumerate(self._patterns):
            if not anchors:
                self._unanchored.append(index)
            for a in anchors:
                self._by_anchor.setdefault(a, []).append(index)

    def scores(self, subject: str, body: str, recipient: str, sender: str) -> list[int]:
        """Points per rule: 2 per pattern found in the subject, else 1 if in the body;
        an ``unless`` pattern found takes as many away.

        `subject` and `body` must be lower case (see `classify`).
        """
        out = [0] * len(self.rules)
        # Each distinct anchor is looked for once per text (a substring test).
        in_subject = {a for a in self._all_anchors if a in subject}
        in_body = {a for a in self._all_anchors if a in body}
        candidates = set(self._unanchored)
        for a in in_subject | in_body:
            candidates.update(self._by_anchor[a])
        for index in sorted(candidates):
            r_index, anchors, fast, exact, sign = self._patterns[index]
            if subject and _found(anchors, in_subject, fast, exact, subject):
                out[r_index] += sign * SUBJECT_WEIGHT
            elif body and _found(anchors, in_body, fast, exact, body):
                out[r_index] += sign
        domain = "@" + sender.rpartition("@")[2]
        for r_index, rule in enumerate(self.rules):
            if recipient and recipient in rule.addresses:
                out[r_index] += ADDRESS_WEIGHT
            if sender and (sender in rule.senders or domain in rule.senders):
                out[r_index] += ADDRESS_WEIGHT
        return out


def _found(
    anchors: tuple[str, ...],
    present: set[str] | None,
    fast: re.Pattern[str],
    exact: re.Pattern[str],
    text: str,
) -> bool:
    """Does `exact` occur in `text`? Three steps, cheapest first.

    1. One of its `anchors` (literal strings every match contains) must occur
       in `text` (`present`: the anchors found there; None: test here): a
       plain substring test, far cheaper than any regex scan.
    2. Its prefilter `fast` (the pattern without ``\\b``) must match somewhere.
    3. `exact` is tried only where `fast` matched: dropping ``\\b`` does not move
       where a match starts, and `match` at a position still sees the character
       before it, so ``\\b`` is judged correctly.
    """
    if anchors:
        if present is None:
            present = {a for a in anchors if a in text}
        if present.isdisjoint(anchors):
            return False
    pos = 0
    while (m := fast.search(text, pos)) is not None:
        if exact.match(text, m.start()):
            return True
        pos = m.start() + 1
    return False


def _anchors(pattern: str) -> tuple[str, ...]:
    """Literal strings one of which occurs in every match of `pattern` (() if unknown)."""
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser as sre  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - other Python versions
        return ()
    repeats = {c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)}

    def seq(items: list[Any]) -> list[str] | None:
        i = 0
        while i < len(items) and items[i][0] == c.AT:  # zero-width: \b, ^, $
            i += 1
        if i == len(items):
            return None
        op, av = items[i]
        if op == c.LITERAL:
            text = ""
            while i < len(items) and items[i][0] == c.LITERAL:
                text += chr(items[i][1])
                i += 1
            return [text]
        if op == c.BRANCH:
            out: list[str] = []
            for branch in av[1]:
                found = seq(list(branch))
                if found is None:
                    return None
                out += found
            return out
        if op == c.SUBPATTERN:
            return seq(list(av[-1]) + items[i + 1 :])
        if op in repeats:
            lo, _hi, sub = av
            if lo >= 1:
                return seq(list(sub))
            optional, rest = seq(list(sub)), seq(items[i + 1 :])
            return None if optional is None or rest is None else optional + rest
        return None

    found = seq(list(sre.parse(pattern)))
    return tuple(dict.fromkeys(found)) if found and all(found) else ()


def _without_boundaries(pattern: str) -> str:
    r"""`pattern` with every ``\b`` outside character classes removed."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            if pattern[i + 1] == "b" and not in_class:
                i += 2
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
            # A "]" first in a class ("[]x]", "[^]x]") is a literal, not its end.
            lead = 2 if pattern[i + 1 : i + 2] == "^" else 1
            if pattern[i + lead : i + lead + 1] == "]":
                out.append(pattern[i : i + lead + 1])
                i += lead + 1
                continue
        elif ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Rulebook:
    settings: TriageSettings
    types: Family
    categories: Family
    impact: Family
    urgency: Family
    # Names this compilation: a classification made elsewhere with these rules
    # (in a parse process, `maild.service.parsepool`) carries it, and is used only while
    # these are still the rules in force.
    token: str = field(default_factory=lambda: uuid.uuid4().hex, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Rulebook:
        """Compile the rules; a bad rule is a `ConfigError` naming triage.rules_file."""
        return compile_rules(settings.triage)

    def category(self, name: str) -> Rule | None:
        for rule in self.categories.rules:
            if rule.name == name:
                return rule
        return None

    @property
    def category_names(self) -> tuple[str, ...]:
        names = [r.name for r in self.categories.rules]
        if self.settings.default_category not in names:
            names.append(self.settings.default_category)
        return tuple(names)

    def questions(self, category: str, language: str) -> tuple[str, ...]:
        rule = self.category(category)
        if rule is None:
            return ()
        return rule.questions.get(language) or rule.questions.get("en") or ()

    def advice(self, category: str, language: str) -> tuple[str, ...]:
        """What the requester should do at once (before any question), in `language`."""
        rule = self.category(category)
        if rule is None:
            return ()
        return rule.advice.get(language) or rule.advice.get("en") or ()

    def is_security(self, category: str) -> bool:
        rule = self.category(category)
        return bool(rule and rule.security)


def classify(
    msg: ParsedMessage,
    recipient: str | None,
    settings: Settings,
    rules: Rulebook | None = None,
) -> Triage:
    """The message's triage: from its parse process if made there with `rules`."""
    rules = rules or Rulebook.from_settings(settings)
    pre = msg.pre_triage
    if pre is not None and pre[0] == rules.token and pre[1] == (recipient or ""):
        assert isinstance(pre[2], Triage)
        return pre[2]
    return classify_with(rules, msg, recipient)


def classify_with(rules: Rulebook, msg: ParsedMessage, recipient: str | None) -> Triage:
    """Score `msg` against `rules`: type, category, impact, urgency, priority, tier."""
    ts = rules.settings
    subject = msg.subject[:1000].lower()
    body = msg.text[: ts.scan_chars].lower()
    recipient = (recipient or "").lower()
    sender = msg.sender.email if msg.sender else ""
    matched: list[str] = []

    def scored(family: Family) -> list[tuple[Rule, int]]:
        pairs = list(
            zip(family.rules, family.scores(subject, body, recipient, sender), strict=True)
        )
        matched.extend(f"{family.name}:{r.name}={s}" for r, s in pairs if s)
        return pairs

    # category
    category_scores = scored(rules.categories)
    hits = [(r, s) for r, s in category_scores if s > 0]
    security_hits = [(r, s) for r, s in hits if r.security]
    best: Rule | None = None
    if security_hits or hits:
        pool = security_hits or hits
        top = max(s for _, s in pool)
        best = next(r for r, s in pool if s == top)
    category = best.name if best else ts.default_category

    # type
    type_scores = {TicketType(r.name): s for r, s in scored(rules.types)}
    incident = type_scores.get(TicketType.INCIDENT, 0)
    request = type_scores.get(TicketType.REQUEST, 0)
    if best is not None and best.type is not None:
        ticket_type = best.type
    elif incident > request:
        ticket_type = TicketType.INCIDENT
    elif request > incident:
        ticket_type = TicketType.REQUEST
    else:
        ticket_type = TicketType(ts.default_type)

    # impact: the widest level that scored
    impact_levels = [int(r.name) for r, s in scored(rules.impact) if s > 0]
    impact = min(impact_levels, default=ts.default_impact)

    # urgency: a "low" hit ("not urgent") wins over the "high" keyword inside it
    urgency_levels = {int(r.name) for r, s in scored(rules.urgency) if s > 0}
    if 3 in urgency_levels:
        urgency = 3
    elif urgency_levels:
        urgency = min(urgency_levels)
    else:
        urgency = ts.default_urgency

    priority = ts.priority(impact, urgency)
    if best is not None and best.priority is not None:
        priority = best.priority
    tier = best.tier if best is not None and best.tier is not None else 1
    return Triage(
        type=ticket_type,
        category=category,
        impact=impact,
        urgency=urgency,
        priority=priority,
        tier=tier,
        security=bool(best and best.security),
        matched=tuple(matched),
    )


# --- compiling --------------------------------------------------------------------


def language_rule_files() -> list[Path]:
    """The built-in rules of each language: ``rules/<code>.toml`` beside ``triage.toml``."""
    return sorted(p for p in RULES_DIR.glob("*.toml") if p != BUILTIN_RULES)


def _read_families(path: Path, key: str) -> dict[str, list[Rule]]:
    table = _load(path, key)
    unknown = set(table) - set(FAMILIES)
    if unknown:
        raise ConfigError(key, f"{path}: unknown rule family {sorted(unknown)[0]!r}")
    families: dict[str, list[Rule]] = {f: [] for f in FAMILIES}
    for family in FAMILIES:
        entries = table.get(family, [])
        if not isinstance(entries, list):
            raise ConfigError(key, f"{path}: [{family}] must be an array of tables ([[{family}]])")
        for i, entry in enumerate(entries):
            families[family].append(_rule(family, entry, f"{path}: {family}[{i}]", key))
    return families


def _merged(base: Rule, more: Rule, where: str, key: str) -> Rule:
    """A language's words for a rule added to the rule (its flags stay the base's)."""
    if more.security or (more.type, more.priority, more.tier) != (None, None, None):
        raise ConfigError(key, f"{where}: a language's rules add words; set security, type, "
                          "priority and tier in triage.toml")  # fmt: skip
    return replace(
        base,
        patterns=base.patterns + more.patterns,
        unless=base.unless + more.unless,
        addresses=base.addresses | more.addresses,
        senders=base.senders | more.senders,
        questions={**base.questions, **more.questions},
        advice={**base.advice, **more.advice},
    )


@lru_cache(maxsize=4)
def compile_rules(ts: TriageSettings) -> Rulebook:
    """Compile built-in and admin rules (cached per settings; see `reload_rules`)."""
    families: dict[str, list[Rule]] = {f: [] for f in FAMILIES}
    key = "triage.rules_file" if ts.rules_file is not None else "triage.builtin_rules"
    if ts.rules_file is not None:
        for family, rules in _read_families(ts.rules_file, "triage.rules_file").items():
            families[family].extend(rules)
    if ts.builtin_rules:
        builtin = _read_families(BUILTIN_RULES, "triage.builtin_rules")
        for path in language_rule_files():
            for family, rules in _read_families(path, "triage.builtin_rules").items():
                named = {r.name: i for i, r in enumerate(builtin[family])}
                for rule in rules:
                    if rule.name in named:
                        i = named[rule.name]
                        where = f"{path}: {family} {rule.name!r}"
                        builtin[family][i] = _merged(builtin[family][i], rule, where,
                                                     "triage.builtin_rules")  # fmt: skip
                    else:
                        builtin[family].append(rule)
        for family, rules in builtin.items():
            families[family].extend(rules)
    # An admin category replaces the built-in category of the same name.
    seen: set[str] = set()
    categories = []
    for rule in families["category"]:
        if rule.name not in seen:
            seen.add(rule.name)
            categories.append(rule)
    vip = frozenset(s.lower() for s in ts.vip_senders)
    urgency = families["urgency"]
    if vip:
        urgency = [Rule(name="1", senders=vip), *urgency]
    try:
        return Rulebook(
            settings=ts,
            types=Family("type", families["type"]),
            categories=Family("category", categories),
            impact=Family("impact", families["impact"]),
            urgency=Family("urgency", urgency),
        )
    except re.error as exc:  # pragma: no cover - each pattern was compiled alone first
        raise ConfigError(key, f"a rule does not compile: {exc}") from None


def reload_rules(settings: Settings) -> Rulebook:
    """Read the rule files again (SIGHUP)."""
    compile_rules.cache_clear()
    return compile_rules(settings.triage)


def _load(path: Path, key: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(key, f"{path} is not valid TOML: {exc}") from None


_FAMILY_KEYS = {
    "type": {"name", "patterns", "unless", "addresses", "senders"},
    "category": {
        "name",
        "patterns",
        "addresses",
        "senders",
        "security",
        "type",
        "priority",
        "tier",
        "questions",
        "unless",
        "advice",
    },  # fmt: skip
    "impact": {"level", "patterns", "unless", "addresses", "senders"},
    "urgency": {"level", "patterns", "unless", "addresses", "senders"},
}
_LEVELS = {"impact": (1, 2), "urgency": (1, 3)}


def _rule(family: str, entry: Any, where: str, key: str) -> Rule:
    if not isinstance(entry, dict):
        raise ConfigError(key, f"{where}: must be a table")
    extra = set(entry) - _FAMILY_KEYS[family]
    if extra:
        raise ConfigError(key, f"{where}: unknown field {sorted(extra)[0]!r}")
    if family in _LEVELS:
        level = entry.get("level")
        if level not in _LEVELS[family]:
            allowed = " or ".join(map(str, _LEVELS[family]))
            raise ConfigError(key, f"{where}: level must be {allowed}, got {level!r}")
        name = str(level)
    else:
        name = entry.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", name):
            raise ConfigError(key, f"{where}: name must be a short lower-case word, got {name!r}")
        if family == "type" and name not in ("incident", "request"):
            raise ConfigError(key, f"{where}: type name must be 'incident' or 'request'")
    patterns = tuple(_strings(entry.get("patterns", []), where, "patterns", key))
    unless = tuple(_strings(entry.get("unless", []), where, "unless", key))
    for pattern in (*patterns, *unless):
        _check_pattern(pattern, where, key)
    forced_type = entry.get("type")
    if forced_type is not None and forced_type not in ("incident", "request"):
        raise ConfigError(key, f"{where}: type must be 'incident' or 'request'")
    priority, tier = entry.get("priority"), entry.get("tier")
    if priority is not None and priority not in (1, 2, 3, 4):
        raise ConfigError(key, f"{where}: priority must be 1..4")
    if tier is not None and tier not in (1, 2, 3):
        raise ConfigError(key, f"{where}: tier must be 1..3")
    questions = entry.get("questions", {})
    if not isinstance(questions, dict):
        raise ConfigError(key, f"{where}: questions must be a table (questions.en = [...])")
    advice = entry.get("advice", {})
    if not isinstance(advice, dict):
        raise ConfigError(key, f"{where}: advice must be a table (advice.en = [...])")
    return Rule(
        name=name,
        patterns=patterns,
        addresses=frozenset(
            a.lower() for a in _strings(entry.get("addresses", []), where, "addresses", key)
        ),
        senders=frozenset(
            a.lower() for a in _strings(entry.get("senders", []), where, "senders", key)
        ),
        security=bool(entry.get("security", False)),
        type=TicketType(forced_type) if forced_type else None,
        priority=priority,
        tier=tier,
        questions={
            lang: tuple(_strings(q, where, f"questions.{lang}", key))
            for lang, q in questions.items()
        },  # fmt: skip
        unless=unless,
        advice={
            lang: tuple(_strings(a, where, f"advice.{lang}", key)) for lang, a in advice.items()
        },
    )


def _strings(value: Any, where: str, name: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, f"{where}: {name} must be a list of strings")
    return value


def _check_pattern(pattern: str, where: str, key: str) -> None:
    """Refuse patterns whose matching time could blow up (or that break the alternation)."""
    if not pattern or len(pattern) > MAX_PATTERN_CHARS:
        raise ConfigError(key, f"{where}: pattern must be 1..{MAX_PATTERN_CHARS} characters")
    try:
        compiled = re.compile(pattern)
        re.compile(_without_boundaries(pattern))
    except re.error as exc:
        raise ConfigError(key, f"{where}: bad pattern {pattern!r}: {exc}") from None
    if compiled.groupindex:
        raise ConfigError(key, f"{where}: pattern {pattern!r} may not name groups")
    if any(ch.isupper() for ch in re.sub(r"\\.", "", pattern)):
        raise ConfigError(key, f"{where}: pattern {pattern!r}: write patterns in lower case "
                               "(they are matched against lower-cased text)")  # fmt: skip
    problem = _unbounded_nesting(pattern)
    if problem:
        raise ConfigError(key, f"{where}: pattern {pattern!r} {problem}")


def _unbounded_nesting(pattern: str) -> str | None:
    """A nested repetition or a back-reference, which may match in exponential time."""
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser as sre  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - other Python versions
        return None
    repeats = {c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)}
    atomic = getattr(c, "ATOMIC_GROUP", None)

    def walk(items: Any, depth: int) -> str | None:
        for op, av in items:
            if op in repeats:
                _lo, hi, sub = av
                inner = depth + (1 if hi > 1 else 0)
                if inner > 1:
                    return "nests repetitions, e.g. (a+)+"
                if found := walk(sub, inner):
                    return found
            elif op in (c.GROUPREF, c.GROUPREF_EXISTS):
                return "uses a back-reference"
            elif op == c.SUBPATTERN:
                if found := walk(av[-1], depth):
                    return found
            elif op == c.BRANCH:
                for branch in av[1]:
                    if found := walk(branch, depth):
                        return found
            elif op in (c.ASSERT, c.ASSERT_NOT):
                if found := walk(av[1], depth):
                    return found
            elif op == atomic and (found := walk(av, depth)):
                return found
        return None

    return walk(sre.parse(pattern), 0)
