"""The sequence-level stage of ``usrasr train``: units -> HMM o phone LM -> restarts.

Everything here that is unsupervised reads only the blind manifests and the
text side (phone LM).  The oracle HMM and the scores read :class:`ScoringData`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from usrasr.lang.lm import read_arpa
from usrasr.lang.phones import NON_SPEECH, PHONES, SILENCE, SPOKEN_NOISE
from usrasr.lang.symbols import PHONE_TOKENS
from usrasr.utils.device import resolve_device, torch_threads
from usrasr.graph.fsa import Fsa
from usrasr.graph.topo import hmm_lm_graph
from usrasr.train.config import TrainConfig
from usrasr.seqce.fit import SeqCEConfig, decode, fit_seqce, loss_per_frame
from usrasr.train.units.kmeans import UnitSequences
from usrasr.utils.console import log
from usrasr.utils.io import atomic_path, write_json_atomic
from usrasr.corpus.layout import CorpusLayout

SILENCE_ID = PHONE_TOKENS[SILENCE]
_NOT_SCORED = {SILENCE_ID, PHONE_TOKENS[SPOKEN_NOISE]}
DECODE_CHUNK = 256  # utterances per Viterbi batch (backpointers are B x T x states)
# Torch threads of the seq-CE fits (small per-frame products): one ran faster than two on a
# shared CPU, see docs/results/2026-12-06-marginals-fast-path.md; `usrasr train --threads` overrides.
SEQCE_THREADS = 1


def training_graph(corpus: Path, config: TrainConfig) -> Fsa:
    """HMM topology o phone LM, with optional silence between phones."""
    return hmm_lm_graph(
        CorpusLayout(corpus).lm("phone"), num_phones=len(PHONES), states_per_phone=config.states_per_phone,
        self_loop_prob=config.self_loop_prob, silence_phone=SILENCE_ID if config.silence else None,
        silence_prob=config.silence_prob, symbols=PHONE_TOKENS)


# The range a self-loop set from the units' rate is kept in.
SELF_LOOP_RANGE = (0.05, 0.95)


def with_unit_rate(config: TrainConfig, units: UnitSequences, seconds: float) -> TrainConfig:
    """``config`` with a negative ``self_loop_prob`` replaced by one set from the
    units alone: the HMM's expected steps per phone, ``states_per_phone / (1 - p)``,
    becomes the units' rate over ``phones_per_second``.  Run-merged units last
    several steps per phone, so a fixed small self-loop would make the model
    insert a phone for almost every unit (docs/results/2026-11-22-self-loop-from-unit-rate.md)."""
    if config.self_loop_prob >= 0:
        return config
    steps_per_phone = sum(len(u) for u in units.units) / (seconds * config.phones_per_second)
    low, high = SELF_LOOP_RANGE
    loop = min(max(1 - config.states_per_phone / steps_per_phone, low), high)
    if steps_per_phone < config.states_per_phone:
        log.warning("%.2f unit steps per phone is fewer than the %d states per phone: phones shorter than that "
                    "cannot be read (use fewer states, or units without merge_runs)",
                    steps_per_phone, config.states_per_phone)
    log.info("%.2f unit steps per phone at %.1f phones/s: self-loop probability %.3f",
             steps_per_phone, config.phones_per_second, loop)
    return replace(config, self_loop_prob=loop)


def label_pairs(corpus: Path, config: TrainConfig, num_labels: int) -> Tensor | None:
    """Prior joint of the emission labels of two consecutive steps, from the LM and topology.

    One state per phone: the label chain stays with the self-loop probability,
    else moves to silence (if enabled) or to the LM's next phone.  Used by the
    moment initialisation; ``None`` for multi-state topologies.
    """
    if config.states_per_phone != 1:
        return None
    lm = read_arpa(CorpusLayout(corpus).lm("phone"))
    size = len(PHONES)
    move = np.zeros((size, size))
    unigram = np.zeros(size)
    for row, phone in enumerate(PHONES):  # row = token id - 1
        lp = lm.logprob.get((phone,))
        if lp is None or phone in NON_SPEECH:
            continue
        unigram[row] = math.exp(lp)
        for column, other in enumerate(PHONES):
            if other not in NON_SPEECH:
                move[row, column] = math.exp(lm.conditional((phone,), other))
    unigram /= unigram.sum()
    move /= np.maximum(move.sum(1, keepdims=True), 1e-300)
    silence = SILENCE_ID - 1
    if config.silence:
        move *= 1 - config.silence_prob
        move[:, silence] = np.where(unigram > 0, config.silence_prob, 0.0)
        move[silence] = unigram
    chain = config.self_loop_prob * np.eye(size) + (1 - config.self_loop_prob) * move
    used = chain.sum(1) > 0
    stationary = np.where(used, 1.0, 0.0) / used.sum()
    for _ in range(200):
        stationary = stationary @ chain
    joint = (stationary[:, None] * chain)[:num_labels, :num_labels]
    return torch.from_numpy(joint / joint.sum())


def _seqce_config(config: TrainConfig, seed: int, anneal: bool = True, **changes) -> SeqCEConfig:
    """The seq-CE settings of ``config``; ``anneal=False`` for short fits that are not the search
    (the oracle's fit to the truth, candidate ranking), which the annealing schedule may outlast."""
    values = dict(restarts=1, batch_restarts=0, iterations=config.iterations, optimizer=config.optimizer, init=config.init,
                  learning_rate=config.learning_rate, anneal_start=config.anneal_start if anneal else 1.0,
                  anneal_iterations=config.anneal_iterations if anneal else 0, tying=config.emission_tying, seed=seed)
    values.update(changes)
    return SeqCEConfig(**values)


def _init(config: TrainConfig, pairs: Tensor | None) -> str:
    """The moment initialisation needs the LM's label pairs; without them, random starts."""
    return config.init if pairs is not None or config.init == "random" else "random"


@dataclass
class Restart:
    restart: int
    loss: float
    log_emissions: Tensor
    history: list[float]


@torch_threads(SEQCE_THREADS)
def run_restarts(units: UnitSequences, graph: Fsa, pairs: Tensor | None, config: TrainConfig,
                 checkpoint_dir: Path, metrics) -> list[Restart]:
    """All restarts, trained ``config.batch_restarts`` at a time as one batch on
    ``config.device`` (0: all together on a GPU, one at a time on a CPU, the
    faster choice on each); each restart is checkpointed when its batch is
    done, so an interrupted run resumes with the restarts it had not finished."""
    device = resolve_device(config.device)
    seqs, lengths = units.padded(device)
    groups = units.group_tensor()
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    paths = [checkpoint_dir / f"restart_{r:02d}.pt" for r in range(config.restarts)]
    done = {r: Restart(**torch.load(path)) for r, path in enumerate(paths) if path.exists()}
    for restart in done.values():
        log.info("restart %d/%d: resumed, loss %.4f", restart.restart + 1, config.restarts, restart.loss)
    missing = [r for r in range(config.restarts) if r not in done]
    step = config.batch_restarts or (config.restarts if device.type == "cuda" else 1)
    graph = graph.to(device)

    def record(restart, iteration, _table, loss):
        metrics.write(stage="seqce", restart=restart, iteration=iteration, loss=loss)

    for begin in range(0, len(missing), step):
        batch = missing[begin:begin + step]
        result = fit_seqce(seqs, lengths, graph, units.num_units,
                           _seqce_config(config, config.seed, init=_init(config, pairs), restarts=config.restarts),
                           label_pairs=pairs, callback=record, groups=groups, restart_ids=batch)
        for i, r in enumerate(batch):
            done[r] = Restart(r, result.restart_losses[i], result.restart_emissions[i], result.histories[i])
            with atomic_path(paths[r]) as tmp:
                torch.save(done[r].__dict__, tmp)
    return [done[r] for r in range(config.restarts)]


@torch_threads(SEQCE_THREADS)
def quick_fit_loss(units: UnitSequences, graph: Fsa, pairs: Tensor | None, config: TrainConfig,
                   iterations: int) -> float:
    """Loss per unit of one short unannealed seq-CE fit (``iterations`` EM steps, no checkpoint):
    a label-free score."""
    seqs, lengths = units.padded()
    return fit_seqce(seqs, lengths, graph, units.num_units,
                     _seqce_config(config, config.seed, anneal=False, init=_init(config, pairs), iterations=iterations),
                     label_pairs=pairs, groups=units.group_tensor()).loss


def viterbi_phones(units: UnitSequences, graph: Fsa, log_emissions: Tensor) -> dict[str, str]:
    """Most likely phone sequence of every utterance (silence and noise left out)."""
    out: dict[str, str] = {}
    for begin in range(0, len(units.ids), DECODE_CHUNK):
        chunk = units.subset(units.ids[begin:begin + DECODE_CHUNK])
        seqs, lengths = chunk.padded()
        aux = decode(seqs, lengths, graph, log_emissions, chunk.group_tensor()).aux_labels
        for uid, row in zip(chunk.ids, aux.tolist()):
            out[uid] = " ".join(PHONE_TOKENS[p] for p in row if p > 0 and p not in _NOT_SCORED)
    return out


def sequence_loss(units: UnitSequences, graph: Fsa, log_emissions: Tensor) -> float:
    seqs, lengths = units.padded()
    return loss_per_frame(seqs, lengths, graph, log_emissions, units.group_tensor())


def save_phone_text(path: Path, phones: dict[str, str]) -> None:
    from usrasr.utils.io import atomic_open

    with atomic_open(path) as f:
        f.writelines(f"{uid} {text}\n" for uid, text in sorted(phones.items()))


def read_phone_text(path: Path) -> dict[str, str]:
    rows = (line.split(maxsplit=1) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {r[0]: (r[1] if len(r) > 1 else "") for r in rows}


def write_summary(path: Path, summary: dict) -> None:
    write_json_atomic(path, json.loads(json.dumps(summary, default=float)))
