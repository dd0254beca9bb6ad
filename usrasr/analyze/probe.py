"""Linear probes of frozen features, layer by layer (DIAGNOSTIC: reads the scoring alignments).

For each layer, a linear phone classifier (multinomial logistic regression)
is trained on frames of train-audio, labelled by the transcripts' phone
alignments, and tested on an unseen-voice split (``test`` by default): how
much phone identity the layer makes linearly readable across voices. A
second linear classifier predicts each frame's voice, trained on half of the
train-audio utterances and tested on the other half (the same voices, other
sentences): how much of the voice the layer keeps. Both are frame
accuracies; ``chance`` is the share of the most frequent class among the
test frames. Features are normalised per utterance first (as units see them)
unless ``cmvn`` is off: that removes what is constant over an utterance, so the
voice probe then measures the voice information left beyond each utterance's
mean and variance.

This module reads transcripts and alignments through
:mod:`usrasr.corpus.scoring`, which only diagnostics may import (an import
contract in ``pyproject.toml``); nothing unsupervised reads its results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from usrasr.analyze.representations import (
    layer_chunks,
    layer_name,
    open_representation,
    parse_layers,
    pick_cuts,
)
from usrasr.analyze.similarity import frame_index
from usrasr.corpus.features import FRAME_SHIFT
from usrasr.corpus.scoring import ScoringData
from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError

WEIGHT_DECAY = 1e-4  # L2 on the classifier's weights, per frame: keeps LBFGS finite on separable frames


def fit_linear(x: Tensor, y: Tensor, num_classes: int, steps: int) -> nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS on standardised ``x``, started at zero:
    the loss is convex, so the fit is the same on every run (a random start that L-BFGS does not
    leave within ``steps`` made the accuracies vary)."""
    model = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + WEIGHT_DECAY * model.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def probe_accuracy(train_x: Tensor, train_y: np.ndarray, test_x: Tensor, test_y: np.ndarray, steps: int) -> float:
    """Frame accuracy on ``test`` of a linear classifier trained on ``train`` (features standardised
    by the training frames' statistics)."""
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-5)
    classes = np.unique(train_y)
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in train_y])
    model = fit_linear((train_x - mean) / std, y, len(classes), steps)
    with torch.no_grad():
        predicted = classes[model((test_x - mean) / std).argmax(1).numpy()]
    return float((predicted == test_y).mean())


def majority_share(labels: np.ndarray) -> float:
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / counts.sum())


def _voice(cut) -> str:
    sup = cut.supervisions[0] if cut.supervisions else None
    if sup is None:
        return cut.id
    return (sup.custom or {}).get("voice") or sup.speaker or cut.id


class _Frames:
    """Sampled frames of every layer of one split, with their phone and voice labels."""

    def __init__(self, layers: int):
        self.feats: list[list[Tensor]] = [[] for _ in range(layers)]
        self.phones: list[np.ndarray] = []
        self.voices: list[np.ndarray] = []
        self.utterance: list[np.ndarray] = []

    def add(self, source, cuts: list, layers: list[int], phones: dict[str, np.ndarray], per_utterance: int,
            cmvn: bool, rng: np.random.Generator) -> None:
        count = 0
        for chunk, feats in layer_chunks(source, cuts, layers, cmvn):
            for u, cut in enumerate(chunk):
                if cut.id not in phones:
                    continue
                index = frame_index(len(feats[0][u]), source.frame_shift, FRAME_SHIFT, len(phones[cut.id]))
                keep = np.arange(len(index))
                if 0 < per_utterance < len(keep):
                    keep = np.sort(rng.choice(len(keep), per_utterance, replace=False))
                for slot in range(len(layers)):
                    self.feats[slot].append(feats[slot][u][torch.from_numpy(keep)])
                self.phones.append(phones[cut.id][index[keep]])
                self.voices.append(np.full(len(keep), _voice(cut), dtype=object))
                self.utterance.append(np.full(len(keep), count))
                count += 1

    def arrays(self) -> tuple[list[Tensor], np.ndarray, np.ndarray, np.ndarray]:
        if not self.phones:
            raise UsrasrError("no utterance has a phone alignment: probing needs the corpus's scoring alignments")
        return ([torch.cat(f) for f in self.feats], np.concatenate(self.phones), np.concatenate(self.voices),
                np.concatenate(self.utterance))


def probe_layers(corpus: Path, spec: str, layers_text: str, eval_split: str, utterances: int,
                 frames_per_utterance: int, steps: int, cmvn: bool, seed: int) -> dict:
    """Phone accuracy (train-audio -> ``eval_split``) and voice accuracy (held-out train-audio
    utterances) of a linear probe on each layer of ``spec``."""
    if eval_split == "train_audio":
        raise UsrasrError("--eval-split must be a split of unseen voices (dev or test), not train_audio")
    rng = np.random.default_rng(seed)
    scoring = ScoringData(corpus)
    splits = {"train_audio": _Frames(0), eval_split: _Frames(0)}
    layers = None
    for split in list(splits):
        cuts = pick_cuts(corpus, split, utterances, seed)
        source = open_representation(spec, corpus, split, cuts)
        layers = parse_layers(layers_text, source, "--layers") if layers is None else layers
        splits[split] = _Frames(len(layers))
        phones = scoring.frame_phones(split, {cut.id: cut.num_frames for cut in cuts})
        splits[split].add(source, cuts, layers, phones, frames_per_utterance, cmvn, rng)
    train_feats, train_phones, train_voices, train_utterance = splits["train_audio"].arrays()
    eval_feats, eval_phones, _, _ = splits[eval_split].arrays()
    voice_train = train_utterance % 2 == 0  # the voice probe: even utterances train, odd ones test
    if len(set(train_voices[voice_train])) < 2:
        raise UsrasrError("the voice probe needs at least two voices in train-audio")
    rows = []
    for slot, layer in enumerate(layers):
        phone = probe_accuracy(train_feats[slot], train_phones, eval_feats[slot], eval_phones, steps)
        voice = probe_accuracy(train_feats[slot][voice_train], train_voices[voice_train],
                               train_feats[slot][~voice_train], train_voices[~voice_train], steps)
        rows.append({"layer": layer_name(spec, layer, source), "index": layer, "phone_accuracy": round(phone, 4),
                     "voice_accuracy": round(voice, 4)})
        log.info("%s: phone accuracy %.3f, voice accuracy %.3f", rows[-1]["layer"], phone, voice)
    return {
        "encoder": spec, "description": source.description, "eval_split": eval_split,
        "frames": {"train_audio": len(train_phones), eval_split: len(eval_phones)},
        "utterances": {"train_audio": int(train_utterance.max()) + 1},
        "voices": len(set(train_voices)), "steps": steps, "cmvn": cmvn, "seed": seed,
        "chance": {"phone": round(majority_share(eval_phones), 4),
                   "voice": round(majority_share(train_voices[~voice_train]), 4)},
        "layers": rows,
    }


def probe_table(record: dict) -> str:
    lines = ["layer\tphone_accuracy\tvoice_accuracy"]
    lines += [f"{r['layer']}\t{r['phone_accuracy']:.4f}\t{r['voice_accuracy']:.4f}" for r in record["layers"]]
    lines.append(f"chance\t{record['chance']['phone']:.4f}\t{record['chance']['voice']:.4f}")
    return "\n".join(lines) + "\n"


def plot_probe(record: dict, path: Path) -> None:
    """Phone and voice accuracy per layer, with their chance levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from usrasr.utils.io import atomic_path

    names = [r["layer"] for r in record["layers"]]
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * len(names), 3.2))
    for key, colour in (("phone", "tab:blue"), ("voice", "tab:orange")):
        ax.plot(range(len(names)), [r[f"{key}_accuracy"] for r in record["layers"]], "o-", color=colour,
                label=f"{key} ({'unseen voices' if key == 'phone' else 'held-out utterances'})")
        ax.axhline(record["chance"][key], color=colour, linestyle=":", linewidth=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer")
    ax.set_ylabel("frame accuracy")
    ax.set_title(f"linear probes: {Path(record['encoder']).name}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
