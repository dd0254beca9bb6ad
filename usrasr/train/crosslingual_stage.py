"""The cross-lingual start of ``usrasr train --objective crosslingual``.

A multilingual phone recogniser (``usrasr pretrain --method just``: supervised on
other languages' transcribed speech, never on the target's) becomes a CTC model of
the corpus's phones through their IPA (:mod:`usrasr.models.crosslingual`).  Its
universal phones' posteriors are divided by their mean over each utterance
raised to a scale that is chosen without labels: the scale whose HLG decodes of
a sample of train-audio say as many phones as the universal recogniser's own
greedy output does.  The model then labels train-audio through
the corpus's own graphs, the HLG graph with the word LM by default
(``self_training_labels``), and those labels start self-training.  Only the
blind audio, the text side and the phones' IPA are read.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from usrasr.corpus.layout import CorpusLayout
from usrasr.corpus.reader import AudioSplit
from usrasr.decode.pipeline import build_recognizer
from usrasr.decode.search import SearchOptions
from usrasr.lang.inventory import project_phone_ipa, read_phone_ipa
from usrasr.lang.lexicon import pronounce, read_lexicon
from usrasr.lang.phones import NON_SPEECH, SILENCE
from usrasr.lang.symbols import PHONE_TOKENS
from usrasr.models.acoustic import CtcAcousticModel, LoadedModel, save_model
from usrasr.models.crosslingual import crosslingual_ctc_model, greedy_lengths
from usrasr.train.config import TrainConfig
from usrasr.train.seqce_stage import read_phone_text, save_phone_text
from usrasr.train.self_training import relabel_split
from usrasr.utils.console import log, progress
from usrasr.utils.io import write_json_atomic

PRIOR_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0)  # the candidates of crosslingual_prior_scale=-1
CALIBRATION_UTTERANCES = 150  # train-audio utterances decoded per candidate


def run_crosslingual(corpus: Path, config: TrainConfig, out: Path, graph_dir: Path,
                     audio: AudioSplit) -> tuple[dict[str, str], dict]:
    """Train-audio phone labels from the cross-lingual model saved in ``out/model.pt``, and a summary.
    ``audio`` is the corpus's train-audio.  A rerun (``--resume``) reads the prior scale that
    ``out/prior_scale.json`` and the labels that ``out/labels.txt`` kept."""
    tokens = list(PHONE_TOKENS.symbols)
    phone_ipa = read_phone_ipa(config.phone_ipa) if config.phone_ipa else project_phone_ipa()
    model, mapping = crosslingual_ctc_model(config.encoder, tokens, phone_ipa, SILENCE,
                                            config.crosslingual_neighbours, config.crosslingual_temperature)
    choice_path = out / "prior_scale.json"
    if choice_path.exists():
        choice = json.loads(choice_path.read_text())
    elif config.crosslingual_prior_scale >= 0:
        choice = {"prior_scale": config.crosslingual_prior_scale}
    else:
        choice = _choose_prior_scale(model, audio, corpus, graph_dir)
    write_json_atomic(choice_path, choice)
    model.config.utterance_prior_scale = choice["prior_scale"]
    model_path = out / "model.pt"
    save_model(model_path, model, tokens, CorpusLayout(corpus).lang_dir)
    log.info("cross-lingual model: each phone reads up to %d universal phones; prior scale %.2f",
             config.crosslingual_neighbours, choice["prior_scale"])
    labels_path = out / "labels.txt"
    if not labels_path.exists():
        save_phone_text(labels_path, relabel_split(model_path, corpus, "train_audio", config.self_training_labels,
                                                   graph_dir, config.device))
    return read_phone_text(labels_path), {"model": str(model_path), "mapping": mapping, **choice}


@torch.no_grad()
def _choose_prior_scale(model: CtcAcousticModel, audio: AudioSplit, corpus: Path, graph_dir: Path) -> dict:
    """The prior scale whose word decodes (HLG, spelled with the lexicon) of a sample of train-audio
    hold as many phones as the universal recogniser's greedy output: a recogniser hearing a
    language it was not trained on says blank where unsure, and the decodes then drop phones."""
    layout = CorpusLayout(corpus)
    lexicon = read_lexicon(layout.lexicon)
    recognizer = build_recognizer(LoadedModel(model, list(PHONE_TOKENS.symbols), layout.lang_dir),
                                  layout.lang_dir, "word", layout.lm("word"), graph_dir, SearchOptions(),
                                  torch.device("cpu"))
    sample = audio.feats[::max(1, len(audio.feats) // CALIBRATION_UTTERANCES)]
    target = sum(greedy_lengths(model, sample))
    class_scores = []  # the network runs once; each scale only re-reads its output
    for f in sample:
        class_scores.append(model.class_scores(f[None], torch.tensor([len(f)])))
    ratios = {}
    with progress() as bar:
        task = bar.add_task("cross-lingual prior scale", total=len(PRIOR_SCALES), status="")
        for scale in PRIOR_SCALES:
            model.config.utterance_prior_scale = scale
            decoded = 0
            for scores, lengths in class_scores:
                words = recognizer.search.search(model.token_log_probs(scores, lengths)[0].numpy()).text.split()
                decoded += sum(p not in NON_SPEECH for p in pronounce(words, lexicon))
            ratios[scale] = decoded / max(1, target)
            bar.update(task, advance=1, status=f"{scale:.2f}: {ratios[scale]:.2f} of the greedy phones")
    best = min(PRIOR_SCALES, key=lambda s: abs(ratios[s] - 1))
    log.info("cross-lingual prior scale %.2f: decodes of %d train-audio utterances hold %.2f times the "
             "universal recogniser's greedy phones", best, len(class_scores), ratios[best])
    return {"prior_scale": best, "phones_over_greedy": {str(s): round(r, 4) for s, r in ratios.items()}}
