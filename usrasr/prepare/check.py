"""``usrasr check``: a prepared corpus against the method's conditions.

Condition (2) is checked on the phone bigram joint (``usrasr.lang.lm``); the
text behind each n-gram order says whether the LM could be estimated at all;
condition (1) depends on the units, of which only statistics are shown.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from usrasr.lang.lm import RankReport, rank_report, read_arpa
from usrasr.utils.errors import UsrasrError
from usrasr.utils.steps import file_digest
from usrasr.corpus.layout import CorpusLayout


# An order is "thin" when most of its seen n-grams were seen once.
SINGLETON_WARN = 0.5


@dataclass
class OrderStats:
    order: int
    seen: int  # distinct n-grams in the text
    possible: int  # vocabulary ** order
    singletons: int  # n-grams seen exactly once


@dataclass
class CheckReport:
    rank: RankReport
    orders: list[OrderStats]
    units: str  # unit statistics, or why there are none
    problems: list[str] = field(default_factory=list)
    audio: str = ""  # the audio splits, or that there are none

    @property
    def ok(self) -> bool:
        return not self.problems


def phone_sentences(text: Path, lexicon: Path) -> list[list[str]]:
    """The text corpus as phone sequences (first pronunciation of each word;
    words without one are skipped)."""
    pronunciations: dict[str, list[str]] = {}
    for line in lexicon.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) > 1:
            pronunciations.setdefault(fields[0], fields[1:])
    return [[p for word in line.split() for p in pronunciations.get(word, [])]
            for line in text.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_corpus(corpus: Path, max_order: int = 3) -> CheckReport:
    """Measure the conditions for a prepared corpus (see ``docs/layout.md``)."""
    text, lexicon = corpus / "text/train_text.txt", corpus / "lang/lexicon.txt"
    arpa = CorpusLayout(corpus).lm("phone")
    for path in (text, lexicon):
        if not path.exists():
            raise UsrasrError(f"{path} is missing; run `usrasr prepare text` first")
    sentences = phone_sentences(text, lexicon)
    unigrams = Counter(p for s in sentences for p in s)
    rank = rank_report(read_arpa(arpa), dict(unigrams))
    vocabulary = len(unigrams)
    orders = []
    for order in range(1, max_order + 1):
        counts = Counter(tuple(s[i:i + order]) for s in sentences for i in range(len(s) - order + 1))
        orders.append(OrderStats(order, len(counts), vocabulary ** order, sum(1 for n in counts.values() if n == 1)))
    problems = []
    if not rank.full_rank:
        problems.append(f"LM condition (2) fails: {rank.summary()}")
    bigrams = orders[1] if len(orders) > 1 else None
    if bigrams and bigrams.seen and bigrams.singletons / bigrams.seen > SINGLETON_WARN:
        problems.append(f"too little text for the bigram: {bigrams.singletons} of {bigrams.seen} seen bigrams "
                        f"occur once")
    return CheckReport(rank, orders, _unit_statistics(corpus), problems, _audio_splits(corpus))


def _audio_splits(corpus: Path) -> str:
    splits = sorted(p.name[len("cuts_"):-len(".jsonl.gz")] for p in CorpusLayout(corpus).manifests_dir.glob("cuts_*.jsonl.gz"))
    if not splits:
        return f"none: run `usrasr prepare audio DIR --out {corpus}` before `usrasr train`"
    return "splits " + ", ".join(splits)


def _unit_statistics(corpus: Path) -> str:
    files = sorted(corpus.glob("units/*.txt"))
    if not files:
        return "no units file under units/ (`usrasr train` makes the units, in its --out; not checked here)"
    units = Counter(u for path in files for line in path.read_text().splitlines() for u in line.split()[1:])
    total = sum(units.values())
    entropy = -sum(n / total * math.log2(n / total) for n in units.values())
    return f"{len(units)} distinct units, {total} tokens, unigram entropy {entropy:.2f} bits"


def format_report(report: CheckReport) -> str:
    lines = [report.rank.summary(), "text behind each n-gram order:"]
    for stats in report.orders:
        lines.append(f"  {stats.order}-grams: {stats.seen} seen of {stats.possible} possible "
                     f"({stats.seen / max(stats.possible, 1):.1%}), {stats.singletons} singletons")
    lines.append(f"units: {report.units}")
    lines.append(f"audio: {report.audio}")
    if report.ok:
        lines.append("verdict: OK - the LM has full column rank and enough text; the phones are identifiable")
    else:
        lines += [f"verdict: FAIL - {problem}" for problem in report.problems]
    return "\n".join(lines)


def require_trainable(corpus: str | Path, score: bool) -> dict[str, str]:
    """Check that ``corpus`` has what `usrasr train` reads, before any work; return the digest
    of each of those files: the corpus's identity, which ``--resume`` compares."""
    layout = CorpusLayout(corpus)
    needed = {"train-audio cuts": layout.cuts("train_audio"), "lexicon": layout.lexicon,
              "tokens": layout.lang_dir / "tokens.txt", "words": layout.lang_dir / "words.txt",
              "phone LM": layout.lm("phone", missing_ok=True), "word LM": layout.lm("word", missing_ok=True)}
    if score:
        needed["test cuts"] = layout.cuts("test")
    missing = [what for what, path in needed.items() if path is None or not path.is_file()]
    if missing:
        hint = ("; scoring needs a test split with transcripts (`usrasr prepare default`), --no-score trains "
                "without one" if "test cuts" in missing else "")
        raise UsrasrError(f"corpus {corpus} has no {', '.join(missing)}: run `usrasr prepare audio DIR --out "
                          f"{corpus}` and `usrasr prepare text FILE --out {corpus}`{hint}")
    return {what: file_digest(path) for what, path in needed.items()}
