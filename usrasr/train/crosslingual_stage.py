"""The cross-lingual start of ``usrasr train --objective crosslingual``.

A multilingual phone recogniser (``usrasr pretrain --method just``: supervised on
other languages' transcribed speech, never on the target's) becomes a CTC model of
the corpus's phones through their IPA (:mod:`usrasr.models.crosslingual`); it labels
train-audio through the corpus's own graphs, the HLG graph with the word LM by
default (``self_training_labels``), and those labels start self-training.  Only
the blind audio, the text side and the phones' IPA are read.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from usrasr.corpus.layout import CorpusLayout
from usrasr.lang.inventory import project_phone_ipa, read_phone_ipa
from usrasr.lang.phones import SILENCE
from usrasr.lang.symbols import PHONE_TOKENS
from usrasr.models.acoustic import save_model
from usrasr.models.crosslingual import crosslingual_ctc_model
from usrasr.train.config import TrainConfig
from usrasr.train.seqce_stage import read_phone_text, save_phone_text
from usrasr.train.self_training import relabel_split
from usrasr.utils.console import log


def run_crosslingual(corpus: Path, config: TrainConfig, out: Path, graph_dir: Path) -> tuple[dict[str, str], dict]:
    """Train-audio phone labels from the cross-lingual model saved in ``out/model.pt``, and a summary.
    A rerun (``--resume``) reads the labels that ``out/labels.txt`` kept."""
    tokens = list(PHONE_TOKENS.symbols)
    phone_ipa = read_phone_ipa(config.phone_ipa) if config.phone_ipa else project_phone_ipa()
    model_path = out / "model.pt"
    model, mapping = crosslingual_ctc_model(config.encoder, tokens, phone_ipa, SILENCE)
    save_model(model_path, model, tokens, CorpusLayout(corpus).lang_dir)
    reads = Counter(u for u in mapping.values() if u)
    shared = sorted(u for u, n in reads.items() if n > 1)
    log.info("cross-lingual model: %d phones read from %d universal phones (%s shared by several)",
             sum(reads.values()), len(reads), " ".join(shared) or "none")
    labels_path = out / "labels.txt"
    if not labels_path.exists():
        save_phone_text(labels_path, relabel_split(model_path, corpus, "train_audio", config.self_training_labels,
                                                   graph_dir, config.device))
    return read_phone_text(labels_path), {"model": str(model_path), "mapping": mapping}
