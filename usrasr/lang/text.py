"""Text normalisation and sentence extraction shared by prepare, LMs and scoring.

Normalised text is upper-case words separated by single spaces: numbers and
common symbols spelled out, punctuation removed, word-internal apostrophes kept
(``DON'T``), matching CMUdict's spelling and icefall's LibriSpeech convention.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Iterator

from num2words import num2words

_TRANSLATE = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'",
        "\u201c": '"', "\u201d": '"',
        "\u2013": " ", "\u2014": " ", "\u2212": " ", "-": " ", "_": " ", "/": " ",
    }
)
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "=": " equals ", "@": " at ", "#": " number "}
_CURRENCY = re.compile(r"([$£€])\s?(\d[\d,]*(?:\.\d+)?)")
_CURRENCY_NAMES = {"$": "dollars", "£": "pounds", "€": "euros"}
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_YEAR = re.compile(r"^(1[1-9]|20)\d\d$")
_NOT_WORD = re.compile(r"[^A-Z' ]+")
_EDGE_APOSTROPHES = re.compile(r"(?<![A-Z])'|'(?![A-Z])")
_SENTENCE_END = re.compile(r'(?<=[.!?])["\')\]\u2019\u201d]*\s+(?=["\'(\[\u2018\u201c]?[A-Z0-9])')
_ABBREVIATION = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Jr|Sr|Mt|Gen|Col|Gov|Sen|Rep|Prof|vs|etc|No|[A-Z])\.$")


def _number_to_words(match: re.Match) -> str:
    token = match.group(0).replace(",", "")
    if "." in token:
        return " " + num2words(float(token)) + " "
    if _YEAR.match(token):
        return " " + num2words(int(token), to="year") + " "
    return " " + num2words(int(token)) + " "


def normalize_text(text: str) -> str:
    """Normalise a sentence for lexicon look-up, LM training and scoring."""
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE)
    text = _CURRENCY.sub(lambda m: f" {m.group(2)} {_CURRENCY_NAMES[m.group(1)]} ", text)
    text = _ORDINAL.sub(lambda m: " " + num2words(int(m.group(1)), to="ordinal") + " ", text)
    text = _NUMBER.sub(_number_to_words, text)
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).upper()
    text = _NOT_WORD.sub(" ", text)
    text = _EDGE_APOSTROPHES.sub(" ", text)
    return " ".join(text.split())


def split_sentences(paragraph: str) -> list[str]:
    """Split running text into sentences at ., ! or ? followed by a capital."""
    paragraph = " ".join(paragraph.split())
    sentences: list[str] = []
    for piece in _SENTENCE_END.split(paragraph):
        if sentences and _ABBREVIATION.search(sentences[-1]):
            sentences[-1] += " " + piece  # "Mr. Smith" is one sentence
        elif piece.strip():
            sentences.append(piece.strip())
    return sentences


def normalized_sentences(
    paragraphs: Iterable[str], min_words: int = 4, max_words: int = 30
) -> Iterator[str]:
    """Sentences from paragraphs, normalised, filtered to [min_words, max_words]."""
    for paragraph in paragraphs:
        for sentence in split_sentences(paragraph):
            norm = normalize_text(sentence)
            if min_words <= len(norm.split()) <= max_words:
                yield norm
