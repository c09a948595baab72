"""How the search index reads text (maild.store.search): words, stems, queries."""

from __future__ import annotations

import pytest

from maild.store import search

# Forms of one Finnish noun must come to one term: Snowball alone leaves
# most of these apart (tulostin/tulostimen, yhteys/yhteyden, salasana/salasanan).
FINNISH = [
    "tulostin tulostimen tulostimessa tulostimeen tulostimet tulostimia tulostinta",
    "salasana salasanan salasanaa salasanani salasanassa salasanat salasanoja",
    "verkko verkon verkossa verkkoon verkosta verkkoa verkot",
    "yhteys yhteyden yhteyttä yhteydet yhteydessä yhteyksiä yhteydestä",
    "kone koneen koneessa koneella koneelle koneet koneita koneeni",
    "näyttö näytön näytössä näyttöön näytöt näyttöä näyttöjä",
    "sähköposti sähköpostin sähköpostissa sähköpostiin sähköpostit sähköposteja",
    "tiedosto tiedoston tiedostossa tiedostoa tiedostot tiedostoja",
    "käyttäjätunnus käyttäjätunnuksen käyttäjätunnusta käyttäjätunnukset",
    "kirjautuminen kirjautumisen kirjautumisessa kirjautumista kirjautumiseen",
    "puhelin puhelimen puhelimessa puhelimeen puhelimeni puhelinta",
    "virheilmoitus virheilmoituksen virheilmoitusta virheilmoitukset",
    "hiiri hiiren hiirtä hiirellä hiiret",
    "paperitukos paperitukoksen paperitukosta paperitukoksia",
    "tili tilin tiliä tilini tilille tililtä",
    "päivitys päivityksen päivitystä päivitykset päivityksessä",
    "palvelin palvelimen palvelimella palvelimet palvelinta",
    "kansio kansion kansiossa kansioon kansiota",
]


@pytest.mark.parametrize("forms", FINNISH, ids=lambda f: f.split()[0])
def test_finnish_forms_of_a_noun_share_one_term(forms):
    terms = {search.analyze(w, "fi") for w in forms.split()}
    assert len(terms) == 1, terms


@pytest.mark.parametrize(("a", "b"), [("printers", "printer"), ("connecting", "connection"),
                                      ("passwords", "password"), ("crashed", "crashes")])  # fmt: skip
def test_english_forms_share_one_term(a, b):
    assert search.analyze(a, "en") == search.analyze(b, "en")


def test_stop_words_numbers_and_codes():
    assert search.analyze("The printer is not working and it is broken", "en") == (
        "printer work broken"
    )
    assert search.analyze("Tulostin ei toimi, se on rikki", "fi") == "tulost toim rik"
    assert search.analyze("Error 0x80070005 on E42 since 3rd May", "en") == (
        "error 0x80070005 e42 sinc 3rd may"
    )
    assert search.words("a" * 41 + " ok") == ["ok"]  # no endless tokens
    assert search.words("na\u0308yto\u0308n") == search.words("näytön")  # decomposed umlauts


def test_queries_parse_into_clauses_for_both_databases():
    clauses, number = search.parse_query('tulostin "blank pages" disconn* -toner #12 809')
    assert number == 12
    fts = search._fts5(clauses)
    assert fts == ('(("tulost" OR "tulostin") AND ("blank pages" OR "blank page") AND '
                   '("disconn" *) AND ("809")) NOT (("toner"))')  # fmt: skip
    assert search._tsquery(clauses) == (
        "('tulost' | 'tulostin') & (('blank' <-> 'pages') | ('blank' <-> 'page')) & "
        "('disconn':*) & ('809') & !('toner')"
    )
    assert search.parse_query("the and of") == ([], None)
    assert search._fts5([]) is None


def test_snippet_marks_the_matched_words():
    text = "Hello,\n\nsince the update yesterday the printer prints only blank pages. " * 3
    snippet, spans = search.snippet(text, {"blank", "page"})
    assert [snippet[s:e] for s, e in spans][:2] == ["blank", "pages"]
    assert len(snippet) < 260
