"""Read references and hypotheses: Kaldi ``text``, Lhotse manifests, or decode's JSON lines.

The format is detected from the content, so ``-`` (stdin) works for all:

* Kaldi ``text``: ``id word word ...`` per line (a TAB after the id is fine);
* Lhotse CutSet (keyed by cut id; text of its supervisions joined) or
  SupervisionSet (keyed by supervision id), ``.jsonl``, ``.jsonl.gz`` or a
  JSON array; speakers, ``custom["voice"]`` and the reference pronunciation
  ``custom["phones"]`` (used to score phones) come along;
* ``usrasr decode --format jsonl`` output (``id`` and ``text`` per line).
"""

from __future__ import annotations

import gzip
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from usrasr.utils.errors import UsrasrError


@dataclass
class Transcripts:
    """Texts by utterance id, plus speaker and voice labels where the source has them."""

    texts: dict[str, str] = field(default_factory=dict)
    speakers: dict[str, str] = field(default_factory=dict)
    voices: dict[str, str] = field(default_factory=dict)
    phones: dict[str, str] = field(default_factory=dict)  # from manifests' custom["phones"]

    def for_unit(self, unit: str) -> dict[str, str]:
        """What to score: the phone transcripts for ``phone`` when the source has them, else the texts."""
        if unit != "phone" or not self.phones:
            return self.texts
        lacking = [i for i in self.texts if i not in self.phones]
        if lacking:
            raise UsrasrError(f"{len(lacking)} reference(s) have text but no custom['phones'], e.g. {lacking[0]}")
        return self.phones


def _read_source(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    if not path.exists() or path.is_dir():  # not is_file(): pipes such as <(...) are fine
        raise UsrasrError(f"transcripts not found: {source}")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsrasrError(f"{source} is not UTF-8 text") from None


def _supervisions(item: dict) -> list[dict]:
    """Supervisions of a cut dict; a mixed cut's come from its tracks."""
    if "supervisions" in item:
        return item["supervisions"]
    return [s for track in item.get("tracks", []) for s in _supervisions(track.get("cut", {}))]


def _add(out: Transcripts, origin: str, utt_id: str, text: str, speaker=None, voice=None, phones=None) -> None:
    if utt_id in out.texts:
        raise UsrasrError(f"{origin}: duplicate utterance id '{utt_id}'")
    out.texts[utt_id] = text
    if phones is not None:
        out.phones[utt_id] = phones
    if speaker:
        out.speakers[utt_id] = str(speaker)
    if voice:
        out.voices[utt_id] = str(voice)


def _from_json_items(items: list[dict], origin: str) -> Transcripts:
    out = Transcripts()
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict) or "id" not in item:
            raise UsrasrError(f"{origin}: item {n} is not an object with an 'id'")
        if "supervisions" in item or "tracks" in item:  # a Lhotse cut
            sups = _supervisions(item)
        elif "text" in item:  # a Lhotse supervision, or a decode --format jsonl record
            sups = [item]
        else:
            raise UsrasrError(f"{origin}: item {n} ('{item['id']}') has no text or supervisions")
        text = " ".join((s.get("text") or "") for s in sups)
        customs = [s.get("custom") or {} for s in sups]
        phones = " ".join(c["phones"] for c in customs) if customs and all("phones" in c for c in customs) else None
        first = sups[0] if sups else {}
        voice = (first.get("custom") or {}).get("voice") or first.get("voice")
        _add(out, origin, str(item["id"]), " ".join(text.split()), first.get("speaker"), voice, phones)
    return out


def read_transcripts(source: str) -> Transcripts:
    """Read a Kaldi text file, a Lhotse manifest or JSON lines; ``-`` is stdin."""
    content = _read_source(source)
    origin = "stdin" if source == "-" else source
    stripped = content.lstrip()
    if stripped.startswith("["):
        try:
            return _from_json_items(json.loads(stripped), origin)
        except json.JSONDecodeError as e:
            raise UsrasrError(f"{origin}: invalid JSON: {e}") from None
    if stripped.startswith("{"):
        items = []
        for lineno, line in enumerate(content.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UsrasrError(f"{origin}:{lineno}: invalid JSON line: {e}") from None
        return _from_json_items(items, origin)
    out = Transcripts()
    for line in content.splitlines():
        fields = line.split(maxsplit=1)
        if fields:
            _add(out, origin, fields[0], " ".join(fields[1].split()) if len(fields) > 1 else "")
    return out


def read_utt2spk(path: Path) -> dict[str, str]:
    """Kaldi ``utt2spk``: ``utterance-id speaker-id`` per line."""
    utt2spk = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise UsrasrError(f"{path}:{lineno}: expected 'utterance-id speaker-id'")
        utt2spk[fields[0]] = fields[1]
    return utt2spk
