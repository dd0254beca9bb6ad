"""N-gram LMs (ARPA, Kneser-Ney via kaldingram) and the LM rank condition.

Condition (2) of the method: the bigram joint matrix ``P[h, c]`` over phones
must have full column rank, otherwise different emission models give the same
audio marginal and the phone mapping is not identifiable.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_path, write_json_atomic

BOS, EOS = "<s>", "</s>"
# Above this condition number the bigram matrix is numerically rank-deficient
# for the amount of audio a user is likely to have.
CONDITION_WARN = 1e6


def train_arpa(sentences: Iterable[str], order: int, out: str | Path) -> Path:
    """Train a Kneser-Ney ARPA LM of ``order`` on whitespace-tokenised sentences."""
    from kaldingram.train import main as kaldingram_train

    out = Path(out)
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus.txt"
        with open(corpus, "w", encoding="utf-8") as f:
            n = 0
            for s in sentences:
                if s.strip():
                    f.write(s.strip() + "\n")
                    n += 1
        if n == 0:
            raise UsrasrError(f"no sentences to train the LM {out.name}")
        # kaldingram reports progress with tqdm on stderr; ours is the rich bar.
        with atomic_path(out) as tmp, contextlib.redirect_stderr(io.StringIO()):
            kaldingram_train(["--ngram-order", str(order), "--text", str(corpus), "--lm", str(tmp)])
    return out


@dataclass
class ArpaLM:
    """An ARPA LM as dictionaries of natural-log probabilities and back-offs."""

    order: int
    logprob: dict[tuple[str, ...], float]
    backoff: dict[tuple[str, ...], float]

    def conditional(self, history: tuple[str, ...], word: str) -> float:
        """ln P(word | history) with Katz-style back-off."""
        history = history[-(self.order - 1):] if self.order > 1 else ()
        penalty = 0.0
        while True:
            lp = self.logprob.get(history + (word,))
            if lp is not None:
                return penalty + lp
            if not history:
                return -math.inf
            penalty += self.backoff.get(history, 0.0)
            history = history[1:]

    def per_word_logprob(self, sentences: Iterable[str]) -> float:
        """Mean ln P per word (or phone: any token; ``</s>`` counted) of whitespace-tokenised sentences; words outside
        the vocabulary are left out, as is any sentence-level back-off to them."""
        total, words = 0.0, 0
        for sentence in sentences:
            history: tuple[str, ...] = (BOS,)
            for word in sentence.split() + [EOS]:
                lp = self.conditional(history, word)
                if lp > -math.inf:
                    total, words = total + lp, words + 1
                history += (word,)
        if not words:
            raise UsrasrError("no in-vocabulary words to score")
        return total / words

    @property
    def vocabulary(self) -> list[str]:
        return sorted(k[0] for k in self.logprob if len(k) == 1)


def held_out_per_word_logprob(sentences: list[str], order: int, every: int = 10) -> float:
    """:meth:`ArpaLM.per_word_logprob` of every ``every``-th sentence under an LM of ``order``
    trained on the others: how probable text the LM has not seen is, per word."""
    held_out = sentences[::every]
    rest = [s for i, s in enumerate(sentences) if i % every]
    with tempfile.TemporaryDirectory() as scratch:
        lm = read_arpa(train_arpa(rest, order, Path(scratch) / "held_out.arpa"))
    return lm.per_word_logprob(held_out)


def read_arpa(path: str | Path) -> ArpaLM:
    ln10 = math.log(10.0)
    logprob: dict[tuple[str, ...], float] = {}
    backoff: dict[tuple[str, ...], float] = {}
    order, current = 0, 0
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsrasrError(f"ARPA LM not found: {path}") from None
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line.startswith("ngram ") and "=" in line:
            order = max(order, int(line[6:].split("=")[0]))
        elif line.startswith("\\") and line.endswith("-grams:"):
            current = int(line[1:].split("-")[0])
        elif line.startswith("\\"):
            current = 0
        elif current:
            fields = line.split()
            ngram = tuple(fields[1 : 1 + current])
            logprob[ngram] = float(fields[0]) * ln10
            if len(fields) > 1 + current:
                backoff[ngram] = float(fields[1 + current]) * ln10
    if not logprob:
        raise UsrasrError(f"{path} is not an ARPA LM (no n-grams found)")
    return ArpaLM(order=order, logprob=logprob, backoff=backoff)


@dataclass
class RankReport:
    symbols: list[str]
    rank: int
    size: int
    condition_number: float
    smallest_singular_value: float
    full_rank: bool

    def summary(self) -> str:
        verdict = "full column rank" if self.full_rank else "RANK-DEFICIENT"
        return (f"phone bigram joint P[h,c]: rank {self.rank}/{self.size}, "
                f"condition number {self.condition_number:.3g}, "
                f"smallest singular value {self.smallest_singular_value:.3g} -> {verdict}")


def bigram_joint(lm: ArpaLM, unigram_counts: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """``P[h, c] = P(h) P(c | h)`` over the phones that occur in the text."""
    symbols = sorted(s for s, n in unigram_counts.items() if n > 0 and s not in (BOS, EOS))
    total = sum(unigram_counts[s] for s in symbols)
    joint = np.array([[unigram_counts[h] / total * math.exp(lm.conditional((h,), c)) for c in symbols]
                      for h in symbols])
    return symbols, joint


def rank_report(lm: ArpaLM, unigram_counts: dict[str, int]) -> RankReport:
    symbols, joint = bigram_joint(lm, unigram_counts)
    singular = np.linalg.svd(joint, compute_uv=False)
    rank = int(np.linalg.matrix_rank(joint))
    smallest = float(singular[-1])
    condition = float(singular[0] / smallest) if smallest > 0 else math.inf
    full = rank == len(symbols) and condition < CONDITION_WARN
    return RankReport(symbols, rank, len(symbols), condition, smallest, full)


def check_lm_rank(arpa: str | Path, unigram_counts: dict[str, int], out: str | Path | None = None) -> RankReport:
    """Compute, save and announce the LM condition; warn clearly when it fails."""
    report = rank_report(read_arpa(arpa), unigram_counts)
    if out is not None:
        write_json_atomic(out, asdict(report))
    if report.full_rank:
        log.info(report.summary())
    else:
        log.warning("LM condition (2) fails: %s. Unsupervised training cannot identify the phones; "
                    "use a higher-order LM or more text.", report.summary())
    return report
