"""``usrasr train`` configuration (YAML + ``--set key=value``)."""

from __future__ import annotations

from dataclasses import dataclass

from usrasr.utils.config import YamlConfig
from usrasr.utils.device import check_precision
from usrasr.utils.errors import UsrasrError

UNIT_SOURCES = ("fbank", "segments", "encoder", "diagnostic")
SPEAKER_FIELDS = ("speaker", "voice", "cluster")
OBJECTIVES = ("seqce", "odm", "crosslingual", "oracle")
ENCODER_UNITS = ("auto", "layer", "posteriors")
# Paths that are tested but that no measured result favours over the defaults
# (docs/results/): `usrasr train --help` marks them experimental.
EXPERIMENTAL_KEYS = ("word_em_iterations", "speaker_emissions", "codebook_per_speaker", "adapt_speaker_codebooks",
                     "speaker_field=cluster", "units=segments", "align_dictionary")

# Counts that must be at least 1 (ctc_steps=0 would save an untrained model).
POSITIVE_KEYS = ("num_units", "restarts", "iterations", "kmeans_iterations", "select_iterations", "states_per_phone",
                 "hidden_dim", "num_layers", "ctc_steps", "ctc_batch_size", "checkpoint_every", "mode_width",
                 "segment_parts", "oracle_iterations")


@dataclass
class TrainConfig(YamlConfig):
    # acoustic units
    # "fbank" (k-means of frames), "segments" (k-means of phone-like segments),
    # "encoder" (a pretrained layer), or "diagnostic" (alignments)
    units: str = "fbank"
    num_units: int = 100  # acoustic units (k-means clusters)
    segment_penalty: float = 80.0  # units=segments: cost of a segment boundary (higher: longer segments)
    segment_parts: int = 3  # units=segments: sub-span means per segment feature
    encoder: str = ""  # units=encoder: a `usrasr pretrain` output, a transformers model dir, feats.scp, .npy folder or cuts with features (docs/encoders.md)
    unit_layer: int = -1  # units=encoder: layer 0..N, or -1 to choose it without labels
    # units=encoder: "layer" (k-means of a layer), "posteriors" (per frame the most likely phone of an
    # encoder trained with phone labels, `usrasr pretrain --method just`), or "auto" (with unit_layer=-1,
    # such an encoder's posteriors are a candidate beside its layers, chosen without labels)
    encoder_units: str = "auto"
    kmeans_k_choices: str = ""  # units=encoder: comma-separated K to choose from ("" = num_units)
    select_iterations: int = 10  # EM iterations of each candidate's seq-CE fit when choosing
    kmeans_iterations: int = 20  # Lloyd iterations of the k-means
    cmvn: str = "utterance"  # "utterance", or "speaker" (needs speaker labels or speaker_field=cluster)
    # What identifies a speaker for the per-speaker options: the supervisions' "speaker",
    # "voice" (their custom field; the default corpus's speed variants of a voice are one voice),
    # or "cluster" (no labels needed: utterances clustered by voice, see usrasr.corpus.speakers)
    speaker_field: str = "speaker"
    speaker_clusters: int = 0  # speaker_field=cluster: clusters per split (0: chosen by the silhouette)
    codebook_per_speaker: bool = False  # one k-means codebook per speaker (speaker labels or clusters)
    # codebook_per_speaker: start each speaker's k-means from one shared codebook (unit ids comparable)
    adapt_speaker_codebooks: bool = False
    mode_width: int = 5  # majority filter over frames before merging runs (1 = off)
    merge_runs: bool = True  # merge repeats of a unit into one token
    diagnostic_noise: float = 0.0  # share of frames replaced by random units (diagnostic units)
    diagnostic_voice_dependent: bool = False  # diagnostic units: one unit set per voice
    # one emission table per speaker (speaker labels or clusters; decodes only speakers seen in training)
    speaker_emissions: bool = False
    # speaker_emissions with adapt_speaker_codebooks: pseudo-counts per phone that pull each
    # speaker's table towards the table of all speakers (0 = independent tables)
    emission_tying: float = 0.0
    # graph: HMM topology o phone LM
    states_per_phone: int = 1
    # Probability of staying in a phone for one more unit step.  Negative: set without
    # labels from the units' rate, so that the HMM expects (units per second /
    # phones_per_second) steps per phone.
    self_loop_prob: float = -1.0
    phones_per_second: float = 12.0  # typical of read speech; set it for your language and style
    silence: bool = True  # optional silence between words in the training graph
    silence_prob: float = 0.05  # probability of that silence
    # What makes the first labels of train-audio: "seqce" (the generative sequence-level
    # cross-entropy over units, below) or "odm" (a classifier of segment features matched to
    # the phone LM's n-gram distribution, see usrasr.train.odm_stage; uses segment_penalty,
    # segment_parts and cmvn, not the units; with units=encoder it classifies the encoder's
    # unit_layer, or with encoder_units=posteriors its phone log-posteriors, instead of fbank), or
    # "crosslingual" (a `usrasr pretrain --method just` encoder, encoder=PATH, trained on other
    # languages' transcribed speech: its universal phones, read as the corpus's phones through their
    # IPA, label train-audio through the graphs, see usrasr.train.crosslingual_stage), or "oracle"
    # (no unsupervised labels: only the supervised oracle, a scoring reference that reads the
    # transcripts, so that it can run in a process of its own beside pretraining)
    objective: str = "seqce"
    phone_ipa: str = ""  # objective=crosslingual: a `phone IPA` table of the corpus's phones ("" = the project's ARPAbet)
    crosslingual_neighbours: int = 5  # objective=crosslingual: universal phones each phone reads, nearest first
    crosslingual_temperature: float = 0.25  # ... weighted exp(-(distance - nearest distance) / temperature)
    # objective=crosslingual: "neighbours" (a phone's posterior is its neighbours' weighted sum) or
    # "features" (a logit of its own: its IPA's articulatory features through the head's articulatory
    # part, plus its neighbours' per-phone parts)
    crosslingual_reading: str = "features"
    # objective=crosslingual: universal posteriors divided by their mean over the utterance to this power
    # (-1: the scale whose decodes say as many phones as the universal recogniser, chosen without labels)
    crosslingual_prior_scale: float = -1.0
    # objective=crosslingual: the LM scale the model decodes with (-1: the scale whose word decodes of
    # train-audio are as probable per word under the word LM as held-out text, chosen without labels)
    crosslingual_lm_scale: float = -1.0
    odm_order: int = 3  # n-gram orders 1..N matched (a phone LM of that order is trained if the corpus's is lower)
    odm_top: int = 1000  # the most likely n-grams matched per order above 2 (every uni- and bigram)
    odm_restarts: int = 8  # classifiers trained together as one batched model; the lowest loss wins
    odm_steps: int = 200  # optimiser steps of the ODM classifiers
    odm_learning_rate: float = 0.05  # Adam learning rate of the ODM classifiers
    odm_batch_utterances: int = 300  # utterances per step (0: all)
    odm_dim: int = 40  # principal components of the segment features (0: all)
    odm_hidden: int = 0  # hidden units of the classifier (0: linear)
    odm_silence_margin: float = 6.0  # segments this far below their utterance's median log-mel energy are silence
    odm_order_steps: int = 0  # curriculum: steps before each order above 2 joins (0: all at once)
    odm_dual: bool = False  # train the primal-dual form of the loss
    # sequence-level cross-entropy search
    restarts: int = 5  # independent starts; the lowest loss wins
    # a `usrasr align --out` dir: keep instead the restart whose phones of train-audio best agree
    # with its spoken-word dictionary (usrasr.align.agreement); "" = the lowest loss
    align_dictionary: str = ""
    batch_restarts: int = 0  # restarts trained together (0: all on a GPU, one at a time on a CPU)
    iterations: int = 30  # EM (or Adam) iterations per restart
    optimizer: str = "em"  # em or adam
    init: str = "moments"  # first emission table: moments, frequency or random
    learning_rate: float = 0.1  # optimizer=adam: its learning rate
    anneal_start: float = 1.0  # deterministic annealing: first temperature exponent (1 = off)
    anneal_iterations: int = 0  # iterations to anneal over
    oracle_iterations: int = 20  # iterations of the oracle HMM fit (scoring only)
    # word-level refinement (hard EM through HLG, see usrasr.train.word_em); 0 iterations = off
    word_em_iterations: int = 0
    word_em_screen_iterations: int = 3  # per restart and speaker group, to choose the restart
    word_em_beam: float = 10.0  # search beam of the word-level EM
    word_em_workers: int = 0  # decoding processes (0: one per CPU core)
    # self-training (neural CTC on fbank, pseudo-labels from the previous model)
    # One round by default: a second round trains on the first model's own labels of
    # train-audio, which teach less about unseen voices than the labels the first model
    # learned from (docs/results/2026-12-02-back-end-and-good-labels.md)
    self_training_rounds: int = 1
    # How each round relabels train-audio for the next: "word" (best words of the HLG graph,
    # word LM, spelled with the lexicon) or "phone" (best phones of the HP graph, phone LM)
    self_training_labels: str = "word"
    # a `usrasr pretrain` output or a transformers model dir: every CTC model (self-training and
    # the supervised oracle) starts from its encoder, whose shape then replaces arch / hidden_dim / num_layers
    ctc_init: str = ""
    ctc_init_layer: int = -1  # ctc_init=transformers dir: keep its blocks 1..N under the CTC head (-1: all)
    arch: str = "tdnn"  # CTC model: tdnn or conformer
    hidden_dim: int = 256  # width of the CTC model
    num_layers: int = 6  # layers of the CTC model
    ctc_steps: int = 1500  # about 16 epochs of the default 1,500 utterances at batch 16
    ctc_batch_size: int = 16  # utterances per CTC step
    ctc_lr: float = 1e-3  # peak learning rate of the CTC model
    ctc_cosine_decay: bool = True  # after warm-up, decay the rate to zero along a cosine
    # training-time distortions of fbank (see usrasr.models.ctc_train.Augmentation); 0 = off
    ctc_warp: float = 0.0  # frequency-axis warping range (vocal tract length)
    ctc_spec_augment: bool = False  # SpecAugment time and frequency masks
    supervised_oracle: bool = True  # also train a CTC model on the transcripts (scoring only)
    # engineering
    checkpoint_every: int = 100  # CTC steps between checkpoints (resume)
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    # CTC training's forward pass: "bf16" autocast, "fp32", or "auto" (bf16 where the device has bf16 units)
    precision: str = "auto"
    seed: int = 0  # seed of every random choice (usrasr --seed)

    def __post_init__(self) -> None:
        from usrasr.models.acoustic import ARCHITECTURES
        from usrasr.models.crosslingual import READINGS
        from usrasr.seqce.fit import INITS, OPTIMIZERS

        for key, allowed in (("optimizer", OPTIMIZERS), ("init", INITS), ("arch", ARCHITECTURES)):
            if getattr(self, key) not in allowed:
                raise UsrasrError(f"{key} must be one of {', '.join(allowed)}, got '{getattr(self, key)}'")
        not_positive = [key for key in POSITIVE_KEYS if getattr(self, key) < 1]
        if not_positive:
            raise UsrasrError("need at least 1 for " + ", ".join(f"{k} (got {getattr(self, k)})" for k in not_positive))
        if self.self_training_rounds < 0:
            raise UsrasrError(f"self_training_rounds must be 0 or more, got {self.self_training_rounds}")
        if self.objective not in OBJECTIVES:
            raise UsrasrError(f"objective must be one of {', '.join(OBJECTIVES)}, got '{self.objective}'")
        if self.objective == "odm" and (self.word_em_iterations or self.odm_order < 2 or self.odm_restarts < 1
                                        or self.odm_steps < 1 or self.odm_top < 1):
            raise UsrasrError("objective=odm needs odm_order >= 2, odm_restarts >= 1, odm_steps >= 1, odm_top >= 1 "
                              "and no word-level EM (word_em_iterations=0: it refines unit tables)")
        if self.objective == "oracle" and not self.supervised_oracle:
            raise UsrasrError("objective=oracle trains only the supervised oracle: it needs supervised_oracle=true")
        if self.objective == "crosslingual" and not self.encoder:
            raise UsrasrError("objective=crosslingual needs `--set encoder=DIR`: a `usrasr pretrain --method just` output")
        if (self.crosslingual_neighbours < 1 or self.crosslingual_temperature <= 0
                or self.crosslingual_reading not in READINGS
                or not (self.crosslingual_prior_scale == -1 or self.crosslingual_prior_scale >= 0)
                or not (self.crosslingual_lm_scale == -1 or self.crosslingual_lm_scale > 0)):
            raise UsrasrError("crosslingual_neighbours must be 1 or more, crosslingual_temperature above 0, "
                              "crosslingual_reading neighbours or features, crosslingual_prior_scale -1 (chosen without labels) or 0 and above, and "
                              "crosslingual_lm_scale -1 (chosen without labels) or above 0")
        if self.encoder_units not in ENCODER_UNITS:
            raise UsrasrError(f"encoder_units must be one of {', '.join(ENCODER_UNITS)}, got '{self.encoder_units}'")
        if (self.objective == "odm" and self.units == "encoder" and self.encoder_units != "posteriors"
                and self.unit_layer < 0):
            raise UsrasrError("objective=odm with units=encoder reads one set of features: set unit_layer=N "
                              "or encoder_units=posteriors")
        if self.align_dictionary and self.objective != "seqce":
            raise UsrasrError("align_dictionary chooses among the seq-CE restarts: it needs objective=seqce")
        if self.units not in UNIT_SOURCES:
            raise UsrasrError(f"units must be one of {', '.join(UNIT_SOURCES)}, got '{self.units}'")
        if self.units == "encoder" and not self.encoder:
            raise UsrasrError("units=encoder needs `--set encoder=DIR` (a `usrasr pretrain` output, a transformers "
                              "model dir, a feats.scp, a .npy folder or cuts with features; see docs/encoders.md)")
        if self.self_loop_prob >= 1 or self.phones_per_second <= 0:
            raise UsrasrError("need self_loop_prob < 1 (negative: from the units' rate) and phones_per_second > 0")
        if self.emission_tying < 0 or (self.emission_tying > 0 and self.optimizer != "em"):
            raise UsrasrError("emission_tying is a non-negative pseudo-count of EM (optimizer=em)")
        if self.emission_tying > 0 and self.codebook_per_speaker and not self.adapt_speaker_codebooks:
            raise UsrasrError("emission_tying needs unit ids that mean the same for every speaker: "
                              "set adapt_speaker_codebooks=true (or one shared codebook)")
        if self.anneal_start < 1 and self.anneal_iterations > self.iterations:
            raise UsrasrError(f"anneal_iterations ({self.anneal_iterations}) must not exceed iterations "
                              f"({self.iterations}): the loss is only defined once annealing has ended")
        if self.speaker_clusters < 0 or self.speaker_clusters == 1:
            raise UsrasrError(f"speaker_clusters must be 0 (chosen) or at least 2, got {self.speaker_clusters}")
        if self.speaker_field not in SPEAKER_FIELDS:
            raise UsrasrError(f"speaker_field must be one of {', '.join(SPEAKER_FIELDS)}, got '{self.speaker_field}'")
        if (self.word_em_iterations < 0 or self.word_em_screen_iterations < 1 or self.word_em_workers < 0
                or self.segment_penalty <= 0):
            raise UsrasrError("need word_em_iterations >= 0, word_em_screen_iterations >= 1, word_em_workers >= 0 "
                              "and segment_penalty > 0")
        if self.word_em_iterations and self.states_per_phone != 1:
            raise UsrasrError("word-level EM reads one emission row per phone: it needs states_per_phone=1")
        if self.self_training_labels not in ("phone", "word"):
            raise UsrasrError(f"self_training_labels must be 'phone' or 'word', got '{self.self_training_labels}'")
        check_precision(self.precision)
        if self.cmvn not in ("utterance", "speaker"):
            raise UsrasrError(f"cmvn must be 'utterance' or 'speaker', got '{self.cmvn}'")
