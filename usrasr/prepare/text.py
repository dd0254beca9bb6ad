"""The unpaired text side: validated sentences -> lang dir, phone and word LMs, rank report."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from usrasr.lang.lexicon import LexiconReport, build_lexicon, phone_sentences, read_lexicon, write_lang_dir, UNK_WORD
from usrasr.lang.lm import RankReport, check_lm_rank, train_arpa
from usrasr.lang.text import normalize_text
from usrasr.utils.console import log
from usrasr.utils.errors import NothingUsableError, UsrasrError
from usrasr.utils.io import atomic_open, write_json_atomic
from usrasr.utils.processes import lock_directory
from usrasr.utils.steps import Step, file_digest, run_steps
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
    with open(path, "rb") as f:
        if b"\x00" in f.read():
            raise UsrasrError(f"{path} is not UTF-8 text (it has NUL bytes: UTF-16?); convert it, "
                              f"e.g. iconv -f UTF-16 -t UTF-8")
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


@dataclass(frozen=True)
class LmOrders:
    """The n-gram orders of the LMs `usrasr prepare` writes: the phone LM that training graphs
    use (their marginals grow with it), the word LM of the decoding graph, and the phone LM of
    phone decoding (HP), which only a search reads and so can be of a higher order."""

    phone: int = 2
    word: int = 3
    decoding_phone: int = 5

    def __post_init__(self):
        if min(self.phone, self.word, self.decoding_phone) < 1:
            raise UsrasrError(f"LM orders must be at least 1: {self}")
        # the corpus tells its LMs apart by order alone (training the lowest, decoding the highest)
        if self.decoding_phone < self.phone:
            raise UsrasrError(f"the decoding phone LM's order ({self.decoding_phone}) is below the training "
                              f"phone LM's ({self.phone})")


@dataclass
class TextCorpusReport:
    sentences: int
    words: int
    vocabulary: int
    lexicon: dict
    phone_lm: str
    word_lm: str
    rank: dict
    decoding_phone_lm: str = ""  # reports written before it existed name only the phone LM


def prepare_text_corpus(
    sentences: Iterable[str],
    out_dir: str | Path,
    lexicon_path: str | Path | None = None,
    g2p: bool = True,
    orders: LmOrders = LmOrders(),
    force: bool = False,
) -> TextCorpusReport:
    """Build ``lang/``, ``lm/phone_{n}gram.arpa`` (the training order and the decoding order),
    ``lm/word_{n}gram.arpa`` and ``lm/rank.json``.

    ``sentences`` must already be normalised.  The lexicon is the user's
    (``lexicon_path``) or CMUdict, with espeak-ng G2P for missing words unless
    ``g2p`` is false, in which case they map to ``<UNK>``.  Two steps, each redone (and what it
    made removed) when its inputs changed or with ``force``: the lang dir and text (sentences,
    lexicon, G2P), then the LMs (the lang step and the orders).
    """
    layout = CorpusLayout(Path(out_dir).resolve())
    sentences = [s for s in sentences if s]
    if not sentences:
        raise NothingUsableError("the text corpus has no sentence")
    base = read_lexicon(lexicon_path) if lexicon_path else None  # checked before anything is touched
    lock_directory(layout.root, "corpus")
    lang = Step(layout.root, "lang", {
        "sentences": hashlib.sha256("\n".join(sentences).encode()).hexdigest(),
        "lexicon": file_digest(lexicon_path) if lexicon_path else "CMUdict", "g2p": g2p,
    }, [layout.lang_dir, layout.lexicon, layout.lang_dir / "tokens.txt", layout.train_text])
    # The whole lm/ dir: an LM of another order must not survive beside the new ones.
    lms = Step(layout.root, "lm", {"lang": lang.fingerprint, "phone_lm_order": orders.phone,
                                   "word_lm_order": orders.word, "decoding_phone_lm_order": orders.decoding_phone},
               [layout.lm_dir, layout.lm_path("phone", orders.phone), layout.lm_path("phone", orders.decoding_phone),
                layout.lm_path("word", orders.word), layout.rank_report, layout.text_report])
    run_lang, run_lms = run_steps([lang, lms], force)
    if not run_lms:
        log.info("%s is up to date with this text, lexicon and LM orders; nothing to do (use --force to redo)",
                 layout.root)
        return TextCorpusReport(**json.loads(layout.text_report.read_text(encoding="utf-8")))
    word_counts = Counter(w for s in sentences for w in s.split())
    if run_lang:
        lexicon, lex_report = _pronounce(word_counts, base, lexicon_path, g2p)
        write_lang_dir(layout.lang_dir, lexicon, lex_report)
        with atomic_open(layout.train_text) as f:
            f.writelines(s + "\n" for s in sentences)
        lang.finish()
    else:
        lexicon = read_lexicon(layout.lexicon)
        lex_report = LexiconReport(**json.loads((layout.lang_dir / "oov.json").read_text(encoding="utf-8")))

    phones = phone_sentences(sentences, lexicon)
    phone_counts = Counter(p for s in phones for p in s.split())
    phone_lm = train_arpa(phones, orders.phone, layout.lm_path("phone", orders.phone))
    decoding_phone_lm = (phone_lm if orders.decoding_phone == orders.phone else
                         train_arpa(phones, orders.decoding_phone, layout.lm_path("phone", orders.decoding_phone)))
    word_lm = train_arpa(sentences, orders.word, layout.lm_path("word", orders.word))
    rank: RankReport = check_lm_rank(phone_lm, phone_counts, layout.rank_report)

    report = TextCorpusReport(
        sentences=len(sentences), words=sum(word_counts.values()), vocabulary=len(word_counts),
        lexicon=asdict(lex_report), phone_lm=str(phone_lm), word_lm=str(word_lm), rank=asdict(rank),
        decoding_phone_lm=str(decoding_phone_lm),
    )
    write_json_atomic(layout.text_report, asdict(report))
    lms.finish()
    return report


def _pronounce(word_counts: Counter, base, lexicon_path, g2p: bool):
    """The lexicon of the corpus's words (``base``, else CMUdict, then G2P) and its report."""
    lexicon, lex_report = build_lexicon(word_counts, base=base, g2p=g2p)
    missing = [w for w in word_counts if w not in lexicon]
    if missing:
        log.warning("%d word(s) (%d running) have no pronunciation%s and map to %s: %s",
                    len(missing), sum(word_counts[w] for w in missing),
                    f" in {lexicon_path}" if lexicon_path else "", UNK_WORD, " ".join(sorted(missing)[:10]))
        lex_report.unpronounceable = sorted(set(lex_report.unpronounceable) | set(missing))
    if lexicon_path and not lex_report.from_source:
        log.warning("no word of the text is in %s (%d entries): check its words are the text's words",
                    lexicon_path, len(base))
    log.info("lexicon: %d words (%d from %s, %d by G2P); %d running words needed G2P",
             lex_report.words, lex_report.from_source, lexicon_path or "CMUdict", lex_report.from_g2p,
             lex_report.oov_tokens)
    return lexicon, lex_report


def prepare_text(source: str | Path, out_dir: str | Path, lexicon_path: str | Path | None = None, g2p: bool = True,
                 orders: LmOrders = LmOrders(), force: bool = False) -> TextCorpusReport:
    """``usrasr prepare text``: read a plain-text corpus and build the lang dir and LMs from it
    (each step skipped when its inputs are unchanged, see :func:`prepare_text_corpus`)."""
    sentences, _ = read_text_corpus(source)
    report = prepare_text_corpus(sentences, out_dir, lexicon_path=lexicon_path, g2p=g2p, orders=orders, force=force)
    log.info("%d sentences, %d words, vocabulary %d -> %s", report.sentences, report.words,
             report.vocabulary, out_dir)
    return report
