"""The cross-lingual start of ``usrasr train --objective crosslingual``.

A multilingual phone recogniser (``usrasr pretrain --method just``: supervised on
other languages' transcribed speech, never on the target's) becomes a CTC model of
the corpus's phones through their IPA (:mod:`usrasr.models.crosslingual`).  Its
universal phones' posteriors are divided by their mean over each utterance
raised to a scale that is chosen without labels: the largest scale whose HLG
decodes of a sample of train-audio say no more phones than the universal
recogniser's posteriors expect there are.  The weight of the word graph against the model, which the
model's decodes take by default, is chosen likewise: the scale at which word
decodes of the sample are as probable per word under the word LM as held-out
text is (too little weight and they read as improbable word salad, too much
and they fall back on the LM's favourite words).  The weight of the phone graph,
which phone decoding takes, is the one whose phone decodes of the sample differ
least from the word decodes spelled with the lexicon.  The model then labels train-audio through
the corpus's own graphs, the HLG graph with the word LM by default
(``self_training_labels``), and those labels start self-training.  Only the
blind audio, the text side and the phones' IPA are read.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import replace
from pathlib import Path

import torch

from usrasr.corpus.layout import CorpusLayout
from usrasr.corpus.reader import AudioSplit
from usrasr.decode.pipeline import Recognizer, build_recognizer
from usrasr.decode.search import SearchOptions
from usrasr.evaluate.scoring import compute_error_rate
from usrasr.lang.inventory import project_phone_ipa, read_phone_ipa
from usrasr.lang.lexicon import pronounce, read_lexicon
from usrasr.lang.lm import held_out_per_word_logprob, read_arpa
from usrasr.lang.phones import NON_SPEECH, SILENCE
from usrasr.lang.symbols import PHONE_TOKENS
from usrasr.models.acoustic import CtcAcousticModel, LoadedModel, save_model
from usrasr.models.crosslingual import crosslingual_ctc_model, expected_lengths
from usrasr.models.encoder import load_phone_head
from usrasr.train.config import TrainConfig
from usrasr.train.seqce_stage import read_phone_text, save_phone_text
from usrasr.train.self_training import relabel_split
from usrasr.utils.console import log, progress
from usrasr.utils.io import write_json_atomic
from usrasr.utils.processes import usable_cores

PRIOR_SCALES = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)  # the candidates of crosslingual_prior_scale=-1
LM_SCALES = (1.0, 1.25, 1.5, 1.75, 2.0)  # the candidates of crosslingual_lm_scale=-1
CALIBRATION_UTTERANCES = 150  # train-audio utterances decoded per candidate


def run_crosslingual(corpus: Path, config: TrainConfig, out: Path, graph_dir: Path,
                     audio: AudioSplit) -> tuple[dict[str, str], dict]:
    """Train-audio phone labels from the cross-lingual model saved in ``out/model.pt``, and a summary.
    ``audio`` is the corpus's train-audio.  A rerun (``--resume``) reads the scales that
    ``out/prior_scale.json`` and ``out/lm_scale.json`` and the labels that ``out/labels.txt`` kept."""
    tokens = list(PHONE_TOKENS.symbols)
    phone_ipa = read_phone_ipa(config.phone_ipa) if config.phone_ipa else project_phone_ipa()
    model, mapping = crosslingual_ctc_model(config.encoder, tokens, phone_ipa, SILENCE,
                                            config.crosslingual_neighbours, config.crosslingual_temperature,
                                            config.crosslingual_reading)
    layout = CorpusLayout(corpus)
    prior_path, lm_path = out / "prior_scale.json", out / "lm_scale.json"
    if ((not prior_path.exists() and config.crosslingual_prior_scale < 0)
            or (not lm_path.exists() and config.crosslingual_lm_scale < 0)):
        class_scores, expected = _calibration_sample(model, load_phone_head(config.encoder)[0], audio, config.seed)
    # built when a choice needs it (the phone graph only for the LM scales), once
    recognizer = functools.cache(lambda unit: _recognizer(model, layout, unit, graph_dir))
    if prior_path.exists():
        choice = json.loads(prior_path.read_text())
    elif config.crosslingual_prior_scale >= 0:
        choice = {"prior_scale": config.crosslingual_prior_scale}
    else:
        choice = _choose_prior_scale(model, class_scores, expected, recognizer("word"), read_lexicon(layout.lexicon))
    write_json_atomic(prior_path, choice)
    model.config.utterance_prior_scale = choice["prior_scale"]
    if lm_path.exists():
        lm_choice = json.loads(lm_path.read_text())
    elif config.crosslingual_lm_scale > 0:
        lm_choice = {"lm_scale": config.crosslingual_lm_scale}
    else:
        text = [line for line in layout.train_text.read_text(encoding="utf-8").splitlines() if line.strip()]
        lm_choice, word_decodes = _choose_lm_scale(model, class_scores, recognizer("word"), layout, text)
        lm_choice.update(_choose_phone_lm_scale(model, class_scores, recognizer("phone"),
                                                word_decodes[lm_choice["lm_scale"]], read_lexicon(layout.lexicon)))
    write_json_atomic(lm_path, lm_choice)
    model_path = out / "model.pt"
    save_model(model_path, model, tokens, layout.lang_dir, lm_scale=lm_choice["lm_scale"],
               phone_lm_scale=lm_choice.get("phone_lm_scale"))
    log.info("cross-lingual model: each phone reads up to %d universal phones; prior scale %.2f, LM scale %.2f "
             "(phones %.2f)", config.crosslingual_neighbours, choice["prior_scale"], lm_choice["lm_scale"],
             lm_choice.get("phone_lm_scale", lm_choice["lm_scale"]))
    labels_path = out / "labels.txt"
    if not labels_path.exists():
        save_phone_text(labels_path, relabel_split(model_path, corpus, "train_audio", config.self_training_labels,
                                                   graph_dir, config.device))
    return read_phone_text(labels_path), {"model": str(model_path), "mapping": mapping, **choice, **lm_choice}


@torch.no_grad()
def _calibration_sample(model: CtcAcousticModel, universal_head: torch.nn.Linear, audio: AudioSplit,
                        seed: int) -> tuple[list, float]:
    """The class scores of train-audio utterances drawn at random (``seed``), and the universal
    recogniser's expected CTC length over them (its own head on the same last-layer outputs,
    whichever way the model reads it): the network runs once, and each candidate scale re-reads
    the scores.  Not every k-th utterance: a stride follows whatever order the corpus keeps
    (voices in turn) and can hear a few of its voices only."""
    count = len(audio.feats)
    picks = sorted(random.Random(seed).sample(range(count), min(count, CALIBRATION_UTTERANCES)))
    hidden = [model.hidden_states(audio.feats[i][None], torch.tensor([len(audio.feats[i])])) for i in picks]
    expected = sum(expected_lengths((universal_head(h), lengths) for h, lengths in hidden))
    return [(model.output(h), lengths) for h, lengths in hidden], expected


def _recognizer(model: CtcAcousticModel, layout: CorpusLayout, unit: str, graph_dir: Path) -> Recognizer:
    """A recogniser of the model through the corpus's decoding graph for ``unit``."""
    return build_recognizer(LoadedModel(model, list(PHONE_TOKENS.symbols), layout.lang_dir), layout.lang_dir,
                            unit, layout.decoding_lm(unit), graph_dir, SearchOptions(lm_scale=1.0), torch.device("cpu"))


def _decode(model: CtcAcousticModel, class_scores: list, recognizer: Recognizer, lm_scale: float) -> list[list[str]]:
    recognizer.search.options = replace(recognizer.search.options, lm_scale=lm_scale)
    log_probs = [model.token_log_probs(scores, lengths)[0].numpy() for scores, lengths in class_scores]
    return [h.text.split() for h in recognizer.search.search_all(log_probs, usable_cores())]


@torch.no_grad()
def _choose_prior_scale(model: CtcAcousticModel, class_scores: list, target: float, recognizer: Recognizer,
                        lexicon: dict) -> dict:
    """The largest prior scale whose word decodes (HLG, spelled with the lexicon) of a sample of
    train-audio hold no more phones than the universal recogniser expects there are (``target``:
    the expected CTC length of its posteriors, whichever way the model reads them; the smallest
    scale if every one says more).  A recogniser hearing a language it was not trained on says
    blank where it is unsure, and the decodes then drop phones; a larger scale lifts them, and past
    the expected count it makes phones up."""
    ratios = {}
    with progress() as bar:
        task = bar.add_task("cross-lingual prior scale", total=len(PRIOR_SCALES), status="")
        for scale in PRIOR_SCALES:
            model.config.utterance_prior_scale = scale
            decoded = sum(p not in NON_SPEECH for words in _decode(model, class_scores, recognizer, 1.0)
                          for p in pronounce(words, lexicon))
            ratios[scale] = decoded / max(1.0, target)
            bar.update(task, advance=1, status=f"{scale:.2f}: {ratios[scale]:.2f} of the expected phones")
    best = max((s for s in PRIOR_SCALES if ratios[s] <= 1), default=PRIOR_SCALES[0])
    log.info("cross-lingual prior scale %.2f: decodes of %d train-audio utterances hold %.2f times the "
             "phones the universal recogniser expects", best, len(class_scores), ratios[best])
    return {"prior_scale": best, "phones_over_expected": {str(s): round(r, 4) for s, r in ratios.items()}}


@torch.no_grad()
def _choose_lm_scale(model: CtcAcousticModel, class_scores: list, recognizer: Recognizer, layout: CorpusLayout,
                     text: list[str]) -> tuple[dict, dict[float, list[list[str]]]]:
    """The word graph's LM scale whose decodes of the sample are as probable per word under the word
    LM as held-out ``text`` is under an LM of the same order trained on the rest of the text; and
    the decodes at each scale."""
    lm = read_arpa(layout.decoding_lm("word"))
    target = held_out_per_word_logprob(text, lm.order)
    per_word, decodes = {}, {}
    with progress() as bar:
        task = bar.add_task("cross-lingual LM scale (words)", total=len(LM_SCALES), status="")
        for scale in LM_SCALES:
            decodes[scale] = _decode(model, class_scores, recognizer, scale)
            per_word[scale] = lm.per_word_logprob([" ".join(words) for words in decodes[scale]])
            bar.update(task, advance=1, status=f"{scale:.2f}: {per_word[scale]:.2f} nats per word")
    best = min(LM_SCALES, key=lambda s: abs(per_word[s] - target))
    log.info("cross-lingual LM scale %.2f: its word decodes score %.3f nats per word, held-out text %.3f",
             best, per_word[best], target)
    return {"lm_scale": best, "held_out_logprob_per_word": round(target, 4),
            "decoded_logprob_per_word": {str(s): round(v, 4) for s, v in per_word.items()}}, decodes


@torch.no_grad()
def _choose_phone_lm_scale(model: CtcAcousticModel, class_scores: list, phones: Recognizer,
                           word_decodes: list[list[str]], lexicon: dict) -> dict:
    """The phone graph's LM scale whose phone decodes of the sample differ least (phone edits) from
    the same model's ``word_decodes`` of it, spelled with the lexicon: the word graph reads the same
    posteriors with a lexicon and a word LM, which correct phones that a phone LM lets by."""
    spelled = {i: " ".join(p for p in pronounce(w, lexicon) if p not in NON_SPEECH) for i, w in enumerate(word_decodes)}
    disagreement = {}
    with progress() as bar:
        task = bar.add_task("cross-lingual LM scale (phones)", total=len(LM_SCALES), status="")
        for scale in LM_SCALES:
            decoded = {i: " ".join(p) for i, p in enumerate(_decode(model, class_scores, phones, scale))}
            disagreement[scale] = compute_error_rate(spelled, decoded, unit="phone").error_rate
            bar.update(task, advance=1, status=f"{scale:.2f}: {disagreement[scale]:.1f} % from the spelled words")
    best = min(LM_SCALES, key=disagreement.get)
    log.info("cross-lingual phone LM scale %.2f: its phone decodes differ from the spelled word decodes by %.1f %%",
             best, disagreement[best])
    return {"phone_lm_scale": best,
            "phone_edits_from_spelled_words": {str(s): round(v, 2) for s, v in disagreement.items()}}
