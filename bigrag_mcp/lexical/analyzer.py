"""One analyzer for indexing and querying: Unicode words, case folded, stop words dropped, Snowball stems."""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from importlib import resources

import Stemmer

DEFAULT_LANGUAGE = "english"
LANGUAGES: tuple[str, ...] = tuple(sorted(Stemmer.algorithms()))
_WORD = re.compile(r"\w+")


def check_language(language: str) -> str:
    """The language if the Snowball stemmer knows it, else ValueError naming the choices."""
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r} is not one of {', '.join(LANGUAGES)}")
    return language


@cache
def stop_words(language: str) -> frozenset[str]:
    """The stop list shipped for `language` (empty when none is shipped: BM25's IDF then damps common words)."""
    source = resources.files("bigrag_mcp.lexical").joinpath("stopwords").joinpath(f"{language}.txt")
    if not source.is_file():
        return frozenset()
    lines = source.read_text(encoding="utf-8").splitlines()
    return frozenset(word for line in lines if not line.startswith("#") for word in line.split())


class Analyzer:
    """Text to index terms for one language; the same instance serves documents and queries."""

    def __init__(self, language: str = DEFAULT_LANGUAGE) -> None:
        self.language = check_language(language)
        self._stop = stop_words(language)
        self._stemmer = Stemmer.Stemmer(language, 100_000)

    def terms(self, text: str) -> list[str]:
        """The stemmed, stop-word-free terms of `text`, in order (repeats kept: they are term frequencies)."""
        words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
        stop = self._stop
        return self._stemmer.stemWords([w for w in words if w not in stop])


@cache
def analyzer(language: str = DEFAULT_LANGUAGE) -> Analyzer:
    """The shared analyzer of a language."""
    return Analyzer(language)
