"""Phone inventories in IPA, and how one maps onto another by articulatory features.

A phone recogniser trained on other languages speaks a universal IPA inventory;
the target language's lexicon speaks its own phone set.  Knowing only the IPA of
each target phone (a phoneme inventory, no transcribed speech), every target
phone is read from the universal phones nearest to it in panphon's weighted
feature edit distance: the allophone-to-phoneme step of universal phone
recognisers (Allosaurus), done with articulatory distance instead of a
hand-made table.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Mapping, Sequence

from usrasr.lang.phones import ARPABET, IPA_TO_ARPABET
from usrasr.utils.errors import UsrasrError


def project_phone_ipa() -> dict[str, str]:
    """IPA of each ARPAbet phone of the project's phone set: the first unit of
    ``ipa2arpabet.tsv`` that spells exactly that phone (NFC)."""
    ipa: dict[str, str] = {}
    for unit, phones in IPA_TO_ARPABET.items():
        if len(phones) == 1 and phones[0] in ARPABET:
            ipa.setdefault(phones[0], unicodedata.normalize("NFC", unit))
    missing = [p for p in ARPABET if p not in ipa]
    if missing:
        raise UsrasrError(f"ipa2arpabet.tsv gives no IPA for {', '.join(missing)}")
    return ipa


def read_phone_ipa(path: str | Path) -> dict[str, str]:
    """A ``phone<TAB>IPA`` table: the IPA of a target phone set other than the project's."""
    table = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise UsrasrError(f"{path}:{number}: expected 'phone IPA', got '{line}'")
        table[fields[0]] = unicodedata.normalize("NFC", fields[1])
    if not table:
        raise UsrasrError(f"{path} lists no phones")
    return table


def ranked_phones(targets: Mapping[str, str], sources: Sequence[str], count: int) -> dict[str, list[tuple[str, float]]]:
    """For each target phone (name -> IPA), the ``count`` source IPA phones at the least weighted
    feature edit distance, nearest first, with their distances; ties keep the sources' order."""
    from panphon.distance import Distance

    if not sources:
        raise UsrasrError("the source inventory is empty")
    distance = Distance().weighted_feature_edit_distance
    ranked = {}
    for name, ipa in targets.items():
        scored = sorted(((distance(ipa, s), i) for i, s in enumerate(sources)))[:count]
        ranked[name] = [(sources[i], d) for d, i in scored]
    return ranked
