"""How well a phone transcription of train-audio agrees with a ``usrasr align`` dictionary.

The dictionary names spoken-word types (``dictionary.tsv``), and ``segments.tsv``
says where each type was spoken, so every named segment claims "word *w* was said
in utterance *u*".  A transcription agrees with the claim when the lexicon
pronunciation of *w* occurs in *u*'s phones.  Short words occur almost anywhere,
so each claim is scored against its word's base rate: the share of all
utterances whose phones contain it.  The agreement is the mean over claims of
``hit(u, w) - base(w)``: 0 for a transcription unrelated to the dictionary,
positive where the named words sit in the utterances the dictionary puts them in.
It needs no transcripts, so it can choose among unsupervised solutions.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from usrasr.lang.lexicon import read_lexicon
from usrasr.utils.errors import UsrasrError


def read_claims(align_dir: str | Path) -> list[tuple[str, str]]:
    """``(utterance, word)`` of every segment of a ``usrasr align --out`` dir whose type the dictionary names."""
    align_dir = Path(align_dir)
    paths = [align_dir / "dictionary.tsv", align_dir / "segments.tsv"]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise UsrasrError(f"{align_dir} is not a `usrasr align --out` dir (no {', '.join(missing)})")
    with open(paths[0], encoding="utf-8", newline="") as f:
        names = {row["spoken_word"]: row["word"] for row in csv.DictReader(f, delimiter="\t")}
    with open(paths[1], encoding="utf-8", newline="") as f:
        return [(row["utterance"], names[row["spoken_word"]])
                for row in csv.DictReader(f, delimiter="\t") if row["spoken_word"] in names]


class DictionaryAgreement:
    """Scores phone transcriptions (``{utterance: "P1 P2 ..."}``) against a dictionary's claims."""

    def __init__(self, align_dir: str | Path, lexicon: str | Path):
        pronunciations = read_lexicon(lexicon)
        claims = read_claims(align_dir)
        self.claims = [(u, " " + " ".join(pronunciations[w]) + " ") for u, w in claims if w in pronunciations]
        if not self.claims:
            raise UsrasrError(f"{align_dir}: its dictionary names no segment with a word of {lexicon}")

    def __call__(self, phones: dict[str, str]) -> float:
        padded = {u: f" {p} " for u, p in phones.items()}
        claims = [(u, w) for u, w in self.claims if u in padded]
        if not claims:
            raise UsrasrError("no utterance of the transcription has a segment that the dictionary names")
        words = sorted({w for _, w in claims})
        texts = list(padded.values())
        base = {w: np.mean([w in t for t in texts]) for w in words}
        return float(np.mean([(w in padded[u]) - base[w] for u, w in claims]))
