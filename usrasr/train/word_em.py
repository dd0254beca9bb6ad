"""Word-level refinement of the emission tables: hard EM through the HLG graph.

The phone-bigram marginal of the seq-CE stage is a weak judge: on real units
several wrong tables explain the units better than the true one does.  A
word LM over the lexicon is a much stronger one: a labelling must spell
words, and words must follow each other as the text does.  Where the units
are good, the true table is close to a fixed point of this refinement and
wrong tables cost more per step, so the refinement can both repair a partly
right table and tell the seq-CE restarts apart
(``docs/results/2026-12-01-segments-and-word-level-em.md``).

Each iteration decodes every utterance's unit sequence with the HLG graph
(kaldi-decoder; the emission score of phone ``p`` at a step is
``log q(unit | p)`` of the utterance's table, the CTC blank is shut off so
every step is one phone), then re-estimates each table from the best paths'
(phone, unit) counts.  The cost per step of the best paths is the criterion.

Restarts are screened per table group (e.g. per speaker): group ``g`` keeps
the restart whose table ``g`` reaches the lowest cost after a few
iterations, so one good restart per speaker is enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import kaldifst
import numpy as np
import torch
from torch import Tensor

from usrasr.lang.phones import NON_SPEECH, PHONES
from usrasr.decode.search import CtcDecoder, SearchOptions
from usrasr.graph.hlg import SILENCE_WORD, Lang, ensure_graph, load_graph, read_lang
from usrasr.train.units.kmeans import UnitSequences
from usrasr.utils.console import log, track
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_path
from usrasr.utils.processes import forked_map
from usrasr.corpus.layout import CorpusLayout

# The score that shuts the CTC blank off: no path may spend a step on it.
_NO_BLANK = -1e4


@dataclass
class Decoded:
    """Best paths of a set of utterances under one set of tables."""

    steps: dict[str, np.ndarray]  # emission row (phone index) per unit step
    words: dict[str, str]
    cost: float  # total graph + emission cost of the best paths
    num_steps: int

    @property
    def cost_per_step(self) -> float:
        return self.cost / max(self.num_steps, 1)

    def phones(self) -> dict[str, str]:
        """Phone sequences of the best paths (repeats merged, silence left out): pseudo-labels."""
        out = {}
        for uid, rows in self.steps.items():
            keep = np.concatenate([[True], rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, bool)
            out[uid] = " ".join(PHONES[r] for r in rows[keep] if PHONES[r] not in NON_SPEECH)
        return out


def full_rows(tables: Tensor) -> Tensor:
    """``(..., S, K)`` seq-CE tables as ``(..., len(PHONES), K)`` on the CPU: one row per
    phone (the training graph has one label per phone, with ``states_per_phone=1``,
    but only up to the last phone its LM uses); the rows it lacks read units uniformly."""
    tables = tables.detach().float().cpu()
    missing = len(PHONES) - tables.shape[-2]
    if missing < 0:
        raise UsrasrError("word-level EM reads one emission row per phone: it needs states_per_phone=1")
    if missing == 0:
        return tables
    uniform = torch.full((*tables.shape[:-2], missing, tables.shape[-1]), -math.log(tables.shape[-1]))
    return torch.cat([tables, uniform], dim=-2)


class WordLevelEM:
    """Decode unit sequences through HLG and re-estimate categorical emission tables."""

    def __init__(self, lang: Lang, graph: kaldifst.StdVectorFst, beam: float = 10.0, smoothing: float = 0.1,
                 workers: int = 1):
        """``workers`` > 1 decodes in that many forked processes (the decoder is single-threaded)."""
        missing = [p for p in PHONES if p not in lang.tokens]
        if missing:
            raise UsrasrError(f"{lang.directory}/tokens.txt lacks phones {' '.join(missing)}")
        self.lang, self.graph, self.smoothing, self.workers = lang, graph, smoothing, max(1, workers)
        self._columns = np.array([lang.tokens[p] for p in PHONES])  # token id of each table row
        self._row_of_token = np.full(lang.num_model_tokens, -1)
        self._row_of_token[self._columns] = np.arange(len(PHONES))
        self._decoder = CtcDecoder(graph, SearchOptions(beam=beam))

    @classmethod
    def from_corpus(cls, corpus: Path, graph_dir: Path, beam: float = 10.0, smoothing: float = 0.1,
                    workers: int = 1) -> "WordLevelEM":
        lang = read_lang(CorpusLayout(corpus).lang_dir)
        graph = load_graph(ensure_graph("HLG", lang, CorpusLayout(corpus).lm("word"), graph_dir))
        return cls(lang, graph, beam, smoothing, workers)

    def _scores(self, table: np.ndarray, units: np.ndarray) -> np.ndarray:
        scores = np.full((len(units), self.lang.num_model_tokens), _NO_BLANK, dtype=np.float32)
        scores[:, self._columns] = table[:, units].T
        return scores

    def decode(self, units: UnitSequences, tables: Tensor) -> Decoded:
        """Best path of every utterance; ``tables`` is ``(S, K)`` or ``(G, S, K)`` read by ``units.groups``."""
        tables = full_rows(tables).numpy()
        groups = units.groups if tables.ndim == 3 else [None] * len(units.ids)
        jobs = [(uid, seq, group) for uid, seq, group in zip(units.ids, units.units, groups) if len(seq)]
        workers = min(self.workers, len(jobs))
        if workers <= 1:
            return self._decode_jobs(jobs, tables)
        # forked workers inherit the graph and decoder; they only run numpy and the decoder
        parts = forked_map(lambda part: self._decode_jobs(part, tables), [jobs[w::workers] for w in range(workers)],
                           workers)
        return Decoded({k: v for p in parts for k, v in p.steps.items()}, {k: v for p in parts for k, v in p.words.items()},
                       sum(p.cost for p in parts), sum(p.num_steps for p in parts))

    def _decode_jobs(self, jobs: list[tuple[str, np.ndarray, int | None]], tables: np.ndarray) -> Decoded:
        steps, words, cost, num_steps = {}, {}, 0.0, 0
        for uid, seq, group in jobs:
            best = self._decoder.best_path(self._scores(tables if group is None else tables[group], seq))
            if best is None:
                continue  # no path within the beam: the utterance does not count this iteration
            rows = self._row_of_token[best.frame_tokens]
            if (rows < 0).any():
                continue  # the path took the blank despite its score: no phone for that step
            steps[uid] = rows
            words[uid] = " ".join(w for w in (self.lang.word_names[o] for o in best.olabels) if w != SILENCE_WORD)
            cost += best.cost
            num_steps += len(seq)
        return Decoded(steps, words, cost, num_steps)

    def reestimate(self, units: UnitSequences, decoded: Decoded, like: Tensor) -> Tensor:
        """Tables of ``like``'s shape from the best paths' (phone, unit) counts, plus smoothing.

        Groups with no decoded utterance keep ``like``'s values.
        """
        like = full_rows(like)
        grouped = like.dim() == 3
        counts = torch.zeros((like.shape[0] if grouped else 1, len(PHONES), like.shape[-1]), dtype=torch.float64)
        for i, (uid, seq) in enumerate(zip(units.ids, units.units)):
            rows = decoded.steps.get(uid)
            if rows is None:
                continue
            group = units.groups[i] if grouped else 0
            np.add.at(counts[group].numpy(), (rows, seq), 1.0)
        seen = counts.sum((1, 2)) > 0
        counts += self.smoothing
        fresh = (counts / counts.sum(-1, keepdim=True)).log().float()
        out = like.clone()
        view = out if grouped else out[None]
        view[seen] = fresh[seen]
        return out

    def iterate(self, units: UnitSequences, tables: Tensor, iterations: int,
                description: str = "") -> tuple[Tensor, Decoded | None, list[float]]:
        """``iterations`` rounds of decode + re-estimate; returns the last tables, the
        decode that produced them (its cost is that of the tables before the update;
        None after no iteration) and the cost per step of every iteration."""
        decoded, history = None, []
        for _ in (track(range(iterations), description) if description else range(iterations)):
            decoded = self.decode(units, tables)
            if not decoded.steps:
                raise UsrasrError("word-level EM: no utterance has a path through HLG within the beam")
            history.append(decoded.cost_per_step)
            tables = self.reestimate(units, decoded, tables)
        return tables, decoded, history


@dataclass
class Screened:
    tables: Tensor  # the refined tables, one group per chosen restart
    chosen: list[int]  # restart index per group
    costs: list[list[float]]  # cost per step, [restart][group], after the screening iterations
    history: list[float]  # cost per step of every refinement iteration after screening
    decoded: Decoded  # the last decode (pseudo-labels)


def screen_and_refine(em: WordLevelEM, units: UnitSequences, restart_tables: list[Tensor], screen_iterations: int,
                      iterations: int) -> Screened:
    """Per group, keep the restart with the lowest word-level cost after
    ``screen_iterations``; then refine all groups together for ``iterations``."""
    grouped = restart_tables[0].dim() == 3
    group_of = units.groups if grouped else [0] * len(units.ids)
    num_groups = restart_tables[0].shape[0] if grouped else 1
    members = [units.subset([u for u, g in zip(units.ids, group_of) if g == k]) for k in range(num_groups)]
    costs = [[float("inf")] * num_groups for _ in restart_tables]
    restart_tables = [full_rows(t) for t in restart_tables]
    screened = [t.clone() for t in restart_tables]
    for r, table in enumerate(restart_tables):
        for k, subset in enumerate(members):
            if not subset.ids:
                continue
            refined, decoded, _ = em.iterate(subset, table, screen_iterations)
            costs[r][k] = decoded.cost_per_step
            if grouped:
                screened[r][k] = refined[k]
            else:
                screened[r] = refined
        log.info("word-level screening, restart %d: cost per step %s", r,
                 " ".join(f"{c:.3f}" for c in costs[r]))
    chosen = [min(range(len(restart_tables)), key=lambda r: costs[r][k]) for k in range(num_groups)]
    tables = torch.stack([screened[chosen[k]][k] for k in range(num_groups)]) if grouped else screened[chosen[0]]
    tables, decoded, history = em.iterate(units, tables, iterations, "word-level EM")
    if decoded is None:
        decoded = em.decode(units, tables)
        history.append(decoded.cost_per_step)
    return Screened(tables, chosen, costs, history, decoded)


def run_word_em(units: UnitSequences, restart_tables: list[Tensor], em: WordLevelEM, screen_iterations: int,
                iterations: int, out_dir: Path) -> dict:
    """:func:`screen_and_refine`, saved to ``out_dir/model.pt``; a finished run is read back."""
    path = out_dir / "model.pt"
    if path.exists():
        log.info("word-level EM: done already (%s)", path)
        return torch.load(path, weights_only=False)
    result = screen_and_refine(em, units, restart_tables, screen_iterations, iterations)
    record = {"log_emissions": result.tables, "chosen_restarts": result.chosen, "screen_costs": result.costs,
              "cost_history": result.history, "phones": result.decoded.phones(), "words": result.decoded.words}
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    log.info("word-level EM: restarts %s chosen per group, cost per step %.4f", result.chosen, result.history[-1])
    return record
