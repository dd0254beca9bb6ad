"""A target-language CTC model read off a multilingual phone recogniser, with no target transcripts.

A ``usrasr pretrain --method just`` encoder carries a CTC head over universal IPA
phones.  Each target phone takes the output row of the universal phone nearest
to it in articulatory features (:func:`usrasr.lang.inventory.nearest_phones`);
target phones that share a universal phone share its row, and the phone or word
LM of the decoding graph tells them apart.  Silence takes the blank's row (the
head has no silence phone: CTC's blank covers pauses); tokens with no IPA
(spoken noise) are never emitted.  The result is an ordinary CTC acoustic model
of the target tokens: it decodes with the HP/HLG graphs and starts self-training
like any other model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from usrasr.lang.inventory import nearest_phones
from usrasr.models.acoustic import CtcAcousticModel
from usrasr.models.encoder import ctc_model_from_encoder, load_phone_head
from usrasr.utils.errors import UsrasrError

NEVER = -1e4  # bias of a token the universal head cannot say: exp(NEVER) is 0 in float32


@torch.no_grad()
def crosslingual_ctc_model(encoder: str | Path, tokens: Sequence[str], phone_ipa: Mapping[str, str],
                           silence: str) -> tuple[CtcAcousticModel, dict[str, str]]:
    """The CTC model of ``tokens`` (``tokens[0]`` the blank) from ``encoder``'s universal
    phone head, and the universal phone each token reads (``phone_ipa``: token -> IPA)."""
    found = load_phone_head(encoder)
    if found is None:
        raise UsrasrError(f"{encoder} has no universal phone head: train it with `usrasr pretrain --method just`")
    head, phones = found
    model = ctc_model_from_encoder(encoder, len(tokens))
    mapping = nearest_phones({t: phone_ipa[t] for t in tokens[1:] if t in phone_ipa}, phones[1:])
    row = {phone: i for i, phone in enumerate(phones)}
    weight = torch.zeros_like(model.output.weight)
    bias = torch.full_like(model.output.bias, NEVER)
    for index, token in enumerate(tokens):
        source = 0 if index == 0 or token == silence else row.get(mapping.get(token))
        if source is not None:
            weight[index], bias[index] = head.weight[source], head.bias[source]
    model.output.weight.copy_(weight)
    model.output.bias.copy_(bias)
    return model.eval(), {t: mapping.get(t, "<blk>" if t == silence else "") for t in tokens[1:]}
