"""``usrasr bench decode``: real-time factors of features, network and graph search on one core.

The search target is RTF <= 0.01 per core: decoding must cost little next
to the network.  ``--synthetic`` needs no files: a random lang (phones,
lexicon, Zipf-distributed word trigram), an untrained TDNN timed on random
features, and CTC-like posteriorgrams of sentences sampled from the LM
text (peaky, with noise) for the search, so the search sees realistic
posteriors rather than the flat output of an untrained network.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from usrasr.decode.search import SearchOptions

_EXISTING = click.Path(exists=True, dir_okay=False, path_type=Path)


@dataclass
class Timings:
    audio: float = 0.0
    features: float = 0.0
    network: float = 0.0
    search: float = 0.0
    utterances: int = 0


def _measure(recognizer, timings: Timings, feats: torch.Tensor, posteriors: np.ndarray | None = None) -> str:
    """Time one utterance's forward pass and search (the search on ``posteriors`` when given); return the text."""
    from usrasr.corpus.features import FRAME_SHIFT

    start = time.perf_counter()
    (network_output,) = recognizer.log_probs([feats])
    timings.network += time.perf_counter() - start
    start = time.perf_counter()
    hypothesis = recognizer.search.search(network_output if posteriors is None else posteriors)
    timings.search += time.perf_counter() - start
    timings.audio += len(feats) * FRAME_SHIFT
    timings.utterances += 1
    return hypothesis.text


def _print_report(t: Timings, graph, options: SearchOptions) -> None:
    click.echo(f"audio     {t.audio:9.1f} s in {t.utterances} utterances, 1 thread (torch.set_num_threads(1))")
    for name, seconds in (("features", t.features), ("network", t.network), ("search", t.search)):
        if seconds:
            click.echo(f"{name:<9} RTF {seconds / t.audio:.4f}  ({seconds:.2f} s)")
    verdict = "meets" if t.search / t.audio <= 0.01 else "MISSES"
    click.echo(f"search {verdict} the target RTF <= 0.01 per core "
               f"(beam {options.beam}, max-active {options.max_active}, lm-scale {options.lm_scale})")
    click.echo(f"graph     {graph.num_states} states, {sum(graph.num_arcs(s) for s in range(graph.num_states))} arcs")


def _synthetic_lang(directory: Path, num_words: int, num_sentences: int, rng: random.Random) -> tuple[Path, list[list[str]]]:
    """A lang dir in the prepare layout plus a word trigram; returns (LM path, LM sentences)."""
    from usrasr.lang.lexicon import write_lang_dir
    from usrasr.lang.phones import ARPABET

    # No pronunciation equals or prefixes another, so no #k symbols are needed beyond #0.
    words: dict[str, tuple[str, ...]] = {}
    words_by_pron: dict[tuple[str, ...], str] = {}
    prefixes: set[tuple[str, ...]] = set()  # every pronunciation and its proper prefixes
    while len(words) < num_words:
        pron = tuple(rng.choice(ARPABET) for _ in range(rng.randint(2, 7)))
        if pron not in prefixes and not any(pron[:i] in words_by_pron for i in range(1, len(pron))):
            prefixes.update(pron[:i] for i in range(1, len(pron) + 1))
            words_by_pron[pron] = f"W{len(words):05d}"
            words[words_by_pron[pron]] = pron
    write_lang_dir(directory, words)
    names = list(words)
    zipf = [1.0 / (rank + 1) for rank in range(len(names))]
    sentences = [rng.choices(names, zipf, k=rng.randint(4, 15)) for _ in range(num_sentences)]
    corpus = directory / "corpus.txt"
    corpus.write_text("".join(" ".join(s) + "\n" for s in sentences))
    lm = directory / "word_3gram.arpa"
    subprocess.run(
        [sys.executable, "-m", "kaldingram.cli", "train", "--ngram-order", "3", "--text", str(corpus), "--lm", str(lm)],
        check=True, capture_output=True,
    )
    return lm, sentences


def _posteriorgram(lang, words: list[str], rng: random.Random, noise: float) -> np.ndarray:
    """CTC-like log-posteriors for a word sequence: each phone 1-3 frames, blanks between.

    Each frame puts ``1 - noise`` on its token and spreads ``noise`` by a flat
    Dirichlet draw: the larger ``noise``, the less sure the "model" and the
    more paths the search keeps alive.
    """
    frames: list[int] = []
    for word in words:
        for phone in lang.pronunciations[word][0]:
            frames += [lang.tokens[phone]] * rng.randint(1, 3) + [0] * rng.randint(1, 3)
    V = lang.num_model_tokens
    probs = np.random.default_rng(rng.randrange(2**32)).dirichlet(np.ones(V), size=len(frames)) * noise
    probs[np.arange(len(frames)), frames] += 1 - noise
    return np.log(probs).astype(np.float32)


def _bench_synthetic(
    options: SearchOptions, num_words: int, num_utterances: int, noise: float, workdir: Path
) -> tuple[Timings, object, list[str]]:
    from usrasr.corpus.features import NUM_MEL_BINS
    from usrasr.decode.pipeline import build_recognizer
    from usrasr.evaluate.scoring import compute_error_rate
    from usrasr.graph.hlg import read_lang
    from usrasr.models.acoustic import AcousticModelConfig, LoadedModel, build_model

    rng = random.Random(0)
    lm, sentences = _synthetic_lang(workdir, num_words, num_sentences=5 * num_words, rng=rng)
    lang = read_lang(workdir)
    config = AcousticModelConfig(num_tokens=lang.num_model_tokens, arch="tdnn", subsampling=2)
    loaded = LoadedModel(build_model(config).eval(), lang.model_tokens, workdir)
    recognizer = build_recognizer(loaded, workdir, "word", lm, None, options, torch.device("cpu"))
    timings, refs, hyps = Timings(), {}, {}
    for i, words in enumerate(rng.sample(sentences, num_utterances)):
        posteriors = _posteriorgram(lang, words, rng, noise)
        feats = torch.randn(len(posteriors) * config.subsampling, NUM_MEL_BINS)
        refs[str(i)] = " ".join(words)
        hyps[str(i)] = _measure(recognizer, timings, feats, posteriors)
    wer = compute_error_rate(refs, hyps).error_rate
    notes = [f"synthetic posteriorgrams (noise {noise}) decoded with %WER {wer:.2f}: "
             "a check that the search is right, not only fast"]
    return timings, recognizer, notes


def _bench_files(options: SearchOptions, model_path: Path, lang_dir: Path | None, lm: Path | None, utterances) -> tuple[Timings, object, list[str]]:
    from usrasr.decode.audio import BadInput, load_input_and_rate
    from usrasr.decode.pipeline import build_recognizer, default_graph_dir, default_lm, resolve_lang_dir
    from usrasr.models.acoustic import load_model
    from usrasr.utils.errors import UsrasrError

    loaded = load_model(model_path, "cpu")
    lang_dir = resolve_lang_dir(model_path, loaded, lang_dir)
    graph_dir = default_graph_dir(model_path)
    recognizer = build_recognizer(loaded, lang_dir, "word", lm or default_lm(lang_dir, "word"), graph_dir, options,
                                  torch.device("cpu"))
    timings = Timings()
    try:
        # Warm-up, untimed: the first resample/fbank/forward pay one-off imports and set-up.
        utterance = utterances[0]
        recognizer.log_probs([load_input_and_rate(utterance, recognizer.model.input)[0]])
        for utterance in utterances:
            start = time.perf_counter()
            feats = load_input_and_rate(utterance, recognizer.model.input)[0]
            timings.features += time.perf_counter() - start
            _measure(recognizer, timings, feats)
    except BadInput as e:
        raise UsrasrError(f"cannot benchmark on {utterance.source}: {e}") from None
    return timings, recognizer, [f"graph: {graph_dir / 'HLG.fst'}"]


@click.command()
@click.argument("files", nargs=-1, type=_EXISTING)
@click.option("--model", "model_path", type=_EXISTING, help="Acoustic model checkpoint.")
@click.option("--lang", "lang_dir", type=click.Path(file_okay=False, path_type=Path), help="Lang dir [default: from the model].")
@click.option("--lm", type=click.Path(path_type=Path), help="Word ARPA LM (when HLG.fst is not compiled yet).")
@click.option("--cuts", type=_EXISTING, help="Lhotse CutSet to decode.")
@click.option("--synthetic", is_flag=True, help="Random lang, LM, model and posteriorgrams; no files needed.")
@click.option("--num-words", type=int, default=2000, show_default=True, help="--synthetic: vocabulary size.")
@click.option("--utterances", "num_utterances", type=int, default=20, show_default=True, help="--synthetic: utterances.")
@click.option("--noise", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True,
              help="--synthetic: posterior mass off the true token (0 = perfectly sure model).")
@click.option("--beam", type=float, default=SearchOptions.beam, show_default=True)
@click.option("--max-active", type=int, default=SearchOptions.max_active, show_default=True)
@click.option("--lm-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
def decode(files, model_path, lang_dir, lm, cuts, synthetic, num_words, num_utterances, noise, beam, max_active, lm_scale):
    """Real-time factor of decoding on one CPU core: features, network and search side by side."""
    from usrasr.decode import audio
    from usrasr.utils.errors import UsrasrError

    torch.set_num_threads(1)
    options = SearchOptions(beam=beam, max_active=max_active, lm_scale=lm_scale)
    with tempfile.TemporaryDirectory() as tmp:
        if synthetic:
            timings, recognizer, notes = _bench_synthetic(options, num_words, num_utterances, noise, Path(tmp))
        else:
            if model_path is None:
                raise UsrasrError("give --model (and audio FILES or --cuts), or use --synthetic")
            utterances = audio.utterances_from_paths(map(str, files)) + (audio.utterances_from_cuts(cuts) if cuts else [])
            if not utterances:
                raise UsrasrError("nothing to decode: give audio FILES or --cuts")
            timings, recognizer, notes = _bench_files(options, model_path, lang_dir, lm, utterances)
        _print_report(timings, recognizer.search.graph, options)
        for note in notes:
            click.echo(note)
