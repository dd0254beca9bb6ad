"""``usrasr decode``: audio -> text through an HLG (words) or HP (phones) graph."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from usrasr.decode.search import SearchOptions
from usrasr.utils.errors import UsrasrError

_PATH = click.Path(path_type=Path)
_EXISTING = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.argument("files", nargs=-1, type=str)
@click.option("--model", "model_path", type=_EXISTING, help="Acoustic model checkpoint (.pt).")
@click.option("--lang", "lang_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Lang dir [default: recorded in the model, or lang/ beside it].")
@click.option("--lm", type=_PATH, help="Word ARPA LM for HLG [default: the word LM in <lang>/../lm/].")
@click.option("--phone-lm", type=_PATH, help="Phone ARPA LM for HP [default: the highest-order phone LM in <lang>/../lm/].")
@click.option("--graph-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where HLG.fst / HP.fst are cached [default: the graphs/ of the training run that made the "
                   "model, else graphs/ beside it].")
@click.option("--force", is_flag=True, help="Recompile graphs even if the cache is up to date.")
@click.option("--compile-only", is_flag=True, help="Only build HLG.fst (and HP.fst when a phone LM exists).")
@click.option("--unit", type=click.Choice(["word", "phone"]), default="word", show_default=True,
              help="Decode to words (HLG) or phones (HP, for PER).")
@click.option("--cuts", type=_EXISTING, help="Decode a Lhotse CutSet (stored fbank, or audio).")
@click.option("--wav-scp", type=_EXISTING, help="Decode a Kaldi wav.scp ('id path' lines).")
@click.option("--beam", type=float, default=SearchOptions.beam, show_default=True, help="Search beam (graph cost units).")
@click.option("--max-active", type=int, default=SearchOptions.max_active, show_default=True, help="Most active states per frame.")
@click.option("--lm-scale", type=click.FloatRange(min=0, min_open=True),
              help="Weight of the graph (LM) against the acoustic log-posteriors [default: the scale recorded "
                   "with the model for --unit's graph, else 1].")
@click.option("--blank-penalty", type=float, default=SearchOptions.blank_penalty, show_default=True,
              help="Subtracted from the blank log-posterior (positive: fewer deletions).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Utterances per network forward.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes that search a batch's utterances side by side (the search is single-threaded); "
                   "results then come out a batch at a time.")
@click.option("--device", default="auto", show_default=True, help="Network device: auto, cpu, cuda, cuda:N (search runs on CPU).")
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True,
              help="text: 'id<TAB>text'; jsonl: also per-unit times and confidences.")
@click.option("--output", type=_PATH, help="Write results here (Kaldi text, or JSON lines) instead of stdout; "
              "checked before decoding, filled as it goes in OUTPUT.partial, which is kept if decoding stops.")
def decode(
    files, model_path, lang_dir, lm, phone_lm, graph_dir, force, compile_only, unit, cuts, wav_scp,
    beam, max_active, lm_scale, blank_penalty, batch_size, jobs, device, fmt, output,
):
    """Decode audio to text.

    FILES are audio files (any common format and rate; resampled to 16 kHz,
    stereo averaged), or '-' for stdin lines that are 'path' or 'id path'.
    The id of a file is its name without extension (spaces become '_').  Results go to stdout as
    each utterance finishes; progress and warnings go to stderr.  A bad input
    is skipped with a warning, and the exit status is non-zero at the end.

    \b
    Examples:
      usrasr decode --model exp/model.pt a.wav b.flac
      ls audio/*.wav | usrasr decode --model exp/model.pt - | cut -f2
      usrasr decode --model exp/model.pt --cuts data/default/manifests/cuts_test.jsonl.gz --output hyp.txt
      usrasr decode --compile-only --lang data/default/lang --graph-dir exp/graphs
    """
    from usrasr.decode.audio import collect_utterances
    from usrasr.decode.pipeline import compile_graphs, decode_utterances

    if compile_only:
        if lang_dir is None or graph_dir is None:
            raise UsrasrError("--compile-only needs --lang DIR and --graph-dir DIR (graphs are never written "
                              "into a corpus)")
        for path in compile_graphs(lang_dir, lm, phone_lm, graph_dir, force):
            click.echo(str(path))
        return
    if model_path is None:
        raise UsrasrError("--model is required (or use --compile-only)")
    utterances = collect_utterances(files, wav_scp, cuts, sys.stdin)
    options = SearchOptions(beam=beam, max_active=max_active, lm_scale=lm_scale, blank_penalty=blank_penalty)
    report = decode_utterances(utterances, model_path, lang_dir, unit, lm if unit == "word" else phone_lm, graph_dir,
                               options, device, batch_size, fmt, output, force, jobs)
    if report.failed:
        raise UsrasrError(f"{len(report.failed)} of {report.inputs} input(s) could not be decoded (see warnings above)")
