"""``usrasr evaluate REF HYP``: Kaldi-style WER/PER/CER report."""

from __future__ import annotations

import re
from pathlib import Path

import click

from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError


def _default_name(hyp: str) -> str:
    if hyp == "-":
        return "stdin"
    return re.sub(r"(\.(txt|jsonl|json|gz))+$", "", Path(hyp).name) or "hyp"


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
    if ref == "-" and hyp == "-":
        raise UsrasrError("REF and HYP cannot both be stdin")
    from usrasr.evaluate.report import breakdown_lines, compute_wer_lines, frequent_error_lines, id_list, write_outputs
    from usrasr.evaluate.scoring import compute_error_rate
    from usrasr.evaluate.transcripts import read_transcripts, read_utt2spk

    refs = read_transcripts(ref)
    hyps = read_transcripts(hyp)
    if not refs.texts:
        raise UsrasrError(f"no references in {ref}")
    stats = compute_error_rate(refs.for_unit(unit), hyps.texts, unit)
    if stats.missing:
        log.warning("%d reference(s) have no hypothesis, scored as all deletions: %s", len(stats.missing), id_list(stats.missing))
    if stats.extra:
        log.warning("%d hypothesis id(s) are not in the references, ignored: %s", len(stats.extra), id_list(stats.extra))

    speakers = {**refs.speakers, **(read_utt2spk(utt2spk) if utt2spk else {})}
    breakdowns = {kind: stats.by_group(groups) for kind, groups in (("speaker", speakers), ("voice", refs.voices)) if groups}
    lines = compute_wer_lines(stats)
    for kind, groups in breakdowns.items():
        lines += ["", *breakdown_lines(kind, groups)]
    frequent = frequent_error_lines(stats, top)
    if frequent:
        lines += ["", *frequent]
    click.echo("\n".join(lines))
    if out_dir is not None:
        for path in write_outputs(out_dir, name or _default_name(hyp), stats, breakdowns, top):
            log.info("wrote %s", path)
