"""``usrasr prepare default``: the project's own unpaired corpus, synthesised here.

Text comes from packages the setup installs (:mod:`usrasr.prepare.sources`);
audio from several TTS engines and voices (:mod:`usrasr.prepare.tts`).  The
splits are disjoint in sentences, and dev/test use voices train-audio never
uses.  Train-audio transcripts and alignments are written only under
``scoring/`` so training code cannot read them by accident.
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass
from pathlib import Path

from usrasr.corpus.features import SAMPLE_RATE
from usrasr.prepare.audio import compute_features, cuts_from_recordings
from usrasr.lang.g2p import cmudict_lexicon
from usrasr.prepare.sources import SOURCES
from usrasr.prepare.splits import AUDIO_SPLITS, split_sentences, unit_hash
from usrasr.lang.text import normalized_sentences
from usrasr.prepare.text import LmOrders, prepare_text_corpus
from usrasr.utils.console import log, progress
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_open, save_lhotse_atomic, write_json_atomic
from usrasr.corpus.layout import CorpusLayout

# Default size, chosen so that prepare + train + decode of the demo fit the
# time goal on 2 CPU cores (docs/results/2026-11-22-prepare-default-corpus-time.md and
# docs/results/2026-12-02-main-job.md).
DEFAULT_UTTERANCES = {"train_audio": 1500, "dev": 100, "test": 200}
DEFAULT_TEXT_SENTENCES = 40000
# Audio sentences are kept short so synthesis and training stay cheap; every
# word must be in CMUdict so the scoring transcripts have trusted phones.
AUDIO_MAX_WORDS = 20
MEAN_SECONDS_PER_WORD = 0.33


@dataclass
class PlannedUtterance:
    id: str
    split: str
    text: str
    voice: str  # Voice.voice_id


def collect_sentences(sources: list[str]) -> list[str]:
    sentences: list[str] = []
    with progress() as bar:
        task = bar.add_task("reading text sources", total=len(sources), status="")
        for name in sources:
            if name not in SOURCES:
                raise UsrasrError(f"unknown text source '{name}' (known: {', '.join(SOURCES)})")
            found = list(normalized_sentences(SOURCES[name]()))
            log.info("text source %s: %d sentences", name, len(found))
            sentences += found
            bar.advance(task)
    return sentences


def plan_utterances(splits: dict[str, list[str]], sizes: dict[str, int], train_voices, heldout_voices) -> list[PlannedUtterance]:
    """Pick audio sentences per split and give each a voice, deterministically."""
    lexicon = cmudict_lexicon()
    plan: list[PlannedUtterance] = []
    for split in AUDIO_SPLITS:
        voices = sorted(train_voices if split == "train_audio" else heldout_voices, key=lambda v: v.voice_id)
        eligible = [s for s in splits[split]
                    if len(s.split()) <= AUDIO_MAX_WORDS and all(w in lexicon for w in s.split())]
        if len(eligible) < sizes[split]:
            log.warning("%s: only %d eligible sentences for %d requested utterances",
                        split, len(eligible), sizes[split])
        chosen = sorted(eligible, key=lambda s: unit_hash(s, "audio:"))[: sizes[split]]
        for i, sentence in enumerate(chosen):
            voice = voices[i % len(voices)]
            uid = f"{split}-{voice.voice_id}-{int(unit_hash(sentence, 'id:') * 1e12):012d}"
            plan.append(PlannedUtterance(uid, split, sentence, voice.voice_id))
    return plan


def _write_kaldi_dir(directory: Path, rows: list[tuple[str, str, str, str | None]]) -> None:
    """``wav.scp``, ``utt2spk`` and (when texts are given) ``text`` for one split."""
    with atomic_open(directory / "wav.scp") as f:
        f.writelines(f"{uid} {wav}\n" for uid, wav, _, _ in rows)
    with atomic_open(directory / "utt2spk") as f:
        f.writelines(f"{uid} {spk}\n" for uid, _, spk, _ in rows)
    if all(text is not None for *_, text in rows):
        with atomic_open(directory / "text") as f:
            f.writelines(f"{uid} {text}\n" for uid, _, _, text in rows)


def build_manifests(out_dir: Path, plan: list[PlannedUtterance], results: dict, voices: dict, num_workers: int) -> dict:
    """Lhotse manifests and Kaldi dirs per split; train-audio text only under ``scoring/``."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.supervision import AlignmentItem

    lexicon = cmudict_lexicon()
    stats = {}
    for split in AUDIO_SPLITS:
        recordings, full, blind, rows = [], [], [], []
        for utt in (u for u in plan if u.split == split and u.id in results):
            result = results[utt.id]
            recording = Recording.from_file(result.wav_path, recording_id=utt.id)
            assert recording.sampling_rate == SAMPLE_RATE and recording.num_channels == 1
            voice = voices[utt.voice]
            # speaker = the perturbed voice; voice = the engine's base voice.
            meta = {"voice": f"{voice.engine}-{voice.name}", "engine": voice.engine}
            alignment = None
            if result.alignment:
                alignment = {"phone": [
                    AlignmentItem(symbol=seg.phone, start=round(seg.start, 4),
                                  duration=round(max(0.0, min(seg.duration, recording.duration - seg.start)), 4))
                    for seg in result.alignment if seg.start < recording.duration]}
            phones = " ".join(p for w in utt.text.split() for p in lexicon[w])
            common = dict(id=utt.id, recording_id=utt.id, start=0.0, duration=recording.duration, channel=0,
                          language="English", speaker=utt.voice)
            full.append(SupervisionSegment(**common, text=utt.text, alignment=alignment,
                                           custom={**meta, "phones": phones}))
            blind.append(SupervisionSegment(**common, custom=meta))
            recordings.append(recording)
            rows.append((utt.id, str(Path(result.wav_path).resolve()), utt.voice, utt.text))
        if not recordings:
            raise UsrasrError(f"no audio was synthesised for {split}")
        recordings = RecordingSet.from_recordings(recordings)
        full = SupervisionSet.from_segments(full)
        layout = CorpusLayout(out_dir)
        save_lhotse_atomic(recordings, layout.recordings(split))
        if split == "train_audio":
            # The only copy of train-audio transcripts and alignments: scoring only.
            save_lhotse_atomic(full, layout.scoring_supervisions(split))
            _write_kaldi_dir(layout.scoring_dir / split, rows)
            supervisions = SupervisionSet.from_segments(blind)
            _write_kaldi_dir(layout.kaldi_dir(split), [(u, w, s, None) for u, w, s, _ in rows])
        else:
            supervisions = full
            _write_kaldi_dir(layout.kaldi_dir(split), rows)
        save_lhotse_atomic(supervisions, layout.supervisions(split))
        cuts = cuts_from_recordings(recordings, supervisions)
        cuts = compute_features(cuts, out_dir, split, num_workers=num_workers)
        save_lhotse_atomic(cuts, layout.cuts(split))
        stats[split] = {
            "utterances": len(recordings),
            "hours": round(sum(r.duration for r in recordings) / 3600, 3),
            "voices": sorted({s.speaker for s in supervisions}),
            "base_voices": sorted({s.custom["voice"] for s in supervisions}),
            "with_alignment": sum(1 for s in full if s.alignment),
        }
    return stats


def prepare_default(
    out_dir: str | Path,
    utterances: dict[str, int] | None = None,
    hours: float | None = None,
    sources: list[str] | None = None,
    text_sentences: int = DEFAULT_TEXT_SENTENCES,
    orders: LmOrders = LmOrders(),
    num_workers: int = 2,
    force: bool = False,
) -> dict:
    """Build the default unpaired corpus under ``out_dir``; return the summary report."""
    from usrasr.prepare.tts import default_voice_plan, synthesize_all

    out_dir = Path(out_dir).resolve()  # the recordings' paths in the manifests must not depend on the cwd
    sizes = dict(DEFAULT_UTTERANCES if utterances is None else utterances)
    sources = sources or list(SOURCES)
    timings: dict[str, float] = {}

    t0 = time.time()
    layout = CorpusLayout(out_dir)
    splits_path = layout.text_splits
    if splits_path.exists() and not force:
        with gzip.open(splits_path, "rt", encoding="utf-8") as f:
            splits = json.load(f)
    else:
        splits = split_sentences(collect_sentences(sources))
        write_json_atomic(splits_path, splits)
    if hours is not None:
        # Size the train-audio split by expected duration; dev/test keep theirs.
        mean_words = sum(len(s.split()) for s in splits["train_audio"][:2000]) / max(1, min(2000, len(splits["train_audio"])))
        sizes["train_audio"] = max(1, int(hours * 3600 / (mean_words * MEAN_SECONDS_PER_WORD)))
    timings["text"] = time.time() - t0

    t0 = time.time()
    if not layout.rank_report.exists() or force:
        train_text = splits["train_text"][:text_sentences]
        prepare_text_corpus(train_text, out_dir, orders=orders)
    timings["lang_and_lms"] = time.time() - t0

    t0 = time.time()
    train_voices, heldout_voices = default_voice_plan()
    voices = {v.voice_id: v for v in [*train_voices, *heldout_voices]}
    plan = plan_utterances(splits, sizes, train_voices, heldout_voices)
    results = synthesize_all([(u.id, u.text, voices[u.voice]) for u in plan], layout.audio_dir,
                             num_workers=num_workers)
    timings["synthesis"] = time.time() - t0

    t0 = time.time()
    stats = build_manifests(out_dir, plan, results, voices, num_workers)
    timings["manifests_and_features"] = time.time() - t0

    report = {
        "sentences": {split: len(sents) for split, sents in splits.items()},
        "train_text_used": min(text_sentences, len(splits["train_text"])),
        "audio": stats,
        "train_voices": sorted(v.voice_id for v in train_voices),
        "heldout_voices": sorted(v.voice_id for v in heldout_voices),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    write_json_atomic(layout.report, report)
    return report
