"""A minimal supervised CTC trainer: features + integer target sequences in, trained model out.

Used by tests to make a tiny model in seconds and by self-training, where the
targets are pseudo-labels (phone ids of ``tokens.txt``, never the blank 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from usrasr.models.acoustic import CtcAcousticModel, valid_mask
from usrasr.utils.console import log, progress
from usrasr.utils.distributed import barrier, gather_objects, mean_over_processes, process_rank, shard, world_size
from usrasr.utils.device import uses_bf16
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_path


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


def warp_frequency(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """fbank (B, T, F) with each utterance's frequency axis stretched by its ``factor`` (B,):
    bin f reads bin f / factor, linearly interpolated (vocal-tract-length-style warping)."""
    batch, frames, bins = x.shape
    source = (torch.arange(bins, dtype=torch.float32)[None, :] / factor[:, None].float().cpu()).clamp(max=bins - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=bins - 1)
    frac = (source - low).to(x.device, x.dtype)[:, None, :]
    gather = lambda idx: x.gather(2, idx.to(x.device)[:, None, :].expand(batch, frames, bins))  # noqa: E731
    return gather(low) * (1 - frac) + gather(high) * frac


@dataclass
class Augmentation:
    """On-the-fly training-time distortions of fbank (B, T, F), drawn from torch's global RNG.

    * ``warp``: vocal-tract-length-style warping, each utterance's frequency axis
      stretched by a factor drawn from [1 - warp, 1 + warp] (linear interpolation
      over the mel bins). Unseen voices differ from the training voices mostly in
      formant positions; this makes the model see a continuum of them.
    * SpecAugment masks (Park et al., 2019): ``freq_masks`` bands of up to
      ``freq_width`` bins and ``time_masks`` spans of up to ``time_width`` frames,
      set to the utterance's mean (zero after the model's per-utterance CMVN).
    """

    warp: float = 0.1
    freq_masks: int = 2
    freq_width: int = 12
    time_masks: int = 4
    time_width: int = 10

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, frames, bins = x.shape
        if self.warp > 0:
            x = warp_frequency(x, 1 + (2 * torch.rand(batch) - 1) * self.warp)
        mask = valid_mask(lengths, frames).to(x.device)
        mean = (x * mask[..., None]).sum(1, keepdim=True) / lengths.to(x.device).clamp(min=1)[:, None, None]
        drop = torch.zeros(batch, frames, bins, dtype=torch.bool)
        for b in range(batch):
            for _ in range(self.freq_masks):
                width = int(torch.randint(self.freq_width + 1, ()))
                start = int(torch.randint(bins - width + 1, ()))
                drop[b, :, start:start + width] = True
            for _ in range(self.time_masks):
                width = min(int(torch.randint(self.time_width + 1, ())), int(lengths[b]))
                start = int(torch.randint(int(lengths[b]) - width + 1, ()))
                drop[b, start:start + width, :] = True
        drop = drop.to(x.device)
        return torch.where(drop, mean.expand_as(x), x) * mask[..., None]


def _save_checkpoint(path: Path, step: int, model, optimizer, scheduler, generator, order, losses,
                     rng_states) -> None:
    """Everything needed to continue exactly where training stopped."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": rng_states,  # one per process: each draws its own dropout masks
        "order": list(order),
        "losses": list(losses),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    on_step: Callable[[int, float], None] | None = None,
    description: str = "ctc",
    augmentation: Augmentation | None = None,
    cosine_decay: bool = False,
    precision: str = "fp32",
) -> CtcAcousticModel:
    """Train ``model`` with CTC for ``steps`` mini-batch updates (Adam, linear warm-up
    over the first tenth, then a constant rate or, with ``cosine_decay``, a cosine to zero).

    Args:
      utterances: feature tensors ``(T, feat_dim)``, or a Lhotse CutSet with stored features.
      targets: token-id sequences, by position for tensors, or ``{cut_id: ids}`` for a CutSet.
      steps: number of optimizer updates; batches are drawn by shuffling epochs.
      checkpoint: file for a resumable state (model, optimizer, scheduler, RNGs,
        batch order), written atomically every ``checkpoint_every`` steps; if
        it exists, training continues from it and ends exactly as an
        uninterrupted run would.
      on_step: called with (step, loss) after every update (metrics logging).
      augmentation: distortions applied to every training batch (none when None).
      precision: the forward pass under bf16 autocast or not (:func:`usrasr.utils.device.uses_bf16`);
        the CTC loss is computed in float32 either way.
    Under ``torch.distributed``, every process calls this with the same
    arguments: the model is wrapped in DDP, each process takes its share of
    every batch, the updates are those of one process on the whole batch (up
    to float rounding and dropout), ``on_step`` gets the whole batch's loss
    and rank 0 alone writes the checkpoint. Resume needs the same number of
    processes.
    Returns the same model, trained and in eval mode.
    """
    feats, labels = _resolve(utterances, targets)
    rank, world = process_rank(), world_size()
    if min(batch_size, len(feats)) < world:
        raise UsrasrError(f"a batch of {min(batch_size, len(feats))} utterance(s) cannot be shared by {world} "
                          "processes: raise the batch size or start fewer processes")
    device = torch.device(device)
    model.to(device).train()
    bf16 = uses_bf16(precision, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    warmup = max(1, steps // 10)

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine_decay:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses: list[float] = []
    first = 0
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        if len(state["torch_rng"]) != world:
            raise UsrasrError(f"{checkpoint} was written by a run of {len(state['torch_rng'])} process(es); "
                              f"resume it with as many, not {world}")
        torch.set_rng_state(state["torch_rng"][rank])
        order, losses, first = state["order"], state["losses"], state["step"]
        log.info("%s: resumed from %s at step %d/%d", description, checkpoint, first, steps)
    network = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    with progress() as bar:
        task = bar.add_task(description, total=steps, completed=first, status="")
        for step in range(first, steps):
            # Our own batches, not Lhotse's samplers: every process draws the same global
            # batches (one seeded generator, an epoch's remainder carried into the next) and
            # takes its share of each, so the batches and the updates do not depend on the
            # number of processes, one process trains exactly as before, and a checkpoint of
            # the remaining order resumes exactly. Lhotse's distributed samplers instead give
            # each process whole batches of its own (the batch grows with the processes),
            # shuffle with their own RNG and end epochs on partial batches, and they sample
            # cuts, while self-training trains on in-memory feature tensors.
            if len(order) < batch_size:
                order += torch.randperm(len(feats), generator=generator).tolist()
            batch, order = order[:batch_size], order[batch_size:]
            share = shard(batch, rank, world)
            x = pad_sequence([feats[i] for i in share], batch_first=True).to(device)
            x_lens = torch.tensor([len(feats[i]) for i in share], device=device)
            if augmentation is not None:
                x = augmentation(x, x_lens.cpu())
            y = torch.tensor([t for i in share for t in labels[i]], dtype=torch.long)
            y_lens = torch.tensor([len(labels[i]) for i in share], dtype=torch.long)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                log_probs, out_lens = network(x, x_lens)
            log_probs = log_probs.float()
            # zero_infinity: an utterance too short for its labels contributes nothing instead of inf.
            per_utterance = torch.nn.functional.ctc_loss(
                log_probs.transpose(0, 1), y, out_lens.cpu(), y_lens, blank=0, reduction="none", zero_infinity=True
            ) / y_lens.to(device).clamp(min=1)
            # The mean over the share (as reduction="mean" computes it), weighted by the share's
            # part of the batch: DDP averages the processes' gradients, and that average is then
            # the gradient of the whole batch's mean loss. With one process the weight is 1.
            loss = per_utterance.mean() * (len(share) * world / len(batch))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            batch_loss = mean_over_processes(loss.detach()).item()
            if not math.isfinite(batch_loss):
                raise UsrasrError(f"CTC loss became {batch_loss} at step {step}; lower the learning rate")
            losses.append(batch_loss)
            if on_step is not None:
                on_step(step + 1, batch_loss)
            bar.update(task, advance=1, status=f"loss {batch_loss:.3f}")
            if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                rng_states = gather_objects(torch.get_rng_state())
                if rank == 0:
                    _save_checkpoint(checkpoint, step + 1, model, optimizer, scheduler, generator, order, losses,
                                     rng_states)
                barrier()  # no process may look for the checkpoint before it is on disk
    return model.eval()
