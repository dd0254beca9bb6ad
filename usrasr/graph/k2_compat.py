"""Optional bridge to k2, for parity checks where ``import k2`` works.

Nothing in usrasr requires k2; import this module only when k2 is installed.

k2 marks final states differently: a single super-final state (the highest
numbered), entered by arcs with label -1 that consume one extra frame which
:class:`k2.DenseFsaVec` appends to every sequence.  Our per-state final
weight ``w`` becomes such an arc with score ``w``.  k2 also needs the start
state to be state 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from usrasr.graph.fsa import Fsa, FsaVec


def to_k2(fsa: Fsa):
    """Convert an :class:`Fsa` to a ``k2.Fsa`` (label, ``aux_labels``, scores;
    final weights as arcs into a super-final state).  Scores lose autograd."""
    import k2

    # Swap the start state with state 0; everything else keeps its number.
    renumber = torch.arange(fsa.num_states)
    renumber[[0, fsa.start]] = renumber[[fsa.start, 0]]
    super_final = fsa.num_states
    rows = [
        (int(renumber[src]), int(renumber[dst]), label, aux, score)
        for src, dst, label, aux, score in zip(
            fsa.src.tolist(), fsa.dst.tolist(), fsa.label.tolist(), fsa.aux_label.tolist(), fsa.score.tolist()
        )
    ]
    rows += [
        (int(renumber[state]), super_final, -1, -1, weight)
        for state, weight in enumerate(fsa.final.tolist())
        if weight > -math.inf
    ]
    rows.sort(key=lambda row: row[0])  # k2 wants arcs grouped by source state
    text = "".join(f"{s} {d} {l} {a} {w!r}\n" for s, d, l, a, w in rows) + f"{super_final}\n"
    return k2.Fsa.from_str(text, acceptor=False)


def k2_total_scores(dense: Tensor, lengths: Tensor, graph: Fsa | FsaVec, log_semiring: bool = True) -> Tensor:
    """:func:`usrasr.graph.marginals.total_scores` computed by k2's
    ``intersect_dense`` + ``get_tot_scores`` (no pruning; lengths >= 1)."""
    import k2

    batch = dense.shape[0]
    graphs = [to_k2(graph[i]) for i in range(batch)] if isinstance(graph, FsaVec) else [to_k2(graph)] * batch
    fsa_vec = k2.arc_sort(k2.create_fsa_vec(graphs).to(dense.device))
    lengths = torch.as_tensor(lengths).cpu()
    segments = torch.stack([torch.arange(batch), torch.zeros(batch, dtype=torch.long), lengths], 1).to(torch.int32)
    lattice = k2.intersect_dense(fsa_vec, k2.DenseFsaVec(dense, segments), output_beam=1e10)
    return lattice.get_tot_scores(log_semiring=log_semiring, use_double_scores=True)
