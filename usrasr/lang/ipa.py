"""The universal phone inventory: IPA folded and segmented into phones, with panphon's features.

Phone labels of several languages share one inventory when what distinguishes
a phone only within a language is folded away: length (``ː ˑ``), stress
(``ˈ ˌ``), syllable and tone marks, and diacritics, both combining (``r̝̊``
-> ``r``, ``ɔ̃`` -> ``ɔ``) and modifier letters (``tʲ`` -> ``t``, ``pʰ`` ->
``p``).  The tie bar stays, so ``t͡s`` is one phone and ``ts`` two, as
panphon segments them.  A few symbols that espeak-ng writes outside panphon's
inventory are spelled as the nearest IPA segment first (``g`` -> ``ɡ``,
``ᵻ`` -> ``ɨ``, ``ɚ`` -> ``ə``).  Segments are NFC strings, as
:mod:`usrasr.lang.inventory` reads them.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter

_TIES = "\u0361\u035c"
_CEDILLA = "\u0327"
# Suprasegmentals and boundaries: stress, length, syllable, linking, tone letters, intonation.
_SUPRASEGMENTAL = re.compile("[ˈˌːˑ.‿|‖↗↘ꜛꜜ˥˦˧˨˩˩˧]")
# Single symbols outside panphon's segments, spelled as the IPA segment espeak-ng means.
_SPELLING = str.maketrans({
    "g": "ɡ", "ᵻ": "ɨ", "ᵿ": "ʊ", "ɚ": "ə", "ɝ": "ɜ", "ɫ": "l", "ʦ": "t͡s", "ʧ": "t͡ʃ", "ʤ": "d͡ʒ",
    "ʨ": "t͡ɕ", "ʥ": "d͡ʑ",
    '"': "",  # espeak-ng's mark of a Russian vowel variant it has no IPA for
})  # fmt: skip


@functools.cache
def feature_table():
    """panphon's feature table (built once per process: it reads its segment list)."""
    import panphon

    return panphon.FeatureTable()


def fold_ipa(ipa: str) -> str:
    """``ipa`` without suprasegmentals and diacritics (tie bars kept), NFC, words kept apart."""
    text = _SUPRASEGMENTAL.sub("", unicodedata.normalize("NFD", ipa)).translate(_SPELLING)
    kept: list[str] = []
    for ch in text:
        category = unicodedata.category(ch)
        # The cedilla is part of the letter ç (a palatal fricative, not the stop c).
        if ch in _TIES or (ch == _CEDILLA and kept[-1:] == ["c"]) or category not in ("Mn", "Lm", "Sk"):
            kept.append(ch)
    return unicodedata.normalize("NFC", "".join(kept))


def ipa_segments(ipa: str, unknown: Counter | None = None) -> list[str]:
    """The universal phones of an IPA string (word boundaries dropped), as NFC strings.

    Characters that panphon does not know as a segment even after folding are
    left out; ``unknown`` (if given) counts them.
    """
    table = feature_table()
    segments: list[str] = []
    for word in fold_ipa(ipa).split():
        found = [unicodedata.normalize("NFC", s) for s in table.ipa_segs(word)]
        if unknown is not None and "".join(found) != word:
            rest = word
            for segment in found:
                rest = rest.replace(segment, "", 1)
            unknown.update(rest)
        segments += found
    return segments


def articulatory_features(phones: list[str]) -> tuple[list[str], list[list[int]]]:
    """panphon's feature names and, per phone, its values (-1, 0 or 1)."""
    table = feature_table()
    rows = []
    for phone in phones:
        if not table.seg_known(phone):
            raise ValueError(f"panphon has no features for {phone!r}")
        rows.append([int(v) for v in table.fts(phone).numeric()])
    return list(table.names), rows
