"""Which language a requester gets: en or fi (pure).

In order: the contact's recorded language, the message's
``Content-Language``, a simple detection on the text, the configured
default. Detection counts common function words of each language (and the
letters ä/ö, which English never uses) in the first few thousand characters;
it answers only when one language clearly leads.
"""

from __future__ import annotations

import re

LANGUAGES = ("en", "fi")
_WORD = re.compile(r"[a-zåäö']+")
_FI = frozenset([
    "ja", "ei", "on", "olen", "oli", "ole", "että", "se", "tämä", "kun", "mutta", "myös",
    "kanssa", "minun", "minulla", "minä", "sinä", "me", "te", "he", "hei", "moi", "kiitos",
    "terveisin", "ystävällisin", "yst", "voisitteko", "voisitko", "voisiko", "tarvitsen",
    "pyytäisin", "haluaisin", "saisinko", "eikä", "enää", "vielä", "jo", "nyt", "heti", "koska",
    "jos", "niin", "kuin", "mitä", "miten", "missä", "mikä", "toimi", "toimii", "kaatuu",
    "virhe", "tiedosto", "kone", "sähköposti", "salasana", "apua", "tänään", "huomenna"
])  # fmt: skip
_EN = frozenset([
    "the", "and", "is", "are", "was", "were", "to", "of", "in", "it", "for", "on", "with", "my",
    "i", "we", "you", "this", "that", "not", "can't", "cannot", "please", "thanks", "thank",
    "hello", "hi", "regards", "best", "could", "would", "need", "have", "has", "been", "be",
    "from", "at", "doesn't", "isn't", "won't", "don't", "today", "tomorrow", "since", "when",
    "what", "how", "error", "working", "broken"
])  # fmt: skip


def detect(text: str, limit: int = 3000) -> str | None:
    words = _WORD.findall(text[:limit].lower())
    if not words:
        return None
    fi = sum(w in _FI for w in words) + sum(1 for w in words if "ä" in w or "ö" in w)
    en = sum(w in _EN for w in words)
    if fi >= 2 and fi > en * 1.5:
        return "fi"
    if en >= 2 and en > fi * 1.5:
        return "en"
    return None


def choose(
    contact_language: str | None,
    content_language: str | None,
    text: str,
    default: str,
) -> tuple[str, str]:
    """(language, where it came from: "contact" | "header" | "detected" | "default")."""
    if contact_language in LANGUAGES:
        return str(contact_language), "contact"
    if content_language in LANGUAGES:
        return str(content_language), "header"
    detected = detect(text)
    if detected is not None:
        return detected, "detected"
    return default, "default"
