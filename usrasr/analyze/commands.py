"""Click group ``usrasr analyze``: similarity, probe, correlate."""

from __future__ import annotations

from pathlib import Path

import click

from usrasr.analyze.similarity import MEASURES

CORPUS = click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
                      help="A prepared corpus.")
UTTERANCES = click.option("--utterances", type=click.IntRange(min=0), default=200, show_default=True,
                          help="Utterances of each split, a seeded random choice (0: all).")
FRAMES = click.option("--frames-per-utterance", type=click.IntRange(min=0), default=100, show_default=True,
                      help="Random frames of each utterance (0: all).")
OUT = click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
                   help="Output directory.")
CMVN = click.option("--cmvn/--no-cmvn", default=True, show_default=True,
                    help="Normalise each utterance's features to zero mean and unit variance first (as units "
                         "see them; it removes what is constant over an utterance).")
REPRESENTATION = ("'fbank' (the corpus's features), a `usrasr pretrain` output, a transformers model dir, "
                  "a Kaldi feats.scp, a folder of <utt-id>.npy or Lhotse cuts with features")


@click.group()
def analyze() -> None:
    """How representations differ, what they carry, and what predicts recognition."""


@analyze.command()
@CORPUS
@click.option("--a", "a_spec", required=True, help=f"The first representation: {REPRESENTATION}.")
@click.option("--b", "b_spec", help="The second (default: the first, layer against layer).")
@click.option("--a-layers", default="all", show_default=True, help="Layers of --a: comma-separated or 'all'.")
@click.option("--b-layers", default="all", show_default=True, help="Layers of --b: comma-separated or 'all'.")
@click.option("--split", default="train_audio", show_default=True, help="The utterances compared.")
@UTTERANCES
@FRAMES
@click.option("--batch-frames", type=click.IntRange(min=4), default=1024, show_default=True,
              help="Frames per CKA minibatch (the debiased HSIC is averaged over minibatches).")
@click.option("--measures", default=",".join(MEASURES), show_default=True,
              help="Comma-separated subset of the measures.")
@CMVN
@OUT
@click.pass_context
def similarity(ctx, corpus, a_spec, b_spec, a_layers, b_layers, split, utterances, frames_per_utterance,
               batch_frames, measures, cmvn, out) -> None:
    """Linear and RBF CKA, SVCCA and PWCCA between every layer of --a and every layer of --b.

    Reads no transcripts. Frames pair up by time when the two frame rates differ
    (each frame of the coarser one with the finer one's frame at its centre).
    Writes similarity.json and similarity.png (one layer x layer heatmap per
    measure) to --out. See docs/analyze.md for how to read them.

    \b
    Example:
      usrasr analyze similarity --corpus data/default --a fbank --b exp/pretrain --out exp/analyze/sim
    """
    from usrasr.analyze.similarity import compare_sources, plot_heatmaps
    from usrasr.utils.errors import UsrasrError
    from usrasr.utils.io import write_json_atomic

    chosen = tuple(m.strip() for m in measures.split(",") if m.strip())
    unknown = sorted(set(chosen) - set(MEASURES))
    if unknown or not chosen:
        raise UsrasrError(f"--measures: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(MEASURES)}")
    record = compare_sources(corpus, a_spec, b_spec, a_layers, b_layers, split, utterances, frames_per_utterance,
                             batch_frames, chosen, cmvn, ctx.obj["seed"])
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "similarity.json", record)
    plot_heatmaps(record, out / "similarity.png")
    for name, matrix in record["measures"].items():
        click.echo(f"{name}\t" + "\t".join(record["b_layers"]))
        for layer, row in zip(record["a_layers"], matrix):
            click.echo(f"{layer}\t" + "\t".join(f"{v:.3f}" for v in row))


@analyze.command()
@CORPUS
@click.option("--encoder", "spec", required=True, help=f"The representation probed: {REPRESENTATION}.")
@click.option("--layers", default="all", show_default=True, help="Comma-separated layers or 'all'.")
@click.option("--eval-split", default="test", show_default=True,
              help="Unseen-voice split the phone probe is tested on.")
@UTTERANCES
@FRAMES
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True,
              help="L-BFGS iterations of each linear classifier.")
@CMVN
@OUT
@click.pass_context
def probe(ctx, corpus, spec, layers, eval_split, utterances, frames_per_utterance, steps, cmvn, out) -> None:
    """Linear phone and voice probes of each layer (DIAGNOSTIC: reads the transcripts).

    The phone probe is trained on train-audio frames labelled by the scoring
    transcripts' phone alignments and tested on --eval-split (unseen voices);
    the voice probe is trained on half of the train-audio utterances and tested
    on the other half. Writes probe.json, probe.tsv and probe.png to --out.

    \b
    Example:
      usrasr analyze probe --corpus data/default --encoder exp/pretrain --out exp/analyze/probe
    """
    from usrasr.analyze.probe import plot_probe, probe_layers, probe_table
    from usrasr.utils.io import write_json_atomic, write_text_atomic

    record = probe_layers(corpus, spec, layers, eval_split, utterances, frames_per_utterance, steps, cmvn,
                          ctx.obj["seed"])
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "probe.json", record)
    table = probe_table(record)
    write_text_atomic(out / "probe.tsv", table)
    plot_probe(record, out / "probe.png")
    click.echo(table, nl=False)


@analyze.command()
@click.argument("experiments", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--probe", "probes", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A probe.json of `usrasr analyze probe` (repeatable): the probe accuracy of each run's layer.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Also write correlation.json and correlation.tsv here.")
def correlate(experiments, probes, out) -> None:
    """Spearman rank correlations between measures across `usrasr train` experiments.

    Each EXPERIMENT is a finished `usrasr train` run (scored): its units' PNMI,
    oracle-HMM PER and seq-CE PER on test, the pretraining loss and masked
    accuracy of its encoder, and (with --probe) the probe accuracies of its layer.

    \b
    Example:
      usrasr analyze correlate exp/layer0 exp/layer1 exp/layer2 --probe exp/analyze/probe/probe.json
    """
    from usrasr.analyze.correlate import (
        correlate_experiments,
        rows_table,
        spearman_text,
    )
    from usrasr.utils.io import write_json_atomic, write_text_atomic

    record = correlate_experiments(list(experiments), list(probes))
    text = rows_table(record) + "\n" + spearman_text(record)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "correlation.json", record)
        write_text_atomic(out / "correlation.tsv", text)
    click.echo(text, nl=False)
