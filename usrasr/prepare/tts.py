"""Synthetic speech for the default corpus: voices, resumable parallel synthesis, phone alignments.

A :class:`Voice` is an engine's base voice plus a speed and pitch factor;
every distinct combination is one "speaker" of the corpus.  Audio is written
as 16 kHz mono 16-bit WAV, and each utterance's phone alignment (mapped to
:data:`usrasr.lang.phones.PHONES`) is kept in a JSON sidecar next to it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import math
import multiprocessing
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import soundfile as sf

from usrasr.corpus.features import SAMPLE_RATE
from usrasr.lang.phones import SILENCE
from usrasr.prepare.tts_engines import ENGINES, EngineError, PhoneSegment
from usrasr.utils.console import progress
from usrasr.utils.io import atomic_open, atomic_path
from usrasr.utils.console import log

__all__ = [
    "SAMPLE_RATE",
    "EngineError",
    "PhoneSegment",
    "SynthesisResult",
    "Voice",
    "available_voices",
    "default_voice_plan",
    "synthesize",
    "synthesize_all",
]


# Engines print timings that can drift from the audio they write by a few
# tens of milliseconds; more than this means the alignment is wrong.
_MAX_ALIGNMENT_DRIFT_S = 0.3
_ID_PREFIX = {"espeak-ng": "espeak"}


@dataclass(frozen=True)
class Voice:
    """An engine's base voice, optionally sped up or pitch-shifted.

    ``speed`` is applied like Kaldi's speed perturbation (sox ``speed``):
    the audio is resampled, so durations scale by ``1/speed`` and pitch and
    formants by ``speed``, which makes a perceptibly different speaker.
    ``pitch`` further shifts F0 by that factor at constant duration (sox
    ``pitch``).
    """

    engine: str
    name: str
    speed: float = 1.0
    pitch: float = 1.0

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown TTS engine {self.engine!r} (known: {', '.join(ENGINES)})")
        if self.speed <= 0 or self.pitch <= 0:
            raise ValueError(f"speed and pitch must be positive, got {self.speed}, {self.pitch}")

    @property
    def voice_id(self) -> str:
        """Stable, file-name-safe id, e.g. ``flite-awb`` or ``espeak-en-us+m3-sp1.1``."""
        voice_id = f"{_ID_PREFIX.get(self.engine, self.engine)}-{self.name}"
        if self.speed != 1.0:
            voice_id += f"-sp{self.speed:g}"
        if self.pitch != 1.0:
            voice_id += f"-pi{self.pitch:g}"
        return voice_id

    @property
    def speaker(self) -> str:
        """The person (or synthesiser setting) behind the base voice.

        Different engines can share one: flite ``kal16`` and festival
        ``kal_diphone`` are both built from Kal's recordings.
        """
        return ENGINES[self.engine].speakers.get(self.name, f"{self.engine}-{self.name}")


@functools.cache
def available_voices() -> dict[str, list[str]]:
    """Installed base voices per engine; engines that are missing are left out with a warning."""
    voices: dict[str, list[str]] = {}
    for name, engine in ENGINES.items():
        if not engine.is_installed():
            log.warning("TTS engine %s is not installed; its voices are skipped", name)
            continue
        try:
            voices[name] = engine.base_voices()
        except EngineError as err:
            log.warning("TTS engine %s does not work (%s); its voices are skipped", name, err)
    return voices


# Held-out voices are speaker-disjoint from the training ones: Kal is only
# heard in dev/test, whichever engine speaks him.
_TRAIN_BASE_VOICES = (
    ("flite", "awb"), ("flite", "rms"), ("flite", "slt"),
    ("espeak-ng", "en-us+m3"), ("espeak-ng", "en-us+f2"), ("espeak-ng", "en-gb"), ("espeak-ng", "en+f3"),
    ("festival", "ked_diphone"), ("festival", "cmu_us_slt_arctic_hts"),
    ("piper", "joe"),
)  # fmt: skip
_HELDOUT_BASE_VOICES = (
    ("flite", "kal16"), ("espeak-ng", "en-us+m5"), ("festival", "kal_diphone"),
)  # fmt: skip


def default_voice_plan(train_speeds: Sequence[float] = (0.9, 1.0, 1.1)) -> tuple[list[Voice], list[Voice]]:
    """``(train_voices, heldout_voices)`` from the installed engines.

    Each training base voice comes at every speed in ``train_speeds``;
    held-out voices (for dev/test) are at natural speed and share no speaker
    with any training voice.  Voices that are not installed are skipped with
    a warning.
    """
    installed = available_voices()

    def pick(base_voices: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        picked = []
        for engine, name in base_voices:
            if name in installed.get(engine, ()):
                picked.append((engine, name))
            elif engine in installed:
                log.warning("TTS voice %s/%s is not installed; skipped", engine, name)
        return picked

    train = [Voice(engine, name, speed=speed) for engine, name in pick(_TRAIN_BASE_VOICES) for speed in train_speeds]
    heldout = [Voice(engine, name) for engine, name in pick(_HELDOUT_BASE_VOICES)]
    shared = {v.speaker for v in train} & {v.speaker for v in heldout}
    assert not shared, f"held-out speakers also in train: {shared}"
    return train, heldout


def _convert(src: Path, dst: Path, voice: Voice) -> None:
    """Resample ``src`` to 16 kHz mono 16-bit at ``dst``, applying the voice's perturbation."""
    if shutil.which("sox") is None:
        raise EngineError("sox is not installed (apt-get install sox)")
    # -D: no dither, so that the same input always gives the same file.
    cmd = ["sox", "-D", "-V1", str(src)]
    cmd += ["-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(dst)]
    if voice.pitch != 1.0:
        cmd += ["pitch", f"{1200 * math.log2(voice.pitch):.1f}"]
    if voice.speed != 1.0:
        cmd += ["speed", f"{voice.speed:g}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EngineError(f"sox failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")


def fit_alignment(segments: list[PhoneSegment], duration: float, scale: float = 1.0) -> list[PhoneSegment]:
    """Scale segment times by ``scale`` and make them tile ``[0, duration]`` exactly.

    Engines' printed times and their audio disagree by up to a few tens of
    milliseconds at the end; the last segment is cut or a silence appended.
    """
    fitted: list[PhoneSegment] = []
    for phone, start, length in segments:
        start, end = start * scale, min((start + length) * scale, duration)
        if end > start:
            fitted.append(PhoneSegment(phone, round(start, 4), round(end - start, 4)))
    end = fitted[-1].end if fitted else 0.0
    if abs(end - duration) > _MAX_ALIGNMENT_DRIFT_S:
        log.warning("alignment ends at %.2f s but the audio at %.2f s", end, duration)
    if end < duration:
        if fitted and fitted[-1].phone == SILENCE:
            last = fitted.pop()
            fitted.append(last._replace(duration=round(duration - last.start, 4)))
        else:
            fitted.append(PhoneSegment(SILENCE, round(end, 4), round(duration - end, 4)))
    return fitted


def synthesize(text: str, voice: Voice, wav_path: str | Path) -> list[PhoneSegment] | None:
    """Speak ``text`` with ``voice`` into ``wav_path`` (16 kHz mono 16-bit, written atomically).

    Returns the phone alignment in the project phone set, tiling the whole
    audio, or ``None`` if the engine gives no timings.  Raises
    :class:`EngineError` if the engine fails.
    """
    if not text.strip():
        raise ValueError("cannot synthesise empty text")
    with tempfile.TemporaryDirectory(prefix="usrasr-tts-") as tmp:
        native_wav = Path(tmp) / "native.wav"
        segments = ENGINES[voice.engine].render(text, voice.name, native_wav)
        with atomic_path(wav_path) as tmp_wav:
            _convert(native_wav, tmp_wav, voice)
            duration = sf.info(str(tmp_wav)).frames / SAMPLE_RATE
    if segments is None:
        return None
    return fit_alignment(segments, duration, scale=1.0 / voice.speed)


@dataclass(frozen=True)
class SynthesisResult:
    """One synthesised utterance."""

    wav_path: Path
    duration: float
    alignment: list[PhoneSegment] | None


def _paths(out_dir: Path, utt_id: str) -> tuple[Path, Path]:
    return out_dir / f"{utt_id}.wav", out_dir / f"{utt_id}.json"


def _load_done(out_dir: Path, utt_id: str, text: str, voice: Voice) -> SynthesisResult | None:
    """The finished result of this exact job, if a previous run left one."""
    wav_path, sidecar = _paths(out_dir, utt_id)
    if not (wav_path.exists() and sidecar.exists()):
        return None
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if info.get("text") != text or info.get("voice") != voice.voice_id:
        return None
    alignment = info["alignment"]
    return SynthesisResult(
        wav_path, info["duration"], None if alignment is None else [PhoneSegment(*s) for s in alignment]
    )


def _run_job(utt_id: str, text: str, voice: Voice, out_dir: Path) -> SynthesisResult:
    wav_path, sidecar = _paths(out_dir, utt_id)
    alignment = synthesize(text, voice, wav_path)
    duration = sf.info(str(wav_path)).frames / SAMPLE_RATE
    # The sidecar goes last: its presence marks the job as done.
    with atomic_open(sidecar) as f:
        json.dump(
            {
                "text": text,
                "voice": voice.voice_id,
                "duration": duration,
                "alignment": None if alignment is None else [list(s) for s in alignment],
            },
            f,
        )
    return SynthesisResult(wav_path, duration, alignment)


def _init_worker(log_level: int) -> None:
    # Spawned workers start with unconfigured logging; keep the parent's level
    # so that debug messages (unknown engine phones) show with -v.
    logging.basicConfig(format="%(levelname)s %(message)s")
    log.setLevel(log_level)
    # The workers already keep every core busy.
    ENGINES["piper"].num_threads = 1


def synthesize_all(
    jobs: Iterable[tuple[str, str, Voice]], out_dir: str | Path, num_workers: int = 2
) -> dict[str, SynthesisResult]:
    """Synthesise ``(utt_id, text, voice)`` jobs into ``out_dir/<utt_id>.wav`` (+ ``.json`` sidecar).

    Runs ``num_workers`` processes (in-process if 1) with a progress bar, and
    resumes: a job whose wav and sidecar exist for the same text and voice is
    not redone.  Returns the results in job order.  Failed jobs are logged
    and left out; if every job that ran failed, raises :class:`EngineError`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, SynthesisResult] = {}
    todo: list[tuple[str, str, Voice]] = []
    order: list[str] = []
    for utt_id, text, voice in jobs:
        order.append(utt_id)
        done = _load_done(out_dir, utt_id, text, voice)
        if done is None:
            todo.append((utt_id, text, voice))
        else:
            results[utt_id] = done
    skipped = len(results)
    failed = 0
    with progress() as bar:
        task = bar.add_task("synthesising", total=len(todo) + skipped, completed=skipped, status="")

        def finish(utt_id: str, run) -> None:
            nonlocal failed
            try:
                results[utt_id] = run()
            except Exception as err:  # noqa: BLE001 - any engine failure costs one utterance, not the run
                failed += 1
                log.warning("synthesis of %s failed: %s: %s", utt_id, type(err).__name__, err)
            bar.update(task, advance=1, status=f"resumed {skipped}, failed {failed}")

        if num_workers <= 1 or len(todo) <= 1:
            for utt_id, text, voice in todo:
                finish(utt_id, lambda: _run_job(utt_id, text, voice, out_dir))
        else:
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=num_workers,
                # spawn, not fork: piper's onnxruntime thread pools do not survive a fork.
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(log.getEffectiveLevel(),),
            ) as pool:
                futures = {pool.submit(_run_job, utt_id, text, voice, out_dir): utt_id for utt_id, text, voice in todo}
                for future in concurrent.futures.as_completed(futures):
                    finish(futures[future], future.result)
    if todo and failed == len(todo):
        raise EngineError(f"all {failed} synthesis jobs failed; see the warnings above")
    if failed:
        log.warning("%d of %d synthesis jobs failed", failed, len(todo))
    if skipped:
        log.info("resumed %d already synthesised utterances", skipped)
    return {utt_id: results[utt_id] for utt_id in order if utt_id in results}
