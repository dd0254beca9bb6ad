"""``usrasr train`` end to end: units, sequence-level training, oracles and scores.

Outputs under the experiment dir::

    config.yaml           the configuration used (resume checks it)
    units/                codebook.pt, units per split
    seqce/restart_*.pt    one checkpoint per finished restart
    seqce/model.pt        the lowest-loss restart: emissions + graph settings
    word_em/model.pt      word-level refinement (if on): tables, chosen restarts, labels
    pseudo_labels/round0.txt   phone sequences of train-audio that self-training starts from
    pseudo_labels/round<k>.txt the relabelling by round k's model, for round k + 1
    metrics.jsonl         every loss, per iteration / step
    losses.png            loss curves
    summary.json          the results table

In a multi-process run (torchrun), rank 0 runs every stage and writes every
file; the other ranks train along in the CTC stages only (see
:mod:`usrasr.train.self_training`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from usrasr.evaluate.scoring import compute_error_rate
from usrasr.train.config import TrainConfig
from usrasr.train.corpus import AudioSplit, ScoringData, load_audio
from usrasr.train.metrics import MetricsLog, plot_losses
from usrasr.train.seqce_stage import (
    OracleUnavailable, label_pairs, oracle_hmm, read_phone_text, run_restarts, save_phone_text, sequence_loss,
    training_graph, viterbi_phones, with_unit_rate, write_summary,
)
from usrasr.train.self_training import (
    decode_split, end_neural_training, relabel_split, serve_neural_training, train_neural,
)
from usrasr.train.speakers import cluster_purity
from usrasr.train.unit_sources import encoder_units, fbank_units, segment_units, speaker_groups
from usrasr.train.word_em import WordLevelEM, run_word_em
from usrasr.train.units import UnitSequences, alignment_units, to_sequences, unit_quality
from usrasr.utils.console import log
from usrasr.utils.distributed import is_main_process, world_size
from usrasr.utils.io import atomic_path

EVAL_SPLIT = "test"
# An oracle HMM this bad means the units carry too little phone information to judge the search.
UNUSABLE_ORACLE_PER = 50.0


def _diagnostic_units(config: TrainConfig, splits: dict[str, AudioSplit], scoring: ScoringData) -> dict[str, UnitSequences]:
    log.warning("DIAGNOSTIC units: made from the scoring alignments (unit = phone id); "
                "for checking the search only, never a recogniser")
    result = {}
    for name, split in splits.items():
        frames = scoring.frame_phones(name, {i: len(f) for i, f in zip(split.ids, split.feats)})
        ids = [i for i in split.ids if i in frames]
        voices = dict(zip(split.ids, split.voices)) if config.diagnostic_voice_dependent else None
        if voices and name != "train_audio":
            continue  # voice-dependent units of unseen voices have no trained emissions
        frame_units, num_units = alignment_units(ids, frames, config.diagnostic_noise, voices, seed=config.seed)
        result[name] = to_sequences(ids, frame_units, num_units, config.merge_runs, config.mode_width)
    return result


def _train_unit_quality(scoring: ScoringData, splits: dict[str, AudioSplit]):
    """Purity/PNMI of train-audio units against the alignments: scoring only, never a choice."""
    split = splits["train_audio"]
    frames = scoring.frame_phones("train_audio", {i: len(f) for i, f in zip(split.ids, split.feats)})
    return lambda units: unit_quality(units, frames).__dict__


def _per(references: dict[str, str], hypotheses: dict[str, str]) -> float:
    refs = {k: v for k, v in references.items() if k in hypotheses}
    return compute_error_rate(refs, hypotheses, unit="phone").error_rate


def _wer(references: dict[str, str], hypotheses: dict[str, str]) -> float:
    refs = {k: v for k, v in references.items() if k in hypotheses}
    return compute_error_rate(refs, hypotheses, unit="word").error_rate


def _score_model(model: Path, corpus: Path, out: Path, config: TrainConfig, scoring: ScoringData) -> dict:
    """PER (HP graph) and WER (HLG graph) of a CTC model on the evaluation split."""
    phones = decode_split(model, corpus, EVAL_SPLIT, "phone", out / "graphs", config.device)
    words = decode_split(model, corpus, EVAL_SPLIT, "word", out / "graphs", config.device)
    texts = scoring.texts(EVAL_SPLIT)
    scores = {"per_test": _per(scoring.phones(EVAL_SPLIT), phones), "wer_test": _wer(texts, words)}
    log.info("%s: PER %.1f, WER %.1f on %s", model, scores["per_test"], scores["wer_test"], EVAL_SPLIT)
    return scores


def _word_em_scores(word_em: WordLevelEM, units: UnitSequences, refined: dict, oracle: torch.Tensor | None,
                    scoring: ScoringData) -> dict:
    """PER/WER of the refined labels, and the oracle HMM's table (if there is one) under the same criterion."""
    refs, texts = scoring.phones("train_audio"), scoring.texts("train_audio")
    scores = {"per_train": _per(refs, refined["phones"]), "wer_train": _wer(texts, refined["words"])}
    log.info("word-level EM: PER %.1f, WER %.1f on train-audio", scores["per_train"], scores["wer_train"])
    if oracle is not None:
        oracle_decoded = word_em.decode(units, oracle)
        scores["oracle"] = {"cost_per_step": oracle_decoded.cost_per_step, "per_train": _per(refs, oracle_decoded.phones()),
                            "wer_train": _wer(texts, oracle_decoded.words)}
        log.info("oracle table through the word graph: cost %.4f, PER %.1f",
                 scores["oracle"]["cost_per_step"], scores["oracle"]["per_train"])
    return scores


def _oracle_and_diagnosis(units: dict[str, UnitSequences], graph, best, train_refs: dict[str, str],
                          eval_refs: dict[str, str], config: TrainConfig, num_labels: int,
                          summary: dict) -> torch.Tensor | None:
    """Fit the oracle HMM, score it, and write the verdict on the search into ``summary``.

    The oracle is a diagnosis, not a stage the recogniser needs: units too coarse for it
    (fewer unit steps than phones in every utterance) get a warning, not a failed run."""
    try:
        oracle, used = oracle_hmm(units["train_audio"], train_refs, config, num_labels)
    except OracleUnavailable as e:
        log.warning("%s; the run goes on without the oracle's diagnosis", e)
        summary["oracle_hmm"] = {"skipped": str(e)}
        summary["diagnosis"] = "unknown: " + str(e)
        return None
    summary["oracle_hmm"] = {
        "loss": sequence_loss(units["train_audio"], graph, oracle),
        "per_train": _per(train_refs, viterbi_phones(units["train_audio"], graph, oracle)),
        "utterances": used,
    }
    if EVAL_SPLIT in units:
        summary["oracle_hmm"]["per_test"] = _per(eval_refs, viterbi_phones(units[EVAL_SPLIT], graph, oracle))
    oracle_loss, oracle_per = summary["oracle_hmm"]["loss"], summary["oracle_hmm"]["per_train"]
    if oracle_per >= UNUSABLE_ORACLE_PER:
        verdict = (f"the units are too poor: even the oracle HMM has PER {oracle_per:.0f}; "
                   "better units are needed before the search can matter")
    elif summary["seqce"]["per_train"] <= 2 * oracle_per + 1:
        verdict = "the search reached the oracle's solution (PER within 2x of the oracle HMM)"
    elif best.loss < oracle_loss:
        verdict = ("misspecified: the model prefers a wrong mapping to the true one "
                   "(loss below the oracle's, PER far above); the units need fixing")
    else:
        verdict = "search failure: the oracle's solution has a lower loss than the search found"
    summary["diagnosis"] = verdict
    log.info("seq-CE loss %.4f vs oracle HMM loss %.4f: %s", best.loss, oracle_loss, verdict)
    return oracle


def train(corpus: str | Path, out: str | Path, config: TrainConfig, resume: bool = False,
          score: bool = True) -> dict | None:
    """Run unsupervised training on a prepared corpus; return the summary.

    ``score=False`` skips everything that reads transcripts (oracles, PER):
    the unsupervised result is then computed from audio and text alone.
    Ranks other than 0 of a multi-process run return None.
    """
    corpus, out = Path(corpus), Path(out)
    if not is_main_process():
        serve_neural_training(config, load_audio(corpus, "train_audio"))
        return None
    out.mkdir(parents=True, exist_ok=True)
    config.record(out, resume)
    torch.manual_seed(config.seed)
    metrics = MetricsLog(out / "metrics.jsonl")
    scoring = ScoringData(corpus) if (score or config.units == "diagnostic") else None
    timings: dict[str, float] = {}
    summary: dict = {"config": config.to_dict(), "world_size": world_size()}
    try:
        t0 = time.time()
        splits = {name: load_audio(corpus, name).speakers_from(config.speaker_field, config.speaker_clusters,
                                                                 tag=name, seed=config.seed)
                  for name in ("train_audio", EVAL_SPLIT)}
        summary["speakers"] = {name: {"count": len(set(split.speakers))} for name, split in splits.items()}
        if score and config.speaker_field == "cluster":  # how well the clusters follow the labelled voices
            for name, split in splits.items():
                summary["speakers"][name]["purity_vs_voice"] = cluster_purity(split.speakers, split.voices)
        if config.units == "diagnostic":
            units = _diagnostic_units(config, splits, scoring)
        elif config.units == "encoder":
            units = encoder_units(config, splits, corpus, out, _train_unit_quality(scoring, splits) if score else None)
        elif config.units == "segments":
            units = segment_units(config, splits, out)
        else:
            units = fbank_units(config, splits, out)
        if config.speaker_emissions:
            speakers = sorted(set(splits["train_audio"].speakers))
            log.info("one emission table per speaker (%d, %s); evaluates on training speakers only", len(speakers),
                     "clustered from the audio" if config.speaker_field == "cluster" else "from the speaker labels")
            units = {"train_audio": units["train_audio"]}
            units["train_audio"].groups = speaker_groups(splits["train_audio"], units["train_audio"].ids)
        config = with_unit_rate(config, units["train_audio"], splits["train_audio"].seconds())
        summary["self_loop_prob"] = config.self_loop_prob
        timings["units"] = time.time() - t0
        if score:
            for name, seqs in units.items():
                frames = scoring.frame_phones(name, {i: len(f) for i, f in zip(splits[name].ids, splits[name].feats)})
                quality = unit_quality(seqs, frames)
                summary.setdefault("unit_quality", {})[name] = quality.__dict__
                log.info("units on %s: %s", name, quality)

        t0 = time.time()
        graph = training_graph(corpus, config)
        num_labels = int(graph.label.max()) + 1
        pairs = label_pairs(corpus, config, num_labels)
        restarts = run_restarts(units["train_audio"], graph, pairs, config, out / "seqce", metrics)
        best = min(restarts, key=lambda r: r.loss)
        with atomic_path(out / "seqce" / "model.pt") as tmp:
            torch.save({"log_emissions": best.log_emissions, "loss": best.loss, "restart": best.restart,
                        "config": config.to_dict()}, tmp)
        pseudo = viterbi_phones(units["train_audio"], graph, best.log_emissions)
        timings["seqce"] = time.time() - t0
        summary["seqce"] = {"loss": best.loss, "best_restart": best.restart,
                            "restart_losses": [r.loss for r in restarts]}

        if score:
            t0 = time.time()
            train_refs = scoring.phones("train_audio")
            eval_refs = scoring.phones(EVAL_SPLIT)
            per_restart = []
            for r in restarts:
                row = {"restart": r.restart, "loss": r.loss,
                       "per_train": _per(train_refs, viterbi_phones(units["train_audio"], graph, r.log_emissions))}
                if EVAL_SPLIT in units:
                    row["per_test"] = _per(eval_refs, viterbi_phones(units[EVAL_SPLIT], graph, r.log_emissions))
                per_restart.append(row)
                log.info("restart %d: loss %.4f, PER train %.1f%s", r.restart, r.loss, row["per_train"],
                         f", test {row['per_test']:.1f}" if "per_test" in row else "")
            summary["seqce"]["restarts"] = per_restart
            summary["seqce"].update({k: v for k, v in per_restart[best.restart].items() if k.startswith("per")})
            oracle = _oracle_and_diagnosis(units, graph, best, train_refs, eval_refs, config, num_labels, summary)
            timings["scoring"] = time.time() - t0

        if config.word_em_iterations:
            t0 = time.time()
            word_em = WordLevelEM.from_corpus(corpus, out / "graphs", config.word_em_beam,
                                              workers=config.word_em_workers or len(os.sched_getaffinity(0)))
            refined = run_word_em(units["train_audio"], [r.log_emissions for r in restarts], word_em,
                                  config.word_em_screen_iterations, config.word_em_iterations, out / "word_em")
            pseudo = refined["phones"]
            summary["word_em"] = {"chosen_restarts": refined["chosen_restarts"],
                                  "screen_costs": refined["screen_costs"], "cost_history": refined["cost_history"]}
            if score:
                summary["word_em"].update(_word_em_scores(word_em, units["train_audio"], refined, oracle, scoring))
            timings["word_em"] = time.time() - t0
        save_phone_text(out / "pseudo_labels" / "round0.txt", pseudo)

        labels = pseudo
        for round_ in range(1, config.self_training_rounds + 1):
            t0 = time.time()
            name = f"round{round_}"
            model = train_neural(config, splits["train_audio"], labels, out / name, corpus / "lang", metrics,
                                 f"self-training {name}")
            labels_path = out / "pseudo_labels" / f"{name}.txt"  # what the next round trains on
            if round_ < config.self_training_rounds:
                if not labels_path.exists():
                    save_phone_text(labels_path, relabel_split(model, corpus, "train_audio",
                                                               config.self_training_labels, out / "graphs",
                                                               config.device))
                labels = read_phone_text(labels_path)
            timings[f"self_training_{name}"] = time.time() - t0
            summary.setdefault("self_training", []).append({"round": round_, "model": str(model)})
            if score:
                summary["self_training"][-1].update(_score_model(model, corpus, out, config, scoring))
        if config.self_training_rounds:
            final = out / f"round{config.self_training_rounds}" / "model.pt"
            summary["model"] = str(final)

        if score and config.supervised_oracle:
            t0 = time.time()
            model = train_neural(config, splits["train_audio"], scoring.phones("train_audio"), out / "supervised",
                                 corpus / "lang", metrics, "supervised oracle")
            summary["supervised"] = {"model": str(model), **_score_model(model, corpus, out, config, scoring)}
            timings["supervised"] = time.time() - t0
        # Not in `finally`: after a failure the other ranks may be inside a collective, and
        # torchrun stops them once this process exits.
        end_neural_training()
    finally:
        metrics.close()
    summary["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    write_summary(out / "summary.json", summary)
    plot_losses(out / "metrics.jsonl", out / "losses.png")
    return summary
