"""A target-language CTC model read off a multilingual phone recogniser, with no target transcripts.

A ``usrasr pretrain --method just`` encoder carries a CTC head over universal IPA
phones.  The target model keeps that head whole and reads each target phone off
it through a token map (:class:`usrasr.models.acoustic.AcousticModelConfig`
``classes``): a target phone scores the summed posteriors of the universal
phones nearest to it in articulatory features
(:func:`usrasr.lang.inventory.ranked_phones`), each weighted by how near it
is.  A phone the universal inventory lacks (English /ɹ/, the diphthongs) is
then heard in whichever of its neighbours the recogniser says, instead of
being missed whenever the recogniser prefers the second-nearest.  Silence
reads the blank (the head has no silence phone: CTC's blank covers pauses);
tokens with no IPA (spoken noise) are never emitted.

A label-free correction follows: in each utterance the universal phones'
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
from usrasr.models.acoustic import CtcAcousticModel
from usrasr.models.encoder import ctc_model_from_encoder, load_phone_head
from usrasr.utils.errors import UsrasrError


@torch.no_grad()
def crosslingual_ctc_model(encoder: str | Path, tokens: Sequence[str], phone_ipa: Mapping[str, str],
                           silence: str, neighbours: int = 1,
                           temperature: float = 1.0) -> tuple[CtcAcousticModel, dict[str, dict[str, float]]]:
    """The CTC model of ``tokens`` (``tokens[0]`` the blank) over ``encoder``'s universal phone
    head, and the universal phones each token reads with their weights (``phone_ipa``: token -> IPA).

    A token reads its ``neighbours`` nearest universal phones, the one at articulatory distance
    ``d`` weighted ``exp(-(d - d_nearest) / temperature)``."""
    if neighbours < 1 or temperature <= 0:
        raise UsrasrError(f"a token reads at least one universal phone at a positive temperature "
                          f"(got {neighbours} at {temperature})")
    found = load_phone_head(encoder)
    if found is None:
        raise UsrasrError(f"{encoder} has no universal phone head: train it with `usrasr pretrain --method just`")
    head, phones = found
    universal = ctc_model_from_encoder(encoder, len(phones))
    universal.output.load_state_dict(head.state_dict())
    config = dataclasses.replace(universal.config, num_tokens=len(tokens), classes=len(phones))
    model = CtcAcousticModel(config)
    model.load_state_dict({**universal.state_dict(), "token_map": torch.zeros(len(tokens), len(phones))})
    ranked = ranked_phones({t: phone_ipa[t] for t in tokens[1:] if t in phone_ipa}, phones[1:], neighbours)
    mapping: dict[str, dict[str, float]] = {}
    for index, token in enumerate(tokens):
        if index == 0 or token == silence:
            read = {phones[0]: 1.0}
        else:
            near = ranked.get(token, [])
            read = {phone: math.exp(-(d - near[0][1]) / temperature) for phone, d in near}
        for phone, weight in read.items():
            model.token_map[index, phones.index(phone)] = weight
        if index:
            mapping[token] = {p: round(w, 4) for p, w in read.items()}
    return model.eval(), mapping


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
