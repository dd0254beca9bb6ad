"""Totals, Viterbi, gradients and posteriors against independent references:
path enumeration, OpenFst's log-semiring shortest distance, and k2 if present."""

from __future__ import annotations

import itertools
import logging
import math

import pytest
import torch

from usrasr.graph.fsa import Fsa, FsaVec
from usrasr.graph.marginals import arc_posteriors, best_path, total_scores

pywrapfst = pytest.importorskip("pywrapfst")


def random_fsa(
    seed: int, num_states: int = 4, num_arcs: int = 10, num_labels: int = 3, dtype=torch.float64, loops: bool = False
) -> Fsa:
    """A random cyclic graph with some non-final and some unreachable states.
    With ``loops``, every state also has a self-loop and an arc to the next
    state, so every sequence of at least ``num_states`` frames fits."""
    gen = torch.Generator().manual_seed(seed)
    final = torch.where(torch.rand(num_states, generator=gen) < 0.5, torch.randn(num_states, generator=gen, dtype=dtype), -math.inf)
    final[-1] = 0.25
    src = torch.randint(0, num_states, (num_arcs,), generator=gen)
    dst = torch.randint(0, num_states, (num_arcs,), generator=gen)
    if loops:
        states = torch.arange(num_states)
        src, dst = torch.cat([src, states, states]), torch.cat([dst, states, (states + 1) % num_states])
    return Fsa(
        src,
        dst,
        torch.randint(0, num_labels, (src.numel(),), generator=gen),
        torch.randint(0, 5, (src.numel(),), generator=gen),
        torch.randn(src.numel(), generator=gen, dtype=dtype),
        final,
        start=int(torch.randint(0, num_states, (1,), generator=gen)),
    )


def enumerate_paths(fsa: Fsa, dense: torch.Tensor, length: int) -> list[tuple[float, tuple[int, ...]]]:
    """Every successful path of exactly ``length`` arcs, with its score."""
    paths = []
    for arcs in itertools.product(range(fsa.num_arcs), repeat=length):
        state, score = fsa.start, 0.0
        for t, arc in enumerate(arcs):
            if int(fsa.src[arc]) != state:
                break
            score += float(fsa.score[arc]) + float(dense[t, fsa.label[arc]])
            state = int(fsa.dst[arc])
        else:
            if fsa.final[state] > -math.inf:
                paths.append((score + float(fsa.final[state]), arcs))
    return paths


def log_sum(scores: list[float]) -> float:
    return torch.logsumexp(torch.tensor(scores, dtype=torch.float64), 0).item() if scores else -math.inf


def openfst_log_total(fsa: Fsa, dense: torch.Tensor, length: int) -> float:
    """-shortestdistance in the log semiring of (graph o linear dense FSA)."""

    def log_fst():
        fst = pywrapfst.VectorFst(arc_type="log")
        return fst, pywrapfst.Weight

    graph, weight = log_fst()
    graph.add_states(fsa.num_states)
    graph.set_start(fsa.start)
    for src, dst, label, score in zip(fsa.src.tolist(), fsa.dst.tolist(), fsa.label.tolist(), fsa.score.tolist()):
        graph.add_arc(src, pywrapfst.Arc(label + 1, label + 1, weight("log", -score), dst))
    for state, final in enumerate(fsa.final.tolist()):
        if final > -math.inf:
            graph.set_final(state, weight("log", -final))
    frames, _ = log_fst()
    frames.add_states(length + 1)
    frames.set_start(0)
    frames.set_final(length, weight.one("log"))
    for t in range(length):
        for label in range(dense.shape[1]):
            frames.add_arc(t, pywrapfst.Arc(label + 1, label + 1, weight("log", -float(dense[t, label])), t + 1))
    graph.arcsort(sort_type="olabel")
    lattice = pywrapfst.compose(graph, frames)
    if lattice.start() == pywrapfst.NO_STATE_ID or lattice.num_states() == 0:
        return -math.inf
    distance = pywrapfst.shortestdistance(lattice, reverse=True)
    return -float(distance[lattice.start()]) if lattice.start() < len(distance) else -math.inf


# ---------------------------------------------------------------- totals and Viterbi


@pytest.mark.parametrize("seed", range(4))
def test_totals_and_viterbi_match_enumeration(seed):
    fsas = [random_fsa(seed * 10 + i) for i in range(3)]
    dense = torch.randn(3, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    lengths = torch.tensor([4, 3, 1])
    for graph, graphs in [(fsas[0], [fsas[0]] * 3), (FsaVec(fsas), fsas)]:
        log_totals = total_scores(dense, lengths, graph)
        best = best_path(dense, lengths, graph)
        assert torch.equal(best.scores, total_scores(dense, lengths, graph, log_semiring=False))
        for b, fsa in enumerate(graphs):
            paths = enumerate_paths(fsa, dense[b], int(lengths[b]))
            assert log_totals[b].item() == pytest.approx(log_sum([s for s, _ in paths]), abs=1e-9)
            if not paths:
                assert best.scores[b] == -math.inf and (best.arcs[b] == -1).all()
                continue
            top_score = max(s for s, _ in paths)
            assert best.scores[b].item() == pytest.approx(top_score, abs=1e-9)
            arcs = tuple(best.arcs[b, : lengths[b]].tolist())
            assert dict((p, s) for s, p in paths)[arcs] == pytest.approx(top_score, abs=1e-9)  # a real top path
            assert best.labels[b, : lengths[b]].tolist() == fsa.label[list(arcs)].tolist()
            assert best.aux_labels[b, : lengths[b]].tolist() == fsa.aux_label[list(arcs)].tolist()
            assert (best.arcs[b, lengths[b] :] == -1).all()


def test_zero_length_scores_the_start_state_final_weight():
    fsa = Fsa.from_arcs([(0, 1, 0, 0, 0.0)], final=[-0.5, 0.0])
    dense = torch.zeros(2, 3, 1)
    assert total_scores(dense, torch.tensor([0, 1]), fsa).tolist() == pytest.approx([-0.5, 0.0])


def test_totals_match_openfst_log_semiring():
    fsas = [random_fsa(100 + i, num_states=12, num_arcs=50, num_labels=6) for i in range(4)]
    dense = torch.randn(4, 25, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    lengths = torch.tensor([25, 20, 13, 7])
    totals = total_scores(dense, lengths, FsaVec(fsas))
    for b, fsa in enumerate(fsas):
        reference = openfst_log_total(fsa, dense[b], int(lengths[b]))
        assert totals[b].item() == pytest.approx(reference, abs=1e-4)  # OpenFst log weights are float32
    assert (totals > -math.inf).sum() >= 2  # the comparison is not all -inf


def test_padding_frames_are_ignored():
    fsa = random_fsa(3, num_states=5, num_arcs=14)
    dense = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 3])
    totals = total_scores(dense, lengths, fsa)
    totals.sum().backward()
    changed = dense.detach().clone()
    changed[1, 3:] = 100.0
    assert torch.equal(total_scores(changed, lengths, fsa), totals.detach())
    assert (dense.grad[1, 3:] == 0).all()


def test_invalid_inputs_are_rejected():
    fsa = random_fsa(2)  # labels 0..2
    with pytest.raises(ValueError, match="out of range"):
        total_scores(torch.zeros(1, 3, 2), torch.tensor([3]), fsa)
    with pytest.raises(ValueError, match="lengths"):
        total_scores(torch.zeros(1, 3, 3), torch.tensor([4]), fsa)
    with pytest.raises(ValueError, match="2 graphs for a batch of 3"):
        total_scores(torch.zeros(3, 3, 3), torch.tensor([3, 3, 3]), FsaVec([fsa, fsa]))


# ---------------------------------------------------------------- gradients and posteriors


@pytest.mark.parametrize("log_semiring", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_gradcheck(log_semiring, shared):
    fsas = [random_fsa(20 + i, num_states=4, num_arcs=6, loops=True) for i in range(3)]
    dense = torch.randn(3, 6, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 5, 4])
    template = fsas[0] if shared else FsaVec(fsas)
    score = template.score.detach().clone().requires_grad_()
    final = template.final.detach().clone().requires_grad_()

    def totals(dense, score, final):
        if shared:
            graph = Fsa(template.src, template.dst, template.label, template.aux_label, score, final, template.start)
        else:
            graph = FsaVec(
                [
                    Fsa(f.src, f.dst, f.label, f.aux_label, s, fin, f.start)
                    for f, s, fin in zip(fsas, score.split(template.arc_offsets.diff().tolist()), final.split(template.state_offsets.diff().tolist()))
                ]
            )
        return total_scores(dense, lengths, graph, log_semiring=log_semiring)

    assert (totals(dense, score, final) > -math.inf).all()
    assert torch.autograd.gradcheck(totals, (dense, score, final))


def test_posteriors_are_distributions_and_equal_the_gradients():
    fsa = random_fsa(5, num_states=5, num_arcs=12, num_labels=4, loops=True)
    dense = torch.randn(3, 7, 4, dtype=torch.float64, requires_grad=True)
    score = fsa.score.detach().clone().requires_grad_()
    graph = Fsa(fsa.src, fsa.dst, fsa.label, fsa.aux_label, score, fsa.final, fsa.start)
    lengths = torch.tensor([7, 6, 5])
    post = arc_posteriors(dense, lengths, graph)
    assert (post.totals > -math.inf).all()
    assert torch.allclose(post.arc_counts.sum(1), lengths.double())
    assert torch.allclose(post.final_probs.sum(1), torch.ones(3, dtype=torch.float64))
    frame_mask = (torch.arange(7) < lengths[:, None]).double()
    assert torch.allclose(post.label_occupancy.sum(2), frame_mask)
    assert torch.allclose(post.state_occupancy.sum(2), frame_mask)
    # Occupancy of a state after frame t = posterior of arcs into it at frame t; summed over
    # frames it is the expected count of arcs entering it.
    into = torch.zeros(3, fsa.num_states, dtype=torch.float64).index_add_(1, fsa.dst, post.arc_counts)
    assert torch.allclose(post.state_occupancy.sum(1), into)
    total_scores(dense, lengths, graph).sum().backward()
    assert torch.allclose(dense.grad, post.label_occupancy)
    assert torch.allclose(score.grad, post.arc_counts.sum(0))


def test_per_utterance_posteriors_are_padded():
    fsas = [random_fsa(30, loops=True), random_fsa(31, num_states=6, num_arcs=16, loops=True)]
    dense = torch.randn(2, 6, 3, dtype=torch.float64)
    post = arc_posteriors(dense, torch.tensor([6, 6]), FsaVec(fsas))
    assert post.arc_counts.shape == (2, 28) and post.state_occupancy.shape == (2, 6, 6)
    assert (post.arc_counts[0, 18:] == 0).all()
    assert torch.allclose(post.arc_counts.sum(1), torch.full((2,), 6.0, dtype=torch.float64))
    single = arc_posteriors(dense[1:], torch.tensor([6]), fsas[1])
    assert torch.allclose(post.arc_counts[1], single.arc_counts[0])


def test_dtypes():
    fsa = random_fsa(1, dtype=torch.float32)
    for dtype in (torch.float32, torch.float64):
        dense = torch.randn(2, 3, 3, dtype=dtype, requires_grad=True)
        totals = total_scores(dense, torch.tensor([3, 2]), fsa)
        totals.sum().backward()
        assert totals.dtype == dtype and dense.grad.dtype == dtype


# ---------------------------------------------------------------- impossible sequences


def chain(num_arcs: int) -> Fsa:
    """A linear graph: only sequences of exactly ``num_arcs`` frames fit."""
    return Fsa.from_arcs([(i, i + 1, i % 2, 0, 0.0) for i in range(num_arcs)], final={num_arcs: 0.0})


@pytest.mark.parametrize(
    "graph,lengths,impossible",
    [
        (chain(4), [4, 2, 5], [False, True, True]),  # too short and too long for the chain
        (Fsa.from_arcs([(0, 1, 0, 0, 0.0), (1, 1, 1, 0, 0.0)], final={2: 0.0}, num_states=3), [3, 1, 0], [True] * 3),
    ],
    ids=["length-mismatch", "unreachable-final"],
)
@pytest.mark.parametrize("log_semiring", [True, False])
def test_impossible_sequences(graph, lengths, impossible, log_semiring, caplog):
    dense = torch.randn(3, 5, 2, requires_grad=True)
    score = graph.score.clone().requires_grad_()
    graph = Fsa(graph.src, graph.dst, graph.label, graph.aux_label, score, graph.final, graph.start)
    with caplog.at_level(logging.WARNING, logger="usrasr"):
        totals = total_scores(dense, torch.tensor(lengths), graph, log_semiring=log_semiring)
    assert (totals == -math.inf).tolist() == impossible
    assert f"{sum(impossible)} of 3 sequences are impossible" in caplog.text
    totals.sum().backward()  # a loss summing -inf totals must not poison the other gradients
    assert not torch.isnan(dense.grad).any() and not torch.isnan(score.grad).any()
    for b, bad in enumerate(impossible):
        # Every frame of a possible sequence carries one unit of posterior (or best-path) mass.
        assert dense.grad[b].sum().item() == pytest.approx(0.0 if bad else lengths[b], abs=1e-5)
        if bad:
            assert (dense.grad[b] == 0).all()
    if all(impossible):
        assert (score.grad == 0).all()
    post = arc_posteriors(dense.detach(), torch.tensor(lengths), graph)
    assert not torch.isnan(post.label_occupancy).any() and (post.arc_counts[torch.tensor(impossible)] == 0).all()


# ---------------------------------------------------------------- devices and k2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    fsa = random_fsa(9, num_states=8, num_arcs=30, num_labels=5, dtype=torch.float32)
    dense = torch.randn(4, 12, 5, requires_grad=True)
    lengths = torch.tensor([12, 9, 3, 0])
    cpu = total_scores(dense, lengths, fsa)
    cpu.sum().backward()
    dense_cuda = dense.detach().cuda().requires_grad_()
    cuda = total_scores(dense_cuda, lengths.cuda(), fsa.to("cuda"))
    cuda.sum().backward()
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-4)
    assert torch.allclose(dense_cuda.grad.cpu(), dense.grad, atol=1e-5)
    assert torch.equal(best_path(dense_cuda, lengths.cuda(), fsa.to("cuda")).arcs.cpu(), best_path(dense, lengths, fsa).arcs)


def test_k2_parity():
    pytest.importorskip("k2")
    from usrasr.graph.k2_compat import k2_total_scores

    fsas = [random_fsa(40 + i, num_states=6, num_arcs=20, num_labels=4, dtype=torch.float32) for i in range(3)]
    dense = torch.randn(3, 9, 4)
    lengths = torch.tensor([9, 6, 2])
    for graph in (fsas[0], FsaVec(fsas)):
        for log_semiring in (True, False):
            ours = total_scores(dense, lengths, graph, log_semiring=log_semiring)
            theirs = k2_total_scores(dense, lengths, graph, log_semiring=log_semiring)
            assert torch.allclose(ours.double(), theirs.double().cpu(), atol=1e-4)


def test_float32_keeps_precision_on_long_utterances():
    """Totals reach thousands; scaled alphas keep float32 posteriors exact to ~1e-5
    (unscaled float32 alphas are off by ~2e-4 here)."""
    fsa = random_fsa(11, num_states=6, num_arcs=24, num_labels=5, loops=True)
    dense = torch.log_softmax(3 * torch.randn(2, 3000, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3)), -1)
    lengths = torch.tensor([3000, 2500])
    grads = {}
    for dtype in (torch.float32, torch.float64):
        inputs = dense.to(dtype).requires_grad_()
        graph = Fsa(fsa.src, fsa.dst, fsa.label, fsa.aux_label, fsa.score.to(dtype), fsa.final.to(dtype), fsa.start)
        totals = total_scores(inputs, lengths, graph)
        totals.sum().backward()
        grads[dtype] = (totals.double(), inputs.grad.double())
    (totals32, grad32), (totals64, grad64) = grads[torch.float32], grads[torch.float64]
    assert totals64.abs().min() > 1500
    assert torch.allclose(totals32, totals64, rtol=0, atol=5e-3)
    assert (grad32 - grad64).abs().max() < 2e-5
