"""The phone set shared by the lexicon, the LMs, the TTS alignments and scoring.

ARPAbet as in CMUdict, with stress removed (39 phones), plus ``SIL`` for
silence/pauses and ``SPN`` for spoken noise / unknown words (icefall's
``lang_phone`` convention).  Both tables are shipped as plain files in
``data/lang/``: ``phones.txt`` (the inventory, in token order) and
``ipa2arpabet.tsv`` (how espeak-ng's and piper's IPA become these phones).
"""

from __future__ import annotations

import re
import unicodedata

from usrasr.utils.shipped import SHIPPED_DATA


def _read_inventory() -> dict[str, str]:
    rows = (line.split() for line in (SHIPPED_DATA / "lang" / "phones.txt").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#"))
    return {phone: kind for phone, kind in rows}


def _read_ipa_map() -> dict[str, tuple[str, ...]]:
    """IPA unit (NFD) -> phones; an empty tuple: the unit belongs to the phone before it."""
    table = {}
    for line in (SHIPPED_DATA / "lang" / "ipa2arpabet.tsv").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        ipa, phones, *_note = line.split("\t")
        table[unicodedata.normalize("NFD", ipa)] = tuple(phones.split())
    return table


_KINDS = _read_inventory()
ARPABET = [p for p, kind in _KINDS.items() if kind == "speech"]
SILENCE = next(p for p, kind in _KINDS.items() if kind == "silence")
SPOKEN_NOISE = next(p for p, kind in _KINDS.items() if kind == "noise")
PHONES = tuple(_KINDS)
NON_SPEECH = frozenset({SILENCE, SPOKEN_NOISE})  # tokens that are no spoken phone
IPA_TO_ARPABET = _read_ipa_map()

_STRESS = re.compile(r"[0-2]$")


def strip_stress(phone: str) -> str:
    """``AH0`` -> ``AH``; lower-case CMU phones (flite, festival) -> upper case."""
    return _STRESS.sub("", phone.strip()).upper()
