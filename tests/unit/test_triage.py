"""Triage: rule-driven type, category and priority over realistic en/fi mail."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from maild.config.settings import settings_from_mapping
from maild.errors import ConfigError
from maild.mail.language import choose, detect
from maild.mail.parse import parse
from maild.pipeline.triage import Rulebook, classify, compile_rules
from tests.support.desk import make_message
from tests.support.labelled import cases as labelled_cases
from tests.support.labelled import evaluate as evaluate_labelled

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "triage"
SETS = {name: tomllib.loads((CORPUS / f"{name}.toml").read_text())["message"]
        for name in ("messages", "second_set")}  # fmt: skip
MESSAGES = SETS["messages"] + SETS["second_set"]
DOCUMENTED = (70, 71)  # docs/admin.md: type, category and priority all right for 70 of 71
SETTINGS = settings_from_mapping({})


def triage_of(subject: str, body: str, *, settings=SETTINGS, sender="bob@example.org",
              recipient="help@example.com"):  # fmt: skip
    msg = parse(make_message(subject=subject, body=body, sender=sender))
    return classify(msg, recipient, settings, Rulebook.from_settings(settings))


def test_classification_accuracy_on_realistic_english_and_finnish_mail(capsys):
    assert len(SETS["messages"]) >= 40
    lines, misses = [], []
    for name, messages in SETS.items():
        fields = {"type": 0, "category": 0, "priority": 0}
        exact = 0
        for m in messages:
            t = triage_of(m["subject"], m["body"])
            got = [str(t.type), t.category, t.priority]
            for i, field in enumerate(fields):
                fields[field] += got[i] == m["expect"][i]
            exact += got == m["expect"]
            if got != m["expect"]:
                misses.append(f"  {name}: {m['subject']!r}: expected {m['expect']}, got {got}")
        finnish = sum(1 for m in messages if detect(m["subject"] + "\n" + m["body"]) == "fi")
        lines.append(f"  {name}.toml: {len(messages)} messages ({finnish} Finnish): all three right "
                     f"{exact}/{len(messages)} = {exact / len(messages):.1%}; "
                     + ", ".join(f"{k} {v / len(messages):.1%}" for k, v in fields.items()))  # fmt: skip
    total = len(MESSAGES) - len(misses)
    with capsys.disabled():
        print(
            f"\ntriage accuracy: {total}/{len(MESSAGES)} = {total / len(MESSAGES):.1%} exactly right"
        )
        print("\n".join(lines + misses))
    # The figure docs/admin.md ("Triage") states: all three right for 70 of the
    # 71 messages. One more miss is a regression; a new message in the corpus
    # means the documented figure (and this floor) must be restated.
    assert len(MESSAGES) == DOCUMENTED[1], "corpus changed: restate the figure in docs/admin.md"
    assert total >= DOCUMENTED[0], "\n".join(misses)
    first = SETS["messages"]
    assert sum(1 for m in first if detect(m["subject"] + "\n" + m["body"]) == "fi") >= 20


def test_security_wins_and_forces_p1_tier_3():
    t = triage_of("Outlook question", "I clicked a link in an email and typed my password. "
                  "Is my account compromised? No rush.")  # fmt: skip
    assert (t.category, t.security, t.priority, t.tier, str(t.type)) == (
        "security",
        True,
        1,
        3,
        "incident",
    )
    fi = triage_of("Kysymys", "Koneellani on kiristyshaittaohjelma, tiedostot on salattu.")
    assert fi.security and fi.priority == 1


def test_impact_and_urgency_give_the_priority_through_the_matrix():
    one_user = triage_of("Printer not working", "My printer shows an error.")
    assert (one_user.impact, one_user.urgency, one_user.priority) == (3, 2, 3)
    urgent = triage_of("Printer not working", "My printer shows an error. Urgent!")
    assert (urgent.urgency, urgent.priority) == (1, 2)
    everyone = triage_of("Printer not working", "Nobody in the office can print. Urgent!")
    assert (everyone.impact, everyone.priority) == (1, 1)
    negated = triage_of("Tulostin ei toimi", "Tulostin ei toimi. Ei ole kiireellinen.")
    assert (negated.urgency, negated.priority) == (3, 4)
    # An admin can change the matrix: one user with normal urgency becomes P4.
    settings = settings_from_mapping({"triage": {"priority_matrix": ["1 1 2", "2 2 3", "3 4 4"]}})
    assert triage_of("Printer not working", "My printer shows an error.",
                     settings=settings).priority == 4  # fmt: skip


def test_vip_senders_are_urgent():
    settings = settings_from_mapping(
        {"triage": {"vip_senders": ["@board.example.com", "ceo@example.com"]}}
    )
    for sender in ("ceo@example.com", "chair@board.example.com"):
        t = triage_of("Printer not working", "My printer shows an error.", settings=settings,
                      sender=sender)  # fmt: skip
        assert (t.urgency, t.priority) == (1, 2), sender
    assert triage_of("Printer not working", "My printer shows an error.", settings=settings,
                     sender="bob@example.org").priority == 3  # fmt: skip


def test_admin_rules_file_adds_categories_addresses_and_questions(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text("""
[[category]]
name = "facilities"
addresses = ["facilities@example.com"]
patterns = ["\\\\bcoffee machine", "kahviautomaat"]
questions.en = ["Which floor is the machine on?"]
questions.fi = ["Missä kerroksessa laite on?"]

[[type]]
name = "request"
patterns = ["\\\\bbadge\\\\b"]
""")
    settings = settings_from_mapping({"triage": {"rules_file": str(rules)}})
    book = Rulebook.from_settings(settings)
    assert "facilities" in book.category_names and "security" in book.category_names
    by_text = triage_of("Coffee machine broken", "It leaks.", settings=settings)
    assert by_text.category == "facilities"
    by_address = triage_of("Hello", "Something about the kitchen.", settings=settings,
                           recipient="facilities@example.com")  # fmt: skip
    assert by_address.category == "facilities"
    assert book.questions("facilities", "fi") == ("Missä kerroksessa laite on?",)
    assert book.questions("facilities", "sv") == ("Which floor is the machine on?",)
    assert str(triage_of("My badge", "I need a new badge.", settings=settings).type) == "request"
    alone = settings_from_mapping({"triage": {"rules_file": str(rules), "builtin_rules": False}})
    assert triage_of("Printer not working", "error", settings=alone).category == "other"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('[[category]]\nname = "x"\npatterns = ["(a+)+b"]\n', "nests repetitions"),
        ('[[category]]\nname = "x"\npatterns = ["(a)\\\\1"]\n', "back-reference"),
        ('[[category]]\nname = "x"\npatterns = ["[unclosed"]\n', "bad pattern"),
        ('[[category]]\nname = "x"\npatterns = ["VPN"]\n', "lower case"),
        ('[[category]]\nname = "x"\npatterns = ["(?P<n>a)"]\n', "may not name groups"),
        ('[[category]]\nname = "x"\ncolour = "red"\n', "unknown field"),
        ('[[category]]\nname = "Bad Name"\n', "name must be"),
        ('[[impact]]\nlevel = 5\npatterns = ["x"]\n', "level must be"),
        ('[[type]]\nname = "problem"\n', "'incident' or 'request'"),
        ('[[category]]\nname = "x"\npriority = 7\n', "priority must be"),
        ("[frobnicate]\n", "unknown rule family"),
        ("not toml = = =", "not valid TOML"),
    ],
)
def test_bad_rules_are_a_config_error_naming_the_key(tmp_path, body, needle):
    rules = tmp_path / "rules.toml"
    rules.write_text(body)
    compile_rules.cache_clear()
    with pytest.raises(ConfigError) as info:
        Rulebook.from_settings(settings_from_mapping({"triage": {"rules_file": str(rules)}}))
    assert info.value.key == "triage.rules_file"
    assert needle in str(info.value)


def test_rule_matching_stays_fast_on_hostile_input():
    # 6000 characters of near-misses for the word-boundary patterns.
    body = ("aaaaaaaaaa" * 10 + " ") * 60
    import time

    book = Rulebook.from_settings(SETTINGS)
    msg = parse(make_message(subject="x" * 900, body=body))
    start = time.perf_counter()
    classify(msg, "help@example.com", SETTINGS, book)
    # Linear matching takes milliseconds (bench/triage.py measures it); a
    # catastrophic pattern would take hours. The bound only tells them apart.
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hei, tulostin ei toimi ja näyttää virheen. Terveisin Matti", "fi"),
        ("Hello, the printer is not working and shows an error. Thanks, Bob", "en"),
        ("Outlook kaatuu aina kun avaan liitteen", "fi"),
        ("E42", None),
    ],
)
def test_language_detection(text, expected):
    assert detect(text) == expected


def test_language_choice_order():
    text = "Hei, tulostin ei toimi ja näyttää virheen."
    assert choose("en", "fi", text, "en") == ("en", "contact")
    assert choose(None, "en", text, "fi") == ("en", "header")
    assert choose(None, None, text, "en") == ("fi", "detected")
    assert choose(None, "de", "E42", "fi") == ("fi", "default")


def test_fast_matching_finds_exactly_what_a_plain_search_finds():
    import random
    import re

    from maild.pipeline.triage import _found

    rng = random.Random(4)
    texts = [(m["subject"] + "\n" + m["body"]).lower() for m in MESSAGES + labelled_cases()]
    words = " ".join(texts).split()
    texts += [" ".join(rng.choices(words, k=60)) for _ in range(40)]  # shuffled phrases
    texts += ["tietokone", "xkone kone", "app-le", "a.locked", "it's urgent!", "can't-work"]
    book = Rulebook.from_settings(SETTINGS)
    checked = 0
    for family in (book.types, book.categories, book.impact, book.urgency):
        for _rule, anchors, fast, exact, _sign in family._patterns:
            plain = re.compile(exact.pattern)
            for t in texts:
                assert _found(anchors, None, fast, exact, t) == bool(plain.search(t)), (
                    exact.pattern, t)  # fmt: skip
                checked += 1
    assert checked > 10000


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"\bkone\b", "kone"),
        (r"[\b]x\b", r"[\b]x"),  # inside a class \b is a backspace: kept
        (r"[]\b]\bx", r"[]\b]x"),
        (r"[^]\b]\bx", r"[^]\b]x"),
        (r"a\\b", r"a\\b"),  # an escaped backslash followed by b
    ],
)
def test_prefilter_drops_only_word_boundaries(pattern, expected):
    from maild.pipeline.triage import _without_boundaries

    assert _without_boundaries(pattern) == expected


def test_security_and_type_on_the_labelled_english_finnish_swedish_set(capsys):
    """Issue 19: routine account and personal-data requests, security training and
    questions are no security incident; misuse of an account, lost or stolen
    devices holding data and data exposure are, in all three languages. Rules
    were tuned on one half; the other half is held out (bench/triage.py)."""
    assert len(labelled_cases()) >= 150
    assert sum(c["near_miss"] for c in labelled_cases()) >= 50
    book = Rulebook.from_settings(SETTINGS)
    for half in ("tune", "held_out"):
        figures = evaluate_labelled(labelled_cases(half), SETTINGS, book)
        with capsys.disabled():
            print(f"\nlabelled set, {half} half: {figures.summary()}")
        assert figures.precision >= 0.95 and figures.recall >= 0.95, figures.misses
        assert figures.type_accuracy >= 0.90, figures.misses


def test_swedish_and_finnish_mail_are_recognised_among_the_languages_maild_writes():
    every = labelled_cases()
    wrong = [(c["lang"], c["subject"]) for c in every
             if detect(c["subject"] + "\n" + c["body"], ("en", "fi", "sv")) != c["lang"]]  # fmt: skip
    assert not wrong
    swedish = "Hej! Skrivaren fungerar inte. Kan ni hjälpa mig? Mvh Maja"
    assert choose(None, None, swedish, "en", ("en", "fi", "sv")) == ("sv", "detected")
    assert choose(None, "sv", "E42", "en", ("en", "fi", "sv")) == ("sv", "header")
    # A language maild has no templates for is never chosen.
    assert choose(None, None, swedish, "en", ("en", "fi")) == ("en", "default")
