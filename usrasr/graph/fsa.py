"""Weighted finite-state acceptors/transducers stored as torch tensors.

An :class:`Fsa` is a list of arcs (``src``, ``dst``, ``label``, ``aux_label``,
``score``) plus a start state and a **final weight per state**.

Conventions (see also ``docs/marginals.md``):

* ``score`` is a log weight (log probability: larger is better).  OpenFst/kaldifst
  weights are negated log probabilities, so ``score = -weight`` on conversion.
* ``label`` is the column of the dense ``(B, T, S)`` score tensor that the arc
  consumes (an emission / pdf id, ``0 <= label < S``).  **Every arc consumes
  exactly one frame**; there are no epsilon arcs.
* ``aux_label`` is the output symbol (e.g. a phone id); ``0`` means "none".
* Final weights follow the OpenFst convention: ``final[s]`` is the log weight
  of ending in state ``s`` and ``-inf`` means "not final".  We chose this over
  k2's convention (an extra arc with label ``-1`` into a single super-final
  state) because it needs no extra frame in the dense scores and converts
  one-to-one to and from OpenFst.  :mod:`usrasr.graph.k2_compat` translates.
* kaldifst/OpenFst reserve label 0 for epsilon, so on conversion the OpenFst
  input label is ``label + label_offset`` (``label_offset=1`` by default: dense
  column 0 becomes ilabel 1).  Output labels are not shifted: ``aux_label`` 0
  and OpenFst's epsilon output both mean "no output".
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import kaldifst
import torch
from torch import Tensor

Arc = tuple[int, int, int, int, float]  # (src, dst, label, aux_label, score)


def _index_tensor(values, device=None) -> Tensor:
    return torch.as_tensor(values, dtype=torch.long, device=device).reshape(-1)


def _score_tensor(values, device=None) -> Tensor:
    tensor = torch.as_tensor(values, device=device)
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    return tensor.reshape(-1)


class _ArcArrays:
    """Sizes and device of anything stored as flat ``src``/``final`` arrays."""

    src: Tensor
    final: Tensor

    @property
    def num_states(self) -> int:
        return self.final.numel()

    @property
    def num_arcs(self) -> int:
        return self.src.numel()

    @property
    def device(self) -> torch.device:
        return self.src.device


class Fsa(_ArcArrays):
    """A single weighted FSA/FST whose arcs each consume one frame.

    Args:
        src, dst: ``(A,)`` source and destination state of each arc.
        label: ``(A,)`` dense column consumed by each arc.
        aux_label: ``(A,)`` output label of each arc (0 = none).
        score: ``(A,)`` log weight of each arc (may require grad).
        final: ``(N,)`` final log weight of each state, ``-inf`` = not final
            (may require grad).  Its length defines the number of states.
        start: the start state.
    """

    def __init__(
        self,
        src: Tensor,
        dst: Tensor,
        label: Tensor,
        aux_label: Tensor,
        score: Tensor,
        final: Tensor,
        start: int = 0,
    ) -> None:
        self.src = _index_tensor(src)
        device = self.src.device
        self.dst = _index_tensor(dst, device)
        self.label = _index_tensor(label, device)
        self.aux_label = _index_tensor(aux_label, device)
        self.score = _score_tensor(score, device)
        self.final = _score_tensor(final, device).to(self.score.dtype)
        self.start = int(start)
        num_arcs = self.src.numel()
        for name in ("dst", "label", "aux_label", "score"):
            if getattr(self, name).numel() != num_arcs:
                raise ValueError(f"Fsa: {name} has {getattr(self, name).numel()} entries, src has {num_arcs}")
        if not 0 <= self.start < self.num_states:
            raise ValueError(f"Fsa: start state {self.start} out of range [0, {self.num_states})")
        if num_arcs and (int(torch.minimum(self.src, self.dst).min()) < 0 or int(torch.maximum(self.src, self.dst).max()) >= self.num_states):
            raise ValueError(f"Fsa: arc states out of range [0, {self.num_states})")
        if num_arcs and int(self.label.min()) < 0:
            raise ValueError("Fsa: labels are dense-score columns and must be >= 0")

    def to(self, device: torch.device | str) -> Fsa:
        """A copy on ``device`` (scores keep their autograd history)."""
        return Fsa(
            self.src.to(device),
            self.dst.to(device),
            self.label.to(device),
            self.aux_label.to(device),
            self.score.to(device),
            self.final.to(device),
            self.start,
        )

    def __repr__(self) -> str:
        return f"Fsa(num_states={self.num_states}, num_arcs={self.num_arcs}, start={self.start}, device={self.device})"

    @classmethod
    def from_arcs(
        cls,
        arcs: Iterable[Arc],
        final: Mapping[int, float] | Sequence[float],
        start: int = 0,
        num_states: int | None = None,
    ) -> Fsa:
        """Build from ``(src, dst, label, aux_label, score)`` tuples.

        ``final`` is either a full per-state list of final log weights or a
        mapping ``state -> log weight`` (other states are not final); in the
        latter case ``num_states`` defaults to one past the largest state used.
        """
        arcs = list(arcs)
        columns = list(zip(*arcs)) if arcs else [[], [], [], [], []]
        if isinstance(final, Mapping):
            used = [start, *final.keys(), *columns[0], *columns[1]]
            num_states = num_states if num_states is not None else max(used) + 1
            final_list = [-math.inf] * num_states
            for state, weight in final.items():
                final_list[state] = weight
        else:
            final_list = list(final)
        return cls(columns[0], columns[1], columns[2], columns[3], columns[4], final_list, start)

    @classmethod
    def from_kaldifst(cls, fst: kaldifst.StdVectorFst, label_offset: int = 1) -> Fsa:
        """Convert an OpenFst transducer: ``label = ilabel - label_offset``,
        ``aux_label = olabel``, ``score = -weight``, ``final = -final weight``.

        Raises ValueError on input-epsilon arcs: here every arc consumes a frame,
        so remove epsilons (with OpenFst) before converting.
        """
        src, dst, ilabel, olabel, weight = [], [], [], [], []
        final = []
        for state in range(fst.num_states):
            final.append(-fst.final(state).value)
            arc_iter = kaldifst.ArcIterator(fst, state)
            while not arc_iter.done:
                arc = arc_iter.value
                src.append(state)
                dst.append(arc.nextstate)
                ilabel.append(arc.ilabel)
                olabel.append(arc.olabel)
                weight.append(arc.weight.value)
                arc_iter.next()
        if any(i == 0 for i in ilabel):
            raise ValueError("Fsa.from_kaldifst: the FST has input-epsilon arcs; every arc must consume a frame")
        label = torch.tensor(ilabel, dtype=torch.long) - label_offset
        score = -torch.tensor(weight, dtype=torch.float32)
        return cls(src, dst, label, olabel, score, torch.tensor(final, dtype=torch.float32), fst.start)

    def to_kaldifst(self, label_offset: int = 1) -> kaldifst.StdVectorFst:
        """Convert to an OpenFst transducer (``ilabel = label + label_offset``,
        ``olabel = aux_label``, ``weight = -score``).  Scores lose autograd."""
        fst = kaldifst.StdVectorFst()
        for _ in range(self.num_states):
            fst.add_state()
        fst.start = self.start
        arcs = zip(
            self.src.tolist(),
            self.dst.tolist(),
            (self.label + label_offset).tolist(),
            self.aux_label.tolist(),
            (-self.score.detach().double()).tolist(),
        )
        for src, dst, ilabel, olabel, weight in arcs:
            fst.add_arc(src, kaldifst.StdArc(ilabel, olabel, weight, dst))
        for state, weight in enumerate(self.final.detach().double().tolist()):
            if weight > -math.inf:
                fst.set_final(state, -weight)
        return fst


class FsaVec(_ArcArrays):
    """Several FSAs, one per utterance, stacked into flat arc/state arrays.

    ``src``/``dst`` hold global state ids (each FSA's states are offset by
    ``state_offsets[i]``); arc ``j`` of FSA ``i`` is flat arc
    ``arc_offsets[i] + j``.  To share one graph across a batch, pass the
    :class:`Fsa` itself to the marginal functions instead (no copies).
    """

    def __init__(self, fsas: Sequence[Fsa]) -> None:
        if not fsas:
            raise ValueError("FsaVec needs at least one Fsa")
        device = fsas[0].device
        num_states = torch.tensor([f.num_states for f in fsas])
        num_arcs = torch.tensor([f.num_arcs for f in fsas])
        self.state_offsets = torch.cat([torch.zeros(1, dtype=torch.long), num_states.cumsum(0)]).to(device)
        self.arc_offsets = torch.cat([torch.zeros(1, dtype=torch.long), num_arcs.cumsum(0)]).to(device)
        state_shift = torch.repeat_interleave(self.state_offsets[:-1], num_arcs.to(device))
        self.src = torch.cat([f.src for f in fsas]) + state_shift
        self.dst = torch.cat([f.dst for f in fsas]) + state_shift
        self.label = torch.cat([f.label for f in fsas])
        self.aux_label = torch.cat([f.aux_label for f in fsas])
        self.score = torch.cat([f.score for f in fsas])
        self.final = torch.cat([f.final.to(self.score.dtype) for f in fsas])
        self.start = torch.tensor([f.start for f in fsas], device=device) + self.state_offsets[:-1]

    def __len__(self) -> int:
        return self.start.numel()

    def __getitem__(self, i: int) -> Fsa:
        a0, a1 = int(self.arc_offsets[i]), int(self.arc_offsets[i + 1])
        s0, s1 = int(self.state_offsets[i]), int(self.state_offsets[i + 1])
        return Fsa(
            self.src[a0:a1] - s0,
            self.dst[a0:a1] - s0,
            self.label[a0:a1],
            self.aux_label[a0:a1],
            self.score[a0:a1],
            self.final[s0:s1],
            int(self.start[i]) - s0,
        )

    def to(self, device: torch.device | str) -> FsaVec:
        return FsaVec([self[i].to(device) for i in range(len(self))])

    def __repr__(self) -> str:
        return f"FsaVec(num_fsas={len(self)}, num_states={self.num_states}, num_arcs={self.num_arcs}, device={self.device})"
