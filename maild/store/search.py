"""Full-text search over tickets, and past fixes (DESIGN §10).

One index serves the console's search (`search_tickets`) and "past fixes
resurface" (`similar_resolved`):

- **What is indexed.** Per ticket, one `SearchDoc` per text a person wrote:
  each incoming message and note (public or internal, as the article is),
  each public reply of an agent (their own words, not the rendered mail),
  each resolution note. Every document carries the ticket's number, subject
  and requester (name and address) in a second column, so "bob printer"
  finds Bob's printer ticket whichever text says "printer". Notifications
  maild rendered, auto-replies and bounces are not indexed. A resolved or
  closed ticket also gets one `SimilarDoc` (subject, the requester's words,
  the resolution) in an index of its own; it goes when the ticket reopens.
- **Analysis, the same on both databases.** Text is split into words
  (letters and digits), lower-cased, stop words dropped, and each word
  stemmed in Python with the Snowball stemmer of the text's language (and,
  for Finnish, a few rules on top: Snowball leaves "tulostin"/"tulostimen",
  "yhteys"/"yhteyden", "salasana"/"salasanan" apart). The database indexes
  the resulting terms as they are: SQLite in an FTS5 table (`unicode61`,
  diacritics kept), PostgreSQL in a generated ``tsvector`` column
  (``simple`` configuration) with a GIN index; both built by migration 0007.
  A query word is looked up in every language's form (a Finnish word finds
  a Finnish ticket whatever language the searcher wrote in).
- **Ranking.** SQLite: BM25 (FTS5's ``bm25()``, the ticket head weighted
  above the text). PostgreSQL: ``ts_rank`` for searches; for similar
  tickets, the sum of the inverse document frequencies of the matching
  terms (``ts_rank`` knows no document frequency, and "printer" must count
  for more than "problem").
- **Same transaction.** The index rows are written by the desk layer in the
  transaction that writes the article or the status (`index_document`,
  `index_resolution`); the database maintains its index (FTS5 triggers,
  the generated column) in that same transaction: a rollback takes both.
- **Security.** A caller says whether it may see security tickets
  (``include_security``); without it, no security ticket is returned, not
  even as a number.

The stemmers enter maild here (snowballstemmer, which uses PyStemmer's C
code when it is installed).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import snowballstemmer
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from maild.store.db import Direct
from maild.store.models import (
    Article,
    Contact,
    Event,
    Outbox,
    SearchDoc,
    SimilarDoc,
    Suggestion,
    Ticket,
)
from maild.store.states import FINISHED_STATUSES, ArticleKind, Direction, Visibility
from maild.store.stopwords import STOPWORDS

log = logging.getLogger(__name__)

__all__ = [
    "QUERY_LANGUAGES",
    "Hit",
    "PastFix",
    "analyze",
    "forget_resolution",
    "head_text",
    "index_document",
    "index_resolution",
    "is_index_object",
    "rebuild",
    "search_tickets",
    "similar_resolved",
]

# --- analysis ------------------------------------------------------------------

# Snowball algorithms by language code; a language not here is indexed unstemmed.
ALGORITHMS = {
    "ar": "arabic", "ca": "catalan", "cs": "czech", "da": "danish", "de": "german",
    "el": "greek", "en": "english", "es": "spanish", "et": "estonian", "eu": "basque",
    "fi": "finnish", "fr": "french", "ga": "irish", "hu": "hungarian", "hy": "armenian",
    "id": "indonesian", "it": "italian", "lt": "lithuanian", "nb": "norwegian", "nl": "dutch",
    "nn": "norwegian", "no": "norwegian", "pl": "polish", "pt": "portuguese", "ro": "romanian",
    "ru": "russian", "sr": "serbian", "sv": "swedish", "ta": "tamil", "tr": "turkish",
}  # fmt: skip
# The languages a query word is looked up in: those maild writes tickets in
# (maild.mail.language). Every one more is a form more of each query word,
# and a document that holds two forms of one word counts it twice: Swedish
# reads "printer" as "print". A language added to maild is added here.
QUERY_LANGUAGES = ("en", "fi")

MAX_WORD = 40  # longer "words" are hashes, base64, URLs run together: not indexed
MAX_TEXT = 64 * 1024  # characters of one text that are indexed
_WORD = re.compile(r"[^\W_]+")
_CACHE_MAX = 200_000  # remembered words per language


def words(text: str, limit: int = MAX_TEXT) -> list[str]:
    """The words of `text` as the index sees them: lower case, letters and digits."""
    text = text[:limit]
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return [w for w in _WORD.findall(text.lower()) if len(w) <= MAX_WORD]


_VOWELS = frozenset("aeiouyäö")
_POSSESSIVE = ("nsa", "nsä", "mme", "nne", "ni", "si")


def _finnish(word: str, stem: str) -> str:
    """Finnish on top of Snowball: bring the forms of one noun to one term.

    Snowball's Finnish stemmer strips case endings but leaves the stem
    alternations apart: tulostin/tulostimen, yhteys/yhteyden/yhteyttä,
    tunnus/tunnuksen/tunnusta, kirjautuminen/kirjautumisen, salasana (read
    as an essive)/salasanan, sähköposti (read as an adverb)/sähköpostin.
    These rules undo that, then drop a final vowel and undouble a final
    consonant (hiiri/hiiren/hiirtä, näyttö/näytön/näyttöjä). The test table
    in tests/unit/test_search_analysis.py holds the cases.
    """
    if word.endswith("sti") and stem == word[:-3]:
        stem = word[:-1]  # sähköposti, not an adverb in -sti
    base = word
    for suffix in _POSSESSIVE:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            base = word[: -len(suffix)]
            break
    if base.endswith(("na", "nä")) and len(base) > 5 and stem == base[:-3] and base[-3] in _VOWELS:
        stem = base[:-1]  # salasana is not an essive
    if word.endswith(("usta", "ystä")) and len(word) > 6:
        stem = word[:-3]  # tunnusta: partitive of tunnus
    if stem.endswith(("min", "mis")) and len(stem) > 5:
        stem = stem[:-2]  # kirjautuminen, kirjautumisen
    elif stem.endswith("im") and len(stem) > 4:
        stem = stem[:-2]  # tulostimen
    elif stem.endswith("in") and word.endswith(("inta", "intä")) and len(stem) > 4:
        stem = stem[:-2]  # tulostinta
    if len(stem) > 4 and stem[-1] == "s" and stem[-2] == "k" and stem[-3] in _VOWELS:
        stem = stem[:-2]  # tunnuksen
    elif len(stem) > 4 and stem[-1] == "s" and stem[-2] in "uyoö":
        stem = stem[:-1]  # tunnus
    elif len(stem) > 4 and stem[-1] in "dt" and stem[-2] in "uy":
        stem = stem[:-1]  # yhteyden, yhteyttä
    if len(stem) > 4 and stem[-1] == "j" and stem[-2] in _VOWELS:
        stem = stem[:-1]  # näyttöjä
    if len(stem) > 4 and stem[-1] in _VOWELS and stem[-2] == stem[-1]:
        stem = stem[:-1]  # verkkolevyyn
    if len(stem) > 3 and stem[-1] in _VOWELS:
        stem = stem[:-1]
    if len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in _VOWELS:
        stem = stem[:-1]
    return stem


class _Language:
    """One language's stop words and stemmer, with its words remembered."""

    def __init__(self, code: str) -> None:
        algorithm = ALGORITHMS.get(code)
        self.code = code
        self.stemmer: Any = snowballstemmer.stemmer(algorithm) if algorithm else None
        self.stop = STOPWORDS.get(code, frozenset())
        self.fix: Callable[[str, str], str] | None = _finnish if code == "fi" else None
        self.cache: dict[str, str] = {}
        self.lock = threading.Lock()  # a Snowball stemmer object is not thread-safe

    def term(self, word: str) -> str:
        """The index term of one word ("" for a stop word)."""
        term = self.cache.get(word)
        if term is not None:
            return term
        if word in self.stop:
            term = ""
        elif self.stemmer is None or not word.isalpha():
            term = word  # numbers, codes (e42, 0x80070005): as they are
        else:
            with self.lock:
                term = self.stemmer.stemWord(word)
            if self.fix is not None:
                term = self.fix(word, term)
        if len(self.cache) >= _CACHE_MAX:
            self.cache.clear()
        self.cache[word] = term
        return term

    def terms(self, text: str, limit: int = MAX_TEXT) -> list[str]:
        out = []
        for word in words(text, limit):
            term = self.cache.get(word)
            if term is None:
                term = self.term(word)
            if term:
                out.append(term)
        return out


_LANGUAGES: dict[str, _Language] = {}
_LANGUAGES_LOCK = threading.Lock()


def language(code: str | None) -> _Language:
    code = (code or "").lower()[:16]
    found = _LANGUAGES.get(code)
    if found is None:
        with _LANGUAGES_LOCK:
            found = _LANGUAGES.setdefault(code, _Language(code))
    return found


def analyze(text: str, lang: str | None, limit: int = MAX_TEXT) -> str:
    """The terms of `text` in language `lang`, as stored in the index."""
    return " ".join(language(lang).terms(text, limit))


def alternatives(word: str) -> frozenset[str]:
    """The terms one query word may have been indexed as (every query language,
    and the word itself for languages without a stemmer); empty for a stop word
    of any of them: too common to narrow a search."""
    out = {word}
    for code in QUERY_LANGUAGES:
        term = language(code).term(word)
        if not term:
            return frozenset()
        out.add(term)
    return frozenset(out)


def head_text(number: int, subject: str, requester_name: str, requester_email: str) -> str:
    """What every document of a ticket is also found by."""
    return f"{number} {subject} {requester_name} {requester_email}"


# --- writing -----------------------------------------------------------------

_INSERT_DOC = Direct(insert(SearchDoc))


def index_document(
    session: Session,
    *,
    ticket_id: int,
    kind: str,
    visibility: str,
    language: str,
    head: str,
    text: str,
    now: datetime,
    article_id: int | None = None,
    body: str | None = None,
) -> None:
    """Index one text of a ticket, in the caller's transaction.

    `head` is `head_text` of the ticket; `text` what is searched and shown
    in snippets (kept as `body` when no article holds it: pass `body`).
    """
    values = {
        "ticket_id": ticket_id,
        "article_id": article_id,
        "kind": kind,
        "visibility": str(visibility),
        "language": language,
        "head": analyze(head, language, 2000),
        "terms": analyze(text, language),
        "body": body,
        "created_at": now,
    }
    _INSERT_DOC.execute(session, values).close()


def index_resolution(
    session: Session,
    *,
    ticket_id: int,
    language: str,
    subject: str,
    problem: str,
    resolution: str,
    resolved_at: datetime,
) -> None:
    """The ticket is resolved or closed: index it as a past fix (replacing any)."""
    forget_resolution(session, ticket_id)
    session.execute(
        insert(SimilarDoc).values(
            ticket_id=ticket_id,
            language=language,
            head=analyze(subject, language, 2000),
            terms=analyze(f"{problem}\n{resolution}", language, 16 * 1024),
            resolution=resolution[:MAX_TEXT],
            resolved_at=resolved_at,
        )
    )


def forget_resolution(session: Session, ticket_id: int) -> None:
    """The ticket is open again: it is no past fix (any more)."""
    session.execute(delete(SimilarDoc).where(SimilarDoc.ticket_id == ticket_id))


# --- queries: the parsed form --------------------------------------------------

MAX_QUERY_CLAUSES = 16
_QUERY_TOKEN = re.compile(r'(-?)"([^"]*)"?|(-?)(\S+)')
_NUMBER = re.compile(r"#?(\d{1,12})")


@dataclass(frozen=True)
class _Alt:
    terms: tuple[str, ...]  # one term, or a phrase
    prefix: bool = False


@dataclass(frozen=True)
class _Clause:
    alts: tuple[_Alt, ...]
    negated: bool = False


def _phrase_alts(ws: list[str]) -> tuple[_Alt, ...]:
    """A phrase in each language's terms (stop words left out)."""
    out: dict[tuple[str, ...], None] = {tuple(ws): None}
    for code in QUERY_LANGUAGES:
        lang = language(code)
        terms = tuple(t for t in (lang.term(w) for w in ws) if t)
        if terms:
            out[terms] = None
    return tuple(_Alt(t) for t in out)


def parse_query(query: str) -> tuple[list[_Clause], int | None]:
    """Clauses to AND together, and a ticket number the query names.

    ``#123`` names ticket 123 and is no word of the text; ``123`` is both (an
    error code is written like a ticket number).
    """
    clauses: list[_Clause] = []
    number: int | None = None
    for m in _QUERY_TOKEN.finditer(query[:1000]):
        negated = bool(m.group(1) or m.group(3))
        if m.group(2) is not None:
            ws = words(m.group(2))
            if ws:
                clauses.append(_Clause(_phrase_alts(ws), negated))
            continue
        token = m.group(4)
        if not negated and number is None and (num := _NUMBER.fullmatch(token)):
            number = int(num.group(1))
            if token.startswith("#"):  # a ticket number, not a word of the text
                continue
        prefix = token.endswith("*")
        ws = words(token)
        if not ws:
            continue
        if prefix and len(ws) == 1 and len(ws[0]) >= 2:
            clauses.append(_Clause((_Alt((ws[0],), prefix=True),), negated))
        elif len(ws) > 1:  # an address, a path, a-hyphenated-word: a phrase
            clauses.append(_Clause(_phrase_alts(ws), negated))
        else:
            alts = alternatives(ws[0])
            if alts:
                clauses.append(_Clause(tuple(_Alt((t,)) for t in sorted(alts)), negated))
    return clauses[:MAX_QUERY_CLAUSES], number


def _fts5(clauses: Sequence[_Clause]) -> str | None:
    def alt(a: _Alt) -> str:
        phrase = '"' + " ".join(a.terms).replace('"', '""') + '"'
        return phrase + " *" if a.prefix else phrase

    def clause(c: _Clause) -> str:
        return "(" + " OR ".join(alt(a) for a in c.alts) + ")"

    positive = [clause(c) for c in clauses if not c.negated]
    if not positive:
        return None
    expr = " AND ".join(positive)
    negative = [clause(c) for c in clauses if c.negated]
    if negative:
        expr = f"({expr}) NOT ({' OR '.join(negative)})"
    return expr


def _tsquery(clauses: Sequence[_Clause]) -> str | None:
    def lexeme(term: str, prefix: bool = False) -> str:
        quoted = "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"
        return quoted + ":*" if prefix else quoted

    def alt(a: _Alt) -> str:
        if len(a.terms) == 1:
            return lexeme(a.terms[0], a.prefix)
        return "(" + " <-> ".join(lexeme(t) for t in a.terms) + ")"

    def clause(c: _Clause) -> str:
        return "(" + " | ".join(alt(a) for a in c.alts) + ")"

    positive = [clause(c) for c in clauses if not c.negated]
    if not positive:
        return None
    return " & ".join([*positive, *("!" + clause(c) for c in clauses if c.negated)])


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


# --- search_tickets --------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One ticket a search found; `cursor` is the `after` of the next page."""

    number: int
    subject: str
    status: str
    priority: int
    security: bool
    rank: float  # higher is better; comparable within one search only
    snippet: str  # plain text: escape it before putting it in HTML
    highlights: tuple[tuple[int, int], ...]  # (start, end) of matched words in `snippet`
    cursor: str


# BM25 weights of the two columns: the ticket head (number, subject,
# requester) counts four times the text.
_HEAD_WEIGHT = 4.0
_SEARCH_SQLITE = """
WITH m AS MATERIALIZED (
    SELECT rowid AS doc_id, bm25(search_fts, {head}, 1.0) AS score
    FROM search_fts WHERE search_fts MATCH :q
),
best AS (
    SELECT d.ticket_id AS ticket_id, m.doc_id AS doc_id, min(m.score) AS score
    FROM m JOIN search_doc d ON d.id = m.doc_id
    WHERE d.visibility IN ({visibilities})
    GROUP BY d.ticket_id
)
SELECT t.id, t.subject, t.status, t.priority, t.security, best.doc_id,
       CASE WHEN t.id = :number THEN -1e300 ELSE best.score END AS key
FROM best JOIN ticket t ON t.id = best.ticket_id
WHERE (:security OR NOT t.security) {statuses}
  AND (:after_key IS NULL OR key > :after_key OR (key = :after_key AND t.id > :after_id))
ORDER BY key, t.id
LIMIT :limit
"""
_SEARCH_POSTGRESQL = """
WITH q AS (SELECT to_tsquery('simple', :q) AS q),
best AS (
    SELECT DISTINCT ON (d.ticket_id) d.ticket_id, d.id AS doc_id,
           -CAST(ts_rank(d.tsv, q.q, 1) AS float8) AS score
    FROM search_doc d, q
    WHERE d.tsv @@ q.q AND d.visibility IN ({visibilities})
    ORDER BY d.ticket_id, score, d.id
),
keyed AS (
    SELECT t.id, t.subject, t.status, t.priority, t.security, best.doc_id,
           CASE WHEN t.id = :number THEN -1e300 ELSE best.score END AS key
    FROM best JOIN ticket t ON t.id = best.ticket_id
    WHERE (:security OR NOT t.security) {statuses}
)
SELECT * FROM keyed
WHERE (CAST(:after_key AS float8) IS NULL OR key > :after_key
       OR (key = :after_key AND id > :after_id))
ORDER BY key, id
LIMIT :limit
"""


def _by_number(visibilities: str, statuses: str) -> str:
    """The one ticket a query of only ``#123`` names (shaped like a search's rows)."""
    return f"""
SELECT t.id, t.subject, t.status, t.priority, t.security,
       (SELECT min(d.id) FROM search_doc d WHERE d.ticket_id = t.id
        AND d.visibility IN ({visibilities})) AS doc_id,
       -1e300 AS key
FROM ticket t
WHERE t.id = :number AND :q = '' AND (:security OR NOT t.security) {statuses}
LIMIT :limit
"""


def _cursor(key: float, number: int) -> str:
    return f"{key!r}:{number}"


def _parse_cursor(after: str | None) -> tuple[float | None, int]:
    if not after:
        return None, 0
    key, _sep, number = after.rpartition(":")
    try:
        value, n = float(key), int(number)
    except ValueError:
        raise ValueError(f"not a search cursor: {after[:40]!r}") from None
    if math.isnan(value):
        raise ValueError(f"not a search cursor: {after[:40]!r}")
    return value, n


def search_tickets(
    session: Session,
    query: str,
    *,
    limit: int = 20,
    after: str | None = None,
    include_security: bool = False,
    include_internal: bool = True,
    statuses: Iterable[str] | None = None,
) -> list[Hit]:
    """Tickets matching every word of `query`, best first.

    Words are matched by stem in every query language; ``"a phrase"``,
    ``prefix*``, ``-word`` (must not occur) and a ticket number (``123`` or
    ``#123``, that ticket first) work. `after` is the `Hit.cursor` of the
    last hit of the previous page. Security tickets only with
    `include_security`; internal notes only searched with `include_internal`.
    A query with no searchable word finds nothing.
    """
    limit = max(1, min(int(limit), 200))
    after_key, after_id = _parse_cursor(after)
    clauses, number = parse_query(query)
    visibilities = ["'public'"] + (["'internal'"] if include_internal else [])
    status_list = sorted(set(statuses)) if statuses is not None else None
    status_sql = ""
    params: dict[str, Any] = {
        "number": number if number is not None else -1,
        "security": bool(include_security),
        "after_key": after_key,
        "after_id": after_id,
        "limit": limit,
    }
    if status_list is not None:
        if not status_list:
            return []
        names = [f"s{i}" for i in range(len(status_list))]
        status_sql = f"AND t.status IN ({', '.join(':' + n for n in names)})"
        params.update(zip(names, status_list, strict=True))
    if _is_sqlite(session):
        expr = _fts5(clauses)
        sql = _SEARCH_SQLITE.format(head=_HEAD_WEIGHT, visibilities=", ".join(visibilities),
                                    statuses=status_sql)  # fmt: skip
    else:
        expr = _tsquery(clauses)
        sql = _SEARCH_POSTGRESQL.format(visibilities=", ".join(visibilities),
                                        statuses=status_sql)  # fmt: skip
    if expr is None:
        if number is None or after is not None:
            return []
        sql, expr = _by_number(", ".join(visibilities), status_sql), ""
    rows = session.execute(text(sql), {"q": expr, **params}).all()
    snippets = _snippets(session, [r.doc_id for r in rows], clauses)
    return [
        Hit(
            number=r.id,
            subject=r.subject,
            status=r.status,
            priority=r.priority,
            security=bool(r.security),
            rank=-float(r.key),
            snippet=snippets.get(r.doc_id, ("", ()))[0],
            highlights=snippets.get(r.doc_id, ("", ()))[1],
            cursor=_cursor(float(r.key), r.id),
        )
        for r in rows
    ]


SNIPPET_CHARS = 200


def _snippets(
    session: Session, doc_ids: Sequence[int], clauses: Sequence[_Clause]
) -> dict[int, tuple[str, tuple[tuple[int, int], ...]]]:
    """Per document, a window of its text around the matched words."""
    if not doc_ids:
        return {}
    rows = session.execute(
        select(SearchDoc.id, SearchDoc.body, Article.text)
        .outerjoin(Article, Article.id == SearchDoc.article_id)
        .where(SearchDoc.id.in_(doc_ids))
    ).all()
    wanted: set[str] = set()
    prefixes: list[str] = []
    for c in clauses:
        if c.negated:
            continue
        for a in c.alts:
            if a.prefix:
                prefixes.append(a.terms[0])
            else:
                wanted.update(a.terms)
    return {doc_id: snippet(body if body is not None else (art or ""), wanted, prefixes)
            for doc_id, body, art in rows}  # fmt: skip


def snippet(
    body: str, wanted: set[str], prefixes: Sequence[str] = (), size: int = SNIPPET_CHARS
) -> tuple[str, tuple[tuple[int, int], ...]]:
    """A window of about `size` characters of `body` where the most words match."""
    body = body[:MAX_TEXT]
    if not unicodedata.is_normalized("NFC", body):
        body = unicodedata.normalize("NFC", body)
    matches: list[tuple[int, int]] = []
    for m in _WORD.finditer(body):
        word = m.group().lower()
        if len(word) > MAX_WORD:
            continue
        hit = word in wanted or any(word.startswith(p) for p in prefixes)
        if not hit:
            hit = any(language(code).term(word) in wanted for code in QUERY_LANGUAGES)
        if hit:
            matches.append(m.span())
            if len(matches) >= 200:
                break
    if not matches:
        start = 0
    else:  # the window that holds the most matches
        best, start, j = 0, matches[0][0], 0
        for i, (s, _e) in enumerate(matches):
            while matches[j][0] < s - size // 2:
                j += 1
            if i - j + 1 > best:
                best, start = i - j + 1, matches[j][0]
        start = max(0, start - size // 4)
        while start > 0 and not body[start - 1].isspace() and start > matches[0][0] - size:
            start -= 1
    end = min(len(body), start + size)
    while end < len(body) and end < start + size + 20 and not body[end].isspace():
        end += 1
    window = " ".join(body[start:end].split())
    # recompute spans in the whitespace-folded window
    spans = []
    for m in _WORD.finditer(window):
        word = m.group().lower()
        if (
            word in wanted
            or any(word.startswith(p) for p in prefixes)
            or any(language(code).term(word) in wanted for code in QUERY_LANGUAGES)
        ):
            spans.append(m.span())
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(body) else ""
    shift = len(prefix)
    return prefix + window + suffix, tuple((s + shift, e + shift) for s, e in spans)


# --- similar_resolved --------------------------------------------------------------


@dataclass(frozen=True)
class PastFix:
    """A resolved or closed ticket like the one at hand, with how it was fixed."""

    number: int
    subject: str
    status: str
    resolution: str  # the resolve note, or the last public reply before it ("" if none)
    resolved_at: datetime
    rank: float  # higher is better; comparable within one lookup only
    helpful: int  # how often agents marked it helpful as a suggestion

    def short(self, chars: int = 300) -> str:
        """The resolution on one line, cut at a word near `chars`."""
        flat = " ".join(self.resolution.split())
        if len(flat) <= chars:
            return flat
        return flat[:chars].rsplit(" ", 1)[0] + " …"


# How a lookup works (the same on both databases):
# 1. The new ticket's terms are weighed (subject twice) and the SIMILAR_TERMS
#    most telling kept (weight times inverse document frequency).
# 2. The index gives the documents of the rarest of them, up to
#    SIMILAR_POSTINGS documents in all (the rarest term always): at 100,000
#    past fixes "printer" alone is in thousands of them, and reading them
#    all is what made a lookup slow (bench/similar.py).
# 3. Those are scored by the idf of the terms they hold; the best
#    SIMILAR_RERANK are ranked by BM25 over all kept terms (FTS5's formula:
#    k1 1.2, b 0.75, the subject column twice the text), computed here from
#    their stored terms, so PostgreSQL ranks by document frequency too.
SIMILAR_TERMS = 12
SIMILAR_POSTINGS = 30000
SIMILAR_RERANK = 100
_SUBJECT_WEIGHT = 2.0
_HEAD_BM25 = 2.0
_K1, _B = 1.2, 0.75
_DF_TTL = 600.0


class _DocFreq:
    """Document frequencies of terms in the similar index, remembered a while,
    and the size of the index (documents, average length).

    A count of a few minutes ago is good enough to choose and weigh terms; a
    term found in no document is asked again next time.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], tuple[int, float]] = {}
        self._totals: dict[str, tuple[int, float, float]] = {}
        self._lock = threading.Lock()

    def total(self, session: Session, key: str) -> tuple[int, float]:
        """(documents, average terms per document)."""
        now = time.monotonic()
        seen = self._totals.get(key)
        if seen is not None and now - seen[2] < 60.0:
            return seen[0], seen[1]
        n = int(session.scalar(select(func.count()).select_from(SimilarDoc)) or 0)
        sample = session.execute(
            select(SimilarDoc.head, SimilarDoc.terms).order_by(SimilarDoc.id.desc()).limit(200)
        ).all()
        avgdl = (sum(len(h.split()) + len(t.split()) for h, t in sample) / len(sample)
                 if sample else 1.0)  # fmt: skip
        self._totals[key] = (n, max(avgdl, 1.0), now)
        return n, max(avgdl, 1.0)

    def counts(self, session: Session, key: str, terms: Iterable[str]) -> dict[str, int]:
        now = time.monotonic()
        out: dict[str, int] = {}
        missing = []
        for term in terms:
            seen = self._counts.get((key, term))
            if seen is not None and now - seen[1] < _DF_TTL:
                out[term] = seen[0]
            else:
                missing.append(term)
        if missing:
            if _is_sqlite(session):
                stmt = text("SELECT doc FROM similar_vocab WHERE term = :t")
                found = {t: int(session.scalar(stmt, {"t": t}) or 0) for t in missing}
            else:
                stmt = text(
                    "SELECT count(*) FROM similar_doc WHERE tsv @@ to_tsquery('simple', :t)"
                )
                found = {t: int(session.scalar(stmt, {"t": _tsquery_term(t)}) or 0)
                         for t in missing}  # fmt: skip
            with self._lock:
                if len(self._counts) > _CACHE_MAX:
                    self._counts.clear()
                for t, n in found.items():
                    if n:
                        self._counts[(key, t)] = (n, now)
            out.update(found)
        return out


def _tsquery_term(term: str) -> str:
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


_DF = _DocFreq()


def _db_key(session: Session) -> str:
    return session.get_bind().url.render_as_string(hide_password=True)


def _query_terms(subject: str, body: str, lang: str | None) -> Counter[str]:
    """The weighted terms of a ticket's text: its own language's, or every query language's."""
    weights: Counter[str] = Counter()
    codes = (lang,) if lang else QUERY_LANGUAGES
    for part, weight in ((subject, _SUBJECT_WEIGHT), (body, 1.0)):
        ws = words(part, 8000)
        for code in codes:
            analyzer = language(code)
            for w in ws:
                term = analyzer.term(w)
                if term:
                    weights[term] += weight / len(codes)
    return weights


def _ticket_text(session: Session, number: int) -> tuple[str, str, str] | None:
    """(subject, the requester's first words, language) of ticket `number`."""
    row = session.execute(
        select(Ticket.subject, Ticket.language).where(Ticket.id == number)
    ).first()
    if row is None:
        return None
    first = session.scalar(
        select(Article.text)
        .where(Article.ticket_id == number, Article.direction == Direction.IN,
               Article.kind == ArticleKind.MESSAGE, Article.visibility == Visibility.PUBLIC)
        .order_by(Article.id)
        .limit(1)
    )  # fmt: skip
    return row.subject, first or "", row.language


def similar_resolved(
    session: Session,
    ticket_or_text: int | str,
    *,
    limit: int = 3,
    include_security: bool = False,
    language: str | None = None,
    subject: str = "",
) -> list[PastFix]:
    """The resolved or closed tickets most like a ticket (by number) or a text.

    With a number, its subject and first message are compared (in its
    language), and the ticket itself is never returned. With a text, give
    its `language` if known (else every query language is tried) and
    optionally its `subject`. Security tickets only with `include_security`.
    """
    limit = max(1, min(int(limit), 50))
    exclude: set[int] = set()
    if isinstance(ticket_or_text, int):
        found = _ticket_text(session, ticket_or_text)
        if found is None:
            return []
        subject, body, language = found
        exclude.add(ticket_or_text)
    else:
        body = ticket_or_text
    weights = _query_terms(subject, body, language)
    if not weights:
        return []
    key = _db_key(session)
    df = {t: n for t, n in _DF.counts(session, key, weights).items() if n > 0}
    if not df:
        return []
    total, avgdl = _DF.total(session, key)
    total = max(total, max(df.values()))

    def idf(t: str) -> float:  # FTS5's: never below a millionth
        return max(math.log((total - df[t] + 0.5) / (df[t] + 0.5)), 1e-6)

    kept = sorted(df, key=lambda t: (-weights[t] * idf(t), t))[:SIMILAR_TERMS]
    probes: list[str] = []
    postings = 0
    for t in sorted(kept, key=lambda t: (df[t], t)):
        if probes and postings + df[t] > SIMILAR_POSTINGS:
            break
        probes.append(t)
        postings += df[t]
    best = _coarse(session, probes, {t: idf(t) * min(weights[t], 3.0) for t in probes},
                   max(SIMILAR_RERANK, limit * 4))  # fmt: skip
    ranked = _bm25(session, best, {t: idf(t) for t in kept}, weights, avgdl)
    return _past_fixes(session, ranked, exclude, include_security, limit)


def _coarse(session: Session, terms: Sequence[str], weight: dict[str, float], n: int) -> list[int]:
    """The `n` similar documents holding the most (by weight) of `terms`, in one statement."""
    if not terms:
        return []
    params: dict[str, Any] = {"n": n}
    parts = []
    for i, t in enumerate(terms):
        params[f"w{i}"] = weight[t]
        if _is_sqlite(session):
            params[f"t{i}"] = f'"{t}"'
            parts.append(f"SELECT rowid AS id, :w{i} AS w FROM similar_fts "
                         f"WHERE similar_fts MATCH :t{i}")  # fmt: skip
        else:
            params[f"t{i}"] = _tsquery_term(t)
            parts.append(f"SELECT id, CAST(:w{i} AS float8) AS w FROM similar_doc "
                         f"WHERE tsv @@ to_tsquery('simple', :t{i})")  # fmt: skip
    sql = (f"SELECT id FROM ({' UNION ALL '.join(parts)}) AS p "
           "GROUP BY id ORDER BY sum(w) DESC, id LIMIT :n")  # fmt: skip
    return list(session.scalars(text(sql), params))


def _bm25(
    session: Session, doc_ids: Sequence[int], idfs: dict[str, float], weights: Counter[str],
    avgdl: float,
) -> list[tuple[int, float]]:  # fmt: skip
    """(document id, BM25) of `doc_ids` for the kept query terms, best first."""
    if not doc_ids:
        return []
    rows = session.execute(
        select(SimilarDoc.id, SimilarDoc.head, SimilarDoc.terms).where(
            SimilarDoc.id.in_(list(doc_ids))
        )
    ).all()
    out = []
    for doc_id, head, body in rows:
        head_terms, body_terms = head.split(), body.split()
        dl = len(head_terms) + len(body_terms)
        tf = Counter(body_terms)
        for term in head_terms:
            tf[term] += _HEAD_BM25
        norm = _K1 * (1 - _B + _B * dl / avgdl)
        score = 0.0
        for term, term_idf in idfs.items():
            f = tf.get(term)
            if f:
                score += min(weights[term], 3.0) * term_idf * f * (_K1 + 1) / (f + norm)
        out.append((doc_id, score))
    out.sort(key=lambda r: (-r[1], r[0]))
    return out


def _past_fixes(
    session: Session, ranked: list[tuple[int, float]], exclude: set[int], include_security: bool,
    limit: int,
) -> list[PastFix]:  # fmt: skip
    if not ranked:
        return []
    rank = dict(ranked[: limit * 4 + 8])  # more only if these are filtered away
    if len(rank) < len(ranked):
        first = _past_fixes(session, ranked[: limit * 4 + 8], exclude, include_security, limit)
        if len(first) == limit:
            return first
        rank = dict(ranked)
    rows = session.execute(
        select(SimilarDoc.id, SimilarDoc.ticket_id, SimilarDoc.resolution, SimilarDoc.resolved_at,
               Ticket.subject, Ticket.status, Ticket.security)
        .join(Ticket, Ticket.id == SimilarDoc.ticket_id)
        .where(SimilarDoc.id.in_(list(rank)))
    ).all()  # fmt: skip
    kept = sorted(
        (r for r in rows if r.ticket_id not in exclude and r.status in FINISHED_STATUSES
         and (include_security or not r.security)),
        key=lambda r: (-rank[r.id], r.ticket_id),
    )[:limit]  # fmt: skip
    helpful: dict[int, int] = {}
    if kept:
        helpful = dict(session.execute(
            select(Suggestion.suggested_id, func.count())
            .where(Suggestion.suggested_id.in_([r.ticket_id for r in kept]),
                   Suggestion.helpful_at.is_not(None))
            .group_by(Suggestion.suggested_id)
        ).all())  # fmt: skip
    return [
        PastFix(number=r.ticket_id, subject=r.subject, status=r.status, resolution=r.resolution,
                resolved_at=r.resolved_at, rank=rank[r.id], helpful=int(helpful.get(r.ticket_id, 0)))
        for r in kept
    ]  # fmt: skip


# --- schema helpers ----------------------------------------------------------------

# Objects migration 0007 makes that the models do not describe.
_INDEX_TABLES = ("search_fts", "similar_fts", "similar_vocab")


def is_index_object(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """For Alembic's ``include_name``: False for the database's own index objects
    (the FTS5 tables and their shadow tables, the ``tsv`` columns and their
    GIN indexes), which are not in the models."""
    if name is None:
        return True
    if type_ == "table":
        return not any(name == t or name.startswith(t + "_") for t in _INDEX_TABLES)
    if type_ == "column":
        return not (name == "tsv" and parent_names.get("table_name") in ("search_doc",
                                                                          "similar_doc"))  # fmt: skip
    if type_ == "index":
        return name not in ("ix_search_doc_tsv", "ix_similar_doc_tsv")
    return True


# --- rebuild (migration 0007's backfill, and `maild search reindex`) ---------------


def resolution_of(session: Session | Connection, ticket_id: int) -> str:
    """How a finished ticket was resolved: the note of its last change to
    resolved/closed, else the last public reply of an agent ("" if neither)."""
    note = session.execute(
        select(Event.detail)
        .where(Event.ticket_id == ticket_id, Event.kind == "status",
               Event.new.in_(list(FINISHED_STATUSES)))
        .order_by(Event.id.desc())
        .limit(4)
    ).all()  # fmt: skip
    for (detail,) in note:
        reason = (detail or {}).get("reason") if isinstance(detail, dict) else None
        if reason:
            return str(reason)
    return last_reply(session, ticket_id)


def requester_texts(session: Session | Connection, ticket_id: int, limit: int = 3) -> list[str]:
    """The requester's words on a ticket: its first public incoming messages."""
    return list(session.scalars(
        select(Article.text)
        .where(Article.ticket_id == ticket_id, Article.direction == Direction.IN,
               Article.kind == ArticleKind.MESSAGE, Article.visibility == Visibility.PUBLIC)
        .order_by(Article.id)
        .limit(limit)
    ))  # fmt: skip


def last_reply(session: Session | Connection, ticket_id: int) -> str:
    """The last public reply of an agent on a ticket, as written ("" if none)."""
    reply = session.scalar(
        select(SearchDoc.body)
        .where(SearchDoc.ticket_id == ticket_id, SearchDoc.kind == "reply")
        .order_by(SearchDoc.id.desc())
        .limit(1)
    )
    return reply or ""


def has_resolution(session: Session, ticket_id: int) -> bool:
    return (
        session.scalar(select(SimilarDoc.id).where(SimilarDoc.ticket_id == ticket_id)) is not None
    )


_REPLY_TAIL = re.compile(r"\n-- ?\n", re.MULTILINE)


def _reply_words(rendered: str) -> str:
    """An agent's words in a rendered ``reply`` mail: above the signature,
    without the agent's name line (rebuild only; live replies are indexed as
    written)."""
    cut = _REPLY_TAIL.search(rendered)
    head = rendered[: cut.start()] if cut else rendered
    paragraphs = head.rstrip().rsplit("\n\n", 1)
    return paragraphs[0].strip() if len(paragraphs) == 2 else head.strip()


def rebuild(session: Session, *, batch: int = 2000) -> tuple[int, int]:
    """Index every ticket from scratch (the caller commits); (documents, past fixes).

    Incoming messages and notes as they are, agents' replies from the mails
    sent (their words above the signature), resolution notes from the status
    events. Quoted text is indexed as it stands (live indexing strips it).
    """
    session.execute(delete(SimilarDoc))
    session.execute(delete(SearchDoc))
    docs = fixes = 0
    tickets = select(Ticket.id, Ticket.subject, Ticket.language, Ticket.status,
                     Ticket.resolved_at, Ticket.closed_at, Ticket.updated_at, Contact.name,
                     Contact.email).join(Contact, Contact.id == Ticket.requester_id
                                         ).order_by(Ticket.id)  # fmt: skip
    last = 0
    while True:
        chunk = session.execute(tickets.where(Ticket.id > last).limit(batch)).all()
        if not chunk:
            break
        last = chunk[-1].id
        ids = [t.id for t in chunk]
        articles = session.execute(
            select(Article.id, Article.ticket_id, Article.kind, Article.visibility,
                   Article.direction, Article.text, Outbox.kind.label("outbox_kind"),
                   Article.created_at)
            .outerjoin(Outbox, Outbox.article_id == Article.id)
            .where(Article.ticket_id.in_(ids))
            .order_by(Article.id)
        ).all()  # fmt: skip
        by_ticket: dict[int, list[Any]] = {}
        for a in articles:
            by_ticket.setdefault(a.ticket_id, []).append(a)
        rows = []
        for t in chunk:
            head = analyze(head_text(t.id, t.subject, t.name, t.email), t.language, 2000)
            for a in by_ticket.get(t.id, ()):
                if a.direction == Direction.IN and a.kind in (
                    ArticleKind.MESSAGE,
                    ArticleKind.NOTE,
                ):
                    kind = "note" if a.kind == ArticleKind.NOTE else "message"
                    rows.append({"ticket_id": t.id, "article_id": a.id, "kind": kind,
                                 "visibility": a.visibility, "language": t.language,
                                 "head": head, "terms": analyze(a.text or "", t.language),
                                 "body": None, "created_at": a.created_at})  # fmt: skip
                elif a.direction == Direction.OUT and a.outbox_kind == "reply":
                    said = _reply_words(a.text or "")
                    rows.append({"ticket_id": t.id, "article_id": a.id, "kind": "reply",
                                 "visibility": Visibility.PUBLIC, "language": t.language,
                                 "head": head, "terms": analyze(said, t.language),
                                 "body": said, "created_at": a.created_at})  # fmt: skip
        if rows:
            session.execute(insert(SearchDoc), rows)
            docs += len(rows)
        for t in chunk:
            if t.status in FINISHED_STATUSES:
                index_resolution(
                    session, ticket_id=t.id, language=t.language, subject=t.subject,
                    problem="\n".join(requester_texts(session, t.id))[:8000], resolution=resolution_of(session, t.id),
                    resolved_at=t.resolved_at or t.closed_at or t.updated_at,
                )  # fmt: skip
                fixes += 1
    log.info("search index rebuilt: %d documents, %d past fixes", docs, fixes)
    return docs, fixes
