"""One layer's features of each cut, written once as Lhotse features.

Outputs under ``out``::

    extract.json                  what is computed (encoder, layer, storage, shard size): a rerun checks it
    <name>/shard-00000.jsonl.gz   the cuts of one finished shard, their ``features`` pointing at the storage
    <name>/shard-00000.lca        its lilcom storage (or the folder shard-00000/ of .npy files)
    cuts_<name>.jsonl.gz          every shard's cuts, in the input's order

``<name>`` is the input manifest's name without ``cuts_`` and ``.jsonl.gz``.  A
shard's manifest is written (atomically) after its storage, so an interrupted
run redoes at most the shard it was in.  The features keep the input cuts' ids,
start and duration, with the source's own frame shift; ``cut.load_features()``
reads them (Lhotse makes that ``cut.num_frames`` rows, the duration over the frame
shift: a model one frame short gets its last frame repeated), and the output folder is itself a feature source for ``usrasr train
--units encoder --set encoder=OUT``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from usrasr.models.pretrained import encode_all, open_layer_source
from usrasr.utils.console import log, progress
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import save_lhotse_atomic, write_json_atomic

STORAGES = ("lilcom", "numpy")
# lilcom rounds to multiples of 2**tick_power; Lhotse's -5 suits log-fbank (values in the tens), a finer
# step suits hidden states (about unit variance per dimension, often smaller)
LILCOM_TICK_POWER = -8


def manifest_name(path: Path) -> str:
    """``cuts_train_audio.jsonl.gz`` -> ``train_audio``."""
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name.removeprefix("cuts_")


def _settings(out: Path, record: dict) -> None:
    """Record what ``out`` holds, or check that a rerun asks for the same."""
    path = out / "extract.json"
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = {key: (previous.get(key), value) for key, value in record.items() if previous.get(key) != value}
        if changed:
            raise UsrasrError(f"{out} holds other features ({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in changed.items())}): "
                              f"use another --out, or rerun with the same settings to resume")
    else:
        write_json_atomic(path, record)


def _write_shard(cuts: list, feats: list, source, layer: int, storage: str, base: Path):
    """Store ``feats`` of ``cuts`` under ``base`` (+ the storage's suffix); the cuts pointing at them."""
    from lhotse import LilcomChunkyWriter, NumpyFilesWriter
    from lhotse.features.base import Features
    from lhotse.utils import fastcopy

    written = []
    with (LilcomChunkyWriter(f"{base}.lca", tick_power=LILCOM_TICK_POWER, mode="w") if storage == "lilcom"
          else NumpyFilesWriter(base)) as writer:
        for cut, f in zip(cuts, feats):
            array = f.numpy()
            key = writer.write(cut.id, array)
            written.append(fastcopy(cut, features=Features(
                type=f"encoder-layer{layer}", num_frames=array.shape[0], num_features=array.shape[1],
                frame_shift=source.frame_shift, sampling_rate=cut.sampling_rate, start=cut.start,
                duration=cut.duration, storage_type=writer.name, storage_path=str(writer.storage_path),
                storage_key=key, recording_id=cut.recording_id, channels=cut.channel)))
    return written


def extract_features(encoder: str | Path, layer: int, cuts_paths: Sequence[str | Path], out: str | Path,
                     storage: str = "lilcom", shard_size: int = 200, batch_seconds: float = 60.0,
                     device: str = "auto") -> dict:
    """Write ``layer`` of ``encoder`` (see :func:`usrasr.models.pretrained.open_layer_source`) for every cut
    of each manifest in ``cuts_paths`` under ``out``, resuming finished shards; a summary per manifest."""
    from lhotse import CutSet, load_manifest

    if storage not in STORAGES:
        raise UsrasrError(f"storage must be one of {', '.join(STORAGES)}, got '{storage}'")
    out = Path(out).resolve()
    paths = [Path(p) for p in cuts_paths]
    names = [manifest_name(p) for p in paths]
    if len(set(names)) < len(names):
        raise UsrasrError(f"--cuts names repeat ({', '.join(names)}): each manifest needs a name of its own")
    for path in paths:
        if not path.is_file():
            raise UsrasrError(f"cuts manifest not found: {path} (give a Lhotse cuts manifest, e.g. "
                              f"<corpus>/manifests/cuts_train_audio.jsonl.gz from `usrasr prepare`)")
    source = open_layer_source(encoder, keep_layers=layer + 1, batch_seconds=batch_seconds, device=device)
    source.check_layer(layer, "--layer")
    out.mkdir(parents=True, exist_ok=True)
    _settings(out, {"encoder": str(Path(encoder).resolve()), "layer": layer, "storage": storage,
                    "shard_size": shard_size})
    cut_lists = {name: list(load_manifest(path)) for name, path in zip(names, paths)}
    for name, path in zip(names, paths):
        source.check_cuts(cut_lists[name], str(path))
    log.info("features of layer %d of %s", layer, source.description)
    summary = {}
    with progress() as bar:
        for name in names:
            cuts = cut_lists[name]
            folder = out / name
            folder.mkdir(exist_ok=True)
            task = bar.add_task(name, total=len(cuts), status="")
            shards, computed, reused, seconds = [], 0, 0, 0.0
            for index, begin in enumerate(range(0, len(cuts), shard_size)):
                part = cuts[begin: begin + shard_size]
                manifest = folder / f"shard-{index:05d}.jsonl.gz"
                if manifest.exists():
                    shards.append(manifest)
                    reused += 1
                    bar.advance(task, len(part))
                    continue
                t0 = time.perf_counter()
                feats = encode_all(source, part, [layer])[0]
                save_lhotse_atomic(CutSet.from_cuts(_write_shard(part, feats, source, layer, storage,
                                                                 folder / f"shard-{index:05d}")), manifest)
                seconds += time.perf_counter() - t0
                computed += len(part)
                shards.append(manifest)
                bar.advance(task, len(part))
            final = out / f"cuts_{name}.jsonl.gz"
            result = CutSet.from_cuts(cut for shard in shards for cut in load_manifest(shard))
            save_lhotse_atomic(result, final)
            summary[name] = {"cuts": len(cuts), "seconds": sum(c.duration for c in cuts),
                             "dim": result[0].num_features if len(result) else source.dim,
                             "frame_shift": source.frame_shift, "compute_seconds": seconds, "cuts_computed": computed,
                             "shards_reused": reused, "manifest": str(final)}
    return summary
