"""Error rates with Kaldi's counting: Levenshtein alignment (kaldialign), corpus-level totals.

Units:

* ``word``: words of ``usrasr.lang.text.normalize_text`` (the normalisation
  prepare applies to the corpus), for both reference and hypothesis;
* ``char``: the characters of that normalised text, the space between words
  kept as ``|`` so that word-boundary errors count (as ``jiwer.cer`` does);
* ``phone``: whitespace-separated phones, upper-cased, stress removed,
  silence (``SIL``) dropped: pauses are not phone errors.

A reference without a hypothesis is scored as all deletions; a hypothesis
without a reference is reported and ignored.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Literal, Mapping

import kaldialign

from usrasr.lang.phones import SILENCE, strip_stress

ScoreUnit = Literal["word", "phone", "char"]
UNITS = ("word", "phone", "char")
EPS = "*"  # alignment gap; cannot occur in normalised text or phone strings
WORD_BOUNDARY = "|"


def tokenize(text: str, unit: ScoreUnit) -> list[str]:
    """Split a transcript into the units that are scored."""
    if unit == "phone":
        return [p for p in (strip_stress(t) for t in text.split()) if p != SILENCE]
    from usrasr.lang.text import normalize_text  # lazily: pulls in num2words

    words = normalize_text(text).split()
    if unit == "word":
        return words
    return list(WORD_BOUNDARY.join(words))


@dataclass(frozen=True)
class UtteranceErrors:
    """One utterance's alignment and error counts."""

    id: str
    alignment: tuple[tuple[str, str], ...]  # (ref, hyp) pairs, EPS for a gap
    hyp_missing: bool = False

    @cached_property
    def counts(self) -> Counter:
        c = Counter()
        for r, h in self.alignment:
            c["ref"] += r != EPS
            c["ins"] += r == EPS
            c["del"] += h == EPS
            c["sub"] += r != EPS and h != EPS and r != h
        return c

    @property
    def num_errors(self) -> int:
        return self.counts["ins"] + self.counts["del"] + self.counts["sub"]


def _rate(errors: int, total: int) -> float:
    if total == 0:
        return 0.0 if errors == 0 else math.inf
    return 100.0 * errors / total


@dataclass
class ErrorStats:
    """Error counts over a set of utterances (``%WER``/``%PER``/``%CER`` by unit)."""

    unit: ScoreUnit
    utterances: list[UtteranceErrors]
    missing: list[str] = field(default_factory=list)  # references without hypothesis (scored)
    extra: list[str] = field(default_factory=list)  # hypotheses without reference (ignored)

    def _total(self, key: str) -> int:
        return sum(u.counts[key] for u in self.utterances)

    @property
    def ref_len(self) -> int:
        return self._total("ref")

    @property
    def insertions(self) -> int:
        return self._total("ins")

    @property
    def deletions(self) -> int:
        return self._total("del")

    @property
    def substitutions(self) -> int:
        return self._total("sub")

    @property
    def errors(self) -> int:
        return self.insertions + self.deletions + self.substitutions

    @property
    def error_rate(self) -> float:
        """Percent; ``inf`` when there are errors but no reference units."""
        return _rate(self.errors, self.ref_len)

    @property
    def num_sentences(self) -> int:
        return len(self.utterances)

    @property
    def sentence_errors(self) -> int:
        return sum(u.num_errors > 0 for u in self.utterances)

    @property
    def sentence_error_rate(self) -> float:
        return _rate(self.sentence_errors, self.num_sentences)

    def subset(self, ids: Iterable[str]) -> ErrorStats:
        keep = set(ids)
        return ErrorStats(
            self.unit,
            [u for u in self.utterances if u.id in keep],
            [i for i in self.missing if i in keep],
        )

    def by_group(self, utt2group: Mapping[str, str]) -> dict[str, ErrorStats]:
        """Stats per group (speaker, voice); utterances without a group are left out."""
        groups: dict[str, list[str]] = {}
        for u in self.utterances:
            if u.id in utt2group:
                groups.setdefault(utt2group[u.id], []).append(u.id)
        return {g: self.subset(ids) for g, ids in sorted(groups.items())}

    def frequent_errors(self) -> tuple[Counter, Counter, Counter]:
        """Counters of substitution pairs ``(ref, hyp)``, deleted refs and inserted hyps."""
        subs, dels, ins = Counter(), Counter(), Counter()
        for u in self.utterances:
            for r, h in u.alignment:
                if r == EPS:
                    ins[h] += 1
                elif h == EPS:
                    dels[r] += 1
                elif r != h:
                    subs[(r, h)] += 1
        return subs, dels, ins


def compute_error_rate(refs: Mapping[str, str], hyps: Mapping[str, str], unit: ScoreUnit = "word") -> ErrorStats:
    """Score hypotheses against references, both ``{utterance id: transcript}``.

    Every reference is scored (a missing hypothesis counts as empty, i.e. all
    deletions, and is listed in ``missing``); hypotheses without a reference
    are listed in ``extra`` and not scored.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    utterances = []
    for utt_id, ref_text in refs.items():
        ref = tokenize(ref_text, unit)
        hyp_text = hyps.get(utt_id)
        hyp = tokenize(hyp_text, unit) if hyp_text is not None else []
        alignment = tuple(kaldialign.align(ref, hyp, EPS))
        utterances.append(UtteranceErrors(utt_id, alignment, hyp_missing=hyp_text is None))
    return ErrorStats(
        unit,
        utterances,
        missing=[i for i in refs if i not in hyps],
        extra=[i for i in hyps if i not in refs],
    )
