"""Graphs, models, ``usrasr decode`` end to end on tiny espeak-ng data, and its bad inputs."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kaldifst
import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from usrasr.cli import cli
from usrasr.decode.audio import Utterance, load_features
from usrasr.decode.pipeline import build_recognizer
from usrasr.decode.search import GraphSearch, SearchOptions
from usrasr.graph.hlg import ensure_graph, load_graph, read_lang
from usrasr.models.acoustic import AcousticModelConfig, build_model, load_model, save_model
from usrasr.models.ctc_train import train_ctc

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng makes the test audio")

PRONS = {
    "DOWN": "D AW N", "GO": "G OW", "LEFT": "L EH F T", "NO": "N OW",
    "RIGHT": "R AY T #1", "UP": "AH P", "WRITE": "R AY T #2", "YES": "Y EH S",
}
PHONES = "AH AW AY D EH F G L N OW P R S T Y SIL SPN".split()
SPOKEN = ["YES NO", "NO YES", "UP DOWN LEFT", "LEFT RIGHT", "YES UP", "DOWN NO RIGHT", "RIGHT LEFT UP", "NO DOWN"]
LM_TEXT = SPOKEN + ["GO LEFT", "GO UP", "WRITE YES", "NO GO"]
OPENFST_MAGIC = 2125659606  # first 4 bytes (int32 LE) of every OpenFst binary


def write_lang(directory: Path) -> Path:
    """A lang dir in prepare's layout; RIGHT/WRITE are homophones, so L needs #1/#2."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = [("!SIL", "SIL"), ("<UNK>", "SPN"), *sorted(PRONS.items())]
    (directory / "lexicon_disambig.txt").write_text("".join(f"{w} {p}\n" for w, p in entries))
    (directory / "lexicon.txt").write_text("".join(f"{w} {p.split(' #')[0]}\n" for w, p in entries))
    tokens = ["<eps>", *PHONES, "#0", "#1", "#2"]
    (directory / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)))
    words = ["<eps>", *(w for w, _ in entries), "#0", "<s>", "</s>"]
    (directory / "words.txt").write_text("".join(f"{w} {i}\n" for i, w in enumerate(words)))
    return directory


def train_lm(text: list[str], arpa: Path, order: int) -> Path:
    corpus = arpa.with_suffix(".txt")
    corpus.write_text("".join(line + "\n" for line in text))
    subprocess.run([sys.executable, "-m", "kaldingram.cli", "train", "--ngram-order", str(order),
                    "--text", str(corpus), "--lm", str(arpa)], check=True, capture_output=True)
    return arpa


def phones_of(sentence: str) -> list[str]:
    return [p for w in sentence.split() for p in PRONS[w].split() if not p.startswith("#")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """<corpus>/lang, <corpus>/lm/{word_3gram,phone_2gram}.arpa, audio/u*.wav and ref.txt."""
    root = tmp_path_factory.mktemp("corpus")
    write_lang(root / "lang")
    (root / "lm").mkdir()
    train_lm(LM_TEXT, root / "lm" / "word_3gram.arpa", 3)
    train_lm([" ".join(phones_of(s)) for s in LM_TEXT], root / "lm" / "phone_2gram.arpa", 2)
    (root / "audio").mkdir()
    for i, sentence in enumerate(SPOKEN):
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(root / "audio" / f"u{i}.wav"), sentence.lower()], check=True)
    (root / "ref.txt").write_text("".join(f"u{i} {s}\n" for i, s in enumerate(SPOKEN)))
    return root


@pytest.fixture(scope="module")
def model_path(corpus) -> Path:
    """A small TDNN overfitted on the 8 utterances (a few seconds on one core)."""
    lang = read_lang(corpus / "lang")
    feats = [load_features(Utterance(f"u{i}", corpus / "audio" / f"u{i}.wav")) for i in range(len(SPOKEN))]
    targets = [[lang.tokens[p] for p in phones_of(s)] for s in SPOKEN]
    config = AcousticModelConfig(num_tokens=lang.num_model_tokens, hidden_dim=96, num_layers=3, dropout=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast and immune to a busy machine
    try:
        torch.manual_seed(0)
        model = train_ctc(build_model(config), feats, targets, steps=80, lr=3e-3, batch_size=8)
    finally:
        torch.set_num_threads(threads)
    path = corpus / "exp" / "model.pt"
    save_model(path, model, lang.model_tokens, lang_dir=corpus / "lang")
    return path


def run_cli(*args, stdin=None):
    return CliRunner().invoke(cli, ["-q", *map(str, args)], input=stdin)


def posteriorgram(lang, tokens: list[str], frames_per_token: int = 3, peak: float = 0.9) -> np.ndarray:
    """Hand-made log-posteriors: each token for a few frames, then two blanks."""
    frames = []
    for t in tokens:
        frames += [lang.tokens[t]] * frames_per_token + [0, 0]
    V = lang.num_model_tokens
    probs = np.full((len(frames), V), (1 - peak) / (V - 1), dtype=np.float32)
    probs[np.arange(len(frames)), frames] = peak
    return np.log(probs)


# --------------------------------------------------------------------------- graphs


def test_hlg_is_openfst_and_decodes_a_posteriorgram(corpus, tmp_path):
    lang = read_lang(corpus / "lang")
    path = ensure_graph("HLG", lang, corpus / "lm" / "word_3gram.arpa", graph_dir=tmp_path)
    raw = path.read_bytes()
    assert int.from_bytes(raw[:4], "little") == OPENFST_MAGIC and b"vector" in raw[:32] and b"standard" in raw[:48]
    graph = kaldifst.StdVectorFst.read(str(path))
    assert graph.num_states > 0 and graph.start >= 0

    search = GraphSearch(load_graph(path), lang, "word", seconds_per_frame=0.04)
    hyp = search.search(posteriorgram(lang, phones_of("UP DOWN LEFT")))
    assert hyp.text == "UP DOWN LEFT" and hyp.reached_final
    # 5 frames per phone (3 token + 2 blank): UP emits in frames 0-7, DOWN in 10-22, LEFT in 25-42
    assert [(u.label, u.start, u.end) for u in hyp.units] == [
        ("UP", 0.0, 0.32), ("DOWN", 0.4, 0.92), ("LEFT", 1.0, 1.72)
    ]
    assert all(0.89 < u.confidence <= 0.91 for u in hyp.units)

    # Silence between words is optional in L; homophones decode to one of their words.
    with_silence = search.search(posteriorgram(lang, ["SIL", *phones_of("NO"), "SIL", *phones_of("GO"), "SIL"]))
    assert with_silence.text == "NO GO"
    homophone = search.search(posteriorgram(lang, phones_of("LEFT") + ["R", "AY", "T"]))
    assert homophone.text in ("LEFT RIGHT", "LEFT WRITE")
    # forked workers search side by side and give the same hypotheses, in order
    many = [posteriorgram(lang, phones_of(words)) for words in ("UP DOWN LEFT", "NO GO", "GO", "LEFT UP", "DOWN")]
    assert search.search_all(many, workers=2) == [search.search(lp) for lp in many]


def test_lang_dir_written_by_prepare_compiles_and_decodes(tmp_path):
    """Guards the format contract with usrasr.lang.lexicon (homophones and a prefix get #k)."""
    from usrasr.lang.lexicon import write_lang_dir

    lexicon = {"READ": ("R", "IY", "D"), "REED": ("R", "IY", "D"), "RED": ("R", "EH", "D"), "A": ("AH",), "AN": ("AH", "N")}
    lang = read_lang(write_lang_dir(tmp_path / "lang", lexicon))
    unigrams = ["<s>", "</s>", *lexicon]
    arpa = tmp_path / "unigram.arpa"
    arpa.write_text("\\data\\\n" + f"ngram 1={len(unigrams)}\n\n\\1-grams:\n"
                    + "".join(f"-1.0\t{w}\n" for w in unigrams) + "\n\\end\\\n")
    search = GraphSearch(load_graph(ensure_graph("HLG", lang, arpa)), lang, "word")
    assert search.search(posteriorgram(lang, ["AH", "N", "R", "EH", "D"])).text == "AN RED"
    assert search.search(posteriorgram(lang, ["AH", "R", "IY", "D"])).text in ("A READ", "A REED")


def test_repeated_token_needs_a_blank(corpus, tmp_path):
    """CTC: 'NO NO' is N OW <b> N OW; without blanks between tokens, repeats merge."""
    lang = read_lang(corpus / "lang")
    search = GraphSearch(load_graph(ensure_graph("HP", lang, corpus / "lm" / "phone_2gram.arpa", tmp_path)), lang, "phone")
    hyp = search.search(posteriorgram(lang, ["N", "OW", "N", "OW"]))
    assert hyp.labels == ["N", "OW", "N", "OW"]
    assert [u.label for u in hyp.units] == hyp.labels


def test_graph_cache_rebuilds_only_when_needed(corpus, tmp_path):
    lang = read_lang(corpus / "lang")
    lm = tmp_path / "lm.arpa"
    shutil.copy(corpus / "lm" / "word_3gram.arpa", lm)
    path = ensure_graph("HLG", lang, lm, tmp_path)
    built = path.stat().st_mtime_ns
    assert ensure_graph("HLG", lang, lm, tmp_path).stat().st_mtime_ns == built
    lm.touch()
    assert ensure_graph("HLG", lang, lm, tmp_path).stat().st_mtime_ns > built
    rebuilt = path.stat().st_mtime_ns
    assert ensure_graph("HLG", lang, lm, tmp_path, force=True).stat().st_mtime_ns > rebuilt
    assert ensure_graph("HLG", lang, None, tmp_path) == path  # no LM: use what is there


def test_lm_problems_are_reported(corpus, tmp_path, caplog):
    from usrasr.utils.errors import UsrasrError

    lang = read_lang(corpus / "lang")
    broken = tmp_path / "broken.arpa"
    broken.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\nnot an n-gram line\n")
    with pytest.raises(UsrasrError, match="cannot convert .*broken.arpa"):
        ensure_graph("HLG", lang, broken, tmp_path)
    foreign = train_lm(LM_TEXT + ["MAYBE YES", "MAYBE NOT"], tmp_path / "foreign.arpa", 2)
    logger = logging.getLogger("usrasr")  # the CLI stops it propagating to caplog's root handler
    logger.addHandler(caplog.handler)
    try:
        ensure_graph("HLG", lang, foreign, tmp_path)
    finally:
        logger.removeHandler(caplog.handler)
    assert "2 word(s) not in words.txt were dropped, e.g. MAYBE NOT" in caplog.text


def test_compile_only_cli(corpus, tmp_path):
    result = run_cli("decode", "--compile-only", "--lang", corpus / "lang", "--graph-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp_path / "HLG.fst"), str(tmp_path / "HP.fst")]
    assert all(kaldifst.StdVectorFst.read(p).num_states > 0 for p in result.stdout.split())



def test_default_lms_are_whatever_order_prepare_wrote(corpus, tmp_path):
    # `usrasr prepare --word-lm-order 4` writes word_4gram.arpa: decode must find it unnamed.
    other = tmp_path / "corpus"
    shutil.copytree(corpus / "lang", other / "lang")
    (other / "lm").mkdir()
    shutil.copy(corpus / "lm" / "phone_2gram.arpa", other / "lm" / "phone_3gram.arpa")
    result = run_cli("decode", "--compile-only", "--lang", other / "lang", "--graph-dir", tmp_path / "g")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp_path / "g" / "HP.fst")]  # no word LM: HP only
    shutil.copy(corpus / "lm" / "word_3gram.arpa", other / "lm" / "word_4gram.arpa")
    result = run_cli("decode", "--compile-only", "--lang", other / "lang", "--graph-dir", tmp_path / "g")
    assert result.stdout.split() == [str(tmp_path / "g" / "HLG.fst"), str(tmp_path / "g" / "HP.fst")]
    for name in ("word_4gram.arpa", "phone_3gram.arpa"):
        (other / "lm" / name).unlink()
    result = run_cli("decode", "--compile-only", "--lang", other / "lang", "--graph-dir", tmp_path / "g")
    assert result.exit_code != 0 and "no LM given" in result.output

# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("arch", ["tdnn", "conformer"])
@pytest.mark.parametrize("subsampling", [2, 4])
def test_model_batched_equals_single_and_roundtrips(arch, subsampling, tmp_path):
    torch.manual_seed(0)
    config = AcousticModelConfig(num_tokens=7, arch=arch, hidden_dim=32, num_layers=2, subsampling=subsampling,
                                 num_heads=4, conv_kernel_size=5)
    model = build_model(config).eval()
    a, b = torch.randn(50, 80), torch.randn(23, 80)
    batch = torch.nn.utils.rnn.pad_sequence([a, b], batch_first=True)
    with torch.no_grad():
        out, lens = model(batch, torch.tensor([50, 23]))
        alone, alone_len = model(b[None], torch.tensor([23]))
    assert out.shape[-1] == 7 and lens.tolist() == [-(-50 // subsampling), -(-23 // subsampling)]
    assert torch.allclose(out[1, : lens[1]], alone[0], atol=1e-5)
    assert torch.allclose(out.exp().sum(-1)[0], torch.ones(lens[0]), atol=1e-5)

    save_model(tmp_path / "m.pt", model, [f"t{i}" for i in range(7)], lang_dir=tmp_path)
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.tokens[0] == "t0" and loaded.lang_dir == tmp_path.resolve()
    with torch.no_grad():
        again, _ = loaded.model(b[None], torch.tensor([23]))
    assert torch.equal(again, alone)


# --------------------------------------------------------------------------- decode CLI


def parse_text_output(stdout: str) -> dict[str, str]:
    rows = [line.split("\t") for line in stdout.splitlines()]
    assert all(len(r) == 2 for r in rows), stdout
    return dict(rows)


def test_decode_recovers_training_sentences(corpus, model_path):
    files = sorted((corpus / "audio").glob("u*.wav"))
    result = run_cli("decode", "--model", model_path, *files)  # lang dir and LM found from the model
    assert result.exit_code == 0, result.output
    hyps = parse_text_output(result.stdout)
    assert list(hyps) == [f.stem for f in files]
    correct = sum(hyps[f"u{i}"] == s for i, s in enumerate(SPOKEN))
    assert correct >= len(SPOKEN) - 1, hyps
    # searched in two processes: the same lines, in the same order
    side_by_side = run_cli("decode", "--model", model_path, "--jobs", "2", *files)
    assert side_by_side.exit_code == 0 and side_by_side.stdout == result.stdout


def test_decode_takes_the_lm_scale_recorded_with_the_model(corpus, model_path, tmp_path):
    loaded = load_model(model_path)
    scaled = corpus / "exp" / "scaled.pt"  # beside the model: the same graphs/
    save_model(scaled, loaded.model, loaded.tokens, loaded.lang_dir, lm_scale=4.0, phone_lm_scale=3.0)
    assert loaded.lm_scale == 1.0 and load_model(scaled).lm_scale == 4.0
    lang = read_lang(corpus / "lang")
    for unit, options, expected in (("word", SearchOptions(), 4.0), ("word", SearchOptions(lm_scale=2.0), 2.0),
                                    ("phone", SearchOptions(), 3.0), ("phone", SearchOptions(lm_scale=2.0), 2.0)):
        lm = corpus / "lm" / ("word_3gram.arpa" if unit == "word" else "phone_2gram.arpa")
        recognizer = build_recognizer(load_model(scaled), corpus / "lang", unit, lm, corpus / "exp" / "graphs",
                                      options, torch.device("cpu"))
        assert recognizer.search.options.lm_scale == expected and recognizer.search.lang.tokens == lang.tokens
    files = sorted((corpus / "audio").glob("u*.wav"))[:3]
    recorded = run_cli("decode", "--model", scaled, "--format", "jsonl", *files)
    explicit = run_cli("decode", "--model", model_path, "--lm-scale", "4", "--format", "jsonl", *files)
    assert recorded.exit_code == 0 and recorded.stdout == explicit.stdout


def test_pipeline_ls_decode_evaluate(corpus, model_path):
    command = (
        f"ls {corpus}/audio/*.wav | {sys.executable} -m usrasr decode --model {model_path} - "
        f"| {sys.executable} -m usrasr evaluate {corpus}/ref.txt -"
    )
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    match = re.fullmatch(r"%WER (\d+\.\d\d) \[ (\d+) / 19, (\d+) ins, (\d+) del, (\d+) sub \]", first)
    assert match, result.stdout
    assert float(match.group(1)) <= 15.0
    assert "Scored 8 sentences, 0 not present in hyp." in result.stdout


def test_bad_inputs_warn_and_exit_nonzero(corpus, model_path, tmp_path):
    audio, sr = sf.read(corpus / "audio" / "u0.wav")
    resampled = np.interp(np.arange(0, len(audio), sr / 44100), np.arange(len(audio)), audio)
    sf.write(tmp_path / "stereo.wav", np.stack([resampled, resampled], axis=1), 44100)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x01junk" * 50)
    files = ["missing.wav", "empty.wav", "corrupt.wav", "stereo.wav"]
    result = run_cli("decode", "--model", model_path, *(tmp_path / f for f in files))
    assert result.exit_code == 2
    assert parse_text_output(result.stdout) == {"stereo": SPOKEN[0]}
    for name, reason in (("missing.wav", "no such file"), ("empty.wav", "empty file"), ("corrupt.wav", "not a readable")):
        assert re.search(rf"skipping \S*{name}: {reason}", result.stderr), result.stderr
    assert "3 of 4 input(s) could not be decoded" in result.stderr


def test_jsonl_output_file_and_phone_unit(corpus, model_path, tmp_path):
    wav = corpus / "audio" / "u2.wav"
    result = run_cli("decode", "--model", model_path, "--format", "jsonl", "--output", tmp_path / "hyp.jsonl", wav)
    assert result.exit_code == 0 and result.stdout == ""
    (record,) = [json.loads(line) for line in (tmp_path / "hyp.jsonl").read_text().splitlines()]
    assert record["id"] == "u2" and record["text"] == SPOKEN[2]
    words = record["words"]
    assert [w["word"] for w in words] == SPOKEN[2].split()
    assert all(0 <= w["start"] < w["end"] <= record["duration"] + 1e-6 and 0 < w["confidence"] <= 1 for w in words)
    assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:]))

    result = run_cli("decode", "--model", model_path, "--unit", "phone", "--output", tmp_path / "phones.txt", wav)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "phones.txt").read_text().split()[1:] == phones_of(SPOKEN[2])


def test_cuts_wav_scp_and_stdin_ids(corpus, model_path, tmp_path):
    from lhotse import CutSet, Fbank, Recording, RecordingSet

    recordings = RecordingSet.from_recordings(
        Recording.from_file(corpus / "audio" / f"u{i}.wav", recording_id=f"rec{i}") for i in (0, 1)
    )
    cuts = CutSet.from_manifests(recordings=recordings).resample(16000)
    cuts = cuts.compute_and_store_features(Fbank(), storage_path=tmp_path / "feats")
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    result = run_cli("decode", "--model", model_path, "--cuts", tmp_path / "cuts.jsonl.gz")
    assert result.exit_code == 0, result.output
    assert parse_text_output(result.stdout) == {cuts[0].id: SPOKEN[0], cuts[1].id: SPOKEN[1]}

    (tmp_path / "wav.scp").write_text(f"first {corpus}/audio/u0.wav\nsecond {corpus}/audio/u1.wav\n")
    result = run_cli("decode", "--model", model_path, "--wav-scp", tmp_path / "wav.scp")
    assert parse_text_output(result.stdout) == {"first": SPOKEN[0], "second": SPOKEN[1]}

    result = run_cli("decode", "--model", model_path, "-", stdin=f"x {corpus}/audio/u3.wav\n{corpus}/audio/u4.wav\n")
    assert parse_text_output(result.stdout) == {"x": SPOKEN[3], "u4": SPOKEN[4]}

    # The trainer takes a CutSet with targets keyed by cut id, too.
    lang = read_lang(corpus / "lang")
    targets = {c.id: [lang.tokens[p] for p in phones_of(SPOKEN[i])] for i, c in enumerate(cuts)}
    model = build_model(AcousticModelConfig(num_tokens=lang.num_model_tokens, hidden_dim=16, num_layers=1))
    assert not train_ctc(model, cuts, targets, steps=2).training


def test_model_and_lang_mismatch_is_a_one_line_error(corpus, tmp_path):
    model = build_model(AcousticModelConfig(num_tokens=5, hidden_dim=16, num_layers=1))
    save_model(tmp_path / "m.pt", model, ["<eps>", "A", "B", "C", "D"])
    result = run_cli("decode", "--model", tmp_path / "m.pt", "--lang", corpus / "lang", corpus / "audio" / "u0.wav")
    assert result.exit_code == 2 and "tokens differ" in result.stderr
    result = run_cli("decode", "--model", tmp_path / "m.pt", corpus / "audio" / "u0.wav")
    assert result.exit_code == 2 and "pass --lang" in result.stderr


def test_bench_synthetic_runs():
    result = run_cli("bench", "decode", "--synthetic", "--num-words", "50", "--utterances", "3")
    assert result.exit_code == 0, result.output
    assert re.search(r"search +RTF \d\.\d{4}", result.stdout) and re.search(r"network +RTF", result.stdout)
    assert "%WER 0.00" in result.stdout


# --------------------------------------------------------------------------- messages a user can act on


def test_a_warning_is_printed_once_after_lhotses_fallback_reader(corpus, model_path, tmp_path):
    (tmp_path / "x.wav").write_text("not audio")  # read through lhotse's fallback, which logs on the root logger
    result = subprocess.run([sys.executable, "-m", "usrasr", "decode", "--model", str(model_path),
                             str(tmp_path / "x.wav"), str(tmp_path / "nonexistent.wav")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("nonexistent.wav: no such file") == 1, result.stderr
    assert result.stderr.count("could not be decoded") == 1, result.stderr


def test_decode_reuses_the_training_runs_graphs_and_never_writes_into_the_corpus(corpus, model_path, tmp_path):
    run = tmp_path / "run"  # as `usrasr train` lays out an experiment: graphs/ and one folder per model
    (run / "round1").mkdir(parents=True)
    shutil.copy(model_path, run / "round1" / "model.pt")
    assert run_cli("decode", "--compile-only", "--lang", corpus / "lang", "--graph-dir", run / "graphs").exit_code == 0
    built = (run / "graphs" / "HLG.fst").stat().st_mtime_ns
    result = CliRunner().invoke(cli, ["decode", "--model", str(run / "round1" / "model.pt"),
                                      str(corpus / "audio" / "u0.wav")])
    assert result.exit_code == 0, result.output
    assert "compiling" not in result.stderr and (run / "graphs" / "HLG.fst").stat().st_mtime_ns == built
    assert not (run / "round1" / "graphs").exists() and not (corpus / "lang" / "HLG.fst").exists()
    # Without a training run around it, the model's graphs go beside the model, not into the corpus.
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(model_path, lone / "model.pt")
    assert run_cli("decode", "--model", lone / "model.pt", corpus / "audio" / "u0.wav").exit_code == 0
    assert (lone / "graphs" / "HLG.fst").is_file() and not (corpus / "lang" / "HLG.fst").exists()
    result = run_cli("decode", "--compile-only", "--lang", corpus / "lang")
    assert result.exit_code == 2 and "--graph-dir" in result.output


def test_an_utterance_that_reaches_no_final_state_is_named(corpus, model_path, monkeypatch):
    from usrasr.decode.search import Hypothesis

    monkeypatch.setattr(GraphSearch, "search", lambda self, scores: Hypothesis(["YES"], reached_final=False))
    result = CliRunner().invoke(cli, ["decode", "--model", str(model_path), str(corpus / "audio" / "u3.wav")])
    assert result.exit_code == 0, result.output
    assert "u3: reached no final graph state" in result.stderr, result.stderr


def test_input_too_short_for_the_model_is_a_named_failure(corpus, model_path, tmp_path):
    sf.write(tmp_path / "s.wav", np.zeros(480, dtype=np.float32), 16000)  # 30 ms: one fbank frame
    result = run_cli("decode", "--model", model_path, tmp_path / "s.wav", corpus / "audio" / "u0.wav")
    assert result.exit_code == 2
    assert re.search(r"skipping \S*s\.wav: too short for the model", result.stderr), result.stderr
    assert parse_text_output(result.stdout) == {"u0": SPOKEN[0]}


def test_input_below_the_training_sample_rate_warns_once(corpus, model_path, tmp_path):
    audio, rate = sf.read(corpus / "audio" / "u0.wav")
    step = rate / 8000
    narrow = np.interp(np.arange(0, len(audio), step), np.arange(len(audio)), audio)
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, narrow, 8000)
    result = run_cli("decode", "--model", model_path, tmp_path / "a.wav", tmp_path / "b.wav")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("8000 Hz audio, upsampled to 16000 Hz") == 1, result.stderr
