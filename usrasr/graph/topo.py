"""Graph builders: phone LMs as epsilon-free FSAs, HMM/CTC topologies, and
their composition (with OpenFst, via kaldifst) into training graphs.

Label conventions:

* Phone ids are ``1..num_phones``; 0 is epsilon / "no phone".
* HMM emission ids (dense-score columns) are
  ``(phone - 1) * states_per_phone + state`` for ``state`` in
  ``0..states_per_phone-1``, so the dense scores have
  ``num_phones * states_per_phone`` columns.
* CTC emission ids are 0 for blank and ``phone`` for a phone, so the dense
  scores have ``num_phones + 1`` columns.
* On the OpenFst side a topology's ilabel is ``emission id + 1`` (OpenFst's
  label 0 is epsilon) and its olabel is the phone id; the LM acceptor carries
  the phone id unshifted.  :meth:`Fsa.from_kaldifst` undoes the +1.

The LM is expanded exactly (every history gets an arc for every phone, with
the backed-off probability) instead of being written with backoff epsilon arcs
and then epsilon-removed or determinised: kaldifst only has the tropical
semiring, where those operations keep the best of several paths instead of
summing them, which would change the probabilities of a stochastic LM whose
log-semiring sums are exactly what the marginal computes.  Composition and
``connect`` only add weights along single paths, so they are the same in both
semirings and are left to OpenFst.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import kaldifst
import numpy as np
import torch

from usrasr.lang.lm import BOS, EOS, read_arpa
from usrasr.graph.fsa import Fsa
from usrasr.utils.console import log


def arpa_to_fsa(arpa: str | Path, symbols: Mapping[str, int] | None = None) -> Fsa:
    """The ARPA LM as an epsilon-free acceptor over phone ids.

    States are the LM's histories (every listed n-gram shorter than the order
    and not ending in ``</s>``); the start state is ``<s>``.  Each state has an
    arc for every vocabulary word with the fully backed-off probability
    (log10 converted to natural log) to the longest history that is a suffix
    of ``history + word``; ``</s>`` becomes the state's final weight.

    Args:
        arpa: path to the ARPA file.
        symbols: word -> phone id (>= 1).  Without it, words must be integer ids.

    Returns:
        Fsa with ``label == aux_label == phone id``.
    """
    arpa_lm = read_arpa(arpa)
    order, ngrams = arpa_lm.order, arpa_lm.logprob

    def phone_id(word: str) -> int:
        phone = symbols.get(word) if symbols is not None else (int(word) if word.isdigit() else None)
        if phone is None or phone < 1:
            raise ValueError(f"{arpa}: word {word!r} has no phone id >= 1 in the symbol table")
        return phone

    vocabulary = sorted(k[0] for k in ngrams if len(k) == 1 and k[0] not in (BOS, EOS))
    # A unigram LM has a single, empty history.
    start = (BOS,) if order > 1 else ()
    histories = [start] + sorted(
        (k for k in ngrams if len(k) < order and k[-1] != EOS and k != start),
        key=lambda k: (len(k), k),
    )
    state_of = {history: state for state, history in enumerate(histories)}

    def next_state(context: tuple[str, ...]) -> int:
        context = context[len(context) - (order - 1) :]
        while context not in state_of:
            context = context[1:]
        return state_of[context]

    src, dst, phone, score, final = [], [], [], [], []
    for state, history in enumerate(histories):
        for word in vocabulary:
            logp = arpa_lm.conditional(history, word)
            if logp > -math.inf:
                src.append(state)
                dst.append(next_state(history + (word,)))
                phone.append(phone_id(word))
                score.append(logp)
        final.append(arpa_lm.conditional(history, EOS))
    lm = Fsa(src, dst, phone, phone, torch.tensor(score, dtype=torch.float64), torch.tensor(final, dtype=torch.float64))
    _warn_if_not_stochastic(lm, str(arpa))
    return Fsa(lm.src, lm.dst, lm.label, lm.aux_label, lm.score.float(), lm.final.float(), lm.start)


def _warn_if_not_stochastic(lm: Fsa, name: str, tolerance: float = 1e-4) -> None:
    """Warn when some history's outgoing probabilities (with ``</s>``) do not
    sum to one: the marginal then is not a proper distribution.  Backoff
    Kneser-Ney as written by ``kaldingram`` loses the discounted mass of every
    history that has seen every word, which is common for phone LMs."""
    outgoing = torch.zeros(lm.num_states, dtype=lm.score.dtype).index_add_(0, lm.src, lm.score.exp())
    mass = outgoing + lm.final.exp()
    off = (mass - 1).abs() > tolerance
    if bool(off.any()):
        log.warning(
            "%s: %d of %d LM histories have probabilities summing to %.4f..%.4f instead of 1",
            name,
            int(off.sum()),
            lm.num_states,
            float(mass[off].min()),
            float(mass[off].max()),
        )


def bigram_lm_fsa(
    transition: np.ndarray | torch.Tensor,
    initial: np.ndarray | torch.Tensor | None = None,
    final: np.ndarray | torch.Tensor | None = None,
) -> Fsa:
    """A phone bigram LM from probabilities (used by simulations).

    Args:
        transition: ``(P, P)``, ``transition[h - 1, c - 1] = P(c | h)`` for
            phone ids ``1..P``.
        initial: ``(P,)`` first-phone probabilities; uniform by default.
        final: ``(P,)`` probability of ending after each phone (rows of
            ``transition`` should then sum to ``1 - final``).  By default every
            phone state is final with weight 1: a Markov chain cut wherever the
            data ends, the usual HMM for fixed-length sequences.

    Returns:
        Fsa with state 0 = start and state ``p`` = "last phone was p"; labels
        and aux labels are phone ids; zero-probability arcs are left out.
    """
    transition = torch.as_tensor(transition, dtype=torch.float64)
    num_phones = transition.shape[0]
    if transition.shape != (num_phones, num_phones):
        raise ValueError(f"transition must be square, got {tuple(transition.shape)}")
    initial = torch.full((num_phones,), 1.0 / num_phones) if initial is None else torch.as_tensor(initial)
    final = torch.ones(num_phones) if final is None else torch.as_tensor(final)
    probs = torch.cat([initial.reshape(1, -1).double(), transition])  # row = source state
    src, phone = torch.nonzero(probs > 0, as_tuple=True)
    final_weights = torch.cat([torch.tensor([-math.inf]), final.double().log()])
    return Fsa(src, phone + 1, phone + 1, phone + 1, probs[src, phone].log().float(), final_weights.float(), start=0)


def hmm_topo(
    num_phones: int,
    states_per_phone: int = 1,
    self_loop_prob: float = 0.5,
    silence_phone: int | None = None,
    silence_prob: float = 0.5,
) -> kaldifst.StdVectorFst:
    """HMM topology transducer: emission id + 1 -> phone id.

    Each phone is a left-to-right chain of ``states_per_phone`` states with a
    self-loop (probability ``self_loop_prob``) on each; the phone id is output
    on the arc that enters its first state.  There are no epsilon arcs: a
    phone's last state goes straight to the first state of the next phone.
    With ``silence_phone``, a silence may be inserted at the start, between
    phones and at the end with probability ``silence_prob`` each time (never
    two in a row); the LM must then let the silence id through (see
    :func:`compose_topo_lm`).  Transition probabilities per state sum to one,
    so the topology times a stochastic LM is a proper distribution.
    """
    if not 0 < self_loop_prob < 1 or states_per_phone < 1:
        raise ValueError("need 0 < self_loop_prob < 1 and states_per_phone >= 1")
    if silence_phone is not None and not (1 <= silence_phone <= num_phones and 0 < silence_prob < 1):
        raise ValueError("silence_phone must be a phone id in [1, num_phones] and 0 < silence_prob < 1")
    stay, advance = -math.log(self_loop_prob), -math.log1p(-self_loop_prob)
    with_silence = -math.log(silence_prob) if silence_phone is not None else math.inf
    without_silence = -math.log1p(-silence_prob) if silence_phone is not None else 0.0

    fst = kaldifst.StdVectorFst()
    start = fst.add_state()
    fst.start = start

    def state_of(phone: int, position: int) -> int:
        return 1 + (phone - 1) * states_per_phone + position

    def ilabel(phone: int, position: int) -> int:
        return state_of(phone, position)  # emission id + 1 == state id by construction

    for _ in range(num_phones * states_per_phone):
        fst.add_state()
    phones = range(1, num_phones + 1)
    # (state, cost of leaving it, whether it ends a silence) for every place a phone may start.
    boundaries = [(start, 0.0, False)] + [(state_of(p, states_per_phone - 1), advance, p == silence_phone) for p in phones]
    for boundary, leave, after_silence in boundaries:
        for phone in phones:
            if phone == silence_phone:
                if after_silence:
                    continue
                cost = leave + with_silence
            else:
                cost = leave + (0.0 if after_silence else without_silence)
            fst.add_arc(boundary, kaldifst.StdArc(ilabel(phone, 0), phone, cost, state_of(phone, 0)))
        if boundary != start:
            fst.set_final(boundary, leave + (0.0 if after_silence else without_silence))
    for phone in phones:
        for position in range(states_per_phone):
            here = state_of(phone, position)
            fst.add_arc(here, kaldifst.StdArc(ilabel(phone, position), 0, stay, here))
            if position + 1 < states_per_phone:
                fst.add_arc(here, kaldifst.StdArc(ilabel(phone, position + 1), 0, advance, here + 1))
    return fst


def ctc_topo(num_phones: int, disambig_ids: Sequence[int] = ()) -> kaldifst.StdVectorFst:
    """CTC topology transducer (k2's standard, non-modified ``ctc_topo``):
    emission id + 1 -> phone id, blank = emission id 0, all weights 0.

    State 0 = after blank, state ``p`` = after phone ``p``; a repeated phone
    needs a blank in between; every state is final.  For decoding graphs, a
    self-loop per disambiguation symbol ``d`` (input ``d + 1``, output ``d``)
    lets them pass through composition so the result stays determinisable.
    """
    fst = kaldifst.StdVectorFst()
    for _ in range(num_phones + 1):
        fst.add_state()
    fst.start = 0
    for state in range(num_phones + 1):
        fst.set_final(state, 0.0)
        fst.add_arc(state, kaldifst.StdArc(1, 0, 0.0, 0))
        for phone in range(1, num_phones + 1):
            fst.add_arc(state, kaldifst.StdArc(phone + 1, 0 if phone == state else phone, 0.0, phone))
        for d in disambig_ids:
            fst.add_arc(state, kaldifst.StdArc(d + 1, d, 0.0, state))
    return fst


def compose_topo_lm(topo: kaldifst.StdVectorFst, lm: Fsa, silence_phone: int | None = None) -> Fsa:
    """``topo o lm`` with OpenFst, as an Fsa with label = emission id and
    aux_label = phone id.  With ``silence_phone``, the LM gets a weight-one
    self-loop on that id at every state, so silence costs only what the
    topology says.  Both inputs are left unchanged."""
    if lm.num_arcs and (not torch.equal(lm.label, lm.aux_label) or int(lm.label.min()) < 1):
        raise ValueError("the LM must be an acceptor over phone ids >= 1")
    if silence_phone is not None and bool((lm.label == silence_phone).any()):
        raise ValueError(f"silence phone {silence_phone} is already in the LM; leave silence to the topology")
    grammar = lm.to_kaldifst(label_offset=0)
    if silence_phone is not None:
        for state in range(grammar.num_states):
            grammar.add_arc(state, kaldifst.StdArc(silence_phone, silence_phone, 0.0, state))
    # kaldifst does not check sortedness and silently drops matches when the
    # topology's output labels are unsorted, so sort both sides (on a copy).
    topo = kaldifst.StdVectorFst(topo)
    kaldifst.arcsort(topo, sort_type="olabel")
    kaldifst.arcsort(grammar, sort_type="ilabel")
    graph = kaldifst.compose(topo, grammar, connect=True)
    if graph.num_states == 0:
        raise ValueError("the composed graph is empty: no LM sentence fits the topology")
    return Fsa.from_kaldifst(graph, label_offset=1)


def _as_lm(lm: Fsa | str | Path, symbols: Mapping[str, int] | None) -> Fsa:
    return lm if isinstance(lm, Fsa) else arpa_to_fsa(lm, symbols)


def hmm_lm_graph(
    lm: Fsa | str | Path,
    num_phones: int,
    states_per_phone: int = 1,
    self_loop_prob: float = 0.5,
    silence_phone: int | None = None,
    silence_prob: float = 0.5,
    symbols: Mapping[str, int] | None = None,
) -> Fsa:
    """The training graph HMM topology o phone LM in one call.

    ``lm`` is an LM Fsa (:func:`arpa_to_fsa`, :func:`bigram_lm_fsa`) or an
    ARPA path (read with ``symbols``).  Arcs carry label = emission id
    ``(phone - 1) * states_per_phone + state`` and aux_label = phone id on the
    first frame of each phone (0 on the other frames).
    """
    topo = hmm_topo(num_phones, states_per_phone, self_loop_prob, silence_phone, silence_prob)
    return compose_topo_lm(topo, _as_lm(lm, symbols), silence_phone)


def ctc_lm_graph(lm: Fsa | str | Path, num_phones: int, symbols: Mapping[str, int] | None = None) -> Fsa:
    """CTC topology o phone LM: label = emission id (0 = blank, else phone id),
    aux_label = phone id on the first frame of each phone."""
    return compose_topo_lm(ctc_topo(num_phones), _as_lm(lm, symbols))
