"""``usrasr features``: a thin Click layer over :func:`usrasr.extract.features.extract_features`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--encoder", type=click.Path(path_type=Path), required=True,
              help="A transformers model dir (wav2vec 2.0, HuBERT, WavLM, data2vec-audio), a `usrasr pretrain` "
                   "output, or features from elsewhere (feats.scp, .npy folder) to convert.")
@click.option("--layer", type=int, required=True,
              help="Which layer: 0 = the convolutional features, N = the output of transformer block N.")
@click.option("--cuts", "cuts_paths", type=click.Path(dir_okay=False, path_type=Path), required=True, multiple=True,
              help="Lhotse cuts manifest(s) with recordings, e.g. <corpus>/manifests/cuts_train_audio.jsonl.gz; "
                   "repeat for more.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output dir: cuts_<name>.jsonl.gz per --cuts, pointing at the stored features.")
@click.option("--storage", type=click.Choice(["lilcom", "numpy"]), default="lilcom", show_default=True,
              help="lilcom: compressed chunky files (small; values rounded to steps of 2^-8); numpy: one .npy per cut.")
@click.option("--shard-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Cuts per shard: an interrupted run redoes at most one shard.")
@click.option("--batch-seconds", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Audio per model batch (for models that read an attention mask; others go one cut at a time).")
@click.option("--device", default="auto", show_default=True,
              help="Where a transformers model runs: auto (CUDA when available), cpu, cuda, cuda:1, ...")
def features(encoder, layer, cuts_paths, out_dir, storage, shard_size, batch_seconds, device) -> None:
    """Compute one layer's features of each cut once; `usrasr train --units encoder --set encoder=OUT`
    then reads them without the model.  Rerunning the same command resumes where it stopped.

    \b
    Example:
      usrasr features --encoder wav2vec2-large --layer 15 --out feats/w2v-l15 \\
        --cuts data/default/manifests/cuts_train_audio.jsonl.gz --cuts data/default/manifests/cuts_test.jsonl.gz
    """
    from usrasr.extract.features import extract_features

    for name, row in extract_features(encoder, layer, cuts_paths, out_dir, storage, shard_size,
                                      batch_seconds, device).items():
        click.echo(f"{name}: {row['cuts']} cuts, {row['seconds']:.1f} s of audio, {row['dim']}-dim frames every "
                   f"{row['frame_shift'] * 1000:g} ms; computed in {row['compute_seconds']:.1f} s "
                   f"({row['cuts_computed']} cuts, {row['shards_reused']} shards reused) -> {row['manifest']}")
