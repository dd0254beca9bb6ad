"""Acoustic units for the sequence-level stage: k-means over fbank frames, over
phone-like fbank segments, or over a pretrained encoder's layer, one codebook
for everyone or one per speaker.

Encoder units choose their layer and K without labels.  The layer is the one
whose units best survive a change of voice: each training utterance's fbank
is warped along frequency (by 0.9 or 1.1, alternately, about the spread of
vocal-tract lengths between adult speakers), run through the encoder again,
and assigned by the same codebook; the *warp consistency* is

    I(units; units of the warped audio) / H(units)

over frames, averaged over the candidate K's of the layer.  Units that follow
the content rather than the voice keep their identity under the warp.  K is
then chosen at that layer by a short seq-CE fit, scored by the share of the
units' unigram entropy that the phone-LM model explains,

    gain = (H_unigram(units) - seq-CE loss per unit) / H_unigram(units).

Raw losses are not comparable across unit inventories (more units, more
entropy); the gain is.  The gain is not used for the layer: deeper layers give
smoother unit sequences, which the phone-LM model explains better whatever phones
they carry, so it favours depth over phone information
(docs/results/2026-12-03-units-600-steps-former-birq.md).

An encoder trained with phone labels (``usrasr pretrain --method just``) offers
one more candidate, its phone units (:class:`PhoneUnits`): per frame the most
likely phone of its universal-phone posteriors.  They are judged beside the
layers by the same warp consistency, as the pseudo-layer ``posteriors``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from usrasr.models.pretrained import POSTERIORS, LayerSource, encode_all, open_layer_source, stretch_frames
from usrasr.models.pretrained import warped_copies  # noqa: F401  (re-exported: the warp the units are judged by)
from usrasr.train.config import TrainConfig
from usrasr.corpus.layout import CorpusLayout
from usrasr.corpus.reader import AudioSplit
from usrasr.corpus.features import FRAME_SHIFT
from usrasr.train.seqce_stage import label_pairs, quick_fit_loss, training_graph, with_unit_rate
from usrasr.train.units.layer_choice import LayerJudge, choose_layer_and_k
from usrasr.train.units.segments import segment_boundaries, segment_features
from usrasr.train.units.kmeans import (
    Codebook, UnitSequences, kmeans, mutual_information, normalize_features, to_sequences,
)
from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_path, write_json_atomic


def unigram_entropy(units: UnitSequences) -> float:
    """Entropy (nats) of the unit-token distribution."""
    counts = np.bincount(np.concatenate(units.units), minlength=units.num_units).astype(float)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def warp_consistency(units: list[np.ndarray], warped_units: list[np.ndarray], num_units: int) -> float:
    """I(u; u') / H(u) over frames of units ``u`` and the same audio's units under a warp ``u'``:
    1 when the warp changes no unit's identity (a relabelling aside), 0 when it keeps nothing."""
    joint = np.zeros((num_units, num_units))
    np.add.at(joint, (np.concatenate(units), np.concatenate(warped_units)), 1)
    mutual, entropy, _ = mutual_information(joint)
    return mutual / entropy if entropy > 0 else 0.0


class UnitClusterer:
    """k-means codebook(s) over one kind of features: a single codebook, or one per
    speaker (needs speaker labels; every speaker, seen or unseen, is clustered on
    its own audio, so unit ids mean nothing across speakers and per-speaker
    emission tables are needed to read them; with ``adapt_speaker_codebooks``
    each speaker's codebook is adapted from one shared codebook instead, so
    unit ids keep their meaning across speakers and one table can read them).

    ``factor`` is how many 10 ms frames one feature frame spans (any positive
    number: 2 for 20 ms encoders); each 10 ms fbank frame takes the unit of the
    feature frame it falls in, so unit starts line up with fbank frames.
    """

    def __init__(self, config: TrainConfig, k: int, factor: float = 1):
        self.config, self.k, self.factor = config, k, factor
        self.codebooks: dict[str, Codebook] = {}
        self.shared: Codebook | None = None

    def _group_keys(self, split: AudioSplit) -> list[str]:
        return split.speakers if self.config.codebook_per_speaker else ["all"] * len(split.ids)

    def fit(self, split: AudioSplit, feats: list[torch.Tensor]) -> "UnitClusterer":
        keys = self._group_keys(split)
        init = None
        if self.config.codebook_per_speaker and self.config.adapt_speaker_codebooks:
            # Every speaker's codebook starts from one shared codebook of the first split
            # fitted (train-audio), so unit k is the same sound region, refined to each voice.
            if self.shared is None:
                self.shared = kmeans(torch.cat(feats), self.k, self.config.kmeans_iterations, seed=self.config.seed)
            init = self.shared
        for key in sorted(set(keys)):
            if key not in self.codebooks:
                rows = torch.cat([f for f, g in zip(feats, keys) if g == key])
                self.codebooks[key] = kmeans(rows, self.k, self.config.kmeans_iterations, seed=self.config.seed,
                                             init=init)
        return self

    def assign(self, split: AudioSplit, feats: list[torch.Tensor]) -> list[np.ndarray]:
        """Unit id of every feature row, each utterance by its speaker's codebook."""
        self.fit(split, feats)  # unseen speakers get codebooks of their own
        return [self.codebooks[key].assign(f).numpy() for f, key in zip(feats, self._group_keys(split))]

    def sequences(self, split: AudioSplit, feats: list[torch.Tensor],
                  assigned: list[np.ndarray] | None = None) -> UnitSequences:
        """Unit sequences at 10 ms; ``assigned`` reuses ids that :meth:`assign` already gave ``feats``."""
        assigned = self.assign(split, feats) if assigned is None else assigned
        frame_units = [ids[np.minimum((np.arange(len(raw)) / self.factor).astype(int), len(ids) - 1)]
                       for ids, raw in zip(assigned, split.feats)]
        return to_sequences(split.ids, frame_units, self.k, self.config.merge_runs, self.config.mode_width)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save({key: c.centroids for key, c in self.codebooks.items()}, tmp)


class PhoneUnits(UnitClusterer):
    """Units of a JUST encoder's phone posteriors, fitted to nothing: each frame's most likely
    phone among the non-blank ones (unit id = phone id - 1).  CTC posteriors are blank on most
    frames; taking the best non-blank phone there too keeps each phone's frames its own."""

    def __init__(self, config: TrainConfig, phones: list[str], factor: float = 1):
        super().__init__(config, len(phones) - 1, factor)
        self.phones = phones

    def fit(self, split: AudioSplit, feats: list[torch.Tensor]) -> "PhoneUnits":
        return self

    def assign(self, split: AudioSplit, feats: list[torch.Tensor]) -> list[np.ndarray]:
        return [f[:, 1:].argmax(1).numpy() for f in feats]

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save({"phones": self.phones}, tmp)


def _normalized(config: TrainConfig, split: AudioSplit, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    return normalize_features(feats, split.speakers if config.cmvn == "speaker" else None)


def fbank_units(config: TrainConfig, splits: dict[str, AudioSplit], out: Path) -> dict[str, UnitSequences]:
    """k-means over normalised fbank frames."""
    feats = {name: _normalized(config, split, split.feats) for name, split in splits.items()}
    clusterer = UnitClusterer(config, config.num_units).fit(splits["train_audio"], feats["train_audio"])
    result = {name: clusterer.sequences(split, feats[name]) for name, split in splits.items()}
    clusterer.save(out / "units" / "codebook.pt")
    return result


def segment_units(config: TrainConfig, splits: dict[str, AudioSplit], out: Path) -> dict[str, UnitSequences]:
    """One unit per phone-like segment: segments of per-utterance normalised fbank
    (:mod:`usrasr.train.units.segments`), k-means over their trajectory features."""
    clusterer = UnitClusterer(config, config.num_units)
    result = {}
    for name, split in splits.items():
        boundaries = segment_boundaries(normalize_features(split.feats), config.segment_penalty)
        feats = segment_features(_normalized(config, split, split.feats), boundaries, config.segment_parts)
        ids = clusterer.assign(split, feats)
        result[name] = UnitSequences(list(split.ids), [u.astype(np.int64) for u in ids],
                                     [b[:-1] for b in boundaries], config.num_units)
        log.info("%s: %.1f segments per second", name, sum(len(u) for u in ids) / max(split.seconds(), 1e-9))
    clusterer.save(out / "units" / "codebook.pt")
    return result


def _candidate_ks(config: TrainConfig) -> list[int]:
    if not config.kmeans_k_choices.strip():
        return [config.num_units]
    try:
        return sorted({int(k) for k in config.kmeans_k_choices.split(",")})
    except ValueError:
        raise UsrasrError(f"kmeans_k_choices must be comma-separated integers, got '{config.kmeans_k_choices}'") \
            from None


def _blind_cuts(source: LayerSource, corpus: Path, name: str, split: AudioSplit) -> list:
    """The blind cuts of ``split``, in its order: the source reads their audio or looks up their ids."""
    from lhotse import load_manifest

    path = CorpusLayout(corpus).cuts(name)
    by_id = {cut.id: cut for cut in load_manifest(path)}
    cuts = [by_id[i] for i in split.ids]
    source.check_cuts(cuts, str(path))
    return cuts


def encoder_frames(config: TrainConfig, split: AudioSplit, corpus: Path, name: str) -> list[torch.Tensor]:
    """The encoder's ``unit_layer`` (or with ``encoder_units=posteriors`` its phone log-posteriors)
    for each utterance of ``split``, one row per 10 ms fbank frame: continuous features."""
    source = open_layer_source(config.encoder)
    layer = POSTERIORS if config.encoder_units == "posteriors" else config.unit_layer
    source.check_posteriors() if layer == POSTERIORS else source.check_layer(layer)
    log.info("features from %s, %s", source.description, "phone posteriors" if layer == POSTERIORS else f"layer {layer}")
    feats = encode_all(source, _blind_cuts(source, corpus, name, split), [layer])[0]
    return [stretch_frames(f, len(raw)) for f, raw in zip(feats, split.feats)]


def encoder_units(config: TrainConfig, splits: dict[str, AudioSplit], corpus: Path, out: Path,
                  score_units: Callable[[UnitSequences], dict] | None = None) -> dict[str, UnitSequences]:
    """Units from the chosen layer of a pretrained encoder, or from features computed
    elsewhere (``config.encoder``: see :func:`usrasr.models.pretrained.open_layer_source`);
    writes ``units/selection.json``.

    ``score_units`` (scoring runs only) adds each candidate's purity and PNMI to
    the selection record, to judge the label-free choice afterwards; the choice
    never reads them.
    """
    source = open_layer_source(config.encoder)
    if config.encoder_units == "posteriors":
        source.check_posteriors()
    elif config.unit_layer >= 0:
        source.check_layer(config.unit_layer)
    cuts = {name: _blind_cuts(source, corpus, name, split) for name, split in splits.items()}
    log.info("units from %s", source.description)
    candidates = [] if config.encoder_units == "posteriors" else [
        (layer, k) for layer in ([config.unit_layer] if config.unit_layer >= 0 else range(source.num_layers))
        for k in _candidate_ks(config)]
    if config.encoder_units == "posteriors" or (config.encoder_units == "auto" and config.unit_layer < 0
                                                and source.phones is not None):
        candidates.append((POSTERIORS, len(source.phones) - 1))
    read = list(dict.fromkeys(layer for layer, _ in candidates))
    # an encoder's phone head judges its layers: each frame's most likely phone is a pseudo-label
    judge_by_phones = source.phones is not None and len([x for x in read if x != POSTERIORS]) > 1
    if judge_by_phones and POSTERIORS not in read:
        read.append(POSTERIORS)
    layers = {name: dict(zip(read, encode_all(source, cuts[name], read))) for name in splits}

    def features(name: str, layer: int | str) -> list[torch.Tensor]:
        """Normalised layer features; phone units read the posteriors as they are."""
        return layers[name][layer] if layer == POSTERIORS else _normalized(config, splits[name], layers[name][layer])

    train = splits["train_audio"]
    selection_path = out / "units" / "selection.json"
    if selection_path.exists():  # a resumed run keeps its choice instead of searching again
        previous = json.loads(selection_path.read_text(encoding="utf-8"))
        if (previous["layer"], previous["k"]) in candidates and previous["encoder"] == str(config.encoder):
            candidates = [(previous["layer"], previous["k"])]
    clusterers = {}
    scores = []
    judge = LayerJudge(train, config.seed)
    graphs: dict[float, tuple] = {}  # self-loop -> (training graph, label pairs)
    # the warp judges layers: needed only when there are several to choose from
    warped = encode_all(source, cuts["train_audio"], read, warped=True) if len(read) > 1 else None
    warped_layers = dict(zip(read, warped)) if warped is not None else None

    @lru_cache(maxsize=1)  # candidates come layer by layer: each layer is normalised once, one held at a time
    def train_inputs(layer: int | str) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """A layer's normalised train-audio features, and the same of the warped train-audio."""
        warped = warped_layers[layer] if warped_layers is not None else None
        if warped is not None and layer != POSTERIORS:
            warped = _normalized(config, train, warped)
        return features("train_audio", layer), warped

    factor = round(source.frame_shift / FRAME_SHIFT, 6)
    pseudo_phones = (PhoneUnits(config, source.phones, factor).assign(train, features("train_audio", POSTERIORS))
                     if judge_by_phones else None)
    for layer, k in candidates:
        train_feats, warped_feats = train_inputs(layer)
        clusterer = (PhoneUnits(config, source.phones, factor) if layer == POSTERIORS
                     else UnitClusterer(config, k, factor).fit(train, train_feats))
        clusterers[layer, k] = clusterer
        if len(candidates) == 1:
            break
        assigned = clusterer.assign(train, train_feats)
        train_units = clusterer.sequences(train, train_feats, assigned)
        entropy = unigram_entropy(train_units)
        consistency = (warp_consistency(assigned, clusterer.assign(train, warped_feats), k)
                       if warped_feats is not None else None)
        if config.speaker_emissions:
            train_units.groups = speaker_groups(train, train_units.ids)
        # each candidate's own rate sets its duration model (when self_loop_prob is left to the units);
        # candidates with the same self-loop share one graph
        fit_config = with_unit_rate(config, train_units, train.seconds())
        if fit_config.self_loop_prob not in graphs:
            graph = training_graph(corpus, fit_config)
            graphs[fit_config.self_loop_prob] = graph, label_pairs(corpus, fit_config, int(graph.label.max()) + 1)
        loss = quick_fit_loss(train_units, *graphs[fit_config.self_loop_prob], fit_config, config.select_iterations)
        scores.append({"layer": layer, "k": k, "warp_consistency": consistency, "unigram_entropy": entropy,
                       "seqce_loss": loss, "gain": (entropy - loss) / entropy,
                       **judge.scores(train_units, assigned, entropy, loss,
                                      pseudo_phones if layer != POSTERIORS else None),
                       **(score_units(train_units) if score_units else {})})
        log.info("layer %s, K=%d: warp consistency %s, unit entropy %.3f, seq-CE loss %.3f, gain %.3f", layer, k,
                 "-" if consistency is None else f"{consistency:.3f}", entropy, loss, scores[-1]["gain"])
    if scores:
        chosen, reason = choose_layer_and_k(scores)
        write_json_atomic(selection_path, {"layer": chosen[0], "k": chosen[1], "candidates": scores,
                                           "encoder": str(config.encoder), "reason": reason})
    else:
        chosen = candidates[0]
    log.info("encoder units: layer %s, K=%d", *chosen)
    clusterers[chosen].save(out / "units" / "codebook.pt")
    return {name: clusterers[chosen].sequences(split, features(name, chosen[0])) for name, split in splits.items()}


def speaker_groups(split: AudioSplit, ids: list[str]) -> list[int]:
    """Emission-table index per utterance: one table per training speaker."""
    index = {s: i for i, s in enumerate(sorted(set(split.speakers)))}
    by_id = dict(zip(split.ids, split.speakers))
    return [index[by_id[i]] for i in ids]
