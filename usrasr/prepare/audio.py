"""The unpaired audio side: import users' audio as 16 kHz mono, build manifests, compute fbank.

Every input is decoded once, downmixed and resampled, and written as a 16 kHz
mono WAV under ``DIR/audio/NAME`` (one folder per split), so later stages never meet odd formats again.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path


from usrasr.corpus.features import SAMPLE_RATE, fbank_extractor, load_mono_16k
from usrasr.utils.console import log, progress
from usrasr.utils.errors import NothingUsableError, UsrasrError
from usrasr.utils.io import atomic_path, read_utf8_text, save_lhotse_atomic, write_json_atomic
from usrasr.utils.processes import lock_directory, run_parallel
from usrasr.utils.steps import Step, file_stamp, run_steps
from usrasr.corpus.layout import CorpusLayout

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".sph", ".aiff", ".aif"}
# An id names a file (audio/NAME/<id>.wav) and is the first field of Kaldi text lines.
_UNSAFE_ID = re.compile(r"[\s/\\]|^\.|^$")


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
        # Spaces in file names would split Kaldi text lines: they become "_".
        ids = ["_".join("_".join(p.relative_to(source).with_suffix("").parts).split()) for p in files]
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
        return [(_safe_id(r.id, source), r.sources[0].source) for r in recordings]
    pairs = []
    for lineno, line in enumerate(read_utf8_text(source, "wav.scp").splitlines(), 1):
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        if len(fields) != 2 or fields[1].rstrip().endswith("|"):
            raise UsrasrError(f"{source}:{lineno}: expected 'utterance-id path' (pipes are not supported)")
        pairs.append((_safe_id(fields[0], f"{source}:{lineno}"), fields[1].strip()))
    return pairs


def _safe_id(utt_id: str, origin) -> str:
    if _UNSAFE_ID.search(utt_id) or utt_id in (".", ".."):
        raise UsrasrError(f"{origin}: utterance id '{utt_id}' cannot name a file: no spaces, slashes or "
                          f"leading dot")
    return utt_id


def _import_one(utt_id: str, src: str, dst: str) -> tuple[str, str, str | None]:
    import soundfile as sf

    try:
        samples, _ = load_mono_16k(src)
    except ValueError as exc:
        return utt_id, src, str(exc)
    with atomic_path(dst) as tmp:
        sf.write(tmp, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return utt_id, src, None


def audio_dir(out_dir: str | Path, name: str) -> Path:
    """Where ``prepare audio`` puts the WAVs of split ``name``: one folder per split, so the
    same id in two splits never shares a file."""
    return CorpusLayout(out_dir).audio_dir / name


def import_audio(pairs: list[tuple[str, str]], out_dir: str | Path, name: str = "train_audio", num_workers: int = 2):
    """Convert inputs to 16 kHz mono WAV under ``out_dir/audio/name``, keeping those a killed
    run finished; return (RecordingSet, problems)."""
    from lhotse import Recording, RecordingSet

    # Absolute: the manifests name these files, and are read from any working directory.
    out_dir = Path(out_dir).resolve()
    layout = CorpusLayout(out_dir)
    split_dir = audio_dir(out_dir, name)
    split_dir.mkdir(parents=True, exist_ok=True)
    problems = AudioProblems()
    seen: set[str] = set()
    jobs = []
    for utt_id, src in pairs:
        if utt_id in seen:
            problems.skipped.append((utt_id, src, "duplicate id"))
            continue
        seen.add(utt_id)
        dst = split_dir / f"{utt_id}.wav"
        if not dst.exists():
            jobs.append((utt_id, src, str(dst)))
    with progress() as bar:
        task = bar.add_task("importing audio", total=len(jobs), status="")
        for utt_id, src, error in run_parallel(_import_one, jobs, num_workers):
            if error:
                problems.skipped.append((utt_id, src, error))
                log.warning("skipping %s: %s", src, error)
            bar.advance(task)
    problems.skipped.sort(key=lambda item: item[0])  # in id order, however the workers finished
    bad = {u for u, _, _ in problems.skipped}
    recordings = RecordingSet.from_recordings(
        Recording.from_file(split_dir / f"{u}.wav", recording_id=u)
        for u, _ in pairs if u not in bad and (split_dir / f"{u}.wav").exists())
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
    for stale in feats_dir.glob("chunk_*.jsonl.gz"):  # inputs of a killed run's workers
        stale.unlink()
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
    with progress() as bar:
        task = bar.add_task(f"fbank {name}", total=len(chunks), completed=len(results), status="")
        chunk_of = {storage + ".cuts.jsonl.gz": chunk_path for chunk_path, storage in jobs}
        for done in run_parallel(_features_chunk, jobs, num_workers):
            results.append(done)
            os.unlink(chunk_of[done])
            bar.advance(task)
    with_feats = CutSet.from_cuts(c for path in sorted(results) for c in CutSet.from_file(path))
    order = {c.id: i for i, c in enumerate(cuts)}
    return CutSet.from_cuts(sorted(with_feats, key=lambda c: order[c.id]))


def prepare_audio(source: str | Path, out_dir: str | Path, name: str = "train_audio", num_workers: int = 2,
                  force: bool = False) -> Path:
    """``usrasr prepare audio``: import ``source`` as 16 kHz WAV, then recordings, fbank and cuts
    manifests of split ``name``; returns the cuts manifest.

    Two steps, each redone when its inputs changed (see :mod:`usrasr.utils.steps`): the import
    (the files of ``source``, by size and time) and the features."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise UsrasrError(f"split name '{name}' must be letters, digits, '_', '-' or '.'")
    pairs = list_audio_source(source)
    layout = CorpusLayout(Path(out_dir).resolve())
    lock_directory(layout.root, "corpus")
    sources = [[utt_id, str(Path(src).resolve()), file_stamp(src) if os.path.isfile(src) else None]
               for utt_id, src in pairs]
    imported = Step(layout.root, f"audio_{name}", {"split": name, "sources": sources},
                    [audio_dir(layout.root, name)])
    featured = Step(layout.root, f"features_{name}", {"audio": imported.fingerprint, "fbank": fbank_extractor().to_dict()},
                    [layout.features_dir(name), layout.recordings(name), layout.cuts(name)])
    cuts_path = layout.cuts(name)
    if not any(run_steps([imported, featured], force)):
        log.info("%s is up to date with %s; nothing to do (use --force to redo)", cuts_path, source)
        return cuts_path
    recordings, _ = import_audio(pairs, layout.root, name, num_workers=num_workers)
    imported.finish()
    save_lhotse_atomic(recordings, layout.recordings(name))
    cuts = compute_features(cuts_from_recordings(recordings), layout.root, name, num_workers=num_workers)
    save_lhotse_atomic(cuts, cuts_path)
    featured.finish()
    log.info("%d recordings, %.2f h -> %s", len(recordings), sum(r.duration for r in recordings) / 3600, cuts_path)
    return cuts_path
