"""``usrasr align`` as one library call: segments, both embedding spaces, the map, its outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from usrasr.align import mapping
from usrasr.align.segments import PauseConfig, Segment, decoded_segments, pause_segments, read_decoded_words
from usrasr.align.speech import SkipgramConfig, cluster_types, pooled_segments, train_skipgram, type_embeddings
from usrasr.align.text import word2vec
from usrasr.corpus.layout import CorpusLayout
from usrasr.corpus.reader import load_audio
from usrasr.utils.console import log
from usrasr.utils.device import torch_threads
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_open, atomic_path, write_json_atomic

SPLIT = "train_audio"
SEGMENTATIONS = ("decoded", "pauses", "oracle")


@dataclass
class AlignConfig:
    segments: str = "pauses"
    model: Path | None = None  # acoustic model whose decoding gives the "decoded" word times
    word_times: Path | None = None  # or an earlier `usrasr decode --format jsonl` of train-audio
    encoder: Path | None = None  # a `usrasr pretrain` encoder; fbank when None
    layer: int = -1
    clusters: int = 500  # spoken-word types found by k-means (not for oracle segments, whose types are words)
    cluster_oracle: bool = False  # oracle segments clustered like the others (boundaries alone from the oracle)
    min_count: int = 5  # segments of a type, occurrences of a text word
    text_words: int = 1000  # the most frequent text words that the map may name
    dim: int = 50
    restarts: int = 3
    refinements: int = 5
    csls_k: int = 10
    threads: int = 1
    seed: int = 0
    score: bool = True  # score against the transcripts (diagnostic), when the corpus has them
    skipgram: SkipgramConfig = field(default_factory=SkipgramConfig)
    adversarial: mapping.AdversarialConfig = field(default_factory=mapping.AdversarialConfig)
    pauses: PauseConfig = field(default_factory=PauseConfig)


def _frames(corpus: Path, config: AlignConfig, audio) -> tuple[dict, dict | None]:
    """Frames to pool per utterance (fbank or an encoder layer) and the rate ratio to fbank."""
    fbank = dict(zip(audio.ids, audio.feats))
    if config.encoder is None:
        return fbank, None
    from usrasr.models.encoder import layer_features, load_encoder

    encoder, _ = load_encoder(config.encoder)
    layers = layer_features(encoder, audio.feats)
    if not -len(layers) <= config.layer < len(layers):
        raise UsrasrError(f"--layer {config.layer}: the encoder has layers 0..{len(layers) - 1}")
    chosen = layers[config.layer]
    return dict(zip(audio.ids, chosen)), {u: len(c) / len(f) for u, c, f in zip(audio.ids, chosen, audio.feats)}


def _decode_word_times(corpus: Path, model: Path, out: Path) -> Path:
    from usrasr.decode.audio import utterances_from_cuts
    from usrasr.decode.pipeline import decode_utterances

    decoded = out / f"decoded_{SPLIT}.jsonl"
    decode_utterances(utterances_from_cuts(CorpusLayout(corpus).cuts(SPLIT)), model, fmt="jsonl", output=decoded)
    return decoded


def _segments(corpus: Path, config: AlignConfig, audio, out: Path, oracle) -> tuple[list[Segment], list | None]:
    """The segments and, for oracle segments only, their true words."""
    if config.segments == "oracle":
        return oracle.segments(config.pauses.min_frames)
    if config.segments == "pauses":
        return [s for u, f in zip(audio.ids, audio.feats) for s in pause_segments(u, f, config.pauses)], None
    if (config.model is None) == (config.word_times is None):
        raise UsrasrError("--segments decoded needs either --model (the model whose decoding gives word times) "
                          "or --word-times (its `usrasr decode --format jsonl` output of train-audio)")
    source = config.word_times or _decode_word_times(corpus, config.model, out)
    times = read_decoded_words(source)
    if not times.keys() & set(audio.ids):
        raise UsrasrError(f"{source}: no word times of a {SPLIT} utterance of {corpus}")
    return decoded_segments(times, {u: len(f) for u, f in zip(audio.ids, audio.feats)}, config.pauses.min_frames), None


def align_corpus(corpus: str | Path, out: str | Path, config: AlignConfig = AlignConfig()) -> dict:
    """Align the spoken-word space of ``corpus``'s train-audio with its text's word2vec space.

    Writes ``mapping.npz`` (the map ``w``: speech space -> text space, and both sets of
    embeddings), ``dictionary.tsv`` (spoken-word type -> word, with CSLS and cosine),
    ``segments.tsv`` (each segment's type) and ``report.json``; returns the report.
    """
    corpus, out = Path(corpus), Path(out)
    if config.segments not in SEGMENTATIONS:
        raise UsrasrError(f"--segments must be one of {', '.join(SEGMENTATIONS)}")
    layout = CorpusLayout(corpus)
    out.mkdir(parents=True, exist_ok=True)
    with torch_threads(config.threads):
        audio = load_audio(corpus, SPLIT)
        oracle = None
        scorable = layout.scoring_supervisions(SPLIT).exists()
        if config.segments == "oracle" or (config.score and scorable):
            from usrasr.align.oracle import OracleWords

            oracle = OracleWords(corpus, {u: len(f) for u, f in zip(audio.ids, audio.feats)})
        segments, true_words = _segments(corpus, config, audio, out, oracle)
        if len(segments) < 2:
            raise UsrasrError(f"{corpus}: only {len(segments)} {config.segments} segment(s) in {SPLIT}")
        frames, ratio = _frames(corpus, config, audio)
        pooled = pooled_segments(segments, frames, frame_ratio=ratio)
        if true_words is not None and not config.cluster_oracle:
            _, types = np.unique(np.array(true_words), return_inverse=True)
        else:
            types = cluster_types(pooled, config.clusters, config.seed)
        counts = np.bincount(types)
        keep = np.array([k for k in np.argsort(-counts, kind="stable") if counts[k] >= config.min_count])
        if len(keep) < 2:
            raise UsrasrError(f"fewer than 2 spoken-word types have {config.min_count} segments")
        log.info("%d %s segments, %d spoken-word types with >= %d segments", len(segments), config.segments,
                 len(keep), config.min_count)
        skipgram = SkipgramConfig(**{**asdict(config.skipgram), "dim": config.dim})
        segment_vectors = train_skipgram(pooled, types, [s.utterance for s in segments], skipgram, config.seed)
        speech = mapping.normalize(type_embeddings(segment_vectors, types, keep))
        text = word2vec(layout.train_text, config.dim, skipgram.window, config.min_count, config.text_words,
                        seed=config.seed)
        target = mapping.normalize(text.vectors)
        found = mapping.unsupervised_map(speech, target, config.restarts, config.refinements, config.adversarial,
                                         config.seed, config.csls_k)
        log.info("criterion (mean cosine of the induced dictionary) per restart: %s",
                 ", ".join(f"{c:.3f}" for c in found.criteria))

    type_names = [f"s{k}" for k in keep]
    mapped = speech @ found.w.T
    pairs = mapping.induce_dictionary(mapped, target, config.csls_k)
    scores = mapping.csls(mapped, target, config.csls_k)
    cosines = mapping.cosine(mapped, target)
    example = {}
    for seg, t in zip(segments, types.tolist()):
        example.setdefault(t, seg)
    with atomic_path(out / "mapping.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, w=found.w, speech=speech, speech_types=np.array(type_names), text=target,
                 text_words=np.array(text.words))
    with atomic_open(out / "dictionary.tsv") as f:
        f.write("spoken_word\tsegments\texample\tword\tcsls\tcosine\n")
        for i, j in sorted(pairs.tolist(), key=lambda p: -scores[p[0], p[1]]):
            seg = example[keep[i]]
            f.write(f"{type_names[i]}\t{counts[keep[i]]}\t{seg.utterance}:{seg.start}-{seg.end}\t{text.words[j]}"
                    f"\t{scores[i, j]:.4f}\t{cosines[i, j]:.4f}\n")
    with atomic_open(out / "segments.tsv") as f:
        f.write("utterance\tstart_frame\tend_frame\tspoken_word\n")
        f.writelines(f"{s.utterance}\t{s.start}\t{s.end}\ts{t}\n" for s, t in zip(segments, types.tolist()))
    report = {
        "corpus": str(corpus), "segments": config.segments, "encoder": str(config.encoder or "fbank"),
        "num_segments": len(segments), "spoken_word_types": len(keep), "text_words": len(text.words),
        "criterion": found.criterion, "criteria": found.criteria, "best_restart": found.restart,
        "dictionary_pairs": int(len(pairs)),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }
    if oracle is not None and config.score:
        report["diagnostic"] = _score(oracle, segments, types, true_words, keep, speech, target, text.words,
                                      found.w, config.csls_k)
    write_json_atomic(out / "report.json", report)
    return report


def _score(oracle, segments, types, true_words, keep, speech, target, words, w, k) -> dict:
    """Spoken-word classification against the transcripts (diagnostic: reads them)."""
    from usrasr.align.oracle import majority_words

    labels = true_words if true_words is not None else oracle.labels(segments)
    majority = majority_words(types, labels, int(types.max()) + 1)
    truth = [majority[t][0] for t in keep]
    index = {word: j for j, word in enumerate(words)}
    rows = [i for i, word in enumerate(truth) if word in index]
    gold = np.array([index[truth[i]] for i in rows])
    supervised = mapping.procrustes(speech[rows], target[gold]) if len(rows) >= 2 else None
    out = {
        "note": "diagnostic: true words from the scoring transcripts and alignments",
        "labelled_segments": float(np.mean([x is not None for x in labels])),
        "type_purity": float(np.mean([majority[t][1] for t in keep])),
        "scored_types": len(rows), "distinct_true_words": len({truth[i] for i in rows}),
    }
    for name, map_ in (("unsupervised", w), ("supervised", supervised)):
        if map_ is None:
            continue
        ranks = mapping.precision_at(speech[rows] @ map_.T, target, gold, (1, 5), k)
        pairs = mapping.induce_dictionary(speech @ map_.T, target, k)
        out[name] = {**{f"p@{n}": p for n, p in ranks.items()},
                     # Whether the unsupervised criterion would have preferred this map.
                     "criterion": mapping.criterion(speech @ map_.T, target, k),
                     "dictionary_pairs": int(len(pairs)),
                     "dictionary_correct": int(sum(truth[i] == words[j] for i, j in pairs.tolist()))}
    return out
