"""`usrasr prepare default` on a tiny size: splits, voices, manifests, lang dir, LMs, features."""

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from lhotse import CutSet, RecordingSet, SupervisionSet, load_manifest

from usrasr.cli import cli
from usrasr.lang.phones import PHONES
from usrasr.prepare.splits import AUDIO_SPLITS, SPLITS

from tests.support import TINY_CORPUS_ARGS


@pytest.fixture(scope="module")
def corpus(tiny_corpus) -> Path:
    return tiny_corpus


def audio_texts(corpus: Path, split: str) -> list[str]:
    source = corpus / ("scoring" if split == "train_audio" else "manifests") / f"supervisions_{split}.jsonl.gz"
    return [s.text for s in load_manifest(source)]


def test_splits_are_disjoint(corpus):
    with gzip.open(corpus / "text" / "splits.json.gz", "rt") as f:
        splits = json.load(f)
    assert set(splits) == set(SPLITS)
    members = {split: set(sentences) for split, sentences in splits.items()}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not members[a] & members[b], (a, b)
    # what was synthesised and what the LM saw respect the splits too
    train_text = set((corpus / "text" / "train_text.txt").read_text().splitlines())
    assert train_text <= members["train_text"]
    for split in AUDIO_SPLITS:
        texts = audio_texts(corpus, split)
        assert texts and set(texts) <= members[split] and not set(texts) & train_text


def test_voices_heldout_and_enough(corpus):
    report = json.loads((corpus / "report.json").read_text())
    train = set(report["train_voices"])
    heldout = set(report["heldout_voices"])
    engines = {v.split("-")[0] for v in train | heldout}
    base = {v.rsplit("-sp", 1)[0] for v in train | heldout}
    assert len(base) >= 8 and len(engines) >= 3
    assert not train & heldout
    train_audio = {s.custom["voice"] for s in load_manifest(corpus / "manifests" / "supervisions_train_audio.jsonl.gz")}
    for split in ("dev", "test"):
        sups = load_manifest(corpus / "manifests" / f"supervisions_{split}.jsonl.gz")
        assert {s.speaker for s in sups} <= heldout
        assert not {s.custom["voice"] for s in sups} & train_audio


def test_manifests_load_with_lhotse_and_have_features(corpus):
    for split in AUDIO_SPLITS:
        recordings = RecordingSet.from_file(corpus / "manifests" / f"recordings_{split}.jsonl.gz")
        supervisions = SupervisionSet.from_file(corpus / "manifests" / f"supervisions_{split}.jsonl.gz")
        cuts = CutSet.from_file(corpus / "manifests" / f"cuts_{split}.jsonl.gz")
        assert len(recordings) == len(supervisions) == len(cuts) > 0
        for cut in cuts:
            assert cut.sampling_rate == 16000 and cut.num_channels == 1
            assert cut.features.type == "kaldi-fbank" and cut.num_features == 80
            feats = cut.load_features()
            assert feats.shape[1] == 80 and abs(feats.shape[0] - cut.duration * 100) <= 2


def test_train_audio_transcripts_only_in_scoring(corpus):
    for sup in load_manifest(corpus / "manifests" / "supervisions_train_audio.jsonl.gz"):
        assert sup.text is None and sup.alignment is None and "phones" not in sup.custom
    assert not (corpus / "kaldi" / "train_audio" / "text").exists()
    assert (corpus / "scoring" / "train_audio" / "text").exists()
    scoring = load_manifest(corpus / "scoring" / "supervisions_train_audio.jsonl.gz")
    assert all(s.text for s in scoring)


def test_phone_alignments_for_scoring(corpus):
    sups = list(load_manifest(corpus / "scoring" / "supervisions_train_audio.jsonl.gz"))
    sups += list(load_manifest(corpus / "manifests" / "supervisions_test.jsonl.gz"))
    aligned_engines = set()
    for sup in sups:
        if not sup.alignment:
            continue
        aligned_engines.add(sup.custom["engine"])
        items = sup.alignment["phone"]
        assert all(item.symbol in PHONES for item in items)
        assert all(a.start <= b.start for a, b in zip(items, items[1:]))
        assert items[-1].end <= sup.duration + 1e-3
    assert {"flite", "festival"} <= aligned_engines


def test_lang_dir_lms_and_rank_report(corpus):
    for name in ("lexicon.txt", "lexicon_disambig.txt", "tokens.txt", "words.txt"):
        assert (corpus / "lang" / name).stat().st_size > 0
    for lm in ("phone_2gram.arpa", "word_3gram.arpa"):
        assert (corpus / "lm" / lm).read_text().startswith("\\data\\")
    rank = json.loads((corpus / "lm" / "rank.json").read_text())
    assert rank["full_rank"] and rank["size"] >= 38


def test_rerun_skips_finished_steps(corpus):
    before = {p: p.stat().st_mtime_ns for p in (corpus / "audio").iterdir()}
    result = CliRunner().invoke(cli, ["prepare", "default", "--out", str(corpus), *TINY_CORPUS_ARGS])
    assert result.exit_code == 0, result.output
    assert before == {p: p.stat().st_mtime_ns for p in (corpus / "audio").iterdir()}
