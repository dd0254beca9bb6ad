"""Sequence-level CE trainer: restarts, EM, Adam, moment initialisation."""

from dataclasses import replace

import pytest
import torch

from usrasr.graph.fsa import FsaVec
from usrasr.simulate.world import phone_error, random_world, sample
from usrasr.seqce.fit import SeqCEConfig, decode, fit_seqce, moment_fit, unit_pair_counts


def _data(num_phones=6, noise=0.1, num_seqs=400, length=15, seed=0):
    world = random_world(num_phones, noise, seed=seed)
    phones, units = sample(world, num_seqs, length, seed=seed)
    return world, phones, units, torch.full((num_seqs,), length)


def test_lowest_loss_restart_reaches_oracle_small_world():
    world, phones, units, lengths = _data()
    result = fit_seqce(units, lengths, world.lm_graph(), world.num_units,
                       SeqCEConfig(restarts=3, iterations=10), label_pairs=world.label_pairs(15))
    assert result.loss == min(result.restart_losses)
    assert result.best_restart == result.restart_losses.index(result.loss)
    oracle = phone_error(units, phones, *world.oracle())
    assert phone_error(units, phones, world.lm_graph(), result.log_emissions) <= oracle + 0.02


@pytest.mark.parametrize("optimizer, grouped, graph_per_sequence",
                         [("em", False, False), ("adam", False, False), ("em", True, False), ("em", False, True)])
def test_batched_restarts_follow_the_trajectories_of_restarts_run_alone(optimizer, grouped, graph_per_sequence):
    """All restarts in one batch, in batches of two, or one at a time by id: the same tables."""
    world, _, units, lengths = _data(num_seqs=120)
    groups = torch.arange(len(units)) % 2 if grouped else None
    graph = FsaVec([world.lm_graph()] * len(units)) if graph_per_sequence else world.lm_graph()
    config = SeqCEConfig(restarts=3, iterations=12, optimizer=optimizer, init="frequency", tolerance=3.5e-3)
    fit = dict(label_pairs=world.label_pairs(15), groups=groups)
    together = fit_seqce(units, lengths, graph, world.num_units, replace(config, batch_restarts=0), **fit)
    in_pairs = fit_seqce(units, lengths, graph, world.num_units, replace(config, batch_restarts=2), **fit)
    alone = [fit_seqce(units, lengths, graph, world.num_units, config, restart_ids=[r], **fit)
             for r in range(3)]
    assert len({len(h) for h in together.histories}) > 1  # one restart stopped before the others
    for r in range(3):
        for other in (in_pairs.restart_emissions[r], alone[r].log_emissions):
            assert torch.allclose(together.restart_emissions[r], other, atol=1e-5)
        assert together.histories[r] == pytest.approx(alone[r].histories[0], abs=1e-5)


def test_tied_group_tables_span_independent_and_shared_tables():
    """Tying 0 leaves each group's table its own; a huge tying gives every group the shared fit."""
    world, _, units, lengths = _data(num_seqs=120)
    groups = torch.arange(len(units)) % 3
    config = SeqCEConfig(restarts=1, iterations=5, init="frequency", tolerance=-1.0)
    fit = dict(label_pairs=world.label_pairs(15))
    shared = fit_seqce(units, lengths, world.lm_graph(), world.num_units, config, **fit).log_emissions
    tied = fit_seqce(units, lengths, world.lm_graph(), world.num_units, replace(config, tying=1e9), groups=groups,
                     **fit).log_emissions
    loose = fit_seqce(units, lengths, world.lm_graph(), world.num_units, replace(config, tying=1.0), groups=groups,
                      **fit).log_emissions
    assert tied.shape == (3, *shared.shape)
    for g in range(3):
        assert torch.allclose(tied[g].exp(), shared.exp(), atol=1e-4)
    assert (loose[0].exp() - loose[1].exp()).abs().max() > 1e-2
    with pytest.raises(ValueError):
        SeqCEConfig(optimizer="adam", tying=1.0)


def test_em_never_increases_the_loss_and_rows_are_normalised():
    world, _, units, lengths = _data()
    result = fit_seqce(units, lengths, world.lm_graph(), world.num_units,
                       SeqCEConfig(restarts=1, iterations=6, init="random", tolerance=-1.0))
    history = result.histories[0]
    assert all(b <= a + 1e-4 for a, b in zip(history, history[1:]))
    assert torch.allclose(result.log_emissions.exp().sum(1), torch.ones(world.num_phones + 1), atol=1e-4)


def test_adam_and_annealing_lower_the_loss():
    world, _, units, lengths = _data()
    config = SeqCEConfig(restarts=1, iterations=15, optimizer="adam", init="frequency", anneal_start=0.5,
                         anneal_iterations=5, tolerance=-1.0)
    result = fit_seqce(units, lengths, world.lm_graph(), world.num_units, config, label_pairs=world.label_pairs(15))
    assert result.histories[0][-1] < result.histories[0][0]


def test_moment_fit_recovers_emissions_from_exact_pair_statistics():
    world = random_world(6, 0.1, seed=1)
    joint = world.label_pairs(50)
    truth = torch.from_numpy(world.emission[0]).double()
    table = torch.cat([torch.full((1, 6), 1 / 6, dtype=torch.float64), truth])
    pairs = table.t() @ joint @ table
    start = torch.distributions.Dirichlet(torch.ones(6)).sample((16, 7))
    fitted, losses = moment_fit(pairs, joint, start, iterations=400)
    best = fitted[losses.argmin()].exp()[1:]
    assert (best - truth).abs().max() < 0.05


def test_decode_and_pair_counts_shapes():
    world, _, units, lengths = _data(num_seqs=5, length=7)
    lengths = torch.tensor([7, 6, 5, 7, 1])
    path = decode(units, lengths, world.lm_graph(), torch.zeros(world.num_phones + 1, world.num_units))
    assert path.labels.shape == (5, 7) and int(path.labels[4, 1]) == -1
    assert int(unit_pair_counts(units, lengths, world.num_units).sum()) == int((lengths - 1).sum())


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError):
        SeqCEConfig(init="magic")
    with pytest.raises(ValueError):
        SeqCEConfig(optimizer="sgd")


@pytest.mark.slow
def test_default_world_reaches_oracle():
    """20 phones, 20% noise, 1e5 tokens: lowest-loss restart within 2 points."""
    world = random_world(20, 0.2, seed=0)
    phones, units = sample(world, 5000, 20, seed=1)
    lengths = torch.full((5000,), 20)
    result = fit_seqce(units, lengths, world.lm_graph(), 20, SeqCEConfig(restarts=3, iterations=8),
                       label_pairs=world.label_pairs(20))
    oracle = phone_error(units, phones, *world.oracle())
    assert phone_error(units, phones, world.lm_graph(), result.log_emissions) <= oracle + 0.02
