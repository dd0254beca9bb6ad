"""The search for the minimum of the ODM loss: batched restarts, an n-gram curriculum,
initialisation from given labellings, annealing; the restart with the lowest loss wins.

Every restart is a classifier of its own (:class:`RestartClassifier`); the loss is
a sum over restarts and Adam is elementwise, so restarts trained together follow
the trajectories they would follow alone (``restart_batch`` only changes speed).

- **Curriculum.** The unigram term is always on (it keeps the outputs in the
  LM's proportions); bigrams from the start, and each higher order joins after
  ``order_steps`` more steps (``order_steps=0``: every order from the start).
- **Initialisation.** Random weights, or a warm start: ``init_steps`` of
  cross-entropy towards one given labelling per restart (a frequency-matched
  clustering, another model's output), then the ODM search.
- **Primal-dual** (``dual``): the stochastic primal-dual form of Liu et al. 2017
  (:func:`usrasr.odm.objective.order_dual`), the duals ascending while the
  classifier descends.
- **Annealing.** Posteriors ``softmax(logits / T)`` with ``T`` falling from
  ``temperature`` to 1, and Gaussian noise on the logits falling from ``noise`` to
  0, both over ``anneal_steps``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from usrasr.odm.classifier import RestartClassifier
from usrasr.odm.ngrams import NgramTable
from usrasr.odm.objective import OdmObjective, smoothness


@dataclass
class SearchConfig:
    restarts: int = 16
    restart_batch: int = 0  # restarts trained together (0: all of them)
    steps: int = 400
    learning_rate: float = 0.01
    hidden: int = 0  # 0: linear classifier
    init_scale: float = 1.0  # scale of the random weights (1: unit-variance logits for unit-variance features)
    order_steps: int = 0  # curriculum: steps before each order above 2 joins (0: all orders at once)
    batch_utterances: int = 0  # utterances per step (0: all)
    temperature: float = 1.0  # start of the posterior temperature, annealed to 1
    noise: float = 0.0  # start of the logit noise, annealed to 0
    anneal_steps: int = 0
    init_steps: int = 100  # warm start: cross-entropy steps towards the given labels
    smoothness: float = 0.0  # weight of the neighbour smoothness term (frame-level classifiers)
    dual: bool = False  # train the primal-dual form (duals ascend at dual_learning_rate)
    dual_learning_rate: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.restarts < 1 or self.steps < 0 or self.restart_batch < 0 or self.batch_utterances < 0:
            raise ValueError("need restarts >= 1, steps >= 0, restart_batch >= 0 and batch_utterances >= 0")
        if self.temperature <= 0 or self.noise < 0 or self.anneal_steps < 0:
            raise ValueError("need temperature > 0, noise >= 0 and anneal_steps >= 0")


@dataclass
class OdmSearch:
    model: RestartClassifier  # every restart
    losses: Tensor  # (restarts,) the selection criterion: every order's cross-entropy, summed
    order_losses: Tensor  # (restarts, orders)
    history: list[Tensor] = field(default_factory=list)  # training loss per step, (restarts,) each

    @property
    def best(self) -> int:
        return int(self.losses.argmin())


def order_weights(step: int, config: SearchConfig, max_order: int) -> list[float]:
    """Weight of each order at ``step``: 1 for the orders the curriculum has reached, else 0."""
    reached = max_order if not config.order_steps else min(max_order, 2 + step // config.order_steps)
    return [1.0 if n <= reached else 0.0 for n in range(1, max_order + 1)]


def _anneal(step: int, config: SearchConfig) -> tuple[float, float]:
    """(temperature, noise) at ``step``."""
    if step >= config.anneal_steps:
        return 1.0, 0.0
    left = 1.0 - step / config.anneal_steps
    return 1.0 + (config.temperature - 1.0) * left, config.noise * left


def evaluate(model: RestartClassifier, features: Tensor, objective: OdmObjective) -> Tensor:
    """(restarts, orders) cross-entropy of every order on all the data, at temperature 1."""
    with torch.no_grad():
        return objective.per_order(torch.softmax(model(features), -1))


def fit_odm(features: list[Tensor], tables: list[NgramTable], config: SearchConfig,
            initial_labels: Tensor | None = None,
            callback: Callable[[int, Tensor], None] | None = None) -> OdmSearch:
    """Train ``config.restarts`` classifiers of the per-utterance ``features`` (steps, dim) by
    the ODM loss against ``tables`` (orders 1..N); ``initial_labels`` (restarts, steps) are
    the warm start's labellings of the concatenated steps.  ``callback(step, losses)``
    sees every step's training loss per restart (of the restarts in the current batch)."""
    if initial_labels is not None and initial_labels.shape != (config.restarts, sum(len(f) for f in features)):
        raise ValueError("initial_labels must be (restarts, total steps)")
    x = torch.cat(features).float()
    lengths = torch.tensor([len(f) for f in features])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    labels = int(tables[0].ngrams.max()) + 1 if len(tables[0].ngrams) else 1
    max_order = max(t.order for t in tables)
    generator = torch.Generator().manual_seed(config.seed)
    everyone = RestartClassifier(config.restarts, x.shape[1], labels, config.hidden, config.init_scale, generator)
    full = OdmObjective(tables, lengths)
    batch_size = config.batch_utterances if 0 < config.batch_utterances < len(features) else 0
    group = config.restart_batch or config.restarts
    trained, history = [], [[] for _ in range(config.steps)]
    for begin in range(0, config.restarts, group):
        restarts = list(range(begin, min(begin + group, config.restarts)))
        model = everyone.select(restarts)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        data = torch.Generator().manual_seed(config.seed + 1)  # the same batches for every group
        if initial_labels is not None:
            targets = initial_labels[restarts]
            for _ in range(config.init_steps):
                optimizer.zero_grad()
                logits = model(x)
                torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets).backward()
                optimizer.step()
            optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        duals = [d.requires_grad_() for d in full.initial_duals(len(restarts))] if config.dual else None
        ascent = torch.optim.Adam(duals, lr=config.dual_learning_rate, maximize=True) if duals else None
        for step in range(config.steps):
            if batch_size:
                chosen = torch.randperm(len(features), generator=data)[:batch_size]
                rows = torch.cat([torch.arange(int(offsets[i]), int(offsets[i + 1])) for i in chosen.tolist()])
                xb, batch_lengths = x[rows], lengths[chosen]
                objective = OdmObjective(tables, batch_lengths)
            else:
                xb, objective, batch_lengths = x, full, lengths
            temperature, noise = _anneal(step, config)
            optimizer.zero_grad()
            if ascent:
                ascent.zero_grad()
            logits = model(xb)
            if noise:
                logits = logits + noise * torch.randn(logits.shape, generator=data)
            posteriors = torch.softmax(logits / temperature, -1)
            losses = objective.loss(posteriors, order_weights(step, config, max_order), duals)
            total = losses
            if config.smoothness:
                total = total + config.smoothness * smoothness(posteriors, batch_lengths)
            total.sum().backward()
            optimizer.step()
            if ascent:
                ascent.step()
            history[step].append(losses.detach())
            if callback:
                callback(step, losses.detach())
        trained.append(model)
    model = _concatenate(trained)
    order_losses = evaluate(model, x, full)
    return OdmSearch(model, order_losses.sum(-1), order_losses, [torch.cat(h) for h in history])


def _concatenate(models: list[RestartClassifier]) -> RestartClassifier:
    first = models[0]
    out = RestartClassifier(sum(m.restarts for m in models), first.dim, first.labels, first.hidden)
    with torch.no_grad():
        for i, param in enumerate(list(out.weights) + list(out.biases)):
            param.copy_(torch.cat([(list(m.weights) + list(m.biases))[i] for m in models]))
    return out


def predict(model: RestartClassifier, features: list[Tensor]) -> list[Tensor]:
    """Each restart's most likely label per step: one (restarts, steps) tensor per utterance."""
    with torch.no_grad():
        labels = model(torch.cat(features).float()).argmax(-1)
    return list(labels.split([len(f) for f in features], dim=1))


def labelling_loss(labels: Tensor, lengths: Tensor, tables: list[NgramTable], smoothing: float = 1e-3) -> Tensor:
    """(orders,) cross-entropy of each order for a hard labelling (steps,) of the concatenated
    steps: e.g. the true labels, for telling a search failure (the truth has a lower loss
    than the search found) from a misspecified loss (it has a higher one)."""
    labels_count = int(tables[0].ngrams.max()) + 1
    posteriors = torch.full((1, len(labels), labels_count), smoothing / labels_count, dtype=torch.float64)
    posteriors[0, torch.arange(len(labels)), labels] += 1.0 - smoothing
    with torch.no_grad():
        return OdmObjective(tables, lengths).per_order(posteriors)[0]
