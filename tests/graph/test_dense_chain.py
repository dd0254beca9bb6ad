"""The dense-chain fast path equals the general arc kernel on HMM-style graphs."""

import math

import pytest
import torch

from usrasr.graph.dense_chain import DenseChain, chain_total_scores
from usrasr.graph.fsa import FsaVec
from usrasr.graph.marginals import total_scores
from usrasr.graph.topo import bigram_lm_fsa, ctc_lm_graph, hmm_lm_graph


def random_hmm_graph(num_phones=5, states_per_phone=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    transition = torch.rand(num_phones, num_phones, generator=generator, dtype=torch.float64)
    transition[0, 1] = 0.0  # a missing bigram
    transition = transition / transition.sum(1, keepdim=True) * 0.9
    lm = bigram_lm_fsa(transition, final=torch.full((num_phones,), 0.1, dtype=torch.float64))
    return hmm_lm_graph(lm, num_phones + 1, states_per_phone=states_per_phone, silence_phone=num_phones + 1)


@pytest.mark.parametrize("states_per_phone", [1, 2])
def test_totals_and_gradients_match_the_arc_kernel(states_per_phone):
    graph = random_hmm_graph(states_per_phone=states_per_phone)
    num_labels = int(graph.label.max()) + 1
    chain = DenseChain.from_fsa(graph, num_labels)
    assert chain is not None
    torch.manual_seed(1)
    dense = torch.randn(6, 12, num_labels, dtype=torch.float64).log_softmax(-1).requires_grad_()
    lengths = torch.tensor([12, 7, 1, 0, 3, 12])
    fast = chain_total_scores(dense, lengths, chain)
    reference = total_scores(dense, lengths, FsaVec([graph] * 6))  # per-utterance graphs: arc kernel
    assert torch.allclose(fast, reference, atol=1e-9)
    (g_fast,) = torch.autograd.grad(fast[torch.isfinite(fast)].sum(), dense)
    (g_ref,) = torch.autograd.grad(reference[torch.isfinite(reference)].sum(), dense)
    assert torch.allclose(g_fast, g_ref, atol=1e-9)
    assert torch.autograd.gradcheck(lambda d: chain_total_scores(d, lengths[:2], chain), (dense[:2].detach().requires_grad_(),))


def test_impossible_sequences_are_minus_inf_with_zero_gradient():
    graph = random_hmm_graph(states_per_phone=3)  # every phone needs 3 frames
    num_labels = int(graph.label.max()) + 1
    chain = DenseChain.from_fsa(graph, num_labels)
    dense = torch.zeros(2, 4, num_labels, requires_grad=True)
    totals = chain_total_scores(dense, torch.tensor([2, 4]), chain)
    assert totals[0].item() == -math.inf and math.isfinite(totals[1].item())
    (grad,) = torch.autograd.grad(totals[1] + 0 * totals[0].clamp(min=-1e30), dense)
    assert not torch.isnan(grad).any() and grad[0].abs().sum() == 0


def test_total_scores_dispatches_only_for_qualifying_graphs():
    assert DenseChain.from_fsa(random_hmm_graph(), 20) is not None
    # Learnable arc scores need their gradient: only the arc kernel gives it.
    graph = random_hmm_graph()
    graph.score.requires_grad_()
    assert DenseChain.from_fsa(graph, 20) is None
    ctc = ctc_lm_graph(bigram_lm_fsa(torch.full((3, 3), 1 / 3, dtype=torch.float64)), 3)
    chain = DenseChain.from_fsa(ctc, 4)
    if chain is not None:  # CTC graphs also qualify when labels follow destinations
        dense = torch.randn(2, 5, 4).log_softmax(-1)
        assert torch.allclose(chain_total_scores(dense, torch.tensor([5, 3]), chain),
                              total_scores(dense, torch.tensor([5, 3]), FsaVec([ctc, ctc])), atol=1e-4)


@pytest.mark.parametrize("states_per_phone", [1, 2])
def test_viterbi_matches_the_arc_kernel(states_per_phone):
    from usrasr.graph.dense_chain import chain_best_arcs
    from usrasr.graph.marginals import best_path

    graph = random_hmm_graph(states_per_phone=states_per_phone, seed=3)
    num_labels = int(graph.label.max()) + 1
    chain = DenseChain.from_fsa(graph, num_labels)
    torch.manual_seed(2)
    dense = torch.randn(5, 10, num_labels, dtype=torch.float64).log_softmax(-1)
    lengths = torch.tensor([10, 6, 1, 0, 3])
    scores, arcs = chain_best_arcs(dense, lengths, chain)
    reference = best_path(dense, lengths, FsaVec([graph] * 5))  # arc kernel
    assert torch.allclose(scores, reference.scores, atol=1e-9)
    assert torch.equal(arcs, reference.arcs)


def test_parallel_arcs_keep_the_best_one_on_every_build():
    # A phone bigram with repeats gives every state a self-loop beside the LM arc back into the
    # same phone: same states, different score and aux label.  Viterbi must take the better one,
    # every time the chain is built (an indexed write with repeated indices used to keep either).
    graph = random_hmm_graph(num_phones=40, states_per_phone=1, seed=4)
    num_labels = int(graph.label.max()) + 1
    expected: dict[tuple[int, int], int] = {}
    for arc, (src, dst, score) in enumerate(zip(graph.src.tolist(), graph.dst.tolist(), graph.score.tolist())):
        best = expected.get((src, dst))
        if best is None or score >= graph.score[best].item():
            expected[(src, dst)] = arc
    assert len(expected) < graph.num_arcs  # the graph does have parallel arcs
    for _ in range(20):
        chain = DenseChain.from_fsa(graph, num_labels)
        picked = {(s, d): int(chain.best_arc[s, d]) for s, d in expected}
        assert picked == expected
        assert int((chain.best_arc >= 0).sum()) == len(expected)
