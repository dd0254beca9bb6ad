"""The dense-chain fast path against the arc kernel, on the inputs where a scaled
forward-backward in probability space breaks: impossible sequences (no state can
take a frame), emission gaps wider than float32's exponent range, and confident
emissions that reverse the ranking of states from one frame to the next.

Every shared fixed-weight HMM-style :class:`Fsa` runs as a dense chain; the same
graph in an :class:`FsaVec`, or with learnable weights, runs the arc kernel, which
is checked against path enumeration and OpenFst in ``test_marginals.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from usrasr.graph import (
    Fsa,
    FsaVec,
    best_path,
    bigram_lm_fsa,
    ctc_lm_graph,
    hmm_lm_graph,
    total_scores,
)
from usrasr.graph.dense_chain import DenseChain


def learnable(graph: Fsa) -> Fsa:
    """The same graph with learnable arc scores: the shared-graph arc kernel."""
    return Fsa(graph.src, graph.dst, graph.label, graph.aux_label, graph.score.clone().requires_grad_(), graph.final,
               graph.start)


def every_path(graph: Fsa, batch: int) -> dict[str, Fsa | FsaVec]:
    return {"dense chain": graph, "shared arc kernel": learnable(graph), "FsaVec arc kernel": FsaVec([graph] * batch)}


def totals_and_grad(dense: torch.Tensor, lengths: torch.Tensor, graph: Fsa | FsaVec) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = dense.detach().clone().requires_grad_()
    totals = total_scores(inputs, lengths, graph)
    totals.sum().backward()
    return totals.detach(), inputs.grad


# ---------------------------------------------------------------- the two reproductions


def test_a_sequence_longer_than_the_graph_allows_has_zero_gradient_on_every_path():
    graph = Fsa.from_arcs([(0, 1, 0, 0, 0.0), (1, 2, 1, 0, 0.0)], final={2: 0.0})  # exactly 2 frames
    assert DenseChain.from_fsa(graph, 2) is not None
    for dtype in (torch.float32, torch.float64):
        dense = torch.zeros(2, 3, 2, dtype=dtype)
        for name, path in every_path(graph, 2).items():
            totals, grad = totals_and_grad(dense, torch.tensor([3, 2]), path)
            assert totals[0].item() == -math.inf and totals[1].item() == 0.0, name
            assert torch.equal(grad[0], torch.zeros_like(grad[0])), name
            assert torch.equal(grad[1], torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=dtype)), name


def test_a_frame_without_any_finite_score_has_zero_gradient_on_every_path():
    graph = hmm_lm_graph(bigram_lm_fsa(torch.full((2, 2), 0.5, dtype=torch.float64)), 2, states_per_phone=2)
    dense = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    dense[0, 2] = -math.inf
    for name, path in every_path(graph, 2).items():
        totals, grad = totals_and_grad(dense, torch.tensor([5, 5]), path)
        assert totals[0].item() == -math.inf and math.isfinite(totals[1].item()), name
        assert torch.equal(grad[0], torch.zeros_like(grad[0])), name
        assert torch.allclose(grad[1].sum(1), torch.ones(5)), name


@pytest.mark.parametrize("gap", [80.0, 100.0, 120.0, 1000.0])
def test_reachable_states_far_below_the_best_score_keep_their_total_on_every_path(gap):
    # On frame 0 only the first state of each phone is reachable, and both lie `gap` below the
    # second states: the 4 paths (2 phones, then stay or move on) all score -gap + log(1/4).
    graph = hmm_lm_graph(bigram_lm_fsa(torch.full((2, 2), 0.5, dtype=torch.float64)), 2, states_per_phone=2)
    for dtype in (torch.float32, torch.float64):
        dense = torch.zeros(1, 3, 4, dtype=dtype)
        dense[0, 0] = torch.tensor([-gap, 0.0, -gap, 0.0], dtype=dtype)
        for name, path in every_path(graph, 1).items():
            totals, grad = totals_and_grad(dense, torch.tensor([3]), path)
            assert totals.item() == pytest.approx(-gap - math.log(4), abs=1e-4), (name, dtype)
            assert torch.allclose(grad[0, 0], torch.tensor([0.5, 0.0, 0.5, 0.0], dtype=dtype)), (name, dtype)
            assert torch.allclose(grad.sum(2), torch.ones(1, 3, dtype=dtype)), (name, dtype)


# ---------------------------------------------------------------- property: chain == arc kernel


def random_bigram(num_phones: int, gen: torch.Generator) -> Fsa:
    """A phone bigram with missing bigrams and an end probability."""
    transition = torch.rand(num_phones, num_phones, generator=gen, dtype=torch.float64)
    transition[torch.rand(num_phones, num_phones, generator=gen) < 0.3] = 0.0
    transition[torch.arange(num_phones), torch.randint(0, num_phones, (num_phones,), generator=gen)] += 0.1
    return bigram_lm_fsa(transition / transition.sum(1, keepdim=True) * 0.9,
                         final=torch.full((num_phones,), 0.1, dtype=torch.float64))


def random_state_labelled(gen: torch.Generator) -> Fsa:
    """A random graph whose arcs into a state all carry that state's label (so it runs as a
    dense chain), with non-final, dead-end and unreachable states and arbitrary arc scores."""
    num_states, num_arcs = int(torch.randint(2, 9, (1,), generator=gen)), int(torch.randint(2, 30, (1,), generator=gen))
    state_label = torch.randint(0, 4, (num_states,), generator=gen)
    src = torch.randint(0, num_states, (num_arcs,), generator=gen)
    dst = torch.randint(0, num_states, (num_arcs,), generator=gen)
    final = torch.where(torch.rand(num_states, generator=gen) < 0.5, torch.randn(num_states, generator=gen, dtype=torch.float64),
                        -math.inf)
    final[dst[0]] = 0.0
    return Fsa(src, dst, state_label[dst], torch.zeros_like(src), 3 * torch.randn(num_arcs, generator=gen, dtype=torch.float64),
               final, start=int(src[0]))


def project_graph(kind: str, gen: torch.Generator) -> Fsa:
    num_phones = int(torch.randint(2, 6, (1,), generator=gen))
    lm = random_bigram(num_phones, gen)
    if kind == "ctc":
        return ctc_lm_graph(lm, num_phones)
    if kind == "random":
        return random_state_labelled(gen)
    states_per_phone, silence = int(kind[3]), kind.endswith("silence")
    loop = float(torch.rand(1, generator=gen)) * 0.9 + 0.05
    return hmm_lm_graph(lm, num_phones + silence, states_per_phone=states_per_phone, self_loop_prob=loop,
                        silence_phone=num_phones + 1 if silence else None)


def wide_emissions(batch: int, frames: int, labels: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Network-like log-probabilities with logits of spread ``scale`` (confident outputs reach
    hundreds of nats below the best label), some -inf entries and one frame with none finite."""
    dense = (scale * torch.randn(batch, frames, labels, generator=gen, dtype=torch.float64)).log_softmax(-1)
    dense[torch.rand(dense.shape, generator=gen) < 0.05] = -math.inf
    dense[int(torch.randint(0, batch, (1,), generator=gen)), int(torch.randint(0, frames, (1,), generator=gen))] = -math.inf
    return dense


KINDS = ["hmm1", "hmm1-silence", "hmm2", "hmm3", "hmm3-silence", "ctc", "random"]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31), scale=st.sampled_from([1.0, 10.0, 60.0]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_the_dense_chain_equals_the_arc_kernel(kind, seed, scale, dtype):
    gen = torch.Generator().manual_seed(seed)
    graph = project_graph(kind, gen)
    labels = int(graph.label.max()) + 1
    assert DenseChain.from_fsa(graph, labels) is not None
    batch, frames = 6, int(torch.randint(1, 25, (1,), generator=gen))
    dense = wide_emissions(batch, frames, labels, scale, gen).to(dtype)
    # Mixed lengths: full, empty, one frame, and random ones (some too short for the graph).
    lengths = torch.cat([torch.tensor([frames, 0, 1]), torch.randint(0, frames + 1, (batch - 3,), generator=gen)])

    totals, grad = totals_and_grad(dense, lengths, graph)
    # Reference: the arc kernel in float64 on the very same (rounded) inputs.
    reference, reference_grad = totals_and_grad(dense.double(), lengths, FsaVec([graph] * batch))

    assert totals.dtype == grad.dtype == dtype
    assert not grad.isnan().any()
    impossible = reference == -math.inf
    assert torch.equal(totals == -math.inf, impossible), (totals, reference)
    assert (grad[impossible] == 0).all()
    tolerance = 1e-9 if dtype == torch.float64 else 2e-4
    possible = ~impossible
    assert torch.allclose(totals[possible].double(), reference[possible], rtol=tolerance, atol=tolerance)
    assert torch.allclose(grad.double(), reference_grad, atol=tolerance)
    # Viterbi without a gradient also runs on the chain.
    assert torch.allclose(best_path(dense, lengths, graph).scores.double(),
                          best_path(dense.double(), lengths, FsaVec([graph] * batch)).scores, rtol=tolerance, atol=tolerance)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_dense_chain_on_cuda_equals_the_cpu():
    gen = torch.Generator().manual_seed(5)
    graph = project_graph("hmm3-silence", gen)
    labels = int(graph.label.max()) + 1
    dense = wide_emissions(4, 30, labels, 60.0, gen).float()
    lengths = torch.tensor([30, 0, 1, 17])
    totals, grad = totals_and_grad(dense, lengths, graph)
    cuda_totals, cuda_grad = totals_and_grad(dense.cuda(), lengths.cuda(), graph.to("cuda"))
    assert torch.equal(cuda_totals.isinf().cpu(), totals.isinf())
    assert torch.allclose(cuda_totals.cpu(), totals, rtol=1e-6, atol=1e-4)
    assert torch.allclose(cuda_grad.cpu(), grad, atol=1e-5)
