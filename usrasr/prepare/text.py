"""The unpaired text side: validated sentences -> lang dir, phone and word LMs, rank report."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from usrasr.lang.lexicon import build_lexicon, read_lexicon, write_lang_dir, UNK_WORD
from usrasr.lang.lm import RankReport, check_lm_rank, train_arpa
from usrasr.lang.text import normalize_text
from usrasr.utils.console import log
from usrasr.utils.errors import NothingUsableError, UsrasrError
from usrasr.utils.io import atomic_open, write_json_atomic
from usrasr.corpus.layout import CorpusLayout


@dataclass
class TextProblems:
    """Lines of a user corpus that were skipped, by reason (1-based line numbers)."""

    not_utf8: list[int] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)
    no_words: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.not_utf8) + len(self.empty) + len(self.no_words)

    def summary(self) -> str:
        return (f"skipped {self.total} line(s): {len(self.not_utf8)} not UTF-8, "
                f"{len(self.empty)} empty, {len(self.no_words)} with no words after normalisation")


def read_text_corpus(path: str | Path) -> tuple[list[str], TextProblems]:
    """Read a plain-text corpus (one sentence per line) and normalise it, line by line.

    Bad lines are skipped and reported; fails only when nothing usable is left.
    """
    path = Path(path)
    if not path.is_file():
        raise UsrasrError(f"text corpus not found: {path}")
    problems = TextProblems()
    sentences: list[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.not_utf8.append(lineno)
                continue
            if not line.strip():
                problems.empty.append(lineno)
                continue
            norm = normalize_text(line)
            if not norm:
                problems.no_words.append(lineno)
                continue
            sentences.append(norm)
    if not sentences:
        raise NothingUsableError(f"{path}: no usable sentence ({problems.summary()})")
    if problems.total:
        log.warning("%s: %s", path, problems.summary())
    return sentences, problems


@dataclass
class TextCorpusReport:
    sentences: int
    words: int
    vocabulary: int
    lexicon: dict
    phone_lm: str
    word_lm: str
    rank: dict


def prepare_text_corpus(
    sentences: Iterable[str],
    out_dir: str | Path,
    lexicon_path: str | Path | None = None,
    g2p: bool = True,
    phone_lm_order: int = 2,
    word_lm_order: int = 3,
) -> TextCorpusReport:
    """Build ``lang/``, ``lm/phone_{n}gram.arpa``, ``lm/word_{n}gram.arpa`` and ``lm/rank.json``.

    ``sentences`` must already be normalised.  The lexicon is the user's
    (``lexicon_path``) or CMUdict, with espeak-ng G2P for missing words unless
    ``g2p`` is false, in which case they map to ``<UNK>``.
    """
    layout = CorpusLayout(out_dir)
    sentences = [s for s in sentences if s]
    if not sentences:
        raise NothingUsableError("the text corpus has no sentence")
    word_counts = Counter(w for s in sentences for w in s.split())
    base = read_lexicon(lexicon_path) if lexicon_path else None
    lexicon, lex_report = build_lexicon(word_counts, base=base, g2p=g2p)
    missing = [w for w in word_counts if w not in lexicon]
    if missing:
        log.warning("%d word(s) (%d running) have no pronunciation%s and map to %s: %s",
                    len(missing), sum(word_counts[w] for w in missing),
                    f" in {lexicon_path}" if lexicon_path else "", UNK_WORD, " ".join(sorted(missing)[:10]))
        lex_report.unpronounceable = sorted(set(lex_report.unpronounceable) | set(missing))
    log.info("lexicon: %d words (%d from %s, %d by G2P); %d running words needed G2P",
             lex_report.words, lex_report.from_source, lexicon_path or "CMUdict", lex_report.from_g2p,
             lex_report.oov_tokens)
    write_lang_dir(layout.lang_dir, lexicon, lex_report)

    with atomic_open(layout.train_text) as f:
        f.writelines(s + "\n" for s in sentences)

    # Phone LM: sentences whose every word has a pronunciation.
    phone_sentences = [" ".join(p for w in s.split() for p in lexicon[w])
                       for s in sentences if all(w in lexicon for w in s.split())]
    phone_counts = Counter(p for s in phone_sentences for p in s.split())
    phone_lm = train_arpa(phone_sentences, phone_lm_order, layout.lm_path("phone", phone_lm_order))
    word_lm = train_arpa(sentences, word_lm_order, layout.lm_path("word", word_lm_order))
    rank: RankReport = check_lm_rank(phone_lm, phone_counts, layout.rank_report)

    report = TextCorpusReport(
        sentences=len(sentences), words=sum(word_counts.values()), vocabulary=len(word_counts),
        lexicon=asdict(lex_report), phone_lm=str(phone_lm), word_lm=str(word_lm), rank=asdict(rank),
    )
    write_json_atomic(layout.text_report, asdict(report))
    return report


def prepare_text(source: str | Path, out_dir: str | Path, lexicon_path: str | Path | None = None, g2p: bool = True,
                 phone_lm_order: int = 2, word_lm_order: int = 3, force: bool = False) -> TextCorpusReport | None:
    """``usrasr prepare text``: read a plain-text corpus and build the lang dir and LMs from it
    (None when they are there already and not ``force``)."""
    rank_report = CorpusLayout(out_dir).rank_report
    if rank_report.exists() and not force:
        log.info("%s exists; nothing to do (use --force to redo)", rank_report)
        return None
    sentences, _ = read_text_corpus(source)
    report = prepare_text_corpus(sentences, out_dir, lexicon_path=lexicon_path, g2p=g2p,
                                 phone_lm_order=phone_lm_order, word_lm_order=word_lm_order)
    log.info("%d sentences, %d words, vocabulary %d -> %s", report.sentences, report.words,
             report.vocabulary, out_dir)
    return report
