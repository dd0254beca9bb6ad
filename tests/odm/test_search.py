"""The ODM loss prefers the truth on a world where it is identifiable, and the search keeps
the restart with the lowest loss."""

import itertools

import numpy as np
import pytest
import torch

from usrasr.odm.ngrams import lm_ngram_tables
from usrasr.odm.search import SearchConfig, fit_odm, labelling_loss, predict
from usrasr.simulate.odm_world import odm_world


@pytest.fixture(scope="module")
def world():
    return odm_world(num_phones=5, dim=4, utterances=100, length=30, noise=0.2, seed=3)


@pytest.fixture(scope="module")
def tables(world):
    return lm_ngram_tables(world.lm, world.symbols, max_order=3, top=125)


def test_true_labelling_has_the_lowest_loss_of_every_relabelling(world, tables):
    """Every permutation of the labels of the true sequences costs more than the truth,
    at every order above the unigram (the unigram alone cannot tell equally frequent labels apart)."""
    labels = torch.cat(world.labels)
    truth = labelling_loss(labels, world.lengths, tables)
    for perm in itertools.permutations(range(5)):
        if perm == tuple(range(5)):
            continue
        relabelled = labelling_loss(torch.tensor(perm)[labels], world.lengths, tables)
        assert relabelled[1:].sum() > truth[1:].sum() + 1e-3


def test_search_from_the_truth_stays_there(world, tables):
    """The true mapping is a minimum: warm-started at it, the ODM search keeps it."""
    labels = torch.cat(world.labels)
    config = SearchConfig(restarts=1, steps=60, learning_rate=0.02, init_steps=60)
    search = fit_odm(world.features, tables, config, initial_labels=labels[None])
    accuracy = (torch.cat(predict(search.model, world.features), 1)[0] == labels).float().mean()
    assert accuracy > 0.95


def test_restarts_are_selected_by_loss(world, tables):
    """Restarts warm-started at permuted labellings: the lowest-loss one is the truth's."""
    labels = torch.cat(world.labels)
    rng = np.random.default_rng(0)
    perms = [torch.from_numpy(rng.permutation(5)) for _ in range(3)]
    true_restart = 2
    perms.insert(true_restart, torch.arange(5))
    initial = torch.stack([p[labels] for p in perms])
    config = SearchConfig(restarts=4, steps=30, learning_rate=0.02, init_steps=60)
    search = fit_odm(world.features, tables, config, initial_labels=initial)
    assert search.losses.shape == (4,) and search.order_losses.shape == (4, 3)
    assert search.best == int(search.losses.argmin()) == true_restart
    predicted = torch.cat(predict(search.model, world.features), 1)
    accuracy = (predicted == labels).float().mean(1)
    assert int(accuracy.argmax()) == true_restart and accuracy[true_restart] > 0.95


def test_restarts_trained_together_follow_their_own_trajectories(world, tables):
    config = SearchConfig(restarts=3, steps=5, learning_rate=0.05)
    together = fit_odm(world.features, tables, config)
    alone = fit_odm(world.features, tables, SearchConfig(restarts=3, steps=5, learning_rate=0.05, restart_batch=1))
    torch.testing.assert_close(together.losses, alone.losses, rtol=1e-4, atol=1e-5)


def test_curriculum_adds_an_order_every_order_steps():
    from usrasr.odm.search import order_weights

    config = SearchConfig(order_steps=10)
    assert [order_weights(s, config, 4) for s in (0, 9, 10, 25)] == [
        [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert order_weights(0, SearchConfig(), 4) == [1, 1, 1, 1]
