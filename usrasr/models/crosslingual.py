"""A target-language CTC model read off a multilingual phone recogniser, with no target transcripts.

A ``usrasr pretrain --method just`` encoder carries a CTC head over universal IPA
phones, whose logits are a per-phone part plus the phones' articulatory
features through a feature head.  Each target phone is read through the
universal phones nearest to it in articulatory features
(:func:`usrasr.lang.inventory.ranked_phones`), each weighted by how near it is,
in one of two ways (``reading``):

- ``"features"``: the target phone gets a logit of its own, its IPA's panphon
  features through the head's feature part plus its neighbours' per-phone
  parts averaged with the weights.  A phone the universal inventory lacks
  (English /ɹ/, /æ/, the diphthongs) is scored by what it is, not only heard
  in its neighbours (docs/results/2026-12-08-articulatory-reading.md).
- ``"neighbours"``: the target phone scores the weighted sum of its
  neighbours' posteriors (the head kept whole, read through a token map,
  :class:`usrasr.models.acoustic.AcousticModelConfig` ``classes``); for an
  encoder saved without the feature part.

Silence reads the blank (the head has no silence phone: CTC's blank covers
pauses); tokens with no IPA (spoken noise) are never emitted.

A label-free correction follows: in each utterance the classes'
posteriors are divided by their mean over the utterance raised to a power
(``AcousticModelConfig.utterance_prior_scale``; the hybrid systems' scaled
likelihoods at power 1), because a recogniser hearing a language it was not
trained on says blank where it is unsure, and the decoder then drops phones;
the utterance's own mean also takes out what its voice adds to every frame.
:func:`expected_lengths` gives the label-free target the power is chosen by.
The result is an ordinary CTC acoustic model of the target tokens: it decodes
with the HP/HLG graphs and starts self-training like any other model.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from usrasr.lang.inventory import ranked_phones
from usrasr.lang.ipa import articulatory_features, ipa_segments
from usrasr.models.acoustic import CtcAcousticModel
from usrasr.models.encoder import ctc_model_from_encoder, load_articulatory_features, load_phone_head
from usrasr.utils.errors import UsrasrError


READINGS = ("neighbours", "features")


@torch.no_grad()
def universal_phone_model(encoder: str | Path) -> tuple[CtcAcousticModel, list[str]]:
    """The multilingual recogniser itself: ``encoder`` with its universal phone head, as a CTC model
    over the universal phones (index 0 the blank), and their symbols."""
    found = load_phone_head(encoder)
    if found is None:
        raise UsrasrError(f"{encoder} has no universal phone head: train it with `usrasr pretrain --method just`")
    head, phones = found
    universal = ctc_model_from_encoder(encoder, len(phones))
    universal.output.load_state_dict(head.state_dict())
    return universal.eval(), phones


@torch.no_grad()
def crosslingual_ctc_model(encoder: str | Path, tokens: Sequence[str], phone_ipa: Mapping[str, str],
                           silence: str, neighbours: int = 1, temperature: float = 1.0,
                           reading: str = "neighbours") -> tuple[CtcAcousticModel, dict[str, dict[str, float]]]:
    """The CTC model of ``tokens`` (``tokens[0]`` the blank) over ``encoder``'s universal phone
    head, and the universal phones each token reads with their weights (``phone_ipa``: token -> IPA).

    A token reads its ``neighbours`` nearest universal phones, the one at articulatory distance
    ``d`` weighted ``exp(-(d - d_nearest) / temperature)``.  ``reading="neighbours"``: the token's
    posterior is the weighted sum of theirs.  ``reading="features"``: the token has a logit of its
    own, its IPA's articulatory features scored by the head's articulatory part plus the
    neighbours' per-phone parts averaged with the weights (normalised); the token's posterior is
    then its softmax over the blank and the other tokens."""
    if neighbours < 1 or temperature <= 0 or reading not in READINGS:
        raise UsrasrError(f"a token reads at least one universal phone at a positive temperature, "
                          f"by one of {', '.join(READINGS)} (got {neighbours} at {temperature}, by {reading})")
    universal, phones = universal_phone_model(encoder)
    ranked = ranked_phones({t: phone_ipa[t] for t in tokens[1:] if t in phone_ipa}, phones[1:], neighbours)
    weights: dict[str, dict[str, float]] = {
        token: {phone: math.exp(-(d - near[0][1]) / temperature) for phone, d in near}
        for token, near in ranked.items() if token != silence}
    if reading == "features":
        output, token_map = _feature_logits(encoder, universal.output, phones, tokens, phone_ipa, silence, weights)
    else:
        output, token_map = universal.output, torch.zeros(len(tokens), len(phones))
        for index, token in enumerate(tokens):
            for phone, weight in weights.get(token, {}).items():
                token_map[index, phones.index(phone)] = weight
    token_map[0, 0] = token_map[tokens.index(silence), 0] = 1.0  # silence reads the blank
    config = dataclasses.replace(universal.config, num_tokens=len(tokens), classes=output.out_features)
    model = CtcAcousticModel(config)
    model.load_state_dict({**{k: v for k, v in universal.state_dict().items() if not k.startswith("output.")},
                           **{f"output.{k}": v for k, v in output.state_dict().items()}, "token_map": token_map})
    mapping = {token: {p: round(w, 4) for p, w in weights.get(token, {}).items()} if token != silence
               else {phones[0]: 1.0} for token in tokens[1:]}
    return model.eval(), mapping


def _feature_logits(encoder: str | Path, head: torch.nn.Linear, phones: list[str], tokens: Sequence[str],
                    phone_ipa: Mapping[str, str], silence: str,
                    weights: Mapping[str, Mapping[str, float]]) -> tuple[torch.nn.Linear, torch.Tensor]:
    """An output layer over the blank and each token that has an IPA (the universal head's logits
    rewritten for them), and the token map onto it."""
    features = load_articulatory_features(encoder)
    if features is None:
        raise UsrasrError(f"{encoder} keeps no articulatory part of its phone head (an encoder saved before it was "
                          f"kept): retrain it with `usrasr pretrain --method just`, or read by neighbours "
                          f"(`--set crosslingual_reading=neighbours`)")
    if list(features.values.shape) != [len(phones), len(features.names)]:
        raise UsrasrError(f"{encoder}: the articulatory features do not fit its {len(phones)} phones")
    # what the head says of each universal phone apart from its features: logit = own + values @ feature head
    own_weight = head.weight - features.values @ features.head.weight
    own_bias = head.bias - features.values @ features.head.bias
    spoken = [t for t in tokens[1:] if t in weights]
    output = torch.nn.Linear(head.in_features, 1 + len(spoken))
    output.weight[0], output.bias[0] = head.weight[0], head.bias[0]
    token_map = torch.zeros(len(tokens), 1 + len(spoken))
    for row, token in enumerate(spoken, 1):
        near = weights[token]
        share = torch.tensor(list(near.values()))
        share = share / share.sum()
        index = [phones.index(p) for p in near]
        values = target_features(phone_ipa[token], features.names)
        output.weight[row] = share @ own_weight[index] + values @ features.head.weight
        output.bias[row] = share @ own_bias[index] + values @ features.head.bias
        token_map[tokens.index(token), row] = 1.0
    return output, token_map


def target_features(ipa: str, names: Sequence[str]) -> torch.Tensor:
    """panphon's features of a target phone's IPA, in the order of ``names``; a phone of several
    segments (a diphthong) takes their mean."""
    segments = ipa_segments(ipa)
    if not segments:
        raise UsrasrError(f"panphon finds no segment in the IPA '{ipa}'")
    found, rows = articulatory_features(segments)
    if list(found) != list(names):
        raise UsrasrError("the encoder's articulatory features are not panphon's of this installation")
    return torch.tensor(rows, dtype=torch.float32).mean(0)


def expected_lengths(class_scores: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """Per utterance, the expected CTC length of a model's output classes: the number of symbols
    left after merging repeats and dropping the blank 0, in expectation over label sequences drawn
    frame by frame from its posteriors, ``sum_t sum_{k>0} p_t(k) (1 - p_{t-1}(k))`` (a symbol
    starts wherever a frame says it and the frame before does not).  From ``class_scores``
    batches: (logits (B, T', classes), out_lens)."""
    lengths = []
    for scores, out_lens in class_scores:
        posteriors = scores.float().softmax(-1)[..., 1:]
        before = torch.nn.functional.pad(posteriors[:, :-1], (0, 0, 1, 0))
        starts = posteriors * (1 - before)
        lengths.extend(float(starts[b, :n].sum()) for b, n in enumerate(out_lens.tolist()))
    return lengths
