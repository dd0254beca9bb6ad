"""Where everything lives in a prepared corpus: the one home of ``docs/layout.md``'s paths.

Every stage that reads or writes a corpus names its files through
:class:`CorpusLayout`, so the layout is defined once and changed in one place.
"""

from __future__ import annotations

from pathlib import Path

from usrasr.utils.errors import UsrasrError


def lm_name(unit: str, order: int | str) -> str:
    """File name of the ``unit`` ("phone" or "word") n-gram LM inside ``<corpus>/lm/``."""
    return f"{unit}_{order}gram.arpa"


class CorpusLayout:
    """The paths of one prepared corpus rooted at ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # Text side: lang dir, LMs, the unpaired text.
    @property
    def lang_dir(self) -> Path:
        return self.root / "lang"

    @property
    def lexicon(self) -> Path:
        return self.lang_dir / "lexicon.txt"

    @property
    def lm_dir(self) -> Path:
        return self.root / "lm"

    @property
    def rank_report(self) -> Path:
        return self.lm_dir / "rank.json"

    def lm_path(self, unit: str, order: int) -> Path:
        return self.lm_dir / lm_name(unit, order)

    def lms(self, unit: str) -> list[Path]:
        """The ARPA LMs of ``unit`` that `usrasr prepare` wrote, lowest order first."""
        prefix, suffix = lm_name(unit, "*").split("*")
        found = [(p.name[len(prefix):-len(suffix)], p) for p in self.lm_dir.glob(lm_name(unit, "*"))]
        return [p for order, p in sorted((int(order), p) for order, p in found if order.isdigit())]

    def lm(self, unit: str, missing_ok: bool = False) -> Path | None:
        """The lowest-order ARPA LM of ``unit``: the one training graphs use. ``None`` (with
        ``missing_ok``) or an error when there is none."""
        return self._one_lm(unit, missing_ok, lowest=True)

    def decoding_lm(self, unit: str, missing_ok: bool = False) -> Path | None:
        """The highest-order ARPA LM of ``unit``: the one decoding graphs use (for phones a higher
        order than training's when prepare wrote one; for words the only one)."""
        return self._one_lm(unit, missing_ok, lowest=False)

    def _one_lm(self, unit: str, missing_ok: bool, lowest: bool) -> Path | None:
        found = self.lms(unit)
        if found:
            return found[0] if lowest else found[-1]
        if missing_ok:
            return None
        raise UsrasrError(f"no {unit} LM in {self.lm_dir}: run `usrasr prepare` first (or name one)")

    @property
    def text_dir(self) -> Path:
        return self.root / "text"

    @property
    def train_text(self) -> Path:
        return self.text_dir / "train_text.txt"

    @property
    def text_splits(self) -> Path:
        return self.text_dir / "splits.json.gz"

    @property
    def text_report(self) -> Path:
        return self.text_dir / "report.json"

    # Audio side: blind manifests, audio, features.
    @property
    def audio_dir(self) -> Path:
        return self.root / "audio"

    def features_dir(self, split: str) -> Path:
        return self.root / "features" / split

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    def recordings(self, split: str) -> Path:
        return self.manifests_dir / f"recordings_{split}.jsonl.gz"

    def supervisions(self, split: str) -> Path:
        return self.manifests_dir / f"supervisions_{split}.jsonl.gz"

    def cuts(self, split: str) -> Path:
        return self.manifests_dir / f"cuts_{split}.jsonl.gz"

    def kaldi_dir(self, split: str) -> Path:
        return self.root / "kaldi" / split

    # Transcripts of train-audio: for scoring only (see usrasr.corpus.scoring).
    @property
    def scoring_dir(self) -> Path:
        return self.root / "scoring"

    def scoring_supervisions(self, split: str) -> Path:
        """The supervisions with text and alignments: under ``scoring/`` for train-audio."""
        return (self.scoring_dir if split == "train_audio" else self.manifests_dir) / f"supervisions_{split}.jsonl.gz"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def skipped_audio(self) -> Path:
        return self.root / "logs" / "skipped_audio.json"
