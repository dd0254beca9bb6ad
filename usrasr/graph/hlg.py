"""Decoding graphs for CTC models, built with OpenFst through kaldifst.

* **H**, the CTC topology over the model's tokens (blank = token 0 = ``<eps>``
  of ``tokens.txt``): one state per token, "the last token emitted".  Input
  labels are ``token id + 1`` because kaldi-decoder's ``DecodableCtc`` reads
  the posterior of token ``i`` at graph input label ``i + 1`` (label 0 stays
  epsilon).  Output labels are plain token ids, so the blank maps to epsilon.
* **L**, the lexicon with disambiguation symbols and optional silence.
* **G**, the word n-gram (ARPA -> FST with ``#0`` on back-off arcs).

``HLG = min(rmdisambig(det(H o min(det(L o G)))))``, the usual Kaldi recipe:
determinise while the disambiguation symbols still make it possible, then
replace them by epsilon.  ``HP`` is the phone-level counterpart ``H o P`` with
a phone n-gram P.  Graphs are standard OpenFst binaries (tropical), cached in
the lang dir or a graph dir and rebuilt only when an input changes.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import kaldifst

from usrasr.graph.topo import ctc_topo
from usrasr.lang.symbols import EPSILON, SymbolTable
from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_path, write_json_atomic

GraphKind = Literal["HLG", "HP"]
BLANK = EPSILON
SILENCE_WORD = "!SIL"
SILENCE_PHONE = "SIL"
DEFAULT_SIL_PROB = 0.5
_DISAMBIG = re.compile(r"^#\d+$")


@dataclass(frozen=True)
class Lang:
    """A lang dir in icefall's ``lang_phone`` layout (see ``usrasr.lang.lexicon``)."""

    directory: Path
    tokens: SymbolTable  # all of tokens.txt, disambiguation symbols included
    words: SymbolTable
    lexicon: tuple[tuple[str, tuple[str, ...]], ...]  # lexicon_disambig.txt

    @cached_property
    def model_tokens(self) -> list[str]:
        """Token names by id without disambiguation symbols: the acoustic model's outputs."""
        names = sorted((i, t) for t, i in self.tokens.items() if not _DISAMBIG.match(t))
        return [t for _, t in names]

    @property
    def num_model_tokens(self) -> int:
        return len(self.model_tokens)

    @cached_property
    def disambig_token_ids(self) -> list[int]:
        return sorted(i for t, i in self.tokens.items() if _DISAMBIG.match(t))

    @cached_property
    def word_names(self) -> dict[int, str]:
        return {i: w for w, i in self.words.items()}

    @cached_property
    def pronunciations(self) -> dict[str, list[tuple[str, ...]]]:
        """word -> its pronunciations, disambiguation symbols stripped."""
        prons: dict[str, list[tuple[str, ...]]] = {}
        for word, pron in self.lexicon:
            prons.setdefault(word, []).append(tuple(p for p in pron if not _DISAMBIG.match(p)))
        return prons

    def input_files(self) -> list[Path]:
        return [self.directory / n for n in ("tokens.txt", "words.txt", "lexicon_disambig.txt")]


def read_lang(lang_dir: str | Path) -> Lang:
    """Read and check ``tokens.txt``, ``words.txt`` and ``lexicon_disambig.txt``."""
    directory = Path(lang_dir)
    if not directory.is_dir():
        raise UsrasrError(f"lang dir not found: {directory}")
    tokens = SymbolTable.from_file(directory / "tokens.txt")
    words = SymbolTable.from_file(directory / "words.txt")
    if tokens.get(BLANK) != 0:
        raise UsrasrError(f"{directory}/tokens.txt must start with '{BLANK} 0' (the CTC blank)")
    model_ids = sorted(i for t, i in tokens.items() if not _DISAMBIG.match(t))
    if model_ids != list(range(len(model_ids))):
        raise UsrasrError(f"{directory}/tokens.txt: token ids (without #k) must be 0..N without gaps")
    if any(i < len(model_ids) for t, i in tokens.items() if _DISAMBIG.match(t)):
        raise UsrasrError(f"{directory}/tokens.txt: disambiguation symbols must come after all tokens")
    for required in ("#0", "<s>", "</s>"):
        if required not in words:
            raise UsrasrError(f"{directory}/words.txt lacks {required}")
    lexicon_path = directory / "lexicon_disambig.txt"
    if not lexicon_path.is_file():
        raise UsrasrError(f"missing lexicon: {lexicon_path}")
    lexicon = []
    for lineno, line in enumerate(lexicon_path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        word, pron = fields[0], tuple(fields[1:])
        if not pron:
            raise UsrasrError(f"{lexicon_path}:{lineno}: '{word}' has no pronunciation")
        unknown = [p for p in pron if p not in tokens] + ([word] if word not in words else [])
        if unknown:
            raise UsrasrError(f"{lexicon_path}:{lineno}: {' '.join(unknown)} not in tokens.txt/words.txt")
        lexicon.append((word, pron))
    return Lang(directory, tokens, words, tuple(lexicon))


# ---------------------------------------------------------------------------
# The three transducers


def lexicon_fst(lang: Lang, sil_prob: float = DEFAULT_SIL_PROB) -> kaldifst.StdVectorFst:
    """L: phones (with ``#k``) -> words, word label on the first arc, loops back to the start.

    When the lexicon has ``!SIL SIL``, silence is also optional between words:
    a ``SIL:<eps>`` self-loop on the start state costing ``-log(sil_prob)``.
    ``#0:#0`` self-loops pass G's back-off symbol through the composition.
    """
    fst = kaldifst.StdVectorFst()
    start = fst.add_state()
    fst.start = start
    fst.set_final(start, 0.0)
    for word, pron in lang.lexicon:
        state = start
        for i, phone in enumerate(pron):
            nextstate = start if i == len(pron) - 1 else fst.add_state()
            olabel = lang.words[word] if i == 0 else 0
            fst.add_arc(state, kaldifst.StdArc(lang.tokens[phone], olabel, 0.0, nextstate))
            state = nextstate
    if (SILENCE_WORD, (SILENCE_PHONE,)) in lang.lexicon and 0 < sil_prob < 1:
        fst.add_arc(start, kaldifst.StdArc(lang.tokens[SILENCE_PHONE], 0, -math.log(sil_prob), start))
    kaldifst.add_self_loops(fst, isyms=[lang.tokens["#0"]], osyms=[lang.words["#0"]])
    return fst


_ARPA2FST = """
import sys, kaldilm
kaldilm.arpa2fst(input_arpa=sys.argv[1], output_fst=sys.argv[2], disambig_symbol="#0", read_symbol_table=sys.argv[3])
"""


def arpa_fst(arpa: Path, symbols: Path) -> kaldifst.StdVectorFst:
    """G (or P): an ARPA LM as an FST over ``symbols`` ids, ``#0`` on back-off arcs.

    kaldilm runs in a child process: it aborts the whole process on a
    malformed ARPA file and logs every skipped n-gram to file descriptor 2,
    and we want a one-line error and a one-line summary instead.  n-grams
    with words outside the table are dropped (kaldilm's behaviour); we say how
    many words, since many means the LM and the lang dir disagree.
    """
    if not arpa.is_file():
        raise UsrasrError(f"language model not found: {arpa}")
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "G.fst"
        # kaldilm opens its input read-write: a copy lets a corpus on a read-only mount be decoded.
        readable = shutil.copy(arpa, Path(tmp) / arpa.name)
        child = subprocess.run(
            [sys.executable, "-c", _ARPA2FST, str(readable), str(output), str(symbols)],
            capture_output=True, text=True, errors="replace",
        )
        messages = child.stderr.splitlines()
        if child.returncode != 0 or not output.is_file():
            detail = next((m.strip() for m in reversed(messages) if m.strip() and not m.startswith("/")), "unknown error")
            raise UsrasrError(f"cannot convert {arpa} to an FST: {detail}")
        fst = kaldifst.StdVectorFst.read(str(output))
    unknown = sorted({m.split("'")[1] for m in messages if "not in symbol table" in m and m.count("'") >= 2})
    if unknown:
        log.warning("%s: n-grams with %d word(s) not in %s were dropped, e.g. %s",
                    arpa, len(unknown), symbols.name, " ".join(unknown[:5]))
    if fst.num_states == 0:
        raise UsrasrError(f"{arpa} gives an empty FST: none of its words are in {symbols}")
    return fst


# ---------------------------------------------------------------------------
# Composition


def _disambig_remover(num_tokens: int, disambig_ids: list[int]) -> kaldifst.StdVectorFst:
    """One state: ``k+1:k+1`` for every token, ``<eps>:d+1`` for every disambiguation symbol.

    Composed on the left of a graph it replaces the graph's disambiguation
    input labels by epsilon: a relabelling done in C++ rather than arc by arc.
    """
    fst = kaldifst.StdVectorFst()
    state = fst.add_state()
    fst.start = state
    fst.set_final(state, 0.0)
    for token in range(num_tokens):
        fst.add_arc(state, kaldifst.StdArc(token + 1, token + 1, 0.0, state))
    for d in disambig_ids:
        fst.add_arc(state, kaldifst.StdArc(0, d + 1, 0.0, state))
    kaldifst.arcsort(fst, sort_type="olabel")
    return fst


def _compose_with_ctc(lang: Lang, right: kaldifst.StdVectorFst) -> kaldifst.StdVectorFst:
    """``H o right``, determinised, disambiguation symbols removed, minimised, arc-sorted.

    The epsilons left where disambiguation symbols were are kept: removing
    them (rmepsilon) multiplies the arcs several times and slows the search.
    """
    num_tokens, disambig_ids = lang.num_model_tokens, lang.disambig_token_ids
    H = ctc_topo(num_tokens - 1, disambig_ids)  # num_tokens counts the blank
    kaldifst.arcsort(H, sort_type="olabel")
    kaldifst.arcsort(right, sort_type="ilabel")
    graph = kaldifst.compose(H, right)
    kaldifst.determinize_star(graph)
    kaldifst.arcsort(graph, sort_type="ilabel")
    graph = kaldifst.compose(_disambig_remover(num_tokens, disambig_ids), graph)
    kaldifst.minimize_encoded(graph)
    kaldifst.arcsort(graph, sort_type="ilabel")
    if graph.num_states == 0:
        raise UsrasrError("the decoding graph is empty: the lexicon and the LM share no words")
    return graph


def compile_hlg(lang: Lang, word_lm: Path, sil_prob: float = DEFAULT_SIL_PROB) -> kaldifst.StdVectorFst:
    """The word-level decoding graph HLG."""
    L = lexicon_fst(lang, sil_prob)
    G = arpa_fst(word_lm, lang.directory / "words.txt")
    kaldifst.arcsort(L, sort_type="olabel")
    kaldifst.arcsort(G, sort_type="ilabel")
    LG = kaldifst.compose(L, G)
    kaldifst.determinize_star(LG)
    kaldifst.minimize_encoded(LG)
    log.debug("LG: %d states, %d arcs", LG.num_states, sum(LG.num_arcs(s) for s in range(LG.num_states)))
    return _compose_with_ctc(lang, LG)


def compile_hp(lang: Lang, phone_lm: Path) -> kaldifst.StdVectorFst:
    """The phone-level decoding graph HP: CTC topology over a phone n-gram.

    The phone LM's "words" are phone names; its symbol table is tokens.txt
    plus ``<s>``/``</s>``, which arpa2fst turns into epsilons.
    """
    with tempfile.TemporaryDirectory() as tmp:
        symbols = Path(tmp) / "phones.txt"
        table = SymbolTable(dict(lang.tokens.items()))
        table.add("<s>")
        table.add("</s>")
        table.to_file(symbols)
        P = arpa_fst(phone_lm, symbols)
    return _compose_with_ctc(lang, P)


# ---------------------------------------------------------------------------
# Cache


def graph_path(kind: GraphKind, lang: Lang, graph_dir: Path | None = None) -> Path:
    return (graph_dir or lang.directory) / f"{kind}.fst"


def _manifest(kind: GraphKind, lang: Lang, lm: Path, sil_prob: float) -> dict:
    """What a cached graph was built from; a different manifest means rebuild."""
    inputs = lang.input_files() + [lm]
    return {
        "kind": kind,
        "inputs": [str(p.resolve()) for p in inputs],
        "sil_prob": sil_prob if kind == "HLG" else None,
        "num_model_tokens": lang.num_model_tokens,
    }


def ensure_graph(
    kind: GraphKind,
    lang: Lang,
    lm: Path | None,
    graph_dir: Path | None = None,
    force: bool = False,
    sil_prob: float = DEFAULT_SIL_PROB,
) -> Path:
    """Return the path of an up-to-date ``HLG.fst``/``HP.fst``, compiling it if needed.

    A cached graph is reused unless ``force``, its inputs (lang files, LM)
    are newer, or it was built from other inputs (``<kind>.json`` beside it).
    Without an LM an existing graph is used as is.
    """
    path = graph_path(kind, lang, graph_dir)
    record = path.with_suffix(".json")
    if lm is None or not lm.is_file():
        if path.is_file() and not force:
            log.debug("using %s (no LM to check it against)", path)
            return path
        what = "word LM (--lm)" if kind == "HLG" else "phone LM (--phone-lm)"
        raise UsrasrError(f"no {kind} graph at {path} and no {what} to build it" + (f": {lm} not found" if lm else ""))
    manifest = _manifest(kind, lang, lm, sil_prob)
    if path.is_file() and record.is_file() and not force:
        graph_time = path.stat().st_mtime
        same_inputs = json.loads(record.read_text()) == manifest
        if same_inputs and all(p.stat().st_mtime <= graph_time for p in lang.input_files() + [lm]):
            log.debug("using cached %s", path)
            return path
    log.info("compiling %s from %s and %s", kind, lang.directory, lm)
    graph = compile_hlg(lang, lm, sil_prob) if kind == "HLG" else compile_hp(lang, lm)
    with atomic_path(path) as tmp:
        if not graph.write(str(tmp)):
            raise UsrasrError(f"cannot write {path}")
    write_json_atomic(record, manifest)
    log.info("%s: %d states, %d arcs", path, graph.num_states, sum(graph.num_arcs(s) for s in range(graph.num_states)))
    return path


def load_graph(path: Path) -> kaldifst.StdVectorFst:
    """Read an OpenFst binary written by :func:`ensure_graph`."""
    graph = kaldifst.StdVectorFst.read(str(path))
    if graph is None or graph.num_states == 0:
        raise UsrasrError(f"cannot read decoding graph {path}")
    return graph
