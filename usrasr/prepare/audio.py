"""The unpaired audio side: import users' audio as 16 kHz mono, build manifests, compute fbank.

Every input is decoded once, downmixed and resampled, and written as a 16 kHz
mono WAV under ``DIR/audio``, so later stages never meet odd formats again.
"""

from __future__ import annotations

import concurrent.futures as futures
import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path


from usrasr.corpus.features import SAMPLE_RATE, fbank_extractor, load_mono_16k
from usrasr.utils.console import log, progress
from usrasr.utils.errors import NothingUsableError, UsrasrError
from usrasr.utils.io import atomic_path, save_lhotse_atomic, write_json_atomic
from usrasr.corpus.layout import CorpusLayout

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".sph", ".aiff", ".aif"}


@dataclass
class AudioProblems:
    """Inputs that were skipped: (id, path, reason)."""

    skipped: list[tuple[str, str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return f"skipped {len(self.skipped)} file(s)" + (
            ": " + "; ".join(f"{p} ({r})" for _, p, r in self.skipped[:3]) if self.skipped else "")


def list_audio_source(source: str | Path) -> list[tuple[str, str]]:
    """``(id, path)`` pairs from a folder, a Kaldi ``wav.scp`` or a Lhotse manifest."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        ids = ["_".join(p.relative_to(source).with_suffix("").parts) for p in files]
        return list(zip(ids, map(str, files)))
    if not source.is_file():
        raise UsrasrError(f"audio source not found: {source}")
    if source.name.endswith((".jsonl.gz", ".jsonl", ".json")):
        from lhotse import CutSet, RecordingSet, load_manifest

        manifest = load_manifest(source)
        recordings = manifest if isinstance(manifest, RecordingSet) else (
            manifest.to_eager().recordings if isinstance(manifest, CutSet) else None)
        if recordings is None:
            raise UsrasrError(f"{source}: expected a Lhotse RecordingSet or CutSet")
        return [(r.id, r.sources[0].source) for r in recordings]
    pairs = []
    for lineno, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        if len(fields) != 2 or fields[1].rstrip().endswith("|"):
            raise UsrasrError(f"{source}:{lineno}: expected 'utterance-id path' (pipes are not supported)")
        pairs.append((fields[0], fields[1].strip()))
    return pairs


def _import_one(utt_id: str, src: str, dst: str) -> tuple[str, str, str | None]:
    import soundfile as sf

    try:
        samples, _ = load_mono_16k(src)
    except ValueError as exc:
        return utt_id, src, str(exc)
    with atomic_path(dst) as tmp:
        sf.write(tmp, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return utt_id, src, None


def import_audio(pairs: list[tuple[str, str]], out_dir: str | Path, num_workers: int = 2, force: bool = False):
    """Convert inputs to 16 kHz mono WAV under ``out_dir/audio``; return (RecordingSet, problems)."""
    from lhotse import Recording, RecordingSet

    # Absolute: the manifests name these files, and are read from any working directory.
    out_dir = Path(out_dir).resolve()
    layout = CorpusLayout(out_dir)
    audio_dir = layout.audio_dir
    audio_dir.mkdir(parents=True, exist_ok=True)
    problems = AudioProblems()
    seen: set[str] = set()
    jobs = []
    for utt_id, src in pairs:
        if utt_id in seen:
            problems.skipped.append((utt_id, src, "duplicate id"))
            continue
        seen.add(utt_id)
        dst = audio_dir / f"{utt_id}.wav"
        if dst.exists() and not force:
            continue
        jobs.append((utt_id, src, str(dst)))
    with progress() as bar, futures.ProcessPoolExecutor(max(1, num_workers)) as pool:
        task = bar.add_task("importing audio", total=len(jobs), status="")
        for fut in futures.as_completed([pool.submit(_import_one, *job) for job in jobs]):
            utt_id, src, error = fut.result()
            if error:
                problems.skipped.append((utt_id, src, error))
                log.warning("skipping %s: %s", src, error)
            bar.advance(task)
    bad = {u for u, _, _ in problems.skipped}
    recordings = RecordingSet.from_recordings(
        Recording.from_file(audio_dir / f"{u}.wav", recording_id=u)
        for u, _ in pairs if u not in bad and (audio_dir / f"{u}.wav").exists())
    if problems.skipped:
        write_json_atomic(layout.skipped_audio, problems.skipped)
        log.warning("%s (list in %s)", problems.summary(), layout.skipped_audio)
    if len(recordings) == 0:
        raise NothingUsableError(f"no usable audio ({problems.summary()})")
    return recordings, problems


def cuts_from_recordings(recordings, supervisions=None):
    """One cut per recording with the recording's id (and its supervisions)."""
    from lhotse import CutSet

    by_recording: dict[str, list] = {}
    for sup in supervisions or []:
        by_recording.setdefault(sup.recording_id, []).append(sup)
    cuts = []
    for recording in recordings:
        cut = recording.to_cut()
        cut.supervisions = by_recording.get(recording.id, [])
        cuts.append(cut)
    return CutSet.from_cuts(cuts)


def _features_chunk(cuts_path: str, storage_path: str) -> str:
    """Compute fbank for one chunk of cuts into one lilcom archive; return its cut manifest."""
    import torch
    from lhotse import CutSet
    from lhotse.features.io import LilcomChunkyWriter

    torch.set_num_threads(1)
    cuts = CutSet.from_file(cuts_path)
    with atomic_path(storage_path) as tmp_storage:
        with LilcomChunkyWriter(tmp_storage) as writer:
            done = [c.compute_and_store_features(fbank_extractor(), writer) for c in cuts]
        # The manifest must name the final archive, not the temporary one.
        done = CutSet.from_cuts(done).map(functools.partial(_rename_storage, storage_path=storage_path))
        out = storage_path + ".cuts.jsonl.gz"
        save_lhotse_atomic(done, out)
    return out


def _rename_storage(cut, storage_path: str):
    cut.features.storage_path = storage_path
    return cut


def compute_features(cuts, out_dir: str | Path, name: str, num_workers: int = 2, chunk_size: int = 100):
    """80-dim Lhotse fbank for every cut, stored with lilcom, in parallel chunks with progress.

    Finished chunks are kept, so an interrupted run resumes where it stopped.
    """
    from lhotse import CutSet

    feats_dir = CorpusLayout(Path(out_dir).resolve()).features_dir(name)  # absolute, as the audio paths
    feats_dir.mkdir(parents=True, exist_ok=True)
    cuts = cuts.to_eager()
    chunks = cuts.split(num_splits=max(1, (len(cuts) + chunk_size - 1) // chunk_size))
    results: list[str] = []
    jobs = []
    for chunk in chunks:
        # Named by content, so a resumed run with other cuts never reuses a stale chunk.
        digest = hashlib.sha1(",".join(c.id for c in chunk).encode()).hexdigest()[:12]
        storage = str(feats_dir / f"feats_{digest}.lca")
        if Path(storage + ".cuts.jsonl.gz").exists():
            results.append(storage + ".cuts.jsonl.gz")
            continue
        chunk_path = str(feats_dir / f"chunk_{digest}.jsonl.gz")
        save_lhotse_atomic(chunk, chunk_path)
        jobs.append((chunk_path, storage))
    with progress() as bar, futures.ProcessPoolExecutor(max(1, num_workers)) as pool:
        task = bar.add_task(f"fbank {name}", total=len(chunks), completed=len(results), status="")
        for fut in futures.as_completed([pool.submit(_features_chunk, *job) for job in jobs]):
            results.append(fut.result())
            bar.advance(task)
    for chunk_path, _ in jobs:
        os.unlink(chunk_path)
    with_feats = CutSet.from_cuts(c for path in sorted(results) for c in CutSet.from_file(path))
    order = {c.id: i for i, c in enumerate(cuts)}
    return CutSet.from_cuts(sorted(with_feats, key=lambda c: order[c.id]))


def prepare_audio(source: str | Path, out_dir: str | Path, name: str = "train_audio", num_workers: int = 2,
                  force: bool = False) -> Path:
    """``usrasr prepare audio``: import ``source`` as 16 kHz WAV, then recordings, fbank and cuts
    manifests of split ``name``; returns the cuts manifest.  Done already: nothing to do."""
    layout = CorpusLayout(out_dir)
    cuts_path = layout.cuts(name)
    if cuts_path.exists() and not force:
        log.info("%s exists; nothing to do (use --force to redo)", cuts_path)
        return cuts_path
    recordings, _ = import_audio(list_audio_source(source), out_dir, num_workers=num_workers, force=force)
    save_lhotse_atomic(recordings, layout.recordings(name))
    cuts = compute_features(cuts_from_recordings(recordings), out_dir, name, num_workers=num_workers)
    save_lhotse_atomic(cuts, cuts_path)
    log.info("%d recordings, %.2f h -> %s", len(recordings), sum(r.duration for r in recordings) / 3600, cuts_path)
    return cuts_path
