"""Language data (one TOML file per language) and which language a requester gets (pure).

**Language data.** Phrase lists are data, not code: ``maild/mail/lang/<code>.toml``,
one file per language (``en.toml``, ``fi.toml``, ``sv.toml`` ...), each a set of
sections, one per concern and owner::

    [language]      name = "Suomi"                    (every file)
    [autoreply]     subjects, subject_endings, body, reply_prefixes   (screening)
    [bounce]        subjects, body, forward_prefixes                  (screening)
    [thanks] [still_broken] [rating] [quotes] ...      (added by their owners)

An admin adds a language, or phrases to one, without code: ``languages.directory``
names a folder of more ``<code>.toml`` files in the same format; a file for a
built-in code extends it (lists are appended to, other values replaced), any
other code adds a language. Read it all through `load_languages()`::

    langs = load_languages(settings.languages.directory)   # cached per folder
    langs.strings("autoreply", "subjects")      # every language's list, in one tuple
    langs["fi"].strings("autoreply", "body")    # one language's list
    langs.codes                                 # ("da", "de", "en", ...)

A value of the wrong type, or a file that is not TOML, raises `ConfigError`
naming the file and key; `maild check-config` loads everything once.

**Language choice.** maild writes mail in the languages it has templates for
(`spoken_languages`: each ``templates/<code>/`` folder). A requester gets, in
order: the contact's recorded language, the message's ``Content-Language``, a
detection on the text, the configured default. Detection counts each spoken
language's common words (``[detect] words``) and its telling letters
(``letters``: ä/ö for Finnish, å for Swedish) in the first few thousand
characters; it answers only when one language clearly leads. Adding a
language is a template folder plus its data file: no code.
"""

from __future__ import annotations

import functools
import re
import tomllib
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from maild.errors import ConfigError

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def builtin_templates_dir() -> Path:
    """The built-in templates: inside the installed package, else the checkout's ``templates/``.

    A wheel carries the top-level ``templates/`` folder as ``maild/templates``
    (pyproject's force-include), so this works from a wheel, ``pip install
    --user`` or ``--target``, and pipx alike; a checkout (editable install)
    has them beside the package.
    """
    packaged = resources.files("maild") / "templates"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "templates"


@functools.cache
def spoken_languages(override_dir: Path | None = None) -> tuple[str, ...]:
    """The languages maild writes mail in: every ``templates/<code>/`` folder (the
    built-in ones and the admin's ``templates.directory``) with a template in it."""
    codes: set[str] = set()
    for folder in (override_dir, builtin_templates_dir()):
        if folder is None or not folder.is_dir():
            continue
        for sub in folder.iterdir():
            if sub.is_dir() and _CODE_RE.match(sub.name) and any(sub.glob("*.txt.j2")):
                codes.add(sub.name)
    return tuple(sorted(codes))


@dataclass(frozen=True)
class _Detector:
    code: str
    words: frozenset[str]
    letters: str


@functools.cache
def _detectors(codes: tuple[str, ...], directory: Path | None) -> tuple[_Detector, ...]:
    langs = load_languages(directory)
    out = []
    for code in codes:
        language = langs.get(code)
        if language is None:
            continue
        words = frozenset(w.lower() for w in language.strings("detect", "words"))
        letters = language.table("detect").get("letters", "")
        if not isinstance(letters, str):
            raise ConfigError(CONFIG_KEY, f"{code}.toml: [detect] letters must be a string")
        if words:
            out.append(_Detector(code, words, letters.lower()))
    return tuple(out)


def detect(
    text: str,
    languages: tuple[str, ...] = ("en", "fi"),
    limit: int = 3000,
    directory: Path | None = None,
) -> str | None:
    """The language of `text` among `languages`, from their ``[detect]`` data; None if unclear.

    Each language scores a point per word of its ``words`` list, and half a
    point per word no list has that holds one of its ``letters`` (ä/ö for
    Finnish, å for Swedish); the leader must have at least 2 points and half as
    many again as the next.
    """
    words = _WORD.findall(text[:limit].lower())
    if not words:
        return None
    detectors = _detectors(tuple(languages), directory)
    points = {d.code: 0.0 for d in detectors}
    for w in words:
        known = [d for d in detectors if w in d.words]
        for d in known:
            points[d.code] += 1
        if not known:  # a word no list has: its letters tell a little
            for d in detectors:
                if d.letters and any(c in w for c in d.letters):
                    points[d.code] += 0.5
    scores = [(score, code) for code, score in points.items()]
    if not scores:
        return None
    scores.sort(reverse=True)
    best, code = scores[0]
    runner_up = scores[1][0] if len(scores) > 1 else 0.0
    if best >= 2 and best > runner_up * 1.5:
        return code
    return None


def choose(
    contact_language: str | None,
    content_language: str | None,
    text: str,
    default: str,
    languages: tuple[str, ...] = ("en", "fi"),
    directory: Path | None = None,
) -> tuple[str, str]:
    """(language, where it came from: "contact" | "header" | "detected" | "default").

    Only `languages` (those maild writes mail in, `spoken_languages`) are chosen.
    """
    if contact_language in languages:
        return str(contact_language), "contact"
    if content_language in languages:
        return str(content_language), "header"
    detected = detect(text, languages, directory=directory)
    if detected is not None:
        return detected, "detected"
    return default, "default"


# --- language data -------------------------------------------------------------------

LANG_DIR = Path(__file__).with_name("lang")
_CODE_RE = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{1,8})?$")
CONFIG_KEY = "languages.directory"


@dataclass(frozen=True)
class Language:
    """One language's data: its sections as read from ``<code>.toml`` (plus extensions)."""

    code: str
    name: str
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # where it was read from, for error messages

    def table(self, section: str) -> Mapping[str, Any]:
        """A section as a mapping (empty when the file has none)."""
        return self.sections.get(section, {})

    def strings(self, section: str, key: str) -> tuple[str, ...]:
        """A list of strings, e.g. ``strings("autoreply", "subjects")``; () when absent."""
        value = self.table(section).get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            where = " or ".join(self.files) or f"{self.code}.toml"
            raise ConfigError(CONFIG_KEY, f"{where}: [{section}] {key} must be a list of strings")
        return tuple(value)


class Languages(Mapping[str, Language]):
    """Every language with data, by code (a read-only mapping)."""

    def __init__(self, languages: Mapping[str, Language]) -> None:
        self._by_code = dict(sorted(languages.items()))

    def __getitem__(self, code: str) -> Language:
        return self._by_code[code]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_code)

    def __len__(self) -> int:
        return len(self._by_code)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(self._by_code)

    def strings(self, section: str, key: str) -> tuple[str, ...]:
        """The list `key` of `section` of every language, joined, duplicates dropped."""
        seen: dict[str, None] = {}
        for language in self._by_code.values():
            for value in language.strings(section, key):
                seen.setdefault(value, None)
        return tuple(seen)


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(CONFIG_KEY, f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(CONFIG_KEY, f"{path} is not valid TOML: {exc}") from None
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(CONFIG_KEY, f"{path}: {name} must be a table ([{name}])")
    return data


def _merge(base: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """`more` over `base`: lists are appended to, tables merged, other values replaced."""
    out = dict(base)
    for key, value in more.items():
        old = out.get(key)
        if isinstance(old, list) and isinstance(value, list):
            out[key] = [*old, *(v for v in value if v not in old)]
        elif isinstance(old, dict) and isinstance(value, dict):
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ConfigError(CONFIG_KEY, f"no such directory: {folder}")
    out = []
    for path in sorted(folder.glob("*.toml")):
        if not _CODE_RE.match(path.stem):
            raise ConfigError(CONFIG_KEY, f"{path}: the file name must be a language code "
                              "such as fi.toml or pt-br.toml")  # fmt: skip
        out.append(path)
    return out


@functools.cache
def load_languages(directory: Path | None = None) -> Languages:
    """The built-in language data, extended by the files in `directory` (cached).

    Raises `ConfigError` for a file that is not TOML, a section that is not a
    table, or a file name that is not a language code.
    """
    raw: dict[str, dict[str, Any]] = {}
    files: dict[str, list[str]] = {}
    for folder in (LANG_DIR, *([directory] if directory is not None else [])):
        for path in _files(folder):
            code = path.stem
            raw[code] = _merge(raw.get(code, {}), _read(path))
            files.setdefault(code, []).append(str(path))
    out = {}
    for code, sections in raw.items():
        name = sections.get("language", {}).get("name", code)
        out[code] = Language(code, str(name), sections, tuple(files[code]))
    return Languages(out)


# --- matching phrases -------------------------------------------------------------------

_EXTRA = {"\u2019": "'", "\u2018": "'", "\u00b4": "'", "`": "'", "\u00a0": " ", "\u202f": " "}


def _fold_table() -> dict[int, str]:
    """Each accented letter of the Latin, Greek and Cyrillic blocks to its base letters."""
    table: dict[int, str] = {ord(k): v for k, v in _EXTRA.items()}
    for start, end in ((0x00C0, 0x0250), (0x0370, 0x0530), (0x1E00, 0x1F00)):
        for code in range(start, end):
            char = chr(code).casefold()
            base = "".join(c for c in unicodedata.normalize("NFKD", char)
                           if not unicodedata.combining(c))  # fmt: skip
            if base != chr(code):
                table[code] = base
    return table


_FOLD = _fold_table()


def fold(text: str) -> str:
    """Text as phrases are matched: case-folded, accents dropped, apostrophes and
    spaces made plain ("Réponse  automatique" -> "reponse  automatique")."""
    if text.isascii():
        return text.lower()
    return text.casefold().translate(_FOLD)


WILDCARD_CHARS = 60


_SPACE, _WILD, _END = "\x00space", "\x00wild", "\x00end"
_UNIT = {_SPACE: r"\s+", _WILD: rf"(?:\s+[^\n]{{0,{WILDCARD_CHARS}}}?)?"}


def _units(phrase: str) -> list[str]:
    out: list[str] = []
    for i, word in enumerate(phrase.split()):
        if word == "*":  # up to WILDCARD_CHARS characters of the same line
            out.append(_WILD)
            continue
        if i:
            out.append(_SPACE)
        out.extend(word)
    return out


def _trie_pattern(node: dict[str, Any]) -> str:
    alternatives = [
        (_UNIT[unit] if unit in _UNIT else re.escape(unit)) + _trie_pattern(child)
        for unit, child in sorted(node.items())
        if unit != _END
    ]
    if not alternatives:
        return ""
    if len(alternatives) == 1 and _END not in node:
        return alternatives[0]
    group = "(?:" + "|".join(alternatives) + ")"
    return group + "?" if _END in node else group


def phrase_pattern(phrases: tuple[str, ...] | list[str]) -> str:
    """A regular expression matching any of `phrases` in `fold`ed text.

    Any run of white space where a phrase has a space; a ``*`` word stands for
    up to 60 characters of the same line ("ich bin bis * nicht im büro"
    matches "Ich bin bis zum 7. Dezember nicht im Büro"). The phrases are
    merged into a trie, so the expression tries a handful of first letters at
    each position, not hundreds of phrases.
    """
    root: dict[str, Any] = {}
    for phrase in {fold(p).strip() for p in phrases if p.strip()}:
        node = root
        for unit in _units(phrase):
            node = node.setdefault(unit, {})
        node[_END] = {}
    return _trie_pattern(root) or r"(?!)"
