"""The phone set shared by the lexicon, the LMs, the TTS alignments and scoring.

ARPAbet as in CMUdict, with stress removed (39 phones), plus ``SIL`` for
silence/pauses and ``SPN`` for spoken noise / unknown words (icefall's
``lang_phone`` convention).
"""

from __future__ import annotations

import re

ARPABET = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG "
    "OW OY P R S SH T TH UH UW V W Y Z ZH"
).split()
SILENCE = "SIL"
SPOKEN_NOISE = "SPN"
PHONES = tuple(ARPABET + [SILENCE, SPOKEN_NOISE])
NON_SPEECH = frozenset({SILENCE, SPOKEN_NOISE})  # tokens that are no spoken phone

_STRESS = re.compile(r"[0-2]$")


def strip_stress(phone: str) -> str:
    """``AH0`` -> ``AH``; lower-case CMU phones (flite, festival) -> upper case."""
    return _STRESS.sub("", phone.strip()).upper()
