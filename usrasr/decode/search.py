"""One-best search of CTC log-posteriors through an HLG or HP graph (kaldi-decoder).

Besides the label sequence, the best path gives the token emitted at every
(subsampled) frame.  From it we recover when each output unit was spoken and
a confidence: the mean posterior, under the model, of the unit's tokens over
the frames where the best path emits them (repeats included, blanks not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import kaldi_decoder
import kaldifst
import numpy as np

from usrasr.graph.hlg import SILENCE_PHONE, SILENCE_WORD, Lang
from usrasr.utils.console import log
from usrasr.utils.processes import forked_map

Unit = Literal["word", "phone"]


@dataclass(frozen=True)
class SearchOptions:
    """Search settings.

    ``lm_scale`` weighs the graph (LM + lexicon) against the acoustics; it is
    applied by dividing the log-posteriors, which ranks paths exactly as
    multiplying the graph costs would.  None takes the scale recorded with the
    model (:class:`usrasr.models.acoustic.LoadedModel`), 1 unless training chose one.  ``blank_penalty`` is subtracted from
    the blank's log-posterior before scaling (positive: fewer deletions).
    """

    # 10 keeps the search within its target (RTF 0.01 per core) even for blurry posteriors
    # (docs/results/2026-11-22-decode-speed.md); widen it when a model is very unsure.
    beam: float = 10.0
    max_active: int = 7000
    min_active: int = 20
    lm_scale: float | None = None
    blank_penalty: float = 0.0


@dataclass(frozen=True)
class TimedUnit:
    """A word or phone of the best path: label, seconds, and confidence in [0, 1]."""

    label: str
    start: float
    end: float
    confidence: float


@dataclass
class Hypothesis:
    """The best path: labels, and per-label timings when they could be recovered."""

    labels: list[str]
    units: list[TimedUnit] = field(default_factory=list)
    reached_final: bool = True

    @property
    def text(self) -> str:
        return " ".join(self.labels)


@dataclass(frozen=True)
class _Segment:
    """A run of frames in which the best path emits one token (CTC collapsed)."""

    token: int
    first: int
    last: int
    score: float  # sum of posteriors over the run's frames


def _segments(frame_tokens: list[int], posteriors: np.ndarray) -> list[_Segment]:
    segments: list[_Segment] = []
    previous = 0
    for t, token in enumerate(frame_tokens):
        if token != 0:
            p = float(posteriors[t, token])
            if token == previous and segments and segments[-1].last == t - 1:
                s = segments[-1]
                segments[-1] = _Segment(token, s.first, t, s.score + p)
            else:
                segments.append(_Segment(token, t, t, p))
        previous = token
    return segments


@dataclass(frozen=True)
class BestPath:
    """The best path of one utterance: the token of every frame (0 = blank), the output labels, its cost."""

    frame_tokens: np.ndarray
    olabels: list[int]
    cost: float
    reached_final: bool


class CtcDecoder:
    """kaldi-decoder's one-best search over a graph whose input labels are token id + 1.

    The one place the decoder is set up; reusable across utterances, single-threaded.
    """

    def __init__(self, graph: kaldifst.StdVectorFst, options: SearchOptions = SearchOptions()):
        decoder_options = kaldi_decoder.FasterDecoderOptions()
        decoder_options.beam = options.beam
        decoder_options.max_active = options.max_active
        decoder_options.min_active = options.min_active
        # The C++ decoder keeps a reference to the graph, not a copy: keep it alive.
        self.graph = graph
        self._decoder = kaldi_decoder.FasterDecoder(graph, decoder_options)

    def best_path(self, scores: np.ndarray) -> BestPath | None:
        """The best path through ``scores`` ``(T, V)``, or None when no path covers every frame."""
        self._decoder.decode(kaldi_decoder.DecodableCtc(scores))
        reached_final = self._decoder.reached_final()
        _, best = self._decoder.get_best_path()
        ok, ilabels, olabels, weight = kaldifst.get_linear_symbol_sequence(best)
        if not ok or len(ilabels) != scores.shape[0]:
            return None
        # DecodableCtc reads token t at graph ilabel t + 1.
        return BestPath(np.asarray(ilabels) - 1, list(olabels), weight.value1 + weight.value2, reached_final)


class GraphSearch:
    """Decode (T, V) log-posteriors with a compiled graph; reusable across utterances."""

    def __init__(
        self,
        graph: kaldifst.StdVectorFst,
        lang: Lang,
        unit: Unit,
        options: SearchOptions = SearchOptions(),
        seconds_per_frame: float = 0.01,
    ):
        """``seconds_per_frame``: duration of one model output frame (the model's ``frame_shift``)."""
        self.lang = lang
        self.unit = unit
        self.options = options
        self.seconds_per_frame = seconds_per_frame
        self._decoder = CtcDecoder(graph, options)
        self.graph = self._decoder.graph
        self._token_ids = lang.tokens
        self._token_names = lang.model_tokens
        self._silence = lang.tokens.get(SILENCE_PHONE)

    def scaled(self, log_probs: np.ndarray) -> np.ndarray:
        """The scores the search sees (see :class:`SearchOptions`)."""
        scores = np.array(log_probs, dtype=np.float32, copy=True)
        scores[:, 0] -= self.options.blank_penalty
        scores /= 1.0 if self.options.lm_scale is None else self.options.lm_scale
        return scores

    def search(self, log_probs: np.ndarray) -> Hypothesis:
        """Best path for one utterance's log-posteriors ``(T, V)``."""
        if log_probs.shape[0] == 0:
            return Hypothesis([])
        if log_probs.shape[1] != len(self._token_names):
            raise ValueError(f"posteriors have {log_probs.shape[1]} tokens, the graph {len(self._token_names)}")
        best = self._decoder.best_path(self.scaled(log_probs))
        if best is None:
            log.debug("no complete path through the graph")
            return Hypothesis([], reached_final=False)
        olabels, reached_final = best.olabels, best.reached_final
        segments = _segments(best.frame_tokens.tolist(), np.exp(log_probs))
        if self.unit == "phone":
            labels = [self._token_names[o] for o in olabels]
            units = [self._timed(self._token_names[s.token], [s]) for s in segments]
        else:
            labels = [self.lang.word_names[o] for o in olabels if self.lang.word_names[o] != SILENCE_WORD]
            units = self._word_units(labels, segments)
        return Hypothesis(labels, units, reached_final)

    def search_all(self, log_probs: list[np.ndarray], workers: int = 1) -> list[Hypothesis]:
        """:meth:`search` of each utterance, in ``workers`` forked processes (the decoder is
        single-threaded; the workers inherit the graph)."""
        return forked_map(self.search, log_probs, workers)

    def _timed(self, label: str, segments: list[_Segment]) -> TimedUnit:
        frames = sum(s.last - s.first + 1 for s in segments)
        return TimedUnit(
            label,
            start=round(segments[0].first * self.seconds_per_frame, 3),
            end=round((segments[-1].last + 1) * self.seconds_per_frame, 3),
            confidence=round(sum(s.score for s in segments) / frames, 4),
        )

    def _word_units(self, words: list[str], segments: list[_Segment]) -> list[TimedUnit]:
        """Split the token runs into words by matching the lexicon pronunciations.

        Silence runs between words are skipped (L's optional silence).  A word
        may have several pronunciations, so this is a small dynamic programme
        over (words matched, runs consumed); the path is in L, so a split exists.
        """

        def skip_silence(s: int) -> int:
            while s < len(segments) and segments[s].token == self._silence:
                s += 1
            return s

        # reachable[s] = (previous position, runs of the last word) after matching w words
        reachable: dict[int, tuple[int, int]] = {skip_silence(0): (-1, 0)}
        history = []
        for word in words:
            following: dict[int, tuple[int, int]] = {}
            for s in reachable:
                for pron in self.lang.pronunciations.get(word, []):
                    ids = [self._token_ids[p] for p in pron]
                    if [seg.token for seg in segments[s : s + len(ids)]] == ids:
                        following.setdefault(skip_silence(s + len(ids)), (s, len(ids)))
            history.append(following)
            reachable = following
        if not words or len(segments) not in reachable:
            if words:
                log.debug("could not align the best path's tokens to its words; no timings")
            return []
        units, position = [], len(segments)
        for word, step in zip(reversed(words), reversed(history)):
            start, length = step[position]
            units.append(self._timed(word, segments[start : start + length]))
            position = start
        return units[::-1]
