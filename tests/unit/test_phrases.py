"""Sentences maild makes, in every language it writes mail in (maild.mail.phrases)."""

from __future__ import annotations

import ast
import pickle
import re
import string
from datetime import date
from pathlib import Path

import pytest

from maild.mail.language import load_languages, spoken_languages
from maild.mail.phrases import Phrase, lookup, say

ROOT = Path(__file__).resolve().parents[2]


def phrase_keys_in_code() -> dict[str, set[str]]:
    """Every Phrase("key", arg=...) written in maild/, with its argument names."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "maild").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Phrase"
                and node.args
                and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
            ):
                arg = node.args[0]
                if isinstance(arg, ast.JoinedStr):  # f"syntax.{name}": every key of the table
                    prefix = "".join(v.value for v in arg.values if isinstance(v, ast.Constant))
                    table = lookup(prefix.rstrip("."), "en", load_languages())
                    for key in table:
                        found.setdefault(prefix + key, set())
                    continue
                found.setdefault(arg.value, set()).update(k.arg for k in node.keywords if k.arg)
    return found


def fields(text: object) -> set[str]:
    texts = text.values() if isinstance(text, dict) else [text]
    return {f for t in texts for _, f, _, _ in string.Formatter().parse(str(t)) if f}


def test_every_phrase_the_code_says_exists_in_every_language_with_its_arguments():
    keys = phrase_keys_in_code()
    assert len(keys) >= 60, "the scan found the phrases"
    languages = load_languages()
    missing = []
    for code in spoken_languages():
        for key, args in sorted(keys.items()):
            text = lookup(key, code, languages)
            if text is None:
                missing.append(f"{code}: {key}")
                continue
            unknown = fields(text) - args
            if unknown:
                missing.append(
                    f"{code}: {key} uses {sorted(unknown)}, the code gives {sorted(args)}"
                )
    assert not missing, "\n".join(missing)


def test_a_phrase_is_its_english_text_and_says_itself_in_finnish_and_swedish():
    note = Phrase("limits.attachment_too_large", filename="scan.pdf", size=31_000_000,
                  limit=20 * 1024 * 1024)  # fmt: skip
    assert note == "attachment scan.pdf (29.6 MB) is larger than 20 MB and was dropped"
    assert "scan.pdf" in note and note.startswith("attachment")  # a str for logs, events, CLI
    assert (
        note.said_in("fi")
        == "liite scan.pdf (29,6 Mt) on suurempi kuin 20 Mt, joten se jätettiin pois"
    )
    assert note.said_in("sv") == "bilagan scan.pdf (29,6 MB) är större än 20 MB och utelämnades"
    assert pickle.loads(pickle.dumps(note)).said_in("fi") == note.said_in("fi")  # parse processes
    one = Phrase("limits.attachments_dropped", count=1, limit=3)
    many = Phrase("limits.attachments_dropped", count=2, limit=3)
    assert (one, many.said_in("fi")) == (
        "1 attachment beyond the first 3 was dropped",
        "ensimmäisten 3 liitteen jälkeen 2 liitettä jätettiin pois",
    )


def test_a_phrase_inside_a_phrase_and_dates_are_said_in_the_same_language():
    error = Phrase("commands.refused", line="#priority P9", reason=Phrase("commands.priority"))
    assert error == "#priority P9: priority must be P1, P2, P3 or P4"
    assert error.said_in("fi") == "#priority P9: prioriteetin on oltava P1, P2, P3 tai P4"
    expired = Phrase("auth.expired", expires=date(2026, 11, 1))
    assert "1 November 2026" in expired and "1.11.2026" in expired.said_in("sv")


def test_a_missing_translation_falls_back_to_english_and_an_unknown_key_never_fails():
    assert Phrase("commands.priority").said_in("xx") == "priority must be P1, P2, P3 or P4"
    assert say("no.such.key", {"n": 1}, "fi") == "no.such.key n=1"


@pytest.mark.parametrize("code", ["fi", "sv"])
def test_translations_have_no_key_english_lacks(code):
    languages = load_languages()
    en = languages["en"].table("phrases")
    other = languages[code].table("phrases")
    extra = [f"{area}.{key}" for area, table in other.items() for key in table
             if key not in en.get(area, {})]  # fmt: skip
    assert not extra


def test_no_sentence_in_the_code_bypasses_the_phrases():
    """Sentences for people are phrases: no f-string reason, error or note is left."""
    patterns = [r"reasons\.append\(f?\"", r"errors\.append\(f?\"", r"notes\.append\(f?\"",
                r"raise ActionRefused\(f?\"", r"raise ValueError\(f\"(?!.*Phrase)"]  # fmt: skip
    offenders = []
    for rel in ("maild/pipeline/commands.py", "maild/pipeline/agentauth.py",
                "maild/pipeline/agentmail.py", "maild/mail/limits.py", "maild/mail/parse.py",
                "maild/desk/actions.py"):  # fmt: skip
        text = (ROOT / rel).read_text()
        offenders += [f"{rel}: {m.group(0)}" for p in patterns for m in re.finditer(p, text)]
    assert not offenders, offenders
