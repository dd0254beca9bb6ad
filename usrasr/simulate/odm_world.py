"""A synthetic world for output-distribution matching: continuous features that are a
noisy, invertible function of the phones.

Phone sequences come from a bigram LM (a Dirichlet transition matrix, written
as an :class:`~usrasr.lang.lm.ArpaLM`, so the ODM tables are read the way a
corpus's are); each phone has its own mean vector, and a step's feature is its
phone's mean plus Gaussian noise, seen through a fixed random rotation.  With
little noise the phone is recoverable from each step alone, so the true
labelling should be where the ODM loss is lowest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from usrasr.lang.lm import ArpaLM
from usrasr.simulate.world import dirichlet_transition, stationary


@dataclass
class OdmWorld:
    lm: ArpaLM
    symbols: list[str]  # label i is symbols[i]
    features: list[Tensor]  # (steps, dim) per utterance
    labels: list[Tensor]  # (steps,) true label per step

    @property
    def lengths(self) -> Tensor:
        return torch.tensor([len(f) for f in self.features])


def bigram_arpa(transition: np.ndarray, symbols: list[str]) -> ArpaLM:
    """The bigram LM with these transitions (unigrams: the stationary distribution)."""
    start = stationary(transition)
    logprob = {(s,): math.log(p) for s, p in zip(symbols, start)}
    logprob.update({(h, c): math.log(transition[i, j]) for i, h in enumerate(symbols)
                    for j, c in enumerate(symbols) if transition[i, j] > 0})
    return ArpaLM(order=2, logprob=logprob, backoff={})


def odm_world(num_phones: int = 6, dim: int = 4, utterances: int = 200, length: int = 30, noise: float = 0.3,
              concentration: float = 0.3, seed: int = 0) -> OdmWorld:
    """``utterances`` sequences of ``length`` steps; features of dimension ``dim`` with
    phone means one unit apart on average and per-dimension noise ``noise``."""
    rng = np.random.default_rng(seed)
    transition = dirichlet_transition(num_phones, concentration, rng)
    symbols = [f"p{i}" for i in range(num_phones)]
    means = rng.normal(size=(num_phones, dim))
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    start = stationary(transition)
    features, labels = [], []
    for _ in range(utterances):
        seq = [rng.choice(num_phones, p=start)]
        for _ in range(length - 1):
            seq.append(rng.choice(num_phones, p=transition[seq[-1]]))
        seq = np.array(seq)
        x = (means[seq] + noise * rng.normal(size=(length, dim))) @ rotation
        features.append(torch.from_numpy(x).float())
        labels.append(torch.from_numpy(seq))
    return OdmWorld(bigram_arpa(transition, symbols), symbols, features, labels)
