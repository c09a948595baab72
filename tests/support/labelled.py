"""The labelled triage set (tests/fixtures/triage/labelled.toml): halves, figures, tables.

Used by ``bench/triage.py`` (which prints the figures) and by
``tests/unit/test_triage.py`` (which holds the rules to them). Cases at even
positions are the tuning half, odd positions the held-out half.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maild.config.settings import Settings
from maild.mail.parse import parse
from maild.pipeline.triage import Rulebook, classify
from tests.support.desk import make_message

LABELLED = Path(__file__).resolve().parents[1] / "fixtures" / "triage" / "labelled.toml"


def cases(half: str = "all") -> list[dict[str, Any]]:
    """ "tune" (even positions), "held_out" (odd) or "all"."""
    every = tomllib.loads(LABELLED.read_text())["case"]
    if half == "all":
        return every
    parity = {"tune": 0, "held_out": 1}[half]
    return [c for i, c in enumerate(every) if i % 2 == parity]


@dataclass
class Figures:
    n: int
    security: Counter[tuple[bool, bool]]  # (expected, got) -> count
    types: Counter[tuple[str, str]]
    misses: list[str]

    @property
    def precision(self) -> float:
        tp, fp = self.security[(True, True)], self.security[(False, True)]
        return tp / (tp + fp) if tp + fp else 1.0

    @property
    def recall(self) -> float:
        tp, fn = self.security[(True, True)], self.security[(True, False)]
        return tp / (tp + fn) if tp + fn else 1.0

    @property
    def type_accuracy(self) -> float:
        right = sum(v for (e, g), v in self.types.items() if e == g)
        return right / self.n if self.n else 1.0

    def tables(self) -> str:
        s, t = self.security, self.types
        return "\n".join([
            "security           got security  got not",
            f"  is security      {s[(True, True)]:>12}  {s[(True, False)]:>7}",
            f"  is not           {s[(False, True)]:>12}  {s[(False, False)]:>7}",
            "type               got incident  got request",
            f"  is incident      {t[('incident', 'incident')]:>12}  {t[('incident', 'request')]:>11}",
            f"  is request       {t[('request', 'incident')]:>12}  {t[('request', 'request')]:>11}",
        ])  # fmt: skip

    def summary(self) -> str:
        return (f"{self.n} cases: security precision {self.precision:.1%}, "
                f"recall {self.recall:.1%}; type accuracy {self.type_accuracy:.1%}")  # fmt: skip


def evaluate(selected: list[dict[str, Any]], settings: Settings, rules: Rulebook) -> Figures:
    security: Counter[tuple[bool, bool]] = Counter()
    types: Counter[tuple[str, str]] = Counter()
    misses = []
    for c in selected:
        msg = parse(make_message(subject=c["subject"], body=c["body"]))
        t = classify(msg, "help@example.com", settings, rules)
        security[(c["security"], t.security)] += 1
        types[(c["type"], str(t.type))] += 1
        if t.security != c["security"] or str(t.type) != c["type"]:
            misses.append(f"  [{c['lang']}] {c['subject']!r}: expected "
                          f"{'security' if c['security'] else 'not security'}/{c['type']}, got "
                          f"{'security' if t.security else 'not security'}/{t.type} "
                          f"({', '.join(m for m in t.matched if m.startswith(('category:security', 'type:')))})")  # fmt: skip
    return Figures(len(selected), security, types, misses)
