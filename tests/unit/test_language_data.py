"""Language data (maild/mail/lang/*.toml through maild.mail.language) and the
screening rules built on it, over the multilingual corpus."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from maild.config.settings import settings_from_mapping
from maild.errors import ConfigError
from maild.mail.language import LANG_DIR, fold, load_languages
from maild.mail.parse import parse
from maild.pipeline import screen as sc
from maild.pipeline.screen import Envelope, Verdict, recognisers, screen
from tests.support.desk import make_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CORPUS = FIXTURES / "multilingual"
MANIFEST = tomllib.loads((CORPUS / "MANIFEST.toml").read_text())
SETTINGS = settings_from_mapping({})
ENV = Envelope(mail_from="someone@example.org", recipient="help@example.com")
ACK_ID = b"<3f2a@helpdesk.example.com>"
# The list: the EU's main languages plus these.
REQUIRED = {"en", "de", "fr", "es", "it", "pt", "nl", "fi", "sv", "lv", "lt", "et", "ru", "nb",
            "da", "pl"}  # fmt: skip


def corpus_message(name: str):
    return parse((CORPUS / name).read_bytes().replace(b"<ACK_MESSAGE_ID>", ACK_ID))


def test_every_required_language_has_autoreply_and_bounce_data():
    langs = load_languages()
    assert set(langs.codes) >= REQUIRED
    for code in langs.codes:
        lang = langs[code]
        assert lang.name and lang.name != code
        for section, key in (("autoreply", "subjects"), ("autoreply", "body"),
                             ("bounce", "subjects"), ("bounce", "body")):  # fmt: skip
            assert lang.strings(section, key), f"{code}: [{section}] {key} is empty"
    assert {spec["language"] for spec in MANIFEST.values()} >= REQUIRED


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_message_is_recognised(name):
    spec = MANIFEST[name]
    result = screen(corpus_message(name), ENV, SETTINGS)
    want = Verdict.AUTOMATED if spec["kind"] == "autoreply" else Verdict.BOUNCE
    assert result.verdict == want, (name, result)
    assert result.rule and result.reason


def test_each_shape_is_caught_by_the_rule_made_for_it():
    rules = {name: screen(corpus_message(name), ENV, SETTINGS).rule for name in MANIFEST}
    for name, rule in rules.items():
        if "exchange_autoreply" in name:
            assert rule == "has_out_of_office_subject", name
        elif "responder" in name:
            assert rule == "has_out_of_office_text", name
        else:
            assert rule in ("is_relay_bounce", "is_reported_failure"), (name, rule)


def test_out_of_office_text_counts_only_in_answers_to_our_mail():
    body = "Hello,\n\nI'm on holiday until Monday, but my laptop is broken. Please help.\n"
    new = parse(make_message(subject="Laptop broken", body=body))
    assert screen(new, ENV, SETTINGS).verdict == Verdict.PERSON
    answer = parse(make_message(subject="Re: [#4] Laptop", body=body,
                                references="<x1@helpdesk.example.com>"))  # fmt: skip
    assert screen(answer, ENV, SETTINGS).rule == "has_out_of_office_text"


def test_person_mail_answering_us_is_not_mistaken_for_an_auto_reply():
    """The labelled triage corpus: every message, as a reply to our mail, stays a person."""
    for path in sorted((FIXTURES / "triage").glob("*.toml")):
        table = tomllib.loads(path.read_text())
        for case in table.get("message", []) + table.get("case", []):  # labelled.toml: [[case]]
            msg = parse(make_message(subject=f"Re: [#2] {case['subject']}", body=case["body"],
                                     references="<x1@helpdesk.example.com>"))  # fmt: skip
            assert screen(msg, ENV, SETTINGS).verdict == Verdict.PERSON, case["subject"]


@pytest.mark.parametrize(
    "subject",
    ["Undeliverable parcel at the front desk", "Unzustellbar: Paket", "Non remis: mon colis",
     "Delivery failed for my new monitor"],
)  # fmt: skip
def test_a_bounce_subject_alone_is_a_person(subject):
    msg = parse(make_message(subject=subject, body="Hello, where is my delivery? Bob"))
    assert sc.is_relay_bounce(msg, ENV, SETTINGS) is None
    assert screen(msg, ENV, SETTINGS).verdict == Verdict.PERSON


def test_forwarded_relay_bounce_is_a_person():
    raw = (CORPUS / "de_relay_bounce_text_only.eml").read_bytes()
    raw = raw.replace(b"Subject: Unzustellbar:", b"Subject: WG: Unzustellbar:")
    raw = raw.replace(b"From: Microsoft Outlook", b"From: Bob Customer <bob@example.org>\r\nX-Was:")
    assert screen(parse(raw), ENV, SETTINGS).verdict == Verdict.PERSON


def test_fold_ignores_case_accents_and_apostrophes():
    assert fold("Réponse  Automatique") == "reponse  automatique"
    assert fold("Außer Haus") == "ausser haus"
    assert fold("I’m away") == "i'm away"


def test_an_admin_adds_a_language_and_phrases_without_code(tmp_path):
    (tmp_path / "is.toml").write_text(
        '[language]\nname = "Íslenska"\n[autoreply]\nsubjects = ["Sjálfvirkt svar"]\n'
    )
    (tmp_path / "en.toml").write_text('[autoreply]\nsubjects = ["Gone fishing"]\n')
    langs = load_languages(tmp_path)
    assert "is" in langs.codes and langs["is"].name == "Íslenska"
    assert "Gone fishing" in langs["en"].strings("autoreply", "subjects")
    assert "automatic reply" in langs["en"].strings("autoreply", "subjects")  # kept
    settings = settings_from_mapping({"languages": {"directory": str(tmp_path)}})
    for subject in ("Sjálfvirkt svar: [#1] x", "Gone fishing: back Monday"):
        msg = parse(make_message(subject=subject))
        assert screen(msg, ENV, settings).verdict == Verdict.AUTOMATED, subject
        assert screen(msg, ENV, SETTINGS).verdict == Verdict.PERSON, subject


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [("xx.toml", "[autoreply\nsubjects = 1", "not valid TOML"),
     ("xx.toml", "autoreply = 3", "must be a table"),
     ("english.toml", "[autoreply]\n", "language code"),
     ("fi.toml", '[autoreply]\nsubjects = "Automaattinen vastaus"', "list of strings")],
)  # fmt: skip
def test_bad_language_data_names_the_file_and_key(tmp_path, name, text, says):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as info:
        recognisers(tmp_path)
    assert info.value.key == "languages.directory" and says in str(info.value)


def test_missing_language_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="languages.directory"):
        settings_from_mapping({"languages": {"directory": str(tmp_path / "nope")}})


def test_builtin_files_are_named_by_language_code():
    assert all(len(p.stem) in (2, 3) for p in LANG_DIR.glob("*.toml"))


def test_check_config_refuses_bad_language_data_with_one_line_and_exit_78(tmp_path):
    import subprocess
    import sys

    lang = tmp_path / "lang"
    lang.mkdir()
    (lang / "sv.toml").write_text('[bounce]\nsubjects = "Kan inte levereras"\n')
    cfg = tmp_path / "maild.toml"
    cfg.write_text(f'[languages]\ndirectory = "{lang}"\n')
    proc = subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), "check-config"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 78, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "languages.directory" in line and "sv.toml" in line and "[bounce] subjects" in line
