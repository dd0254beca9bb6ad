"""``usrasr train`` end to end: units, sequence-level training, oracles and scores.

Outputs under the experiment dir::

    config.yaml           the configuration used (resume checks it)
    corpus.yaml           the corpus: its path and the digests of what training reads (resume checks it)
    .lock                 held while a run writes here: a second one fails at once
    units/                codebook.pt, units per split
    seqce/restart_*.pt    one checkpoint per finished restart
    seqce/model.pt        the lowest-loss restart (or align_dictionary's choice): emissions + graph settings
    word_em/model.pt      word-level refinement (if on): tables, chosen restarts, labels
    crosslingual/model.pt objective=crosslingual: the CTC model read off a just encoder's phone head
    supervised/model.pt   the supervised oracle (scoring only; objective=oracle trains nothing else)
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

import time
from pathlib import Path

import torch

from usrasr.align.agreement import DictionaryAgreement
from usrasr.train.config import TrainConfig
from usrasr.train.diagnostics import EVAL_SPLIT, Diagnostics
from usrasr.corpus.reader import load_audio
from usrasr.utils.metrics import MetricsLog, plot_losses
from usrasr.train.crosslingual_stage import run_crosslingual
from usrasr.train.odm_stage import OdmScoring, run_odm
from usrasr.train.seqce_stage import (
    label_pairs, read_phone_text, run_restarts, save_phone_text, training_graph, viterbi_phones, with_unit_rate, write_summary,
)
from usrasr.train.self_training import (
    end_neural_training, relabel_split, serve_neural_training, train_neural,
)
from usrasr.train.units.sources import encoder_units, fbank_units, segment_units, speaker_groups
from usrasr.train.word_em import WordLevelEM, run_word_em
from usrasr.prepare.check import require_trainable
from usrasr.utils.config import record_inputs
from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError
from usrasr.utils.processes import lock_directory, usable_cores
from usrasr.utils.distributed import is_main_process, world_size
from usrasr.utils.io import atomic_path
from usrasr.corpus.layout import CorpusLayout

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
    if config.objective == "oracle" and not score:
        raise UsrasrError("objective=oracle trains on the transcripts: it cannot run with --no-score")
    identity = require_trainable(corpus, score)  # before anything is written to --out
    lock_directory(out, "experiment directory")
    config.record(out, resume)
    record_inputs(out / "corpus.yaml", {"path": str(corpus.resolve()), **identity}, resume, "corpus")
    torch.manual_seed(config.seed)
    metrics = MetricsLog(out / "metrics.jsonl")
    timings: dict[str, float] = {}
    summary: dict = {"config": config.to_dict(), "world_size": world_size()}
    try:
        t0 = time.time()
        splits = {name: load_audio(corpus, name).speakers_from(config.speaker_field, config.speaker_clusters,
                                                                 tag=name, seed=config.seed)
                  for name in ("train_audio", EVAL_SPLIT) if score or CorpusLayout(corpus).cuts(name).exists()}
        summary["speakers"] = {name: {"count": len(set(split.speakers))} for name, split in splits.items()}
        diagnostics = Diagnostics(corpus, splits, summary) if (score or config.units == "diagnostic") else None
        if score and config.speaker_field == "cluster":
            diagnostics.speaker_purity()
        if config.objective == "oracle":
            pseudo = None  # no unsupervised labels: only the supervised oracle below
        elif config.objective == "odm":
            t0 = time.time()
            train_split = splits["train_audio"]
            scoring = OdmScoring(diagnostics.supervised_targets(), diagnostics.scoring.frame_phones(
                "train_audio", {i: len(f) for i, f in zip(train_split.ids, train_split.feats)})) if score else None
            pseudo, summary["odm"] = run_odm(corpus, train_split, config, out / "odm", metrics, scoring)
            timings["odm"] = time.time() - t0
        elif config.objective == "crosslingual":
            t0 = time.time()
            pseudo, summary["crosslingual"] = run_crosslingual(corpus, config, out / "crosslingual", out / "graphs",
                                                                 splits["train_audio"])
            timings["crosslingual"] = time.time() - t0
            if score:
                summary["crosslingual"].update(diagnostics.score_model(Path(summary["crosslingual"]["model"]), out,
                                                                       config.device))
        else:
            if config.units == "diagnostic":
                units = diagnostics.diagnostic_units(config)
            elif config.units == "encoder":
                units = encoder_units(config, splits, corpus, out, diagnostics.train_unit_quality() if score else None)
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
                diagnostics.score_units(units)

            t0 = time.time()
            graph = training_graph(corpus, config)
            num_labels = int(graph.label.max()) + 1
            pairs = label_pairs(corpus, config, num_labels)
            restarts = run_restarts(units["train_audio"], graph, pairs, config, out / "seqce", metrics)
            best = min(restarts, key=lambda r: r.loss)
            if config.align_dictionary:
                agreement = DictionaryAgreement(config.align_dictionary, CorpusLayout(corpus).lexicon)
                agreements = [agreement(viterbi_phones(units["train_audio"], graph, r.log_emissions)) for r in restarts]
                best = restarts[agreements.index(max(agreements))]
                log.info("dictionary agreement per restart: %s", " ".join(f"{a:.4f}" for a in agreements))
            with atomic_path(out / "seqce" / "model.pt") as tmp:
                torch.save({"log_emissions": best.log_emissions, "loss": best.loss, "restart": best.restart,
                            "config": config.to_dict()}, tmp)
            pseudo = viterbi_phones(units["train_audio"], graph, best.log_emissions)
            timings["seqce"] = time.time() - t0
            summary["seqce"] = {"loss": best.loss, "best_restart": best.restart,
                                "restart_losses": [r.loss for r in restarts]}
            if config.align_dictionary:
                summary["seqce"]["dictionary_agreement"] = agreements

            oracle = None
            if score:
                t0 = time.time()
                oracle = diagnostics.score_restarts(units, graph, restarts, best, num_labels, config)
                timings["scoring"] = time.time() - t0

            if config.word_em_iterations:
                t0 = time.time()
                word_em = WordLevelEM.from_corpus(corpus, out / "graphs", config.word_em_beam,
                                                  workers=config.word_em_workers or usable_cores())
                refined = run_word_em(units["train_audio"], [r.log_emissions for r in restarts], word_em,
                                      config.word_em_screen_iterations, config.word_em_iterations, out / "word_em")
                pseudo = refined["phones"]
                summary["word_em"] = {"chosen_restarts": refined["chosen_restarts"],
                                      "screen_costs": refined["screen_costs"], "cost_history": refined["cost_history"]}
                if score:
                    diagnostics.score_word_em(word_em, units["train_audio"], refined, oracle)
                timings["word_em"] = time.time() - t0
        if pseudo is not None:
            save_phone_text(out / "pseudo_labels" / "round0.txt", pseudo)
            if score:
                summary["labels"] = {"round0": diagnostics.score_labels(pseudo)}

        labels = pseudo
        rounds = config.self_training_rounds if pseudo is not None else 0
        for round_ in range(1, rounds + 1):
            t0 = time.time()
            name = f"round{round_}"
            model = train_neural(config, splits["train_audio"], labels, out / name, CorpusLayout(corpus).lang_dir, metrics,
                                 f"self-training {name}")
            labels_path = out / "pseudo_labels" / f"{name}.txt"  # what the next round trains on
            if round_ < rounds:
                if not labels_path.exists():
                    save_phone_text(labels_path, relabel_split(model, corpus, "train_audio",
                                                               config.self_training_labels, out / "graphs",
                                                               config.device))
                labels = read_phone_text(labels_path)
                if score:
                    summary["labels"][name] = diagnostics.score_labels(labels)
            timings[f"self_training_{name}"] = time.time() - t0
            summary.setdefault("self_training", []).append({"round": round_, "model": str(model)})
            if score:
                summary["self_training"][-1].update(diagnostics.score_model(model, out, config.device))
        if rounds:
            final = out / f"round{rounds}" / "model.pt"
            summary["model"] = str(final)
        elif config.objective == "crosslingual":  # the cross-lingual start is a recogniser itself
            summary["model"] = summary["crosslingual"]["model"]

        if score and config.supervised_oracle:
            t0 = time.time()
            model = train_neural(config, splits["train_audio"], diagnostics.supervised_targets(), out / "supervised",
                                 CorpusLayout(corpus).lang_dir, metrics, "supervised oracle")
            summary["supervised"] = {"model": str(model), **diagnostics.score_model(model, out, config.device)}
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
