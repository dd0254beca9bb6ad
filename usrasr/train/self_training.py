"""Self-training: neural CTC models on fbank, trained on pseudo-labels (or, for
the supervised oracle, on the true transcripts), and decoded with the HP/HLG
graphs of :mod:`usrasr.decode`.  A model started from a ``transformers``
encoder (``ctc_init``) reads the train-audio cuts' waveform instead.

In a multi-process run, rank 0 runs the pipeline and starts every CTC
training with :func:`train_neural`; the other ranks wait in
:func:`serve_neural_training` and train along (each on its share of every
batch) until :func:`end_neural_training`. The job travels with the message,
so they never wait for a file of rank 0's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from usrasr.lang.lexicon import pronounce, read_lexicon
from usrasr.lang.phones import NON_SPEECH
from usrasr.decode.audio import utterances_from_cuts
from usrasr.decode.pipeline import build_recognizer
from usrasr.utils.device import resolve_device, torch_threads
from usrasr.utils.processes import usable_cores
from usrasr.decode.search import SearchOptions
from usrasr.corpus.features import SAMPLE_RATE
from usrasr.models.acoustic import AcousticModelConfig, CtcAcousticModel, build_model, load_model, save_model
from usrasr.models.ctc_train import Augmentation, train_ctc
from usrasr.lang.symbols import PHONE_TOKENS
from usrasr.models.pretrained import cut_samples
from usrasr.models.waveform_ctc import ctc_model_from_pretrained
from usrasr.train.config import TrainConfig
from usrasr.corpus.reader import AudioSplit
from usrasr.utils.console import log
from usrasr.utils.distributed import share_from_main
from usrasr.utils.errors import UsrasrError
from usrasr.corpus.layout import CorpusLayout



@dataclass
class NeuralJob:
    """One CTC training, as rank 0 hands it to the other ranks."""

    targets: dict[str, str]
    model_dir: Path
    name: str
    corpus: Path  # whose train-audio cuts a model on the waveform reads


def train_neural(config: TrainConfig, audio: AudioSplit, targets: dict[str, str], model_dir: Path,
                 lang_dir: Path, metrics, name: str) -> Path:
    """Train one CTC model on ``targets`` (phone strings by utterance id); resumable."""
    model_path = model_dir / "model.pt"
    if model_path.exists():
        log.info("%s: done already (%s)", name, model_path)
        return model_path
    job = NeuralJob(targets, model_dir, name, lang_dir.parent)  # the corpus of <corpus>/lang
    share_from_main(job)  # the other ranks wait for it in serve_neural_training
    model = _fit_ctc(config, audio, job,
                     on_step=lambda step, loss: metrics.write(stage="ctc", model=name, step=step, loss=loss))
    save_model(model_path, model.cpu(), PHONE_TOKENS.symbols, lang_dir=lang_dir)
    return model_path


def serve_neural_training(config: TrainConfig, audio: AudioSplit) -> None:
    """Ranks other than 0: train along in every CTC training rank 0 starts, until it ends them."""
    while (job := share_from_main()) is not None:
        _fit_ctc(config, audio, job, on_step=None)


def end_neural_training() -> None:
    """Rank 0: no CTC training is left; the other ranks may return."""
    share_from_main(None)


# Torch threads of CTC training: one ran faster than two on a shared CPU, see
# docs/results/2026-12-06-marginals-fast-path.md; `usrasr train --threads` overrides.
CTC_THREADS = 1


@torch_threads(CTC_THREADS)
def _fit_ctc(config: TrainConfig, audio: AudioSplit, job: NeuralJob,
             on_step: Callable[[int, float], None] | None) -> nn.Module:
    """Build ``job``'s CTC model and train it in this process, on fbank or, where the model
    reads it, the waveform."""
    name, targets, model_dir = job.name, job.targets, job.model_dir
    labelled = [i for i, uid in enumerate(audio.ids) if targets.get(uid, "").strip()]
    if not labelled:
        raise UsrasrError(f"{name}: no utterance has a non-empty label sequence")
    dropped = len(audio.ids) - len(labelled)
    if dropped:
        log.warning("%s: %d utterance(s) without labels are left out", name, dropped)
    if config.ctc_init:
        model = ctc_model_from_pretrained(config.ctc_init, len(PHONE_TOKENS), config.ctc_init_layer)
    else:
        model = build_model(AcousticModelConfig(num_tokens=len(PHONE_TOKENS), arch=config.arch,
                                                hidden_dim=config.hidden_dim, num_layers=config.num_layers))
    augmentation = _augmentation(config)
    if model.input == CtcAcousticModel.input:
        inputs = [audio.feats[i] for i in labelled]
    else:
        if augmentation is not None:
            raise UsrasrError("ctc_warp and ctc_spec_augment distort fbank, and this model reads the waveform: "
                              "turn them off (a transformers encoder masks its own features in training, as its "
                              "config.json's mask_time_prob says)")
        inputs = _waveforms(job.corpus, [audio.ids[i] for i in labelled])
    device = resolve_device(config.device)
    train_ctc(model, inputs, [[PHONE_TOKENS[p] for p in targets[audio.ids[i]].split()] for i in labelled],
              steps=config.ctc_steps, lr=config.ctc_lr, device=device, batch_size=config.ctc_batch_size,
              seed=config.seed, checkpoint=model_dir / "train_state.pt", checkpoint_every=config.checkpoint_every,
              on_step=on_step, description=name, augmentation=augmentation, cosine_decay=config.ctc_cosine_decay,
              precision=config.precision)
    return model


def _waveforms(corpus: Path, ids: list[str]) -> list[torch.Tensor]:
    """The train-audio cuts' 16 kHz samples, in the order of ``ids``: Lhotse reads their recordings."""
    from lhotse import load_manifest

    by_id = {cut.id: cut for cut in load_manifest(CorpusLayout(corpus).cuts("train_audio"))}
    told_rates: set[int] = set()
    return [cut_samples(by_id[uid], SAMPLE_RATE, told_rates) for uid in ids]


def _augmentation(config: TrainConfig) -> Augmentation | None:
    if not config.ctc_warp and not config.ctc_spec_augment:
        return None
    if config.ctc_spec_augment:
        return Augmentation(warp=config.ctc_warp)
    return Augmentation(warp=config.ctc_warp, freq_masks=0, time_masks=0)


def decode_split(model_path: Path, corpus: Path, split: str, unit: str, graph_dir: Path,
                 device: str = "auto") -> dict[str, str]:
    """Decode a split's cuts with a CTC model: phones (HP graph) or words (HLG graph)."""
    loaded = load_model(model_path)
    layout = CorpusLayout(corpus)
    lm = layout.decoding_lm(unit)
    workers = usable_cores()
    recognizer = build_recognizer(loaded, layout.lang_dir, unit, lm, graph_dir, SearchOptions(),
                                  resolve_device(device), workers=workers)
    utterances = utterances_from_cuts(layout.cuts(split))
    with torch.inference_mode():
        return {d.utterance.id: d.hypothesis.text for d in recognizer.decode(utterances, batch_size=16 * workers)
                if d.hypothesis is not None}


def relabel_split(model_path: Path, corpus: Path, split: str, level: str, graph_dir: Path,
                  device: str = "auto") -> dict[str, str]:
    """Pseudo-labels for the next self-training round: the best phones through the HP
    graph (``level="phone"``), or the best words through the HLG graph spelled with the
    lexicon (``level="word"``), whose word LM corrects phones that the phone LM lets by."""
    if level == "phone":
        return decode_split(model_path, corpus, split, "phone", graph_dir, device)
    lexicon = read_lexicon(CorpusLayout(corpus).lexicon)
    words = decode_split(model_path, corpus, split, "word", graph_dir, device)
    return {uid: " ".join(p for p in pronounce(text.split(), lexicon) if p not in NON_SPEECH)
            for uid, text in words.items()}
