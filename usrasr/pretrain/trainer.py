"""``usrasr pretrain``: the one training loop of every method (masked prediction on the
unpaired audio, or JUST's phone CTC on a multilingual corpus plus masked prediction).

Outputs under the experiment dir::

    config.yaml        the configuration used (resume checks it)
    train_state.pt     resumable state: model, optimiser, scheduler, RNGs (one set per process), the
                       batch samplers' states, the number of processes, compute used
    encoder.pt         the encoder alone, for ``usrasr train --set units=encoder`` (just: with its phone head)
    metrics.jsonl      loss and masked-prediction accuracy per step
    losses.png         loss curves
    summary.json       steps, compute used, final accuracies (just: held-out phone CTC loss and PER)

Under ``torchrun --nproc_per_node N`` (the command joins the process group), the processes
train one model together through DDP: every process draws the same batches and takes its
share of each (:class:`~usrasr.pretrain.objectives.Share`), so the updates are those of one
process on the whole batch, and rank 0 alone writes files.  A run resumes with as many
processes as it began with.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from usrasr.corpus.layout import CorpusLayout
from usrasr.corpus.reader import load_audio
from usrasr.models.encoder import EncoderConfig, SslEncoder, save_encoder
from usrasr.pretrain.config import PretrainConfig
from usrasr.pretrain.objectives import (
    BucketedBatches,
    EnhancedLabels,
    Objective,
    PretrainModel,
    Share,
    SpeakerAdversary,
    Step,
    padded,
    span_mask,
    subsampled_valid,
)
from usrasr.utils.console import log, progress
from usrasr.utils.device import resolve_device, uses_bf16
from usrasr.utils.distributed import (
    barrier,
    gather_objects,
    mean_over_processes,
    process_rank,
    world_size,
)
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_path, write_json_atomic
from usrasr.utils.metrics import MetricsLog, plot_losses

TRAIN_SPLIT = "train_audio"


def build_encoder(config: PretrainConfig, device: torch.device) -> SslEncoder:
    """The encoder ``config`` describes; arch "auto" is a TDNN for just on a CPU, else a conformer."""
    arch = config.arch
    if arch == "auto":
        arch = "tdnn" if config.method == "just" and device.type == "cpu" else "conformer"
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(EncoderConfig) if hasattr(config, f.name)}
    return SslEncoder(EncoderConfig(**{**shared, "arch": arch}))


class MaskedPrediction(Objective):
    """BEST-RQ or BiRQ (optionally with a speaker adversary) on the corpus's train-audio."""

    def __init__(self, corpus: Path, config: PretrainConfig, encoder: SslEncoder, device: torch.device):
        self.corpus, self.config, self.encoder = corpus, config, encoder
        self.audio = load_audio(corpus, TRAIN_SPLIT)
        self.birq = config.method == "birq"
        adversary, self.speakers = None, None
        if config.speaker_adversary_weight > 0:
            # pseudo-speakers from the audio alone: pretraining reads no labels of any kind
            clustered = self.audio.speakers_from("cluster", config.speaker_clusters, TRAIN_SPLIT, config.seed).speakers
            names = sorted(set(clustered))
            self.speakers = torch.tensor([names.index(s) for s in clustered])
            layer = config.num_layers if config.speaker_adversary_layer == -1 else config.speaker_adversary_layer
            adversary = SpeakerAdversary(len(names), layer, config.speaker_adversary_weight)
        self.adversary = adversary
        enhanced = None
        if self.birq:
            enhanced = EnhancedLabels(config.birq_layer, config.birq_weight, config.quantizer_temperature,
                                      config.diversity_weight, config.label_grad_scale, config.balance_iterations)
        self.model = PretrainModel(encoder, config.codebook_size, config.codebook_dim, config.seed, enhanced,
                                   adversary).to(device)
        self.batches = {"train_audio": BucketedBatches(CorpusLayout(corpus).cuts(TRAIN_SPLIT), self.audio.ids,
                                                       config.batch_frames, config.seed)}
        self.enhanced_from = int(config.birq_start * config.steps) if self.birq else None

    def step(self, step: int, generator: torch.Generator, network: torch.nn.Module, device: torch.device) -> Step:
        c = self.config
        batch = self.batches["train_audio"].next()
        lengths = torch.tensor([len(self.audio.feats[i]) for i in batch])
        masked = span_mask(subsampled_valid(lengths, c.subsampling), c.mask_prob, c.mask_span, generator)
        share = Share.of(batch, masked)
        utterances = share.utterances_of(batch)
        feats, lens = padded(self.audio.feats, utterances, device)
        loss, parts = network(feats, lens, share.mask(masked, lens, c.subsampling, device),
                              self.birq and step >= self.enhanced_from,
                              None if self.speakers is None else self.speakers[utterances].to(device),
                              share.masked_frames)
        return share.weighted(Step(loss, parts, c.method))

    def status(self, parts: dict[str, float]) -> str:
        return f"loss {parts['anchor_loss']:.3f} acc {parts['anchor_accuracy']:.2f}"

    def finish(self, out: Path, step: int, device: torch.device) -> dict:
        save_encoder(out / "encoder.pt", self.encoder,
                     {"method": self.config.method, "steps": step, "corpus": str(self.corpus)})
        return {"utterances": len(self.audio.ids), "hours": round(self.audio.seconds() / 3600, 3),
                "pseudo_speakers": self.adversary.num_speakers if self.adversary else None}


def _rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}


def _restore(state: dict, state_path: Path, model, optimizer, scheduler, generator, objective: Objective,
             device: torch.device) -> tuple[int, float]:
    """Load a checkpoint into the run; its step and compute used."""
    if "samplers" not in state:
        raise UsrasrError(f"{state_path} was written before pretraining drew batches with Lhotse's sampler: "
                          "start the run again in a new --out")
    if state["world_size"] != world_size():
        raise UsrasrError(f"{state_path} was written by a run of {state['world_size']} process(es); resume it "
                          f"with as many, not {world_size()}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    rng = state["rng"][process_rank()]  # each process its own dropout stream
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda" and rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"])
    for name, batches in objective.batches.items():
        batches.load_state_dict(state["samplers"][name])
    return state["step"], state["elapsed"]


def pretrain(corpus: str | Path, out: str | Path, config: PretrainConfig, resume: bool = False) -> dict:
    """Train the encoder with ``config.method`` (``corpus``'s train-audio, never its text); return the
    summary.  Under torch.distributed every process calls this (see the module's docstring)."""
    corpus, out = Path(corpus), Path(out)
    main = process_rank() == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
        # the step count and compute budget may grow on resume
        config.record(out, resume, may_change=("steps", "time_budget_minutes"))
    barrier()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    encoder = build_encoder(config, device)
    if config.method == "just":
        from usrasr.pretrain.just import JustObjective

        objective: Objective = JustObjective(corpus, config, encoder, device)
    else:
        objective = MaskedPrediction(corpus, config, encoder, device)
    model = objective.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / config.warmup_steps,
                                 0.5 * (1 + math.cos(math.pi * min(1.0, s / config.steps)))))
    generator = torch.Generator().manual_seed(config.seed)  # masks: the same on every process
    torch.manual_seed(config.seed + process_rank())  # dropout and Gumbel noise: each process its own
    step, elapsed = 0, 0.0
    state_path = out / "train_state.pt"
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        step, elapsed = _restore(state, state_path, model, optimizer, scheduler, generator, objective, device)
        log.info("pretrain: resumed at step %d (%.0f s of compute used)", step, elapsed)
    world = world_size()
    # Parameters a step may leave unused: BiRQ's enhanced head before birq_start, JUST's phone head on target steps.
    network = (torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=config.method != "bestrq")
               if world > 1 else model)

    def save_state() -> None:
        rng = gather_objects(_rng_state(device))
        if main:
            with atomic_path(state_path) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "rng": rng,
                            "samplers": {name: b.state_dict() for name, b in objective.batches.items()},
                            "world_size": world, "step": step, "elapsed": elapsed}, tmp)
        barrier()  # no process may look for the checkpoint before it is on disk

    budget = config.time_budget_minutes * 60 or math.inf
    # Compute is CPU time on a CPU, summed over the processes (other processes sharing the cores do not
    # eat into the budget, so equal budgets mean equal work), and wall time on a GPU.
    cuda = device.type == "cuda"
    bf16 = uses_bf16(config.precision, device)
    clock = time.time if cuda else time.process_time
    metrics = MetricsLog(out / "metrics.jsonl") if main else None
    parts: dict[str, float] = {}
    try:
        model.train()
        with progress() as bar:
            task = bar.add_task(f"pretrain {config.method}", total=config.steps, completed=step, status="")
            while step < config.steps and elapsed < budget:
                started = clock()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss, parts, series = objective.step(step, generator, network, device)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                if cuda:
                    torch.cuda.synchronize()  # the step's kernels run asynchronously: count them in its time
                seconds = clock() - started
                # the whole batch's loss and parts, and the compute of every process (see Share)
                totals = mean_over_processes(torch.tensor([loss.item(), *parts.values(), seconds],
                                                          dtype=torch.float64, device=device)).tolist()
                batch_loss, parts = totals[0], dict(zip(parts, totals[1:-1]))
                if not math.isfinite(batch_loss):
                    raise UsrasrError(f"pretraining loss became {batch_loss} at step {step}; lower lr")
                step += 1
                elapsed += totals[-1] * (1 if cuda else world)
                if metrics:
                    metrics.write(stage="pretrain", model=series, step=step, loss=batch_loss, **parts)
                bar.update(task, advance=1, status=objective.status(parts))
                if step % config.checkpoint_every == 0:
                    save_state()
        save_state()
    finally:
        if metrics:
            metrics.close()
    if elapsed >= budget and step < config.steps:
        log.info("pretrain: time budget of %.1f min reached at step %d/%d", config.time_budget_minutes, step,
                 config.steps)
    model.eval()
    summary = {"method": config.method, "arch": encoder.config.arch, "steps": step,
               "compute_seconds": round(elapsed, 1),
               "compute_clock": "wall" if cuda else "cpu (process time, all threads and processes)",
               "device": str(device), "processes": world, "precision": "bf16 autocast" if bf16 else "fp32",
               "final": parts}
    if not main:
        return summary
    summary.update(objective.finish(out, step, device))
    write_json_atomic(out / "summary.json", summary)
    plot_losses(out / "metrics.jsonl", out / "losses.png")
    return summary
