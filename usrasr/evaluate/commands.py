"""``usrasr evaluate REF HYP``: Kaldi-style WER/PER/CER report."""

from __future__ import annotations

from pathlib import Path

import click



@click.command()
@click.argument("ref", type=str)
@click.argument("hyp", type=str)
@click.option("--unit", type=click.Choice(["word", "phone", "char"]), default="word", show_default=True,
              help="Score words or characters (after text normalisation) or phones.")
@click.option("--utt2spk", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Kaldi utt2spk for the per-speaker breakdown (overrides speakers from manifests).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write errs-NAME.txt (alignments) and wer-NAME.json (summary) here.")
@click.option("--name", help="NAME in the output files [default: HYP's file name].")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, help="How many frequent errors to list.")
def evaluate(ref, hyp, unit, utt2spk, out_dir, name, top):
    """Score HYP against REF and print Kaldi compute-wer lines.

    REF and HYP are Kaldi text files ('id words...'), Lhotse manifests
    (cuts or supervisions with text), or `usrasr decode --format jsonl`
    output; '-' reads one of them from stdin.  With --unit phone, a
    manifest REF is scored on its supervisions' custom["phones"].  Per-speaker and per-voice
    tables follow when REF carries speakers/voices (or --utt2spk is given),
    then the most frequent errors.

    \b
    Example:
      ls audio/*.wav | usrasr decode --model m.pt - | usrasr evaluate ref.txt -
    """
    from usrasr.evaluate.report import evaluate_transcripts

    click.echo("\n".join(evaluate_transcripts(ref, hyp, unit, utt2spk, out_dir, name, top)))
