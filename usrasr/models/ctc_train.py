"""A minimal supervised CTC trainer: features + integer target sequences in, trained model out.

Used by tests to make a tiny model in seconds and by self-training, where the
targets are pseudo-labels (phone ids of ``tokens.txt``, never the blank 0).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from usrasr.models.acoustic import CtcAcousticModel
from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError


def cut_features(cuts) -> tuple[list[torch.Tensor], list[str]]:
    """Stored features of a Lhotse CutSet as float tensors (T, F), with the cut ids."""
    feats, ids = [], []
    for cut in cuts:
        if not cut.has_features:
            raise UsrasrError(f"cut {cut.id} has no stored features (run prepare with features)")
        feats.append(torch.from_numpy(cut.load_features()).float())
        ids.append(cut.id)
    return feats, ids


def _resolve(utterances, targets) -> tuple[list[torch.Tensor], list[list[int]]]:
    """Pair features with targets: sequences by position, or a CutSet with targets keyed by cut id."""
    if isinstance(utterances, Sequence) and utterances and isinstance(utterances[0], torch.Tensor):
        feats = list(utterances)
        if isinstance(targets, Mapping):
            raise UsrasrError("targets for a list of feature tensors must be a list, not a mapping")
        labels = [list(t) for t in targets]
    else:
        feats, ids = cut_features(utterances)
        if not isinstance(targets, Mapping):
            raise UsrasrError("targets for a CutSet must map cut id -> token ids")
        missing = [i for i in ids if i not in targets]
        if missing:
            raise UsrasrError(f"{len(missing)} cut(s) have no targets, e.g. {', '.join(missing[:3])}")
        labels = [list(targets[i]) for i in ids]
    if len(feats) != len(labels):
        raise UsrasrError(f"{len(feats)} utterances but {len(labels)} target sequences")
    if not feats:
        raise UsrasrError("no utterances to train on")
    if any(0 in t for t in labels):
        raise UsrasrError("CTC targets must not contain the blank id 0")
    return feats, labels


def train_ctc(
    model: CtcAcousticModel,
    utterances,
    targets,
    steps: int,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    grad_clip: float = 5.0,
    seed: int = 0,
) -> CtcAcousticModel:
    """Train ``model`` with CTC for ``steps`` mini-batch updates (Adam, linear warm-up).

    Args:
      utterances: feature tensors ``(T, feat_dim)``, or a Lhotse CutSet with stored features.
      targets: token-id sequences, by position for tensors, or ``{cut_id: ids}`` for a CutSet.
      steps: number of optimizer updates; batches are drawn by shuffling epochs.
    Returns the same model, trained and in eval mode.
    """
    feats, labels = _resolve(utterances, targets)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    log_every = max(1, steps // 10)
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(feats), generator=generator).tolist()
        batch, order = order[:batch_size], order[batch_size:]
        x = pad_sequence([feats[i] for i in batch], batch_first=True).to(device)
        x_lens = torch.tensor([len(feats[i]) for i in batch], device=device)
        y = torch.tensor([t for i in batch for t in labels[i]], dtype=torch.long)
        y_lens = torch.tensor([len(labels[i]) for i in batch], dtype=torch.long)
        log_probs, out_lens = model(x, x_lens)
        # zero_infinity: an utterance too short for its labels contributes nothing instead of inf.
        loss = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1), y, out_lens.cpu(), y_lens, blank=0, reduction="mean", zero_infinity=True
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        if not math.isfinite(loss.item()):
            raise UsrasrError(f"CTC loss became {loss.item()} at step {step}; lower the learning rate")
        if (step + 1) % log_every == 0 or step == steps - 1:
            log.debug("ctc step %d/%d loss %.3f", step + 1, steps, loss.item())
    return model.eval()
