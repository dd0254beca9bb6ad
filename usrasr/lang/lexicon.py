"""Lexicon and lang dir in icefall's ``lang_phone`` layout.

Files: ``lexicon.txt``, ``lexicon_disambig.txt``, ``tokens.txt`` (``<eps>`` = 0,
which CTC uses as blank, then phones, then ``#0..#K``), ``words.txt``
(``<eps>``, words, ``#0``, ``<s>``, ``</s>``), and ``oov.json``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from usrasr.lang.g2p import cmudict_lexicon, espeak_g2p
from usrasr.lang.phones import PHONES, SILENCE, SPOKEN_NOISE
from usrasr.lang.symbols import EPSILON, SymbolTable, disambig_symbol, lang_tokens
from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_open, read_utf8_text, write_json_atomic

SIL_WORD = "!SIL"
UNK_WORD = "<UNK>"

Lexicon = dict[str, tuple[str, ...]]


@dataclass
class LexiconReport:
    words: int
    from_source: int
    from_g2p: int
    unpronounceable: list[str] = field(default_factory=list)
    oov_tokens: int = 0  # running words of the corpus that needed G2P


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def read_lexicon(path: str | Path) -> Lexicon:
    """Read a Kaldi lexicon (``WORD PH1 PH2 ...``) or lexiconp (``WORD PROB [SILPROBS] PH1 ...``).

    Words and phones are upper-cased (the text is normalised to upper case), stress digits
    are stripped (``AH0`` -> ``AH``) and probabilities dropped; the phones must then be in the
    project phone set (39 ARPAbet phones, ``SIL``, ``SPN``).  A word's first pronunciation is kept.
    """
    lexicon: Lexicon = {}
    path = Path(path)
    if not path.is_file():
        raise UsrasrError(f"lexicon not found: {path}")
    for lineno, line in enumerate(read_utf8_text(path, "lexicon").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        phones = fields[1:]
        while phones and _is_number(phones[0]):  # lexiconp: pronunciation (and silence) probabilities
            phones = phones[1:]
        phones = [p.upper().rstrip("012") for p in phones]
        if not phones:
            raise UsrasrError(f"{path}:{lineno}: lexicon entry '{line.strip()}' has no phones")
        unknown = [p for p in phones if p not in PHONES]
        if unknown:
            raise UsrasrError(f"{path}:{lineno}: unknown phone(s) {' '.join(unknown)} for '{fields[0]}' "
                              f"(the phone set: {' '.join(PHONES)})")
        lexicon.setdefault(fields[0].upper(), tuple(phones))
    return lexicon


def build_lexicon(word_counts: Counter, base: Lexicon | None = None, g2p: bool = True) -> tuple[Lexicon, LexiconReport]:
    """Pronounce every word of the corpus: ``base`` (default CMUdict), then espeak-ng G2P."""
    base = cmudict_lexicon() if base is None else base
    known = {w: base[w] for w in word_counts if w in base}
    missing = sorted(w for w in word_counts if w not in base)
    guessed = espeak_g2p(missing) if (g2p and missing) else {}
    unpronounceable = [w for w in missing if not guessed.get(w)]
    lexicon = {**known, **{w: p for w, p in guessed.items() if p}}
    report = LexiconReport(
        words=len(lexicon), from_source=len(known), from_g2p=len(lexicon) - len(known),
        unpronounceable=unpronounceable,
        oov_tokens=sum(word_counts[w] for w in missing),
    )
    if unpronounceable:
        log.warning("%d word(s) could not be pronounced and map to %s: %s", len(unpronounceable),
                    UNK_WORD, " ".join(unpronounceable[:10]))
    return lexicon, report


def _add_disambig(lexicon: list[tuple[str, tuple[str, ...]]]) -> tuple[list[tuple[str, tuple[str, ...]]], int]:
    """Kaldi's ``add_lex_disambig``: make every pronunciation a unique non-prefix.

    A pronunciation shared by several words (homophones) or that is a proper
    prefix of another gets a ``#k`` suffix so L is determinisable.
    """
    count = Counter(pron for _, pron in lexicon)
    prefixes = {pron[:i] for _, pron in lexicon for i in range(1, len(pron))}
    next_index: Counter = Counter()
    out, max_disambig = [], 0
    for word, pron in lexicon:
        if count[pron] > 1 or pron in prefixes:
            next_index[pron] += 1
            k = next_index[pron]
            max_disambig = max(max_disambig, k)
            out.append((word, pron + (f"#{k}",)))
        else:
            out.append((word, pron))
    return out, max_disambig


def write_lang_dir(lang_dir: str | Path, lexicon: Lexicon, report: LexiconReport | None = None) -> Path:
    """Write the lang dir files atomically and return its path."""
    lang_dir = Path(lang_dir)
    entries = [(SIL_WORD, (SILENCE,)), (UNK_WORD, (SPOKEN_NOISE,))]
    entries += sorted((w, p) for w, p in lexicon.items() if w not in (SIL_WORD, UNK_WORD))
    with_disambig, max_disambig = _add_disambig(entries)
    with atomic_open(lang_dir / "lexicon.txt") as f:
        f.writelines(f"{w} {' '.join(p)}\n" for w, p in entries)
    with atomic_open(lang_dir / "lexicon_disambig.txt") as f:
        f.writelines(f"{w} {' '.join(p)}\n" for w, p in with_disambig)
    lang_tokens(max_disambig + 1).to_file(lang_dir / "tokens.txt")
    words = [EPSILON, *(w for w, _ in entries), disambig_symbol(0), "<s>", "</s>"]
    SymbolTable.from_symbols(words).to_file(lang_dir / "words.txt")
    if report is not None:
        write_json_atomic(lang_dir / "oov.json", report.__dict__)
    return lang_dir


def pronounce(words: Iterable[str], lexicon: Lexicon) -> list[str]:
    """Phones of a word sequence; words missing from the lexicon become ``SPN``."""
    return [p for w in words for p in lexicon.get(w, (SPOKEN_NOISE,))]


def phone_sentences(sentences: Iterable[str], lexicon: Lexicon) -> list[str]:
    """The phone strings of the sentences whose every word has a pronunciation: the text of
    the phone LMs."""
    return [" ".join(p for w in words for p in lexicon[w])
            for words in (s.split() for s in sentences) if words and all(w in lexicon for w in words)]
