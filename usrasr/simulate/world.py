"""Synthetic worlds: a phone bigram LM, an emission matrix from phones to
units, unpaired unit sequences sampled from them, and the measurements that
compare a trained model with the truth.

Topology: **one unit per phone** (one frame per phone, no self-loop), the seed
paper's setting.  The training graph is then the LM acceptor itself
(:func:`bigram_lm_fsa`): state 0 is the start, state ``p`` means "last phone
was p", and the arc into ``p`` carries label ``p`` (phone ids ``1..P``), so an
emission table has ``P + 1`` rows, row 0 unused.

A world may have *context-dependent* emissions (the unit depends on the
previous phone too), which breaks condition (1) for a context-free model; its
oracle then runs on :func:`context_graph`, whose arc ``h -> c`` has its own
label ``h * P + c - 1``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from usrasr.lang.lm import BOS, EOS, read_arpa
from usrasr.graph.fsa import Fsa
from usrasr.graph.marginals import total_scores
from usrasr.graph.topo import bigram_lm_fsa
from usrasr.seqce.fit import decode, emission_scores

# Above this many sequences the marginal distance is estimated by Monte Carlo.
EXACT_TV_LIMIT = 200_000


@dataclass
class World:
    """The truth of a simulation.

    ``emission[h, c, u]`` is P(unit u | phone c, previous phone h), with
    ``h = 0`` for the first phone and ``h = p`` after phone ``p`` (1-based);
    a context-free world repeats the same ``(P, K)`` matrix for every ``h``.
    """

    initial: np.ndarray  # (P,) first-phone probabilities
    transition: np.ndarray  # (P, P) P(c | h)
    emission: np.ndarray  # (P + 1, P, K)

    @property
    def num_phones(self) -> int:
        return self.transition.shape[0]

    @property
    def num_units(self) -> int:
        return self.emission.shape[-1]

    @property
    def context_free(self) -> bool:
        return bool(np.allclose(self.emission, self.emission[:1]))

    def lm_graph(self) -> Fsa:
        """The LM acceptor = the one-unit-per-phone training graph."""
        return bigram_lm_fsa(self.transition, self.initial)

    def label_pairs(self, length: int) -> Tensor:
        """``(P + 1, P + 1)`` prior joint of the phones at positions ``t, t + 1``,
        averaged over the ``length - 1`` pairs of a sequence (for the moment
        and frequency initialisations)."""
        marginal = self.initial.astype(np.float64)
        joint = np.zeros((self.num_phones + 1, self.num_phones + 1))
        for _ in range(max(length - 1, 1)):
            joint[1:, 1:] += marginal[:, None] * self.transition
            marginal = marginal @ self.transition
        return torch.from_numpy(joint / joint.sum())

    def oracle(self) -> tuple[Fsa, Tensor]:
        """The true model as (graph, log emission table)."""
        if self.context_free:
            return self.lm_graph(), emission_table(self.emission[0])
        num_phones = self.num_phones
        lm = self.lm_graph()
        graph = Fsa(lm.src, lm.dst, lm.src * num_phones + lm.label - 1, lm.aux_label, lm.score, lm.final, lm.start)
        table = torch.from_numpy(self.emission.reshape(-1, self.num_units)).float().clamp_min(1e-30).log()
        return graph, table


def emission_table(emission: np.ndarray) -> Tensor:
    """``(P, K)`` probabilities -> ``(P + 1, K)`` log table for the LM graph
    (row 0, which no arc reads, uniform)."""
    num_units = emission.shape[1]
    rows = np.vstack([np.full((1, num_units), 1.0 / num_units), emission])
    return torch.from_numpy(rows).float().clamp_min(1e-30).log()


def noisy_identity(num_phones: int, num_units: int, noise: float) -> np.ndarray:
    """Unit = phone (mod K) with probability ``1 - noise``, else uniform."""
    emission = np.full((num_phones, num_units), noise / num_units)
    emission[np.arange(num_phones), np.arange(num_phones) % num_units] += 1 - noise
    return emission


def dirichlet_transition(num_phones: int, concentration: float, rng: np.random.Generator) -> np.ndarray:
    return rng.dirichlet(np.full(num_phones, concentration), size=num_phones)


def stationary(transition: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eig(transition.T)
    vector = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    return vector / vector.sum()


def make_world(
    transition: np.ndarray, noise: float, num_units: int | None = None, initial: np.ndarray | None = None
) -> World:
    """A context-free world whose sequences start in the LM's stationary state."""
    num_phones = transition.shape[0]
    num_units = num_units or num_phones
    emission = noisy_identity(num_phones, num_units, noise)
    initial = stationary(transition) if initial is None else initial
    return World(initial, transition, np.broadcast_to(emission, (num_phones + 1, *emission.shape)).copy())


def random_world(num_phones: int = 20, noise: float = 0.2, concentration: float = 0.5, seed: int = 0,
                 num_units: int | None = None) -> World:
    """Dirichlet bigram LM (rows drawn with ``concentration``) and noisy-identity emissions."""
    rng = np.random.default_rng(seed)
    return make_world(dirichlet_transition(num_phones, concentration, rng), noise, num_units)


def arpa_transition(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Phones, bigram P(c | h) and P(c | <s>) from an ARPA LM, renormalised
    over the phones (the end of sentence is cut: sequences have a fixed length)."""
    lm = read_arpa(path)
    phones = [p for p in lm.vocabulary if p not in (BOS, EOS)]
    probs = np.exp([[lm.conditional((h,), c) for c in phones] for h in [BOS, *phones]])
    probs /= probs.sum(1, keepdims=True)
    return phones, probs[1:], probs[0]


def context_dependent_world(base: World, flipped_share: float = 0.5, seed: int = 0) -> World:
    """Break condition (1): after a phone in a random ``flipped_share`` of the
    phones, each phone's emission row is that of another phone (a fixed
    cyclic shift), so the unit depends on the neighbouring phone."""
    rng = np.random.default_rng(seed)
    num_phones = base.num_phones
    flipped = rng.random(num_phones) < flipped_share
    emission = base.emission.copy()
    shifted = np.roll(base.emission[0], 1, axis=0)
    emission[1:][flipped] = shifted
    return World(base.initial, base.transition, emission)


def sample(world: World, num_seqs: int, length: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``num_seqs`` phone and unit sequences of ``length`` (0-based phone ids),
    drawn position by position for the whole batch at once."""
    rng = np.random.default_rng(seed)

    def draw(probs: np.ndarray) -> np.ndarray:  # one categorical draw per row
        cumulative = probs.cumsum(1)
        return np.minimum((rng.random((len(probs), 1)) * cumulative[:, -1:] > cumulative).sum(1), probs.shape[1] - 1)

    phones = np.empty((num_seqs, length), dtype=np.int64)
    units = np.empty_like(phones)
    previous = np.zeros(num_seqs, dtype=np.int64)  # 0 = start
    for t in range(length):
        phones[:, t] = draw(world.initial[None].repeat(num_seqs, 0) if t == 0 else world.transition[previous - 1])
        units[:, t] = draw(world.emission[previous, phones[:, t]])
        previous = phones[:, t] + 1
    return torch.from_numpy(phones), torch.from_numpy(units)


def phone_error(units: Tensor, phones: Tensor, graph: Fsa, log_emissions: Tensor) -> float:
    """Per-position error of Viterbi decoding against the true phones, with
    no relabelling (the LM fixes which phone is which)."""
    lengths = torch.full((units.shape[0],), units.shape[1])
    path = decode(units, lengths, graph, log_emissions)
    return float((path.aux_labels - 1 != phones).float().mean())


def marginal_tv(world: World, graph: Fsa, log_emissions: Tensor, length: int, samples: int = 20_000,
                seed: int = 0) -> tuple[float, str]:
    """Total-variation distance between the true and the model marginal of
    unit sequences of ``length``, and how it was measured.

    Exact by enumerating all ``K ** length`` sequences when there are at most
    :data:`EXACT_TV_LIMIT`; otherwise Monte Carlo with the true world as the
    proposal: ``TV = E_p[max(0, 1 - q(x) / p(x))]``, unbiased.
    """
    true_graph, true_table = world.oracle()
    if world.num_units ** length <= EXACT_TV_LIMIT:
        units = torch.tensor(list(itertools.product(range(world.num_units), repeat=length)), dtype=torch.long)
        method = "exact"
    else:
        units = sample(world, samples, length, seed)[1]
        method = f"monte-carlo ({samples} samples)"
    lengths = torch.full((units.shape[0],), length)
    with torch.no_grad():
        log_p = total_scores(emission_scores(true_table, units).double(), lengths, true_graph)
        log_q = total_scores(emission_scores(log_emissions, units).double(), lengths, graph)
    if method == "exact":
        return float(0.5 * (log_p.exp() - log_q.exp()).abs().sum()), method
    return float((1 - (log_q - log_p).exp()).clamp_min(0).mean()), method


def log_likelihood_per_frame(units: Tensor, graph: Fsa, log_emissions: Tensor) -> float:
    lengths = torch.full((units.shape[0],), units.shape[1])
    with torch.no_grad():
        totals = total_scores(emission_scores(log_emissions, units), lengths, graph)
    return float(totals.sum() / lengths.sum())


def tokens_to_sequences(tokens: int, length: int) -> int:
    return max(1, math.ceil(tokens / length))
