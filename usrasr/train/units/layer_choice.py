"""The label-free choice of an encoder's layer and K for units.

Each candidate (layer, K) of :func:`usrasr.train.units.sources.encoder_units`
is scored on train-audio without any label:

- ``warp_consistency`` (computed by the caller): I(units; units of the same
  audio warped along frequency) / H(units), the share of unit information
  that survives a change of vocal tract;
- ``unigram_entropy``, ``seqce_loss`` and ``gain`` (caller): the share of
  the units' unigram entropy that a short seq-CE fit of the phone-LM model
  explains, ``(H_unigram - loss) / H_unigram``;
- ``bigram_entropy``: H(next unit | unit) over the merged unit sequences:
  how much each unit says that its predecessor does not. Deeper layers give
  smoother, more predictable sequences whatever phones they carry; the layer
  whose units stay least predictable from their neighbours kept the most
  segmental detail, and it is the default criterion;
- ``normalised_gain``: the gain as a share of what the units' own bigram
  predicts, ``(H_unigram - loss) / (H_unigram - H_bigram)``. Deeper layers
  give smoother, more predictable unit sequences, which raises the gain
  whatever phones they carry; the normalisation divides that out;
- ``pseudo_speaker_information``: I(unit; pseudo-speaker) / H(unit) over
  frames, with pseudo-speakers clustered from the audio
  (:func:`usrasr.corpus.speakers.cluster_speakers`): how much the units
  follow the voice;
- ``pseudo_phone_information`` (only for an encoder with a phone head, a
  JUST encoder): I(unit; pseudo-phone) / H(pseudo-phone) over frames, where
  each frame's pseudo-phone is the encoder's own most likely non-blank
  universal phone: PNMI against phones read by a recogniser of other
  languages instead of the transcripts.

:func:`choose_layer_and_k` takes the layer with the best mean criterion over
its K's (``pseudo_phone_information`` where the encoder has a phone head, else
``CRITERION``), then that layer's K of highest gain.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from usrasr.corpus.reader import AudioSplit
from usrasr.corpus.speakers import cluster_speakers
from usrasr.models.pretrained import POSTERIORS
from usrasr.train.units.kmeans import UnitSequences, mutual_information

# name -> (what it is, +1 when higher is better, -1 when lower is)
CRITERIA = {
    "bigram_entropy": ("how much each unit says that its predecessor does not", +1),
    "warp_consistency": ("the share of unit information kept when the voice is warped", +1),
    "normalised_gain": ("the share of the units' own bigram predictability that the phone-LM model explains", +1),
    "pseudo_speaker_information": ("the share of unit entropy that pseudo-speakers explain", -1),
    "pseudo_phone_information": ("the share of the encoder's own phone decisions that the units explain", +1),
}
CRITERION = "bigram_entropy"  # for encoders without a phone head
PHONE_HEAD_CRITERION = "pseudo_phone_information"


def bigram_entropy(units: UnitSequences) -> float:
    """H(u_t | u_{t-1}) in nats over consecutive units of each sequence."""
    joint = np.zeros((units.num_units, units.num_units))
    for seq in units.units:
        if len(seq) > 1:
            np.add.at(joint, (seq[:-1], seq[1:]), 1)
    if joint.sum() == 0:
        return 0.0
    mutual, _, following = mutual_information(joint)
    return following - mutual


class LayerJudge:
    """The label-free scores of one candidate's train-audio units (``train``: the split they came from)."""

    def __init__(self, train: AudioSplit, seed: int = 0):
        self.train, self.seed = train, seed

    @cached_property
    def pseudo_speakers(self) -> list[int]:
        return cluster_speakers(self.train.feats, 0, self.seed).labels

    def scores(self, units: UnitSequences, frame_units: list[np.ndarray], unigram_entropy: float,
               seqce_loss: float, pseudo_phones: list[np.ndarray] | None = None) -> dict:
        """``frame_units``: each train utterance's unit per encoder frame, in ``train``'s order;
        ``pseudo_phones``: the same frames' pseudo-phone ids, where the encoder has a phone head."""
        bigram = bigram_entropy(units)
        predictable = unigram_entropy - bigram
        joint = np.zeros((units.num_units, max(self.pseudo_speakers) + 1))
        for ids, speaker in zip(frame_units, self.pseudo_speakers):
            np.add.at(joint, (ids, speaker), 1)
        mutual, unit_entropy, _ = mutual_information(joint)
        scores = {"bigram_entropy": bigram,
                  "normalised_gain": (unigram_entropy - seqce_loss) / predictable if predictable > 0 else 0.0,
                  "pseudo_speaker_information": mutual / unit_entropy if unit_entropy > 0 else 0.0}
        if pseudo_phones is not None:
            scores["pseudo_phone_information"] = pseudo_phone_information(frame_units, pseudo_phones,
                                                                          units.num_units)
        return scores


def pseudo_phone_information(frame_units: list[np.ndarray], pseudo_phones: list[np.ndarray], num_units: int) -> float:
    """I(unit; pseudo-phone) / H(pseudo-phone) over the frames of every utterance."""
    joint = np.zeros((num_units, 1 + max((int(p.max()) for p in pseudo_phones if len(p)), default=0)))
    for ids, phones in zip(frame_units, pseudo_phones):
        n = min(len(ids), len(phones))
        np.add.at(joint, (ids[:n], phones[:n]), 1)
    mutual, _, phone_entropy = mutual_information(joint)
    return mutual / phone_entropy if phone_entropy > 0 else 0.0


def choose_layer_and_k(scores: list[dict], criterion: str | None = None) -> tuple[tuple[int | str, int], str]:
    """The layer of best mean ``criterion`` over its K's, then that layer's K of highest seq-CE gain.
    ``criterion`` None: ``PHONE_HEAD_CRITERION`` where every layer has it (an encoder with a phone
    head), else ``CRITERION``.

    Only the k-means layers compete on ``criterion``: they share their K's, and the bigram entropy
    grows with the inventory and with how phone-like the units' rate is. The phone posteriors of a
    JUST encoder (their own inventory, one unit per phone) then face the chosen layer on warp
    consistency, a share of the units' own entropy (the one criterion comparable across both)."""
    posteriors = [s for s in scores if s["layer"] == POSTERIORS]
    layers = list(dict.fromkeys(s["layer"] for s in scores if s["layer"] != POSTERIORS))
    if not layers:
        return (POSTERIORS, posteriors[0]["k"]), "the phone posteriors: the only candidate"
    if len(layers) == 1:
        layer, why, where = layers[0], "the only one", ""
    else:
        if criterion is None:
            has_head = all(PHONE_HEAD_CRITERION in s for s in scores if s["layer"] != POSTERIORS)
            criterion = PHONE_HEAD_CRITERION if has_head else CRITERION
        what, sign = CRITERIA[criterion]
        mean = {layer: float(np.mean([s[criterion] for s in scores if s["layer"] == layer])) for layer in layers}
        layer = max(layers, key=lambda x: sign * mean[x])
        why = (f"{'highest' if sign > 0 else 'lowest'} {criterion.replace('_', ' ')} "
               f"({mean[layer]:.3f}, mean over its K), {what}")
        where = " at that layer"
    best = max((s for s in scores if s["layer"] == layer), key=lambda s: s["gain"])
    reason = f"layer {layer}: {why}; K={best['k']}: highest seq-CE gain{where}"
    if posteriors and posteriors[0]["warp_consistency"] is not None:
        layer_warp = float(np.mean([s["warp_consistency"] for s in scores if s["layer"] == layer]))
        if posteriors[0]["warp_consistency"] > layer_warp:
            return ((POSTERIORS, posteriors[0]["k"]),
                    f"the phone posteriors: warp consistency {posteriors[0]['warp_consistency']:.3f} above "
                    f"{layer_warp:.3f} of the best layer ({reason})")
        reason += f"; above the phone posteriors by warp consistency ({layer_warp:.3f} against " \
                  f"{posteriors[0]['warp_consistency']:.3f})"
    return (layer, best["k"]), reason
