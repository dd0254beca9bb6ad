"""Model + graph search: utterances in, hypotheses out, one bad input costing only itself.

:func:`decode_utterances` is what ``usrasr decode`` runs: it finds the graphs
(the training run's, next to the model), decodes in batches, warns per
utterance by id, and writes ``id<TAB>text`` or JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from usrasr.corpus.features import SAMPLE_RATE
from usrasr.decode.audio import SECONDS_PER_ROW, BadInput, Utterance, load_input_and_rate
from usrasr.decode.search import GraphSearch, Hypothesis, SearchOptions, Unit
from usrasr.graph.hlg import Lang, ensure_graph, load_graph, read_lang
from usrasr.models.acoustic import LoadedModel, load_model
from usrasr.utils.console import log, progress
from usrasr.utils.device import resolve_device
from usrasr.utils.errors import UsrasrError
from usrasr.corpus.layout import CorpusLayout

GRAPH_KINDS = {"word": "HLG", "phone": "HP"}
# Shorter than any spoken syllable: such input is reported, not decoded to an empty line.
MIN_SECONDS = 0.1


def resolve_lang_dir(model_path: Path | None, loaded: LoadedModel | None, option: Path | None) -> Path:
    """``--lang``, else the lang dir recorded in the model, else ``lang/`` beside it or its own dir."""
    if option is not None:
        return option
    candidates = []
    if loaded is not None and loaded.lang_dir is not None:
        candidates.append(loaded.lang_dir)
    if model_path is not None:
        candidates += [model_path.parent / "lang", model_path.parent]
    for candidate in candidates:
        if (candidate / "tokens.txt").is_file():
            return candidate
    raise UsrasrError("no lang dir recorded in the model or found beside it; pass --lang DIR")


def default_lm(lang_dir: Path, unit: Unit, missing_ok: bool = False) -> Path | None:
    """The decoding LM prepare wrote for ``unit`` into ``<corpus>/lm/``, next to ``<corpus>/<lang>``
    (for phones the highest order there)."""
    return CorpusLayout(lang_dir.parent).decoding_lm(unit, missing_ok)


def default_graph_dir(model_path: Path) -> Path:
    """Where a model's graphs are: the ``graphs/`` of the training run that made it
    (``usrasr train`` puts models one level below it), else ``graphs/`` beside the model.
    Never a corpus: graphs are per experiment."""
    for run_dir in (model_path.parent, model_path.parent.parent):
        if (run_dir / "graphs").is_dir():
            return run_dir / "graphs"
    return model_path.parent / "graphs"


def compile_graphs(lang_dir: Path, lm: Path | None, phone_lm: Path | None, graph_dir: Path,
                   force: bool = False) -> list[Path]:
    """HLG (word LM) and HP (phone LM) for ``lang_dir``, each where an LM is given or prepared."""
    lang = read_lang(lang_dir)
    built = []
    for explicit in (lm, phone_lm):
        require_file(explicit, "LM")
    for unit, explicit in (("word", lm), ("phone", phone_lm)):
        path = explicit or default_lm(lang_dir, unit, missing_ok=True)
        if path is not None:
            built.append(ensure_graph(GRAPH_KINDS[unit], lang, path, graph_dir, force))
    if not built:
        raise UsrasrError(f"no LM given (--lm, --phone-lm) and none in {lang_dir.parent / 'lm'}")
    return built


def require_file(path: Path | None, what: str) -> None:
    """A path the user named must be a file: a typo never falls back to a cached graph."""
    if path is not None and not path.is_file():
        raise UsrasrError(f"{what} {path} not found" + (" (it is a directory)" if path.is_dir() else ""))


@contextlib.contextmanager
def output_file(output: Path | None):
    """Where decoded lines go: stdout, or ``output``, checked writable before any decoding.

    Lines are written (and flushed) to ``OUTPUT.partial`` as each utterance finishes, which
    becomes ``output`` at the end; after an interruption or error it keeps every line decoded so far.
    """
    if output is None:
        yield None
        return
    if output.is_dir():
        raise UsrasrError(f"--output {output} is a directory; name a file")
    partial = output.with_name(output.name + ".partial")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        f = open(partial, "w", encoding="utf-8")
    except OSError as e:
        raise UsrasrError(f"cannot write --output {output}: {e.strerror or e}") from None
    try:
        with f:
            yield f
    except BaseException:
        if partial.stat().st_size:
            log.warning("stopped: the utterances decoded so far are in %s", partial)
        else:
            partial.unlink()
        raise
    os.replace(partial, output)


def check_tokens(loaded: LoadedModel, lang: Lang) -> None:
    if loaded.tokens != lang.model_tokens:
        raise UsrasrError(
            f"the model's {len(loaded.tokens)} tokens differ from the {lang.num_model_tokens} "
            f"of {lang.directory}/tokens.txt; use the lang dir the model was trained with"
        )


@dataclass
class Decoded:
    """The outcome for one utterance: a hypothesis, or why there is none."""

    utterance: Utterance
    hypothesis: Hypothesis | None = None
    error: str | None = None
    duration: float = 0.0  # seconds of the model's input
    source_rate: int = SAMPLE_RATE  # the input's own sample rate, before resampling


class Recognizer:
    """Features (or the waveform, as the model reads) -> batched network forward -> per-utterance
    graph search (always on CPU)."""

    def __init__(self, model: torch.nn.Module, search: GraphSearch, device: torch.device, workers: int = 1):
        """``workers``: processes that search each batch's utterances side by side."""
        self.model = model.to(device).eval()
        self.search = search
        self.device = device
        self.workers = workers

    @torch.inference_mode()
    def log_probs(self, feats: list[torch.Tensor]) -> list[np.ndarray]:
        """One padded forward pass; returns each utterance's ``(T', V)`` log-posteriors."""
        lengths = torch.tensor([len(f) for f in feats], device=self.device)
        batch = pad_sequence(feats, batch_first=True).to(self.device)
        log_probs, out_lens = self.model(batch, lengths)
        log_probs = log_probs.float().cpu().numpy()
        return [log_probs[i, : int(n)] for i, n in enumerate(out_lens.cpu())]

    def decode(self, utterances: Iterable[Utterance], batch_size: int = 8) -> Iterator[Decoded]:
        """Yield one :class:`Decoded` per utterance, in input order, as each search finishes."""
        pending: list[Utterance] = []
        for utterance in utterances:
            pending.append(utterance)
            if len(pending) == batch_size:
                yield from self._decode_batch(pending)
                pending = []
        if pending:
            yield from self._decode_batch(pending)

    def _decode_batch(self, utterances: list[Utterance]) -> Iterator[Decoded]:
        results: list[Decoded] = []
        feats: list[torch.Tensor] = []
        for utterance in utterances:
            try:
                f, rate = load_input_and_rate(utterance, self.model.input)
                feats.append(f)
                results.append(Decoded(utterance, duration=len(f) * SECONDS_PER_ROW[self.model.input],
                                       source_rate=rate))
            except BadInput as e:
                results.append(Decoded(utterance, error=str(e)))
        posteriors = iter(self.log_probs(feats) if feats else [])
        to_search: dict[int, np.ndarray] = {}  # result index -> its log-posteriors
        for i, result in enumerate(results):
            if result.error is None:
                scores = next(posteriors)
                if len(scores) == 0 or result.duration < MIN_SECONDS:
                    result.error = (f"too short for the model ({result.duration:.2f} s; speech needs at least "
                                    f"{MIN_SECONDS:.2f} s)")
                else:
                    to_search[i] = scores
        # side by side, the batch's results go out together; one at a time, each as its search ends
        found = (dict(zip(to_search, self.search.search_all(list(to_search.values()), self.workers)))
                 if self.workers > 1 else {})
        for i, result in enumerate(results):
            if i in to_search:
                result.hypothesis = found[i] if self.workers > 1 else self.search.search(to_search[i])
            yield result


def build_recognizer(
    loaded: LoadedModel,
    lang_dir: Path,
    unit: Unit,
    lm: Path | None,
    graph_dir: Path | None,
    options: SearchOptions,
    device: torch.device,
    force: bool = False,
    workers: int = 1,
) -> Recognizer:
    """Check the model against the lang dir, get (or compile) the graph, and wire it up
    (``workers``: see :class:`Recognizer`)."""
    lang = read_lang(lang_dir)
    check_tokens(loaded, lang)
    if options.lm_scale is None:
        options = replace(options, lm_scale=loaded.default_lm_scale(unit))
    graph = load_graph(ensure_graph(GRAPH_KINDS[unit], lang, lm, graph_dir, force))
    search = GraphSearch(graph, lang, unit, options, seconds_per_frame=loaded.model.frame_shift)
    return Recognizer(loaded.model, search, device, workers)


def _without_duplicate_ids(utterances: list[Utterance]) -> tuple[list[Utterance], list[Utterance]]:
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


def format_record(decoded: Decoded, unit: Unit, fmt: str) -> str:
    """``id<TAB>text`` (fmt "text") or one JSON line with per-unit times and confidences."""
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


@dataclass
class DecodeReport:
    inputs: int
    decoded: int = 0
    failed: list[str] = field(default_factory=list)  # ids of inputs that gave no hypothesis


def decode_utterances(
    utterances: list[Utterance],
    model_path: Path,
    lang_dir: Path | None = None,
    unit: Unit = "word",
    lm: Path | None = None,
    graph_dir: Path | None = None,
    options: SearchOptions = SearchOptions(),
    device: str = "auto",
    batch_size: int = 8,
    fmt: str = "text",
    output: Path | None = None,
    force: bool = False,
    jobs: int = 1,
) -> DecodeReport:
    """Decode ``utterances``; lines go to stdout as each one finishes, or to ``output`` (Kaldi
    ``text``, or JSON lines; see :func:`output_file`).  Bad inputs are skipped with a
    warning naming them and listed in the report.  ``jobs`` > 1 searches each batch's
    utterances in that many processes."""
    require_file(lm, "LM")
    with output_file(output) as sink:
        return _decode_into(sink, utterances, model_path, lang_dir, unit, lm, graph_dir, options, device,
                            batch_size, fmt, force, jobs)


def _decode_into(sink, utterances, model_path, lang_dir, unit, lm, graph_dir, options, device, batch_size, fmt,
                 force, jobs) -> DecodeReport:
    torch_device = resolve_device(device)
    loaded = load_model(model_path, torch_device)
    lang_dir = resolve_lang_dir(model_path, loaded, lang_dir)
    recognizer = build_recognizer(loaded, lang_dir, unit, lm or default_lm(lang_dir, unit),
                                  graph_dir or default_graph_dir(model_path), options, torch_device, force, jobs)
    unique, duplicates = _without_duplicate_ids(utterances)
    report = DecodeReport(len(utterances), failed=[u.id for u in duplicates])
    low_rate_warned = False
    with progress() as bar:
        task = bar.add_task("decode", total=len(unique), status="")
        for decoded in recognizer.decode(unique, batch_size):
            bar.advance(task)
            utt = decoded.utterance
            if decoded.error is not None:
                log.warning("skipping %s: %s", utt.source, decoded.error)
                report.failed.append(utt.id)
                continue
            if decoded.source_rate < SAMPLE_RATE and not low_rate_warned:
                low_rate_warned = True
                log.warning("%s is %d Hz audio, upsampled to %d Hz: the model was trained on %d kHz speech, and "
                            "band-limited input lacks everything above %d Hz, so expect clearly lower accuracy "
                            "(said once per run)", utt.source, decoded.source_rate, SAMPLE_RATE, SAMPLE_RATE // 1000,
                            decoded.source_rate // 2)
            if not decoded.hypothesis.reached_final:
                log.warning("%s: reached no final graph state; its best partial path is used "
                            "(a larger --beam may help)", utt.id)
            report.decoded += 1
            line = format_record(decoded, unit, fmt)
            if sink is None:
                print(line, flush=True)  # pipelines see each utterance at once
            else:
                sink.write((line if fmt == "jsonl" else line.replace("\t", " ", 1).rstrip()) + "\n")
                sink.flush()
    return report
