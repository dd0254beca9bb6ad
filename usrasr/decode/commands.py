"""``usrasr decode``: audio -> text through an HLG (words) or HP (phones) graph."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from usrasr.decode.search import SearchOptions
from usrasr.utils.console import log, progress
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_open

_PATH = click.Path(path_type=Path)
_EXISTING = click.Path(exists=True, dir_okay=False, path_type=Path)


def _compile_only(lang_dir: Path | None, lm: Path | None, phone_lm: Path | None, graph_dir: Path | None, force: bool) -> None:
    from usrasr.decode.pipeline import default_lm
    from usrasr.graph.hlg import ensure_graph, read_lang

    if lang_dir is None:
        raise UsrasrError("--compile-only needs --lang DIR")
    lang = read_lang(lang_dir)
    built = []
    for kind, unit, explicit in (("HLG", "word", lm), ("HP", "phone", phone_lm)):
        path = explicit or default_lm(lang_dir, unit, missing_ok=True)
        if path is not None:
            built.append(ensure_graph(kind, lang, path, graph_dir, force))
    if not built:
        raise UsrasrError(f"no LM given (--lm, --phone-lm) and none in {lang_dir.parent / 'lm'}")
    for path in built:
        click.echo(str(path))


def _collect_utterances(files: tuple[str, ...], wav_scp: Path | None, cuts: Path | None) -> list:
    from usrasr.decode import audio

    utterances = []
    for item in files:
        utterances += audio.utterances_from_stream(sys.stdin, "stdin") if item == "-" else audio.utterances_from_paths([item])
    if wav_scp is not None:
        utterances += audio.utterances_from_lines(wav_scp.read_text(encoding="utf-8").splitlines(), str(wav_scp))
    if cuts is not None:
        utterances += audio.utterances_from_cuts(cuts)
    if not utterances:
        raise UsrasrError("nothing to decode: give audio FILES, '-', --cuts or --wav-scp")
    return utterances


def _without_duplicate_ids(utterances: list) -> tuple[list, list]:
    """(first utterance of each id, the later ones): a repeated id would make the output ambiguous."""
    seen: set[str] = set()
    unique, duplicates = [], []
    for u in utterances:
        if u.id in seen:
            log.warning("skipping %s: duplicate id '%s'", u.source, u.id)
            duplicates.append(u)
        else:
            seen.add(u.id)
            unique.append(u)
    return unique, duplicates


def _record(decoded, unit: str, fmt: str) -> str:
    hyp = decoded.hypothesis
    if fmt == "text":
        return f"{decoded.utterance.id}\t{hyp.text}"
    return json.dumps(
        {
            "id": decoded.utterance.id,
            "text": hyp.text,
            "duration": round(decoded.duration, 3),
            f"{unit}s": [{unit: u.label, "start": u.start, "end": u.end, "confidence": u.confidence} for u in hyp.units],
        }
    )


@click.command()
@click.argument("files", nargs=-1, type=str)
@click.option("--model", "model_path", type=_EXISTING, help="Acoustic model checkpoint (.pt).")
@click.option("--lang", "lang_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Lang dir [default: recorded in the model, or lang/ beside it].")
@click.option("--lm", type=_PATH, help="Word ARPA LM for HLG [default: the word LM in <lang>/../lm/].")
@click.option("--phone-lm", type=_PATH, help="Phone ARPA LM for HP [default: the phone LM in <lang>/../lm/].")
@click.option("--graph-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where HLG.fst / HP.fst are cached [default: the lang dir].")
@click.option("--force", is_flag=True, help="Recompile graphs even if the cache is up to date.")
@click.option("--compile-only", is_flag=True, help="Only build HLG.fst (and HP.fst when a phone LM exists).")
@click.option("--unit", type=click.Choice(["word", "phone"]), default="word", show_default=True,
              help="Decode to words (HLG) or phones (HP, for PER).")
@click.option("--cuts", type=_EXISTING, help="Decode a Lhotse CutSet (stored fbank, or audio).")
@click.option("--wav-scp", type=_EXISTING, help="Decode a Kaldi wav.scp ('id path' lines).")
@click.option("--beam", type=float, default=SearchOptions.beam, show_default=True, help="Search beam (graph cost units).")
@click.option("--max-active", type=int, default=SearchOptions.max_active, show_default=True, help="Most active states per frame.")
@click.option("--lm-scale", type=click.FloatRange(min=0, min_open=True), default=SearchOptions.lm_scale, show_default=True,
              help="Weight of the graph (LM) against the acoustic log-posteriors.")
@click.option("--blank-penalty", type=float, default=SearchOptions.blank_penalty, show_default=True,
              help="Subtracted from the blank log-posterior (positive: fewer deletions).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Utterances per network forward.")
@click.option("--device", default="auto", show_default=True, help="Network device: auto, cpu, cuda, cuda:N (search runs on CPU).")
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True,
              help="text: 'id<TAB>text'; jsonl: also per-unit times and confidences.")
@click.option("--output", type=_PATH, help="Write results here (Kaldi text, or JSON lines) instead of stdout.")
def decode(
    files, model_path, lang_dir, lm, phone_lm, graph_dir, force, compile_only, unit, cuts, wav_scp,
    beam, max_active, lm_scale, blank_penalty, batch_size, device, fmt, output,
):
    """Decode audio to text.

    FILES are audio files (any common format and rate; resampled to 16 kHz,
    stereo averaged), or '-' for stdin lines that are 'path' or 'id path'.
    The id of a file is its name without extension.  Results go to stdout as
    each utterance finishes; progress and warnings go to stderr.  A bad input
    is skipped with a warning, and the exit status is non-zero at the end.

    \b
    Examples:
      usrasr decode --model exp/model.pt a.wav b.flac
      ls audio/*.wav | usrasr decode --model exp/model.pt - | cut -f2
      usrasr decode --model exp/model.pt --cuts data/test_cuts.jsonl.gz --output hyp.txt
      usrasr decode --compile-only --lang data/lang --lm data/lm/word_3gram.arpa
    """
    if compile_only:
        _compile_only(lang_dir, lm, phone_lm, graph_dir, force)
        return
    if model_path is None:
        raise UsrasrError("--model is required (or use --compile-only)")
    from usrasr.decode.pipeline import build_recognizer, default_lm, resolve_lang_dir
    from usrasr.utils.device import resolve_device
    from usrasr.models.acoustic import load_model

    utterances = _collect_utterances(files, wav_scp, cuts)
    torch_device = resolve_device(device)
    loaded = load_model(model_path, torch_device)
    lang_dir = resolve_lang_dir(model_path, loaded, lang_dir)
    options = SearchOptions(beam=beam, max_active=max_active, lm_scale=lm_scale, blank_penalty=blank_penalty)
    chosen_lm = (lm if unit == "word" else phone_lm) or default_lm(lang_dir, unit)
    recognizer = build_recognizer(loaded, lang_dir, unit, chosen_lm, graph_dir, options, torch_device, force)

    unique, failed = _without_duplicate_ids(utterances)
    lines: list[str] = []
    partial = 0
    with progress() as bar:
        task = bar.add_task("decode", total=len(unique), status="")
        for decoded in recognizer.decode(unique, batch_size):
            bar.advance(task)
            if decoded.error is not None:
                log.warning("skipping %s: %s", decoded.utterance.source, decoded.error)
                failed.append(decoded.utterance)
                continue
            partial += not decoded.hypothesis.reached_final
            line = _record(decoded, unit, fmt)
            if output is None:
                click.echo(line)  # flushes, so pipelines see each utterance at once
            else:
                lines.append(line if fmt == "jsonl" else line.replace("\t", " ", 1).rstrip())
    if partial:
        log.warning("%d utterance(s) reached no final graph state; their best partial path was used "
                    "(a larger --beam may help)", partial)
    if output is not None:
        with atomic_open(output) as f:
            f.writelines(line + "\n" for line in lines)
    if failed:
        raise UsrasrError(f"{len(failed)} of {len(utterances)} input(s) could not be decoded (see warnings above)")
