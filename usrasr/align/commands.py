"""Click command ``usrasr align``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from usrasr.align.pipeline import SEGMENTATIONS, AlignConfig

_DEFAULTS = AlignConfig()


@click.command()
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A prepared corpus (its train-audio and train text).")
@click.option("--segments", type=click.Choice(SEGMENTATIONS), default=_DEFAULTS.segments, show_default=True,
              help="Word-like segments: a model's decoded word times, pauses and energy, or the true word "
                   "boundaries of the scoring alignments (oracle: a diagnostic upper bound).")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Acoustic model whose decoding of train-audio gives the word times (--segments decoded).")
@click.option("--word-times", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Instead of --model: an earlier `usrasr decode --format jsonl` of train-audio "
                   "(e.g. the decoded_train_audio.jsonl of an earlier --out).")
@click.option("--encoder", type=click.Path(exists=True, path_type=Path),
              help="Pool this `usrasr pretrain` encoder's layer instead of fbank.")
@click.option("--layer", type=int, default=_DEFAULTS.layer, show_default=True, help="Encoder layer (with --encoder).")
@click.option("--clusters", type=click.IntRange(min=2), default=_DEFAULTS.clusters, show_default=True,
              help="Spoken-word types clustered from the segments (not with --segments oracle).")
@click.option("--cluster-oracle", is_flag=True,
              help="With --segments oracle: cluster the segments into types like the other segmentations "
                   "(only the boundaries come from the oracle).")
@click.option("--min-count", type=click.IntRange(min=1), default=_DEFAULTS.min_count, show_default=True,
              help="Least segments of a spoken-word type and occurrences of a text word.")
@click.option("--text-words", type=click.IntRange(min=2), default=_DEFAULTS.text_words, show_default=True,
              help="The most frequent text words that the dictionary may name.")
@click.option("--dim", type=click.IntRange(min=2), default=_DEFAULTS.dim, show_default=True,
              help="Dimension of both embedding spaces.")
@click.option("--restarts", type=click.IntRange(min=1), default=_DEFAULTS.restarts, show_default=True,
              help="Adversarial + refinement runs; the highest mean dictionary cosine wins.")
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS.adversarial.epochs, show_default=True,
              help="Adversarial epochs of each restart.")
@click.option("--steps", type=click.IntRange(min=1), default=_DEFAULTS.adversarial.steps_per_epoch,
              show_default=True, help="Map updates per adversarial epoch.")
@click.option("--threads", type=click.IntRange(min=1), default=_DEFAULTS.threads, show_default=True,
              help="Torch CPU threads (OMP_NUM_THREADS overrides).")
@click.option("--score/--no-score", default=True, show_default=True,
              help="Score spoken-word classification against the transcripts (diagnostic).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Writes mapping.npz, dictionary.tsv, segments.tsv and report.json here.")
@click.pass_context
def align(ctx, corpus, segments, model, word_times, encoder, layer, clusters, cluster_oracle, min_count, text_words,
          dim, restarts, epochs, steps, threads, score, out) -> None:
    """Map spoken-word embeddings onto text word2vec embeddings without paired data.

    Word-like segments of train-audio are embedded speech2vec-style from the audio
    alone, text words by word2vec on the train text; an adversarial orthogonal map
    refined by Procrustes on a CSLS dictionary aligns the two (Chung et al., 2018).

    \b
    Example:
      usrasr align --corpus data/default --segments pauses --out exp/align
    """
    from usrasr.align.mapping import AdversarialConfig
    from usrasr.align.pipeline import align_corpus

    config = AlignConfig(segments=segments, model=model, word_times=word_times, encoder=encoder, layer=layer,
                         clusters=clusters, cluster_oracle=cluster_oracle, min_count=min_count, text_words=text_words, dim=dim,
                         restarts=restarts, threads=threads, seed=ctx.obj["seed"], score=score,
                         adversarial=AdversarialConfig(epochs=epochs, steps_per_epoch=steps))
    report = align_corpus(corpus, out, config)
    click.echo(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
