"""Diagnostics of ``usrasr train``: everything that reads transcripts or alignments.

The recogniser never needs any of it.  A run with ``--no-score`` never builds
:class:`Diagnostics`, so nothing it computes can steer the unsupervised
result; with scoring on, its numbers (unit purity and PNMI, the oracle HMM,
PER/WER of each stage, the supervised oracle's targets) only go into the
summary.  This module and :mod:`usrasr.train.pipeline` are the only ones that
may import :mod:`usrasr.corpus.scoring` (an import contract in ``pyproject.toml``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from usrasr.corpus.reader import AudioSplit
from usrasr.corpus.scoring import ScoringData
from usrasr.evaluate.scoring import compute_error_rate
from usrasr.graph.fsa import Fsa, FsaVec
from usrasr.graph.topo import compose_topo_lm, hmm_topo
from usrasr.lang.phones import PHONES
from usrasr.lang.symbols import PHONE_TOKENS
from usrasr.seqce.fit import fit_seqce
from usrasr.train.config import TrainConfig
from usrasr.train.self_training import decode_split
from usrasr.train.seqce_stage import (
    SILENCE_ID, Restart, _seqce_config, sequence_loss, viterbi_phones,
)
from usrasr.train.units.kmeans import UnitSequences, mutual_information, to_sequences
from usrasr.corpus.speakers import cluster_purity
from usrasr.train.word_em import WordLevelEM
from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError

EVAL_SPLIT = "test"
# An oracle HMM this bad means the units carry too little phone information to judge the search.
UNUSABLE_ORACLE_PER = 50.0


@dataclass
class UnitQuality:
    purity: float  # share of frames whose unit's most frequent phone is theirs
    pnmi: float  # I(phone; unit) / H(phone)
    frames: int

    def __str__(self) -> str:
        return f"purity {self.purity:.3f}, PNMI {self.pnmi:.3f} over {self.frames} frames"


def unit_quality(units: UnitSequences, phone_frames: Mapping[str, np.ndarray]) -> UnitQuality:
    """Frame-level purity and PNMI of units against phones (scoring only)."""
    joint = np.zeros((units.num_units, len(PHONES)))
    for uid, seq, starts in zip(units.ids, units.units, units.starts):
        phones = phone_frames.get(uid)
        if phones is None:
            continue
        ends = np.append(starts[1:], len(phones))
        frame_units = np.repeat(seq, np.maximum(0, np.minimum(ends, len(phones)) - starts))
        np.add.at(joint, (frame_units, phones[: len(frame_units)]), 1)
    total = joint.sum()
    if total == 0:
        return UnitQuality(math.nan, math.nan, 0)
    mutual, _, phone_entropy = mutual_information(joint)
    return UnitQuality(float(joint.max(1).sum() / total), mutual / phone_entropy, int(total))




def alignment_units(ids: Sequence[str], phone_frames: Mapping[str, np.ndarray], noise: float = 0.0,
                    voices: Mapping[str, str] | None = None, seed: int = 0) -> tuple[list[np.ndarray], int]:
    """DIAGNOSTIC ONLY: units made from the scoring alignments (unit = phone id).

    ``noise`` replaces that share of frames by a uniformly random unit
    (flicker); ``voices`` makes units voice-dependent (unit = phone + P * voice
    index).  It reads transcripts' alignments, so it can only tell whether the
    search works where the units allow it; never use it as a recogniser.
    """
    rng = np.random.default_rng(seed)
    voice_index = {v: i for i, v in enumerate(sorted(set(voices.values())))} if voices else {}
    num_units = len(PHONES) * max(1, len(voice_index))
    out = []
    for uid in ids:
        frames = phone_frames[uid].copy()
        if voices:
            frames = frames + len(PHONES) * voice_index[voices[uid]]
        flip = rng.random(len(frames)) < noise
        frames[flip] = rng.integers(0, num_units, int(flip.sum()))
        out.append(frames)
    return out, num_units


def _transcript_graph(topo, phones: str, config: TrainConfig) -> Fsa:
    ids = [PHONE_TOKENS[p] for p in phones.split()]
    n = len(ids)
    linear = Fsa(torch.arange(n), torch.arange(1, n + 1), torch.tensor(ids), torch.tensor(ids),
                 torch.zeros(n), torch.tensor([-math.inf] * n + [0.0]), start=0)
    return compose_topo_lm(topo, linear, SILENCE_ID if config.silence else None)


class OracleUnavailable(UsrasrError):
    """The units leave no utterance the oracle HMM can be fitted on."""


def oracle_hmm(units: UnitSequences, references: dict[str, str], config: TrainConfig,
               num_labels: int) -> tuple[Tensor, int]:
    """Emissions estimated from the true transcripts: EM on each utterance's own
    transcript graph (same topology).  Returns the table and how many
    utterances were usable (those with fewer unit steps than phones are not)."""
    topo = hmm_topo(len(PHONES), config.states_per_phone, config.self_loop_prob,
                    SILENCE_ID if config.silence else None, config.silence_prob)
    keep = [uid for uid, seq in zip(units.ids, units.units)
            if uid in references and references[uid] and len(seq) >= len(references[uid].split())]
    if not keep:
        raise OracleUnavailable("no utterance has as many unit steps as phones in its transcript: "
                                "the oracle HMM cannot be estimated")
    subset = units.subset(keep)
    graphs = FsaVec([_transcript_graph(topo, references[uid], config) for uid in subset.ids])
    seqs, lengths = subset.padded()
    result = fit_seqce(seqs, lengths, graphs, units.num_units,
                       _seqce_config(config, config.seed, anneal=False, init="random", iterations=config.oracle_iterations),
                       groups=subset.group_tensor())
    table = result.log_emissions[..., :num_labels, :]
    missing = num_labels - table.shape[-2]
    if missing > 0:  # labels no transcript used: uniform rows
        pad = torch.full((*table.shape[:-2], missing, table.shape[-1]), -math.log(table.shape[-1]))
        table = torch.cat([table, pad], dim=-2)
    return table, len(keep)


def phone_error_rate(references: dict[str, str], hypotheses: dict[str, str]) -> float:
    refs = {k: v for k, v in references.items() if k in hypotheses}
    return compute_error_rate(refs, hypotheses, unit="phone").error_rate


def word_error_rate(references: dict[str, str], hypotheses: dict[str, str]) -> float:
    refs = {k: v for k, v in references.items() if k in hypotheses}
    return compute_error_rate(refs, hypotheses, unit="word").error_rate


class Diagnostics:
    """The scoring side of one training run: reads the corpus transcripts, writes into ``summary``."""

    def __init__(self, corpus: Path, splits: dict[str, AudioSplit], summary: dict):
        self.corpus, self.splits, self.summary = corpus, splits, summary
        self.scoring = ScoringData(corpus)

    def _frames(self, name: str) -> dict[str, np.ndarray]:
        split = self.splits[name]
        return self.scoring.frame_phones(name, {i: len(f) for i, f in zip(split.ids, split.feats)})

    def diagnostic_units(self, config: TrainConfig) -> dict[str, UnitSequences]:
        log.warning("DIAGNOSTIC units: made from the scoring alignments (unit = phone id); "
                    "for checking the search only, never a recogniser")
        result = {}
        for name, split in self.splits.items():
            frames = self._frames(name)
            ids = [i for i in split.ids if i in frames]
            voices = dict(zip(split.ids, split.voices)) if config.diagnostic_voice_dependent else None
            if voices and name != "train_audio":
                continue  # voice-dependent units of unseen voices have no trained emissions
            frame_units, num_units = alignment_units(ids, frames, config.diagnostic_noise, voices, seed=config.seed)
            result[name] = to_sequences(ids, frame_units, num_units, config.merge_runs, config.mode_width)
        return result

    def train_unit_quality(self):
        """Purity/PNMI of train-audio units against the alignments: scoring only, never a choice."""
        frames = self._frames("train_audio")
        return lambda units: unit_quality(units, frames).__dict__

    def speaker_purity(self) -> None:
        """How well pseudo-speaker clusters follow the labelled voices."""
        for name, split in self.splits.items():
            self.summary["speakers"][name]["purity_vs_voice"] = cluster_purity(split.speakers, split.voices)

    def score_units(self, units: dict[str, UnitSequences]) -> None:
        for name, seqs in units.items():
            quality = unit_quality(seqs, self._frames(name))
            self.summary.setdefault("unit_quality", {})[name] = quality.__dict__
            log.info("units on %s: %s", name, quality)

    def score_restarts(self, units: dict[str, UnitSequences], graph: Fsa, restarts: list[Restart],
                       best: Restart, num_labels: int, config: TrainConfig) -> Tensor | None:
        """PER of every restart, then the oracle HMM and the verdict on the search; returns the oracle's table."""
        train_refs, eval_refs = self.scoring.phones("train_audio"), self.scoring.phones(EVAL_SPLIT)
        per_restart = []
        for r in restarts:
            row = {"restart": r.restart, "loss": r.loss,
                   "per_train": phone_error_rate(train_refs, viterbi_phones(units["train_audio"], graph, r.log_emissions))}
            if EVAL_SPLIT in units:
                row["per_test"] = phone_error_rate(eval_refs, viterbi_phones(units[EVAL_SPLIT], graph, r.log_emissions))
            per_restart.append(row)
            log.info("restart %d: loss %.4f, PER train %.1f%s", r.restart, r.loss, row["per_train"],
                     f", test {row['per_test']:.1f}" if "per_test" in row else "")
        self.summary["seqce"]["restarts"] = per_restart
        self.summary["seqce"].update({k: v for k, v in per_restart[best.restart].items() if k.startswith("per")})
        return self._oracle_and_verdict(units, graph, best, train_refs, eval_refs, num_labels, config)

    def _oracle_and_verdict(self, units: dict[str, UnitSequences], graph: Fsa, best: Restart,
                            train_refs: dict[str, str], eval_refs: dict[str, str], num_labels: int,
                            config: TrainConfig) -> Tensor | None:
        """Fit the oracle HMM, score it, and write the verdict on the search into the summary.

        The oracle is a diagnosis, not a stage the recogniser needs: units too coarse for it
        (fewer unit steps than phones in every utterance) get a warning, not a failed run."""
        summary = self.summary
        try:
            oracle, used = oracle_hmm(units["train_audio"], train_refs, config, num_labels)
        except OracleUnavailable as e:
            log.warning("%s; the run goes on without the oracle's diagnosis", e)
            summary["oracle_hmm"] = {"skipped": str(e)}
            summary["diagnosis"] = "unknown: " + str(e)
            return None
        summary["oracle_hmm"] = {
            "loss": sequence_loss(units["train_audio"], graph, oracle),
            "per_train": phone_error_rate(train_refs, viterbi_phones(units["train_audio"], graph, oracle)),
            "utterances": used,
        }
        if EVAL_SPLIT in units:
            summary["oracle_hmm"]["per_test"] = phone_error_rate(eval_refs, viterbi_phones(units[EVAL_SPLIT], graph, oracle))
        oracle_loss, oracle_per = summary["oracle_hmm"]["loss"], summary["oracle_hmm"]["per_train"]
        if oracle_per >= UNUSABLE_ORACLE_PER:
            verdict = (f"the units are too poor: even the oracle HMM has PER {oracle_per:.0f}; "
                       "better units are needed before the search can matter")
        elif summary["seqce"]["per_train"] <= 2 * oracle_per + 1:
            verdict = "the search reached the oracle's solution (PER within 2x of the oracle HMM)"
        elif best.loss < oracle_loss:
            verdict = ("misspecified: the model prefers a wrong mapping to the true one "
                       "(loss below the oracle's, PER far above); the units need fixing")
        else:
            verdict = "search failure: the oracle's solution has a lower loss than the search found"
        summary["diagnosis"] = verdict
        log.info("seq-CE loss %.4f vs oracle HMM loss %.4f: %s", best.loss, oracle_loss, verdict)
        return oracle

    def score_word_em(self, word_em: WordLevelEM, units: UnitSequences, refined: dict,
                      oracle: Tensor | None) -> None:
        """PER/WER of the refined labels, and the oracle HMM's table (if there is one) under the same criterion."""
        refs, texts = self.scoring.phones("train_audio"), self.scoring.texts("train_audio")
        scores = {"per_train": phone_error_rate(refs, refined["phones"]),
                  "wer_train": word_error_rate(texts, refined["words"])}
        log.info("word-level EM: PER %.1f, WER %.1f on train-audio", scores["per_train"], scores["wer_train"])
        if oracle is not None:
            oracle_decoded = word_em.decode(units, oracle)
            scores["oracle"] = {"cost_per_step": oracle_decoded.cost_per_step,
                                "per_train": phone_error_rate(refs, oracle_decoded.phones()),
                                "wer_train": word_error_rate(texts, oracle_decoded.words)}
            log.info("oracle table through the word graph: cost %.4f, PER %.1f",
                     scores["oracle"]["cost_per_step"], scores["oracle"]["per_train"])
        self.summary["word_em"].update(scores)

    def score_model(self, model: Path, out: Path, device: str) -> dict:
        """PER (HP graph) and WER (HLG graph) of a CTC model on the evaluation split."""
        phones = decode_split(model, self.corpus, EVAL_SPLIT, "phone", out / "graphs", device)
        words = decode_split(model, self.corpus, EVAL_SPLIT, "word", out / "graphs", device)
        scores = {"per_test": phone_error_rate(self.scoring.phones(EVAL_SPLIT), phones),
                  "wer_test": word_error_rate(self.scoring.texts(EVAL_SPLIT), words)}
        log.info("%s: PER %.1f, WER %.1f on %s", model, scores["per_test"], scores["wer_test"], EVAL_SPLIT)
        return scores

    def score_labels(self, labels: dict[str, str]) -> dict:
        """PER of train-audio phone labels (pseudo-labels of some stage) against the transcripts,
        over the utterances labelled, and the share labelled."""
        references = self.scoring.phones("train_audio")
        return {"labels_per_train": phone_error_rate(references, labels),
                "labels_coverage": round(sum(k in labels for k in references) / len(references), 4)}

    def supervised_targets(self) -> dict[str, str]:
        """The true train-audio phone sequences: the supervised oracle's targets."""
        return self.scoring.phones("train_audio")
