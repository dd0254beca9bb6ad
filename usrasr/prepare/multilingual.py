"""``usrasr prepare multilingual``: transcribed speech in languages other than English, synthesised here.

Labelled data for a phone recogniser whose units carry across voices, built
without any English: the text is Debian's fortunes and man pages in each
language, or for a language that has neither, the translations in Debian's
message catalogs (:func:`language_text_sources`), the voices are espeak-ng's and
festival's voices for that language, and no English source, voice or lexicon
is read.  Sentences are normalised per language, kept when every word is
spelled in the language's alphabet and no English function word or
language switch shows, and phonemised by espeak-ng (``--ipa``, in-process).
The phone labels are those IPA strings folded into universal phones
(:func:`usrasr.lang.ipa.ipa_segments`).

Festival's voices read the text with their own front ends, so their audio is
labelled with espeak-ng's phones for the same text: the labels are what the
sentence sounds like in the language, not what that engine said phone by
phone.

Splits: ``train`` (training voices at three speeds) and ``heldout`` (voices
never in ``train``, at natural speed), disjoint in sentences as well.  Each
split's size per language is grown in rounds until it holds its share of
``hours``.  Three steps, each redone only when its inputs change
(:mod:`usrasr.utils.steps`): the text, the audio, the features and manifests.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from usrasr.corpus.features import fbank_extractor
from usrasr.corpus.layout import CorpusLayout
from usrasr.lang.ipa import articulatory_features, ipa_segments
from usrasr.lang.symbols import SymbolTable
from usrasr.prepare.audio import compute_features, cuts_from_recordings
from usrasr.prepare.sources import FORTUNES_DIR, fortune_paragraphs
from usrasr.prepare.splits import unit_hash
from usrasr.utils.console import log, progress
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_open, save_lhotse_atomic, write_json_atomic
from usrasr.utils.processes import lock_directory
from usrasr.utils.steps import Step, file_stamp, run_steps

SPLITS = ("train", "heldout")
ENGINES_USED = ("espeak-ng", "festival")  # the engines with voices for other languages than English
BLANK = "<blk>"
MAN_DIR = Path("/usr/share/man")
LOCALE_DIR = Path("/usr/share/locale")
# Message catalogs (gettext ``.mo``) whose translations are the text of a language that has no
# fortunes or man pages: the domain, and the Debian package that carries it, a fixed list so that
# the text does not depend on what else a machine has installed.  Only the
# translations are read, never the English originals.
MESSAGE_CATALOGS = (("gtk20-properties", "libgtk2.0-common"), ("gtk20", "libgtk2.0-common"),
                    ("glib20", "libglib2.0-data"), ("gdk-pixbuf", "libgdk-pixbuf2.0-common"))
# Lower-case letters of each language's native words; a sentence with a word spelled with any
# other letter is dropped.  Leaving out the letters only loanwords use (Finnish c q w x z,
# Italian j k w x y, ...) also drops most commands, file names and English in man pages.
# Devanagari: the block's letters, vowel signs and marks, without its digits and dandas
_DEVANAGARI = "".join(map(chr, range(0x0900, 0x0964)))
ALPHABETS = {
    "cs": "aábcčdďeéěfghiíjklmnňoóprřsštťuúůvxyýzž",
    "de": "abcdefghijklmnopqrstuvwxyzäöüß",
    "es": "abcdefghijlmnopqrstuvxyzáéíñóúü",
    "fi": "abdefghijklmnoprstuvyåäö",
    "fr": "abcdefghijlmnopqrstuvxyzàâæçéèêëîïôœùûü",
    "nl": "abcdefghijklmnopqrstuvwxyzéëïöü",
    "pt": "abcdefghijlmnopqrstuvxzáâãàçéêíóôõú",
    "sv": "abcdefghijklmnoprstuvxyåäö",
    "it": "abcdefghilmnopqrstuvzàèéìíîòóùú",
    "pl": "aąbcćdeęfghijklłmnńoóprsśtuwyzźż",
    "ru": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
    "ca": "abcdefghijlmnopqrstuvxyzàçéèíïòóúü·",
    "hi": _DEVANAGARI,
    "mr": _DEVANAGARI,
    "te": "".join(map(chr, range(0x0C00, 0x0C64))),  # Telugu, as Devanagari
}
# Words elided with an apostrophe ("l'uomo") are one word.
_APOSTROPHE_LANGUAGES = {"it", "fr", "ca"}
# Man pages are often translated in part, and Latin-script English passes the alphabet test.
# A sentence is kept only if it has a letter outside ASCII or one of its language's commonest
# words, and none of English's (which are words of none of these languages): stop-word
# language identification, with no English text read.
FUNCTION_WORDS = {
    "cs": "a se na je to v že s z do o k i jako ale pro by jsem jsou není když tak po od jak už co",
    "de": "der die das und ist nicht ein eine zu den mit sich auf des dem es auch wird werden oder wenn kann",
    "es": "de la que el en y los las del se por un una con no es para al lo como",
    "fi": "ja on ei se tai kun jos mutta ovat oli kuin niin voi vain sen joka",
    "fr": "le la les de des du un une et est en que qui dans pour pas sur au aux ce il elle ne se par avec ou",
    "nl": "de het een en van dat die in niet te op zijn met voor er aan als ook bij om",
    "pt": "de o que e do da em um para com não uma os no se na por mais as dos como",
    "sv": "och i att det som en på är av för med till den inte har de om ett kan",
    "it": "di che il la e per non un una del della si con le da al lo gli nel sono ma come se ci mi",
    "pl": "i w nie na z do to jest o jak ale od po co tak za dla lub",
    "ca": "de la el els les i que en un una per amb no és es al del com són o a ho",
    "ru": "",  # Cyrillic, Devanagari, Telugu: English cannot pass the alphabet test
    "hi": "",
    "mr": "",
    "te": "",
}
ENGLISH_FUNCTION_WORDS = frozenset(
    "the and of you that with this is are be have what which your from".split())
MIN_WORDS, MAX_WORDS = 3, 20
TRAIN_SPEEDS = (0.9, 1.0, 1.1)
# Voices never heard in train: espeak-ng variants and one festival voice per language.
HELDOUT_ESPEAK_VARIANTS = ("+m5", "+f4")
HELDOUT_FESTIVAL_VOICES = frozenset({"czech_machac", "hy_fi_mv_diphone", "lp_diphone"})
HELDOUT_FRACTION = 0.1
# First guess of speech per word; later rounds use what the voices measured.
SECONDS_PER_WORD = 0.45
MAX_ROUNDS = 4
# A language with little text reads each sentence up to this many times, by different voices.
MAX_READINGS = 3
TEXT_VERSION = 2  # bump when the text normalisation changes, so the text step is redone

_EDGE = ".,;:!?\"'()«»„“”‘’‚…¿¡।॥"
_QUOTES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\u00a0": " "})
_DASHES = frozenset("-–—―")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?…।])[\"»”)]*\s+")
_LANGUAGE_SWITCH = re.compile(r"\([a-z-]+\)")
_ROFF_ESCAPE = re.compile(r"\\(?:f(?:\[[^\]]*\]|\(..|.)|\(..|\[[^\]]*\]|\*(?:\(..|\[[^\]]*\]|.)|s[+-]?\d+|.)")


@dataclass(frozen=True)
class TextSource:
    name: str  # the Debian package
    path: Path
    read: Callable[[Path], Iterator[str]]  # paragraphs


def man_page_paragraphs(directory: Path) -> Iterator[str]:
    """Running text of the roff man pages under ``directory``: macro lines (commands, options,
    headings) end a paragraph and are dropped, inline escapes are removed."""
    for path in sorted(directory.rglob("*.gz")):
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except (OSError, EOFError):
            continue
        paragraph: list[str] = []
        for line in [*lines, ".end"]:
            if line.startswith((".", "'")) or not line.strip():
                if paragraph:
                    yield " ".join(paragraph)
                paragraph = []
            else:
                paragraph.append(_ROFF_ESCAPE.sub(_roff_escape_text, line))


def _roff_escape_text(match: re.Match) -> str:
    """``\\-`` is a hyphen, a named character (``\\(em``, ``\\[...]``, ``\\*(..``) a space,
    fonts, sizes and the rest nothing."""
    escape = match.group(0)
    if escape == "\\-":
        return "-"
    return " " if escape[1] in "([*" else ""


def message_catalog_paragraphs(path: Path) -> Iterator[str]:
    """The translated messages of one gettext catalog, each a paragraph (plural forms too)."""
    import polib

    for entry in polib.mofile(str(path)):
        yield from (entry.msgstr_plural.values() if entry.msgstr_plural else [entry.msgstr])


def language_text_sources(language: str) -> list[TextSource]:
    """The installed Debian text of ``language``: ``fortunes-<language>``, ``manpages-<language>``;
    for a language with neither, the translations of :data:`MESSAGE_CATALOGS` (short interface
    messages, so only a last resort)."""
    candidates = [TextSource(f"fortunes-{language}", FORTUNES_DIR / language, fortune_paragraphs),
                  TextSource(f"manpages-{language}", MAN_DIR / language, man_page_paragraphs)]
    found = [s for s in candidates if s.path.is_dir()]
    if found:
        return found
    catalogs = [TextSource(f"{package}:{domain}.mo", LOCALE_DIR / language / "LC_MESSAGES" / f"{domain}.mo",
                           message_catalog_paragraphs) for domain, package in MESSAGE_CATALOGS]
    return [s for s in catalogs if s.path.is_file()]


def split_into_sentences(paragraph: str) -> list[str]:
    """Sentences of running text: a break after . ! ? or … when the next piece starts upper-case."""
    sentences: list[str] = []
    for piece in _SENTENCE_BREAK.split(" ".join(paragraph.split())):
        first = piece.lstrip(_EDGE)[:1]
        # a capital, or a letter of a script without case (Devanagari, Telugu), starts a sentence
        if sentences and not (first.isalpha() and not first.islower()):
            sentences[-1] += " " + piece
        elif piece:
            sentences.append(piece)
    return sentences


def normalize_sentence(sentence: str, language: str) -> str | None:
    """Lower-case words of ``language``'s alphabet separated by spaces, or ``None`` when the
    sentence has digits, acronyms, code-like tokens, foreign letters, an English function word,
    nothing that marks it as ``language`` (see :data:`FUNCTION_WORDS`), or fewer than 3 or more
    than 20 words."""
    letters = ALPHABETS[language]
    word = re.compile(f"[{letters}]+(?:'[{letters}]+)*" if language in _APOSTROPHE_LANGUAGES else f"[{letters}]+")
    words = []
    for token in unicodedata.normalize("NFC", sentence).translate(_QUOTES).split():
        if set(token) <= _DASHES:
            continue
        core = token.strip(_EDGE)
        if not core:
            continue
        if len(core) > 1 and core.isupper():
            return None  # an acronym: each engine spells it its own way
        core = core.lower()
        if not word.fullmatch(core) or core in ENGLISH_FUNCTION_WORDS:
            return None
        words.append(core)
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    text = " ".join(words)
    if text.isascii() and not set(words) & set(FUNCTION_WORDS[language].split()):
        return None  # nothing marks it as the language: untranslated English, commands
    return text


@dataclass(frozen=True)
class LabelledSentence:
    orthography: str
    ipa: str  # espeak-ng's
    phones: str  # universal phones, space-separated


def read_language_text(language: str, sources: list[TextSource]) -> tuple[list[LabelledSentence], dict]:
    """Every usable sentence of ``language`` with its phones (deduplicated, in a stable order),
    and counts of what was read and dropped."""
    from usrasr.prepare.tts_engines import ENGINES

    espeak = ENGINES["espeak-ng"]
    counts: Counter = Counter()
    unknown: Counter = Counter()
    per_source = []
    orthographies: dict[str, None] = {}
    for source in sources:
        accepted = 0
        for paragraph in source.read(source.path):
            for sentence in split_into_sentences(paragraph):
                counts["read"] += 1
                normalized = normalize_sentence(sentence, language)
                if normalized is None:
                    counts["dropped_by_text_filter"] += 1
                elif normalized not in orthographies:
                    orthographies[normalized] = None
                    accepted += 1
        per_source.append({"source": source.name, "path": str(source.path), "sentences": accepted})
    labelled = []
    for orthography in orthographies:
        ipa = espeak.phonemize(orthography, language)
        if _LANGUAGE_SWITCH.search(ipa):
            counts["dropped_for_language_switch"] += 1
            continue
        missing: Counter = Counter()
        phones = ipa_segments(ipa, missing)
        if missing or not phones:
            unknown.update(missing)
            counts["dropped_for_unknown_symbols"] += 1
            continue
        labelled.append(LabelledSentence(orthography, ipa, " ".join(phones)))
    labelled.sort(key=lambda s: unit_hash(s.orthography, "order:"))
    counts["kept"] = len(labelled)
    return labelled, {"sources": per_source, "counts": dict(counts), "unknown_symbols": dict(unknown)}


def split_of(sentence: LabelledSentence, heldout_fraction: float) -> str:
    return "heldout" if unit_hash(sentence.orthography, "split:") < heldout_fraction else "train"


def voice_plan(language: str, engines: tuple[str, ...] = ENGINES_USED):
    """``{split: {engine: [Voice]}}`` for ``language``: the training voices at every speed of
    :data:`TRAIN_SPEEDS`, the held-out ones at natural speed; English voices never."""
    from usrasr.prepare.tts import Voice
    from usrasr.prepare.tts_engines import ENGINES

    plan: dict[str, dict[str, list]] = {split: {} for split in SPLITS}
    for engine_name in engines:
        engine = ENGINES[engine_name]
        if not engine.is_installed():
            continue
        for name in engine.language_voices(language):
            heldout = name in HELDOUT_FESTIVAL_VOICES or name.endswith(HELDOUT_ESPEAK_VARIANTS)
            speeds = (1.0,) if heldout else TRAIN_SPEEDS
            voices = plan["heldout" if heldout else "train"].setdefault(engine_name, [])
            voices += [Voice(engine_name, name, speed=speed) for speed in speeds]
    return plan


@dataclass(frozen=True)
class PlannedUtterance:
    id: str
    language: str
    split: str
    sentence: LabelledSentence
    voice: object  # usrasr.prepare.tts.Voice


def _assign_voices(language: str, split: str, pool: list[LabelledSentence], start: int, end: int,
                   voices: dict[str, list]) -> list[PlannedUtterance]:
    """Utterances ``start..end`` of a pool read over and over: utterance ``j`` reads sentence
    ``j mod len(pool)``; it goes to the engines in turn and to each engine's voices in turn,
    one voice further on each pass over the pool, so a sentence read again has another voice."""
    engines = sorted(voices)
    planned = []
    for j in range(start, end):
        sentence = pool[j % len(pool)]
        slot = j + j // len(pool)
        engine_voices = voices[engines[slot % len(engines)]]
        voice = engine_voices[(slot // len(engines)) % len(engine_voices)]
        uid = f"{language}-{split}-{voice.voice_id}-{int(unit_hash(sentence.orthography, 'id:') * 1e12):012d}"
        planned.append(PlannedUtterance(uid, language, split, sentence, voice))
    return planned


def _check_languages(languages: list[str], engines: tuple[str, ...]) -> dict[str, tuple[list[TextSource], dict]]:
    """Sources and voices per language; a one-line error for a language that cannot be built."""
    if not languages:
        raise UsrasrError("give at least one language (--languages cs,fi,...)")
    if len(set(languages)) != len(languages):
        raise UsrasrError(f"a language is named twice in {','.join(languages)}")
    unknown_engines = [e for e in engines if e not in ENGINES_USED]
    if unknown_engines or not engines:
        raise UsrasrError(f"unknown TTS engine(s) {','.join(unknown_engines)} (known: {', '.join(ENGINES_USED)})")
    checked = {}
    for language in languages:
        if language.lower().startswith("en"):
            raise UsrasrError("English is the target language: the multilingual corpus has none")
        if language not in ALPHABETS:
            raise UsrasrError(f"unknown language '{language}' (known: {', '.join(sorted(ALPHABETS))})")
        sources = language_text_sources(language)
        if not sources:
            raise UsrasrError(f"no text installed for '{language}': install the Debian package "
                              f"fortunes-{language} or manpages-{language}, or libgtk2.0-common (docs/multilingual.md)")
        voices = voice_plan(language, engines)
        for split in SPLITS:
            if not voices[split]:
                raise UsrasrError(f"no {split} voice of {'/'.join(engines)} is installed for '{language}' "
                                  f"(bin/setup installs them)")
        checked[language] = (sources, voices)
    return checked


def _synthesise_rounds(texts: dict, voices: dict, hours: float, heldout_fraction: float, audio_root: Path,
                       num_workers: int) -> list[PlannedUtterance]:
    """Synthesise each (language, split) in rounds until it holds its share of ``hours``."""
    from usrasr.prepare.tts import synthesize_all

    targets = {"train": hours * (1 - heldout_fraction) * 3600 / len(texts),
               "heldout": hours * heldout_fraction * 3600 / len(texts)}
    pools = {(lang, split): [s for s in texts[lang] if split_of(s, heldout_fraction) == split]
             for lang in texts for split in SPLITS}
    taken = {key: 0 for key in pools}
    seconds_per_word = {key: SECONDS_PER_WORD for key in pools}
    results: dict = {}
    planned: dict[str, PlannedUtterance] = {}
    for round_number in range(1, MAX_ROUNDS + 1):
        jobs = []
        for (lang, split), pool in pools.items():
            done = sum(results[u.id].duration for u in planned.values()
                       if u.language == lang and u.split == split and u.id in results)
            missing = targets[split] - done
            limit = MAX_READINGS * len(pool)
            if missing <= 0 or taken[(lang, split)] >= limit:
                continue
            start = taken[(lang, split)]
            end, budget = start, missing
            while end < limit and budget > 0:
                budget -= len(pool[end % len(pool)].orthography.split()) * seconds_per_word[(lang, split)]
                end += 1
            taken[(lang, split)] = end
            for utt in _assign_voices(lang, split, pool, start, end, voices[lang][split]):
                if utt.id not in planned:
                    planned[utt.id] = utt
                    jobs.append(utt)
        if not jobs:
            break
        log.info("synthesis round %d: %d utterances", round_number, len(jobs))
        for split in SPLITS:
            split_jobs = [(u.id, u.sentence.orthography, u.voice) for u in jobs if u.split == split]
            if split_jobs:
                results.update(synthesize_all(split_jobs, audio_root / split, num_workers=num_workers))
        for key in pools:
            words = sum(len(u.sentence.orthography.split()) for u in planned.values()
                        if (u.language, u.split) == key and u.id in results)
            spoken = sum(results[u.id].duration for u in planned.values()
                         if (u.language, u.split) == key and u.id in results)
            if words:
                seconds_per_word[key] = spoken / words
    for (lang, split), pool in pools.items():
        if taken[(lang, split)] > len(pool):
            log.warning("%s %s: its %d sentences are read up to %d times (by different voices)",
                        lang, split, len(pool), -(-taken[(lang, split)] // len(pool)))
        if taken[(lang, split)] >= MAX_READINGS * len(pool):
            log.warning("%s %s: every sentence is read %d times; the split may be short of its %.2f h",
                        lang, split, MAX_READINGS, targets[split] / 3600)
    return [u for u in planned.values() if u.id in results]


def _write_plan(path: Path, utterances: list[PlannedUtterance]) -> None:
    write_json_atomic(path, [{
        "id": u.id, "language": u.language, "split": u.split, "orthography": u.sentence.orthography,
        "ipa": u.sentence.ipa, "phones": u.sentence.phones,
        "voice": [u.voice.engine, u.voice.name, u.voice.speed, u.voice.pitch],
    } for u in utterances])


def _read_plan(path: Path) -> list[PlannedUtterance]:
    from usrasr.prepare.tts import Voice

    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = json.load(f)
    return [PlannedUtterance(r["id"], r["language"], r["split"],
                             LabelledSentence(r["orthography"], r["ipa"], r["phones"]), Voice(*r["voice"]))
            for r in rows]


def _write_manifests(layout: CorpusLayout, utterances: list[PlannedUtterance], num_workers: int) -> dict:
    """Recordings, supervisions (universal phones) and fbank cuts per split; the audio summary."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    stats: dict = {}
    for split in SPLITS:
        recordings, supervisions = [], []
        for utt in sorted((u for u in utterances if u.split == split), key=lambda u: u.id):
            recording = Recording.from_file(layout.audio_dir / split / f"{utt.id}.wav", recording_id=utt.id)
            recordings.append(recording)
            supervisions.append(SupervisionSegment(
                id=utt.id, recording_id=utt.id, start=0.0, duration=recording.duration, channel=0,
                text=utt.sentence.phones, language=utt.language, speaker=utt.voice.voice_id,
                custom={"voice": f"{utt.voice.engine}-{utt.voice.name}", "engine": utt.voice.engine,
                        "orthography": utt.sentence.orthography}))
        if not recordings:
            raise UsrasrError(f"no audio was synthesised for {split}")
        recordings = RecordingSet.from_recordings(recordings)
        supervisions = SupervisionSet.from_segments(supervisions)
        save_lhotse_atomic(recordings, layout.recordings(split))
        save_lhotse_atomic(supervisions, layout.supervisions(split))
        cuts = compute_features(cuts_from_recordings(recordings, supervisions), layout.root, split,
                                num_workers=num_workers)
        save_lhotse_atomic(cuts, layout.cuts(split))
        stats[split] = _audio_summary(supervisions)
    return stats


def _audio_summary(supervisions) -> dict:
    """Utterances and hours per language, and per engine and voice within it."""
    summary: dict = {}
    sentences: dict[str, set] = {}
    for sup in supervisions:
        entry = summary.setdefault(sup.language, {"utterances": 0, "hours": 0.0, "engines": {}, "voices": {}})
        sentences.setdefault(sup.language, set()).add(sup.custom["orthography"])
        for level in (entry, entry["engines"].setdefault(sup.custom["engine"], {"utterances": 0, "hours": 0.0}),
                      entry["voices"].setdefault(sup.speaker, {"utterances": 0, "hours": 0.0})):
            level["utterances"] += 1
            level["hours"] += sup.duration / 3600
    for language, entry in summary.items():
        entry["sentences"] = len(sentences[language])
        for level in (entry, *entry["engines"].values(), *entry["voices"].values()):
            level["hours"] = round(level["hours"], 4)
    return summary


def write_phone_inventory(layout: CorpusLayout, utterances: list[PlannedUtterance]) -> list[str]:
    """``lang/phones.txt`` (``<blk>`` 0, then the phones the corpus uses) and ``lang/articulatory.tsv``."""
    phones = sorted({p for u in utterances for p in u.sentence.phones.split()})
    SymbolTable.from_symbols([BLANK, *phones]).to_file(layout.lang_dir / "phones.txt")
    names, rows = articulatory_features(phones)
    with atomic_open(layout.lang_dir / "articulatory.tsv") as f:
        f.write("\t".join(["phone", *names]) + "\n")
        f.writelines("\t".join([phone, *map(str, row)]) + "\n" for phone, row in zip(phones, rows))
    return phones


def prepare_multilingual(out_dir: str | Path, languages: list[str], hours: float = 5.0,
                         heldout_fraction: float = HELDOUT_FRACTION, engines: tuple[str, ...] = ENGINES_USED,
                         num_workers: int = 2, force: bool = False) -> dict:
    """Build the multilingual corpus under ``out_dir``; return its report (``report.json``)."""
    if hours <= 0:
        raise UsrasrError(f"--hours must be positive, got {hours}")
    if not 0 < heldout_fraction < 1:
        raise UsrasrError(f"the held-out fraction must be in (0, 1), got {heldout_fraction}")
    checked = _check_languages(languages, tuple(engines))
    layout = CorpusLayout(Path(out_dir).resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    lock_directory(layout.root, "corpus")
    sentences_path = layout.text_dir / "multilingual_sentences.json.gz"
    plan_path = layout.text_dir / "multilingual_utterances.json.gz"
    voices = {lang: voices for lang, (_, voices) in checked.items()}
    text_step = Step(layout.root, "multilingual_text", {
        "version": TEXT_VERSION, "languages": languages,
        "sources": {lang: [[s.name, str(s.path), _tree_stamp(s.path)] for s in sources]
                    for lang, (sources, _) in checked.items()},
    }, [sentences_path])
    audio_step = Step(layout.root, "multilingual_audio", {
        "text": text_step.fingerprint, "hours": hours, "heldout_fraction": heldout_fraction,
        "voices": {lang: {split: {e: [v.voice_id for v in vs] for e, vs in by_engine.items()}
                          for split, by_engine in plan.items()} for lang, plan in voices.items()},
    }, [layout.audio_dir / split for split in SPLITS] + [plan_path])
    features_step = Step(layout.root, "multilingual_features", {
        "audio": audio_step.fingerprint, "fbank": fbank_extractor().to_dict(),
    }, [layout.features_dir(split) for split in SPLITS]
       + [p for split in SPLITS for p in (layout.recordings(split), layout.supervisions(split), layout.cuts(split))]
       + [layout.lang_dir / "phones.txt", layout.lang_dir / "articulatory.tsv", layout.report])
    steps = [text_step, audio_step, features_step]
    todo = run_steps(steps, force)
    if not any(todo):
        log.info("%s is up to date; nothing to do (use --force to redo)", layout.root)
        return json.loads(layout.report.read_text(encoding="utf-8"))
    seconds: dict[str, float] = {}

    t0 = time.time()
    if todo[0]:
        text = {}
        with progress() as bar:
            task = bar.add_task("reading text", total=len(checked), status="")
            for lang, (sources, _) in checked.items():
                labelled, counts = read_language_text(lang, sources)
                text[lang] = {**counts, "sentences": [[s.orthography, s.ipa, s.phones] for s in labelled]}
                log.info("%s: %d sentences kept of %d read", lang, len(labelled), counts["counts"]["read"])
                bar.advance(task)
        write_json_atomic(sentences_path, text)
        text_step.finish()
        seconds["text"] = time.time() - t0
    with gzip.open(sentences_path, "rt", encoding="utf-8") as f:
        text = json.load(f)
    texts = {lang: [LabelledSentence(*row) for row in text[lang]["sentences"]] for lang in languages}
    for lang, sentences in texts.items():
        for split in SPLITS:
            have = sum(1 for s in sentences if split_of(s, heldout_fraction) == split)
            need = len(voices[lang][split])  # one per engine
            if have < need:
                raise UsrasrError(f"'{lang}' has {have} usable {split} sentences, fewer than its {need} "
                                  f"engines: install more of its text")

    t0 = time.time()
    if todo[1]:
        utterances = _synthesise_rounds(texts, voices, hours, heldout_fraction, layout.audio_dir, num_workers)
        _write_plan(plan_path, utterances)
        audio_step.finish()
        seconds["synthesis"] = time.time() - t0
    utterances = _read_plan(plan_path)

    t0 = time.time()
    stats = _write_manifests(layout, utterances, num_workers)
    phones = write_phone_inventory(layout, utterances)
    seconds["manifests_and_features"] = time.time() - t0
    report = {
        "english": False,
        "languages": languages,
        "text": {lang: {k: v for k, v in text[lang].items() if k != "sentences"} for lang in languages},
        "voices": {split: {lang: {e: sorted(v.voice_id for v in vs) for e, vs in voices[lang][split].items()}
                           for lang in languages} for split in SPLITS},
        "audio": stats,
        "hours": round(sum(e["hours"] for split in stats.values() for e in split.values()), 3),
        "phones": len(phones),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    write_json_atomic(layout.report, report)
    features_step.finish()
    return report


def _tree_stamp(path: Path) -> str:
    """A digest of the names, sizes and times of the file ``path`` or the files under it: it
    changes when a package does."""
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    files = sorted([str(p.relative_to(path.parent if path.is_file() else path)), *file_stamp(p)] for p in paths)
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()
