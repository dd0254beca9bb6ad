"""The output-distribution-matching stage of ``usrasr train --objective odm``.

Blind audio -> label-free phone-like segments (:mod:`usrasr.train.units.segments`)
-> segment features (the means of segment parts of ``cmvn``-normalised fbank, or
with ``units=encoder`` of a pretrained encoder's layer or phone posteriorgram at
10 ms), silent segments left out, projected -> the ODM search (:mod:`usrasr.odm`) against
the corpus's phone LM (or one of higher order trained on the corpus text) -> the
lowest-loss restart's labels, repeats merged: the phone sequences that
self-training starts from.

Everything here reads the blind manifests and the text side only; the scores
(PER per restart, the true labels' loss) are computed from an
:class:`OdmScoring` that only the pipeline's scoring runs pass in.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from usrasr.corpus.layout import CorpusLayout, lm_name
from usrasr.corpus.reader import AudioSplit
from usrasr.evaluate.scoring import compute_error_rate
from usrasr.lang.lm import read_arpa
from usrasr.lang.phones import ARPABET, PHONES
from usrasr.odm.features import Projection, speech_mask
from usrasr.odm.ngrams import lm_ngram_tables, train_phone_lm
from usrasr.odm.search import OdmSearch, SearchConfig, fit_odm, labelling_loss, predict
from usrasr.train.config import TrainConfig
from usrasr.train.units.kmeans import normalize_features
from usrasr.train.units.segments import segment_boundaries, segment_features
from usrasr.train.units.sources import encoder_frames
from usrasr.utils.console import log
from usrasr.utils.io import atomic_path


@dataclass
class OdmScoring:
    """What scoring runs know of train-audio: reference phone strings and the phone index
    (into ``PHONES``) of every 10 ms frame."""

    references: dict[str, str]
    frames: dict[str, np.ndarray]


@dataclass
class SegmentedSplit:
    ids: list[str]
    boundaries: list[np.ndarray]  # [0, b_1, ..., T] per utterance
    speech: list[torch.Tensor]  # bool per segment: kept for matching
    features: list[torch.Tensor]  # (kept segments, dim) per utterance, projected


def segment_split(split: AudioSplit, config: TrainConfig, feats: list[torch.Tensor] | None = None) -> SegmentedSplit:
    """Segments of ``split``'s fbank, each described by ``feats`` (one row per fbank frame; fbank if None)."""
    boundaries = segment_boundaries(normalize_features(split.feats), config.segment_penalty)
    normalized = normalize_features(split.feats if feats is None else feats,
                                    split.speakers if config.cmvn == "speaker" else None)
    features = segment_features(normalized, boundaries, config.segment_parts)
    energies = [torch.tensor([float(f[a:b].mean()) for a, b in itertools.pairwise(bounds)])
                for f, bounds in zip(split.feats, boundaries)]
    speech = speech_mask(energies, config.odm_silence_margin)
    kept = [f[s] for f, s in zip(features, speech)]
    projection = Projection.fit(torch.cat(kept), config.odm_dim, config.seed)
    return SegmentedSplit(list(split.ids), boundaries, speech, [projection(f) for f in kept])


def phone_lm_path(corpus: Path, order: int, out: Path) -> Path:
    """The corpus's phone LM if its order is at least ``order``, else one of ``order`` trained
    on the corpus text (once, under ``out``)."""
    layout = CorpusLayout(corpus)
    path = layout.lm("phone")
    if read_arpa(path).order >= order:
        return path
    own = out / lm_name("phone", order)
    if not own.exists():
        own.parent.mkdir(parents=True, exist_ok=True)
        log.info("training a phone %d-gram LM on %s for the ODM tables", order, layout.train_text)
        train_phone_lm(layout.train_text, layout.lexicon, order, own)
    return own


def search_config(config: TrainConfig) -> SearchConfig:
    return SearchConfig(restarts=config.odm_restarts, steps=config.odm_steps, learning_rate=config.odm_learning_rate,
                        hidden=config.odm_hidden, batch_utterances=config.odm_batch_utterances,
                        order_steps=config.odm_order_steps, dual=config.odm_dual, seed=config.seed)


def _phone_strings(segmented: SegmentedSplit, labels: list[torch.Tensor], symbols: list[str]) -> dict[str, str]:
    """Labels of the kept segments as phone strings, repeats merged."""
    out = {}
    for uid, row in zip(segmented.ids, labels):
        names = [symbols[i] for i in row.tolist()]
        out[uid] = " ".join(p for i, p in enumerate(names) if i == 0 or p != names[i - 1])
    return out


def _true_labels(segmented: SegmentedSplit, frames: dict[str, np.ndarray], symbols: list[str]) -> torch.Tensor | None:
    """Each kept segment's majority phone in the alignments (a non-phone majority, e.g. silence,
    takes the next phone's label, else the previous one's); None without every alignment."""
    index = {PHONES.index(p): i for i, p in enumerate(symbols)}
    rows = []
    for uid, bounds, speech in zip(segmented.ids, segmented.boundaries, segmented.speech):
        if uid not in frames:
            return None
        majority = [int(np.bincount(frames[uid][a:b], minlength=len(PHONES)).argmax())
                    for a, b in itertools.pairwise(bounds)]
        labels = [index.get(m, -1) for m, keep in zip(majority, speech.tolist()) if keep]
        for i in range(len(labels) - 1, -1, -1):
            if labels[i] < 0 and i + 1 < len(labels):
                labels[i] = labels[i + 1]
        for i in range(len(labels)):
            if labels[i] < 0:
                labels[i] = labels[i - 1] if i else 0
        rows.append(torch.tensor(labels, dtype=torch.long))
    return torch.cat(rows)


def _per(references: dict[str, str], hypotheses: dict[str, str]) -> float:
    return compute_error_rate({k: v for k, v in references.items() if k in hypotheses}, hypotheses,
                              unit="phone").error_rate


def run_odm(corpus: Path, split: AudioSplit, config: TrainConfig, out: Path, metrics,
            scoring: OdmScoring | None = None) -> tuple[dict[str, str], dict]:
    """The ODM search on train-audio; returns (phone strings per utterance, summary).
    Saves ``out/model.pt`` (every restart's classifier, the symbols, the losses)."""
    segmented = segment_split(split, config, encoder_frames(config, split, corpus, "train_audio")
                              if config.units == "encoder" else None)
    lm = read_arpa(phone_lm_path(corpus, config.odm_order, out))
    symbols = [p for p in ARPABET if (p,) in lm.logprob]
    steps = sum(len(f) for f in segmented.features)
    stay = min(max(1.0 - split.seconds() * config.phones_per_second / max(steps, 1), 0.0), 0.9)
    log.info("ODM: %d speech segments, %.2f per phone at %.1f phones/s (stay %.3f); %d phones, orders 1-%d",
             steps, 1 / (1 - stay), config.phones_per_second, stay, len(symbols), config.odm_order)
    tables = lm_ngram_tables(lm, symbols, config.odm_order, top=config.odm_top, stay=stay)

    def record(step: int, losses: torch.Tensor) -> None:
        metrics.write(stage="odm", step=step, losses=[round(float(v), 5) for v in losses])

    search: OdmSearch = fit_odm(segmented.features, tables, search_config(config), callback=record)
    labels = predict(search.model, segmented.features)
    phones = _phone_strings(segmented, [row[search.best] for row in labels], symbols)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"state": search.model.state_dict(), "symbols": symbols, "losses": search.losses,
                    "order_losses": search.order_losses, "best": search.best, "config": config.to_dict()}, tmp)
    summary = {"loss": float(search.losses[search.best]), "best_restart": search.best, "stay": stay,
               "segments": steps, "restart_losses": [float(v) for v in search.losses]}
    if scoring is not None:
        restarts = []
        for r in range(config.odm_restarts):
            row = {"restart": r, "loss": float(search.losses[r]),
                   "order_losses": [float(v) for v in search.order_losses[r]],
                   "per_train": _per(scoring.references, _phone_strings(segmented, [x[r] for x in labels], symbols))}
            restarts.append(row)
            log.info("ODM restart %d: loss %.4f, PER train %.1f", r, row["loss"], row["per_train"])
        summary["restarts"] = restarts
        summary["per_train"] = restarts[search.best]["per_train"]
        truth = _true_labels(segmented, scoring.frames, symbols)
        if truth is not None:
            lengths = torch.tensor([len(f) for f in segmented.features])
            true_loss = labelling_loss(truth, lengths, tables)
            summary["true_labels"] = {
                "loss": float(true_loss.sum()), "order_losses": [float(v) for v in true_loss],
                "per_train": _per(scoring.references,
                                  _phone_strings(segmented, list(truth.split(lengths.tolist())), symbols))}
            log.info("ODM: true segment labels' loss %.4f (PER %.1f: the segmentation's bound); best restart %.4f",
                     summary["true_labels"]["loss"], summary["true_labels"]["per_train"], summary["loss"])
    return phones, summary
