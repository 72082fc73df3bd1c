"""Language-light text primitives shared by the lexical evaluators."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Scripts written without spaces: each character is a token, otherwise a whole
# Chinese or Japanese sentence would be a single "word" and never overlap anything.
_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(rf"[{_UNSPACED}]|[^\W{_UNSPACED}]+")

# A sentence ends at . ! ? followed by whitespace (so "3.5" and "e.g" inside a
# token stay whole), at CJK full stops, or at a line break.
_SENTENCE_RE = re.compile(r"\S.*?(?:[.!?]+(?=\s|\Z)|[\u3002\uff01\uff1f]+|(?=\n)|\Z)", re.DOTALL)

_WHITESPACE_RE = re.compile(r"\s+")

_STOPWORD_TEXT = """
a an the and or but if then than so of to in on at by for with from into onto about
as is are was were be been being am do does did done have has had having it its this
that these those there here he she they them his her their our we you your i me my
mine us not no nor can could would should will shall may might must also very just
only such which who whom whose what when where why how all any each both more most
other some own same too s t yes sure ok okay thanks thank please hello hi well
的 了 是 在 和
"""
_HIRAGANA = (chr(code) for code in range(0x3040, 0x30A0))  # particles and inflections
STOPWORDS = frozenset(_STOPWORD_TEXT.split()).union(_HIRAGANA)


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str
    start: int
    end: int


def canonical(text: str) -> str:
    """NFC, so canonically equivalent spellings compare equal.

    "é" may arrive precomposed (U+00E9, what most models and keyboards emit) or as "e" plus
    a combining accent (NFD, e.g. text typed or copied on macOS); Unicode says the two are
    the same text. NFC only merges such canonical equivalents. NFKC would also fold
    compatibility characters (superscript "x²" to "x2", fractions such as "½", full-width
    letters and digits to ASCII), which changes what an answer says, so it is not used.
    """
    return unicodedata.normalize("NFC", text)


def fold_case(text: str) -> str:
    """Canonical caseless form (Unicode's canonical caseless match, in NFC).

    Decomposing before casefold matters for a few characters (e.g. U+0345, the combining
    iota subscript); composing afterwards keeps the result comparable with `canonical`.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).casefold())


def tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(fold_case(text))


def count_tokens(text: str) -> int:
    return sum(1 for _ in _TOKEN_RE.finditer(canonical(text)))


def content_terms(text: str) -> set[str]:
    """Tokens that carry meaning, with plurals folded so "profits" supports "profit"."""
    return {
        token[:-1] if len(token) > 3 and token[-1] == "s" and token[-2] != "s" else token
        for token in _TOKEN_RE.findall(fold_case(text))
        if token not in STOPWORDS
    }


def sentences(text: str) -> Iterator[Sentence]:
    for match in _SENTENCE_RE.finditer(text):
        yield Sentence(match.group().rstrip(), match.start(), match.end())


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE_RE.sub(" ", text).strip()


def phrase_pattern(phrase: str) -> str:
    """Regex for a phrase that tolerates any run of whitespace between its words."""
    return r"\s+".join(re.escape(word) for word in phrase.split())


def clip(text: str, limit: int = 200) -> str:
    """Details are stored per row; a 1 MB output must not be copied into them."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence via bit-parallel rows (Hyyrö 2004).

    Bits index the shorter sequence, so a huge output against a short reference costs
    one pass over the output with small integers instead of an O(n*m) table.
    """
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    if not short:
        return 0
    masks: dict[str, int] = {}
    for position, token in enumerate(short):
        masks[token] = masks.get(token, 0) | (1 << position)
    full = (1 << len(short)) - 1
    row = full
    for token in long:
        matches = row & masks.get(token, 0)
        row = ((row + matches) | (row - matches)) & full
    return len(short) - row.bit_count()
