"""``usrasr pretrain --method just``: JUST (Bai et al., 2022) on a CPU.

One encoder, one stage: CTC over the universal phones of a labelled multilingual corpus
(``usrasr prepare multilingual``), plus ``just_weight`` x BEST-RQ's masked prediction on
all audio, the target corpus's untranscribed train-audio included.  A labelled batch
gives both losses in one pass (masked input: the masked spans also regularise the CTC
as time masking does); a target batch gives masked prediction alone.

Of the target corpus only the train-audio features are read (:func:`load_audio`):
never its transcripts, alignments, text, lexicon or LMs.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import kaldialign
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from usrasr.corpus.layout import CorpusLayout
from usrasr.corpus.reader import load_audio
from usrasr.lang.symbols import SymbolTable
from usrasr.models.encoder import ArticulatoryFeatures, SslEncoder, length_batches, save_encoder
from usrasr.pretrain.config import PretrainConfig
from usrasr.pretrain.objectives import (
    BucketedBatches,
    Objective,
    PretrainModel,
    Share,
    Step,
    padded,
    span_mask,
    subsampled_valid,
)
from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError

BLANK = "<blk>"
TARGET_SPLIT = "train_audio"
LABELLED_SPLIT, HELDOUT_SPLIT = "train", "heldout"  # held-out: the same languages, voices never trained on


@dataclass
class LabelledAudio:
    """Utterances of the multilingual corpus with their phone ids (no blank)."""

    ids: list[str]
    feats: list[Tensor]  # (T, 80) fbank
    labels: list[Tensor]  # phone ids of phones.txt, 1..P
    languages: list[str]
    engines: list[str]


def _subset(text: str) -> set[str] | None:
    return {item.strip() for item in text.split(",") if item.strip()} or None


def load_labelled(corpus: str | Path, split: str, phones: SymbolTable, languages: str = "",
                  engines: str = "", subsampling: int = 1) -> LabelledAudio:
    """The ``split`` of a multilingual corpus, restricted to the comma-separated ``languages``
    and ``engines`` ("" = all); utterances CTC cannot align at ``subsampling`` are left out."""
    from lhotse import load_manifest

    path = CorpusLayout(corpus).cuts(split)
    if not path.is_file():
        raise UsrasrError(f"{path} not found: is {corpus} a corpus of `usrasr prepare multilingual`?")
    wanted_languages, wanted_engines = _subset(languages), _subset(engines)
    seen_languages, seen_engines = set(), set()
    out = LabelledAudio([], [], [], [], [])
    unalignable = 0
    for cut in load_manifest(path):
        if len(cut.supervisions) != 1 or not cut.has_features:
            raise UsrasrError(f"cut {cut.id} in {path} needs features and one supervision")
        sup = cut.supervisions[0]
        engine = (sup.custom or {}).get("engine", "")
        seen_languages.add(sup.language)
        seen_engines.add(engine)
        if (wanted_languages and sup.language not in wanted_languages) or (wanted_engines and engine not in wanted_engines):
            continue
        try:
            label = torch.tensor([phones[p] for p in sup.text.split()])
        except KeyError as e:
            raise UsrasrError(f"cut {cut.id} in {path}: phone {e} is not in phones.txt") from None
        feats = torch.from_numpy(cut.load_features()).float()
        # CTC needs a frame per phone, and one more between repeated phones
        needed = len(label) + int((label[1:] == label[:-1]).sum()) if len(label) else 1
        if math.ceil(len(feats) / subsampling) < needed:
            unalignable += 1
            continue
        out.ids.append(cut.id)
        out.feats.append(feats)
        out.labels.append(label)
        out.languages.append(sup.language)
        out.engines.append(engine)
    for name, wanted, seen in (("language", wanted_languages, seen_languages), ("engine", wanted_engines, seen_engines)):
        if wanted and wanted - seen:
            raise UsrasrError(f"{path} has no {name} {', '.join(sorted(wanted - seen))} "
                              f"(it has {', '.join(sorted(seen))})")
    if unalignable:
        log.warning("%s: %d utterance(s) shorter than their phones left out", split, unalignable)
    if not out.ids:
        raise UsrasrError(f"no utterances in {path} for languages '{languages}' and engines '{engines}'")
    return out


def read_phones(corpus: str | Path) -> SymbolTable:
    """The universal phone inventory: ``<blk>`` 0, then the phones 1, 2, ... without gaps."""
    path = CorpusLayout(corpus).lang_dir / "phones.txt"
    table = SymbolTable.from_file(path)
    if table.get(0) != BLANK or table.max_id != len(table) - 1 or len(table) < 2:
        raise UsrasrError(f"{path} must number {BLANK} 0, then the phones 1, 2, ... without gaps")
    return table


def articulatory_matrix(path: str | Path, phones: list[str]) -> tuple[list[str], Tensor]:
    """The feature names and a (len(phones), features) matrix of -1/0/1 from ``articulatory.tsv``;
    the blank's row is zero."""
    path = Path(path)
    if not path.is_file():
        raise UsrasrError(f"missing {path} (written by `usrasr prepare multilingual`)")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    features = {row[0]: [float(v) for v in row[1:]] for row in rows[1:] if row}
    missing = [p for p in phones[1:] if p not in features]
    if missing:
        raise UsrasrError(f"{path} has no articulatory features for phone(s) {' '.join(missing[:10])}")
    width = len(rows[0]) - 1
    return rows[0][1:], torch.tensor([[0.0] * width] + [features[p] for p in phones[1:]])


class ArticulatoryPhoneHead(nn.Module):
    """Universal-phone logits ``W h + A (G h)``: a free per-phone part plus a part shared through
    the phones' fixed articulatory features ``A`` (phones x features, panphon's -1/0/1).

    Why factorised logits rather than an auxiliary per-frame feature loss: a feature loss needs
    frame-level phone targets, which CTC does not give; and the factorisation is linear, so it
    folds exactly into one ``nn.Linear`` (:meth:`folded`), the plain phone head the checkpoint
    keeps and phone posteriors are read from.  Every phone's gradient trains ``G``, so a rare
    phone's logit moves with the common phones that share its features.
    """

    def __init__(self, hidden_dim: int, features: Tensor):
        super().__init__()
        self.register_buffer("features", features)
        self.phone = nn.Linear(hidden_dim, features.shape[0])
        self.feature = nn.Linear(hidden_dim, features.shape[1])

    def forward(self, hidden: Tensor) -> Tensor:
        return self.phone(hidden) + self.feature(hidden) @ self.features.t()

    def folded(self) -> nn.Linear:
        """The same map as one linear layer."""
        head = nn.Linear(self.phone.in_features, self.phone.out_features)
        with torch.no_grad():
            head.weight.copy_(self.phone.weight + self.features @ self.feature.weight)
            head.bias.copy_(self.phone.bias + self.features @ self.feature.bias)
        return head


class JustModel(nn.Module):
    """The encoder, BEST-RQ's quantiser and head, and the universal-phone CTC head."""

    def __init__(self, masked_prediction: PretrainModel, phone_head: ArticulatoryPhoneHead, weight: float):
        super().__init__()
        self.masked_prediction = masked_prediction
        self.encoder = masked_prediction.encoder
        self.phone_head = phone_head
        self.weight = weight

    def loss(self, feats: Tensor, feat_lens: Tensor, masked: Tensor | None, labels: list[Tensor] | None = None,
             masked_frames: float | None = None, utterances: float | None = None) -> tuple[Tensor, dict[str, float]]:
        """Phone CTC (per utterance, over its phones, as ``F.ctc_loss``'s "mean") when ``labels`` are
        given, plus ``weight`` x the masked-prediction loss when ``masked`` is; one encoder pass.
        ``masked_frames`` and ``utterances`` divide the sums the two means take (default: this
        batch's masked frames and utterances; see :class:`~usrasr.pretrain.objectives.Share`)."""
        x, lengths, valid = self.encoder.front_end(feats, feat_lens)
        masked = None if masked is None else masked & valid
        hidden = self.encoder.run_layers(x, valid, masked)[-1]
        parts: dict[str, float] = {}
        loss = hidden.new_zeros((), dtype=torch.float32)
        if masked is not None:
            loss = loss + self.weight * self.masked_prediction.anchor_loss(feats, feat_lens, hidden, masked, parts,
                                                                           masked_frames)
        if labels is not None:
            per_phone = self.ctc_loss(hidden, lengths, labels, reduction="none") / torch.tensor(
                [max(len(t), 1) for t in labels], device=hidden.device)
            ctc = per_phone.sum() / (len(labels) if utterances is None else utterances)
            parts["ctc_loss"] = ctc.item()
            loss = loss + ctc
        return loss, parts

    forward = loss  # DistributedDataParallel runs a module through its forward

    def ctc_loss(self, hidden: Tensor, lengths: Tensor, labels: list[Tensor], reduction: str = "mean") -> Tensor:
        log_probs = self.phone_head(hidden).float().log_softmax(-1).transpose(0, 1)  # (T', B, P), float32
        return F.ctc_loss(log_probs, torch.cat(labels).to(hidden.device), lengths,
                          torch.tensor([len(t) for t in labels], device=hidden.device), blank=0,
                          reduction=reduction, zero_infinity=True)


def is_target_step(step: int, share: float) -> bool:
    """Whether step ``step`` takes a target batch: ``share`` of the steps, evenly spread."""
    return math.floor((step + 1) * share) > math.floor(step * share)


def greedy_phones(log_probs: Tensor) -> list[int]:
    """Best path of one utterance's (T, P) posteriors, repeats merged and blanks dropped."""
    best = torch.unique_consecutive(log_probs.argmax(-1))
    return best[best != 0].tolist()


class JustObjective(Objective):
    """Labelled multilingual batches (phone CTC + lambda x masked prediction) interleaved with
    the target's train-audio batches (lambda x masked prediction)."""

    def __init__(self, corpus: Path, config: PretrainConfig, encoder: SslEncoder, device: torch.device):
        self.corpus, self.config, self.encoder = corpus, config, encoder
        multilingual = Path(config.multilingual)
        if not multilingual.is_dir():
            raise UsrasrError(f"multilingual corpus not found: {multilingual}")
        self.table = read_phones(multilingual)
        self.phones = self.table.symbols
        self.labelled = load_labelled(multilingual, LABELLED_SPLIT, self.table, config.languages, config.engines,
                                      config.subsampling)
        self.target = load_audio(corpus, TARGET_SPLIT)
        self.feature_names, features = articulatory_matrix(CorpusLayout(multilingual).lang_dir / "articulatory.tsv",
                                                           self.phones)
        bestrq = PretrainModel(encoder, config.codebook_size, config.codebook_dim, config.seed)
        self.model = JustModel(bestrq, ArticulatoryPhoneHead(config.hidden_dim, features), config.just_weight)
        self.model.to(device)
        self.target_share = config.target_share if config.just_weight > 0 else 0.0
        self.batches = {
            "labelled": BucketedBatches(CorpusLayout(multilingual).cuts(LABELLED_SPLIT), self.labelled.ids,
                                        config.batch_frames, config.seed),
            "target": BucketedBatches(CorpusLayout(corpus).cuts(TARGET_SPLIT), self.target.ids, config.batch_frames,
                                      config.seed)}
        log.info("just: %d labelled utterances (%.2f h; %s), %d target utterances (%.2f h)",
                 len(self.labelled.ids), sum(len(f) for f in self.labelled.feats) / 360000,
                 ", ".join(sorted(set(self.labelled.languages))), len(self.target.ids),
                 self.target.seconds() / 3600)

    def _mask(self, lens: Tensor, generator: torch.Generator) -> Tensor | None:
        c = self.config
        if c.just_weight == 0:  # supervised only: no masked input
            return None
        return span_mask(subsampled_valid(lens, c.subsampling), c.mask_prob, c.mask_span, generator)

    def step(self, step: int, generator: torch.Generator, network: nn.Module, device: torch.device) -> Step:
        target = is_target_step(step, self.target_share)
        audio = self.target.feats if target else self.labelled.feats
        batch = self.batches["target" if target else "labelled"].next()
        masked = self._mask(torch.tensor([len(audio[i]) for i in batch]), generator)
        share = Share.of(batch, masked)
        utterances = share.utterances_of(batch)
        feats, lens = padded(audio, utterances, device)
        masked = None if masked is None else share.mask(masked, lens, self.config.subsampling, device)
        if target:
            loss, parts = network(feats, lens, masked, None, share.masked_frames)
            return share.weighted(Step(loss, {f"target_{k}": v for k, v in parts.items()}, "just: target (masked)"))
        loss, parts = network(feats, lens, masked, [self.labelled.labels[i] for i in utterances], share.masked_frames,
                              share.utterances)
        return share.weighted(Step(loss, parts, "just: labelled (ctc + masked)" if self.config.just_weight
                                   else "just: labelled (ctc)"))

    def status(self, parts: dict[str, float]) -> str:
        if "ctc_loss" in parts:
            return f"ctc {parts['ctc_loss']:.3f}" + (f" acc {parts['anchor_accuracy']:.2f}"
                                                     if "anchor_accuracy" in parts else "")
        return f"target acc {parts.get('target_anchor_accuracy', float('nan')):.2f}"

    @torch.no_grad()
    def evaluate(self, feats: list[Tensor], labels: list[Tensor] | None, device: torch.device) -> dict:
        """Masked accuracy (a fixed mask) and, with ``labels``, the phone CTC loss and the greedy
        phone error rate (%) of utterances ``feats``."""
        c = self.config
        generator = torch.Generator().manual_seed(c.seed)
        correct = masked_frames = 0
        ctc_total, errors, reference = 0.0, 0, 0
        for batch in length_batches([len(f) for f in feats], c.batch_frames):
            x, lens = padded(feats, batch, device)
            front, lengths, valid = self.encoder.front_end(x, lens)
            masked = span_mask(valid.cpu(), c.mask_prob, c.mask_span, generator).to(device)
            parts: dict[str, float] = {}
            self.model.masked_prediction.anchor_loss(x, lens, self.encoder.run_layers(front, valid, masked)[-1],
                                                     masked, parts)
            count = int(masked.sum())
            correct += parts["anchor_accuracy"] * count
            masked_frames += count
            if labels is None:
                continue
            hidden = self.encoder.run_layers(front, valid)[-1]
            batch_labels = [labels[i] for i in batch]
            ctc_total += self.model.ctc_loss(hidden, lengths, batch_labels, reduction="sum").item()
            log_probs = self.model.phone_head(hidden).log_softmax(-1)
            for row, label in enumerate(batch_labels):
                edits = kaldialign.edit_distance(label.tolist(), greedy_phones(log_probs[row, : lengths[row]]))
                errors += edits["total"]
                reference += len(label)
        result = {"utterances": len(feats), "masked_accuracy": round(correct / max(masked_frames, 1), 4)}
        if labels is not None:
            result.update(ctc_loss_per_phone=round(ctc_total / max(reference, 1), 4),
                          per=round(100 * errors / max(reference, 1), 2))
        return result

    def finish(self, out: Path, step: int, device: torch.device) -> dict:
        c = self.config
        info = {"method": "just", "steps": step, "corpus": str(self.corpus), "multilingual": c.multilingual,
                "languages": sorted(set(self.labelled.languages)), "engines": sorted(set(self.labelled.engines)),
                "just_weight": c.just_weight}
        head = self.model.phone_head
        save_encoder(out / "encoder.pt", self.encoder, info, phone_head=head.folded(), phones=self.phones,
                     features=ArticulatoryFeatures(head.feature, self.feature_names, head.features))
        evaluation = {"target_train_audio": self.evaluate(self.target.feats, None, device)}
        if CorpusLayout(c.multilingual).cuts(HELDOUT_SPLIT).is_file():
            heldout = load_labelled(c.multilingual, HELDOUT_SPLIT, self.table, c.languages, c.engines, c.subsampling)
            evaluation["heldout"] = self.evaluate(heldout.feats, heldout.labels, device)
        return {**info, "labelled_utterances": len(self.labelled.ids),
                "labelled_hours": round(sum(len(f) for f in self.labelled.feats) / 360000, 3),
                "target_utterances": len(self.target.ids), "target_hours": round(self.target.seconds() / 3600, 3),
                "evaluation": evaluation}
