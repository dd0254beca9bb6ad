"""``usrasr pretrain``: the one training loop of every method (masked prediction on the
unpaired audio, or JUST's phone CTC on a multilingual corpus plus masked prediction).

Outputs under the experiment dir::

    config.yaml        the configuration used (resume checks it)
    train_state.pt     resumable state: model, optimiser, scheduler, RNGs, batch order, compute used
    encoder.pt         the encoder alone, for ``usrasr train --set units=encoder`` (just: with its phone head)
    metrics.jsonl      loss and masked-prediction accuracy per step
    losses.png         loss curves
    summary.json       steps, compute used, final accuracies (just: held-out phone CTC loss and PER)
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from usrasr.utils.device import resolve_device
from usrasr.pretrain.config import PretrainConfig
from usrasr.models.encoder import EncoderConfig, SslEncoder, save_encoder
from usrasr.pretrain.objectives import (
    BatchOrder, EnhancedLabels, Objective, PretrainModel, SpeakerAdversary, Step, padded, span_mask, subsampled_valid,
)
from usrasr.corpus.reader import load_audio
from usrasr.utils.metrics import MetricsLog, plot_losses
from usrasr.utils.console import log, progress
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_path, write_json_atomic

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
        self.orders = {"train_audio": BatchOrder([len(f) for f in self.audio.feats], config.batch_frames)}
        self.enhanced_from = int(config.birq_start * config.steps) if self.birq else None

    def step(self, step: int, generator: torch.Generator, device: torch.device) -> Step:
        c = self.config
        batch = self.orders["train_audio"].next(generator)
        feats, lens = padded(self.audio.feats, batch, device)
        masked = span_mask(subsampled_valid(lens, c.subsampling), c.mask_prob, c.mask_span, generator)
        loss, parts = self.model.loss(feats, lens, masked, self.birq and step >= self.enhanced_from,
                                      None if self.speakers is None else self.speakers[batch].to(device))
        return Step(loss, parts, c.method)

    def status(self, parts: dict[str, float]) -> str:
        return f"loss {parts['anchor_loss']:.3f} acc {parts['anchor_accuracy']:.2f}"

    def finish(self, out: Path, step: int, device: torch.device) -> dict:
        save_encoder(out / "encoder.pt", self.encoder,
                     {"method": self.config.method, "steps": step, "corpus": str(self.corpus)})
        return {"utterances": len(self.audio.ids), "hours": round(self.audio.seconds() / 3600, 3),
                "pseudo_speakers": self.adversary.num_speakers if self.adversary else None}


def pretrain(corpus: str | Path, out: str | Path, config: PretrainConfig, resume: bool = False) -> dict:
    """Train the encoder with ``config.method`` (``corpus``'s train-audio, never its text); return the summary."""
    corpus, out = Path(corpus), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the step count and compute budget may grow on resume
    config.record(out, resume, may_change=("steps", "time_budget_minutes"))
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
    generator = torch.Generator().manual_seed(config.seed)
    step, elapsed = 0, 0.0
    state_path = out / "train_state.pt"
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        for name, order in objective.orders.items():
            order.queue = state["queues"][name]
        step, elapsed = state["step"], state["elapsed"]
        log.info("pretrain: resumed at step %d (%.0f s of compute used)", step, elapsed)

    def save_state() -> None:
        with atomic_path(state_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "queues": {name: order.queue for name, order in objective.orders.items()},
                        "step": step, "elapsed": elapsed}, tmp)

    budget = config.time_budget_minutes * 60 or math.inf
    # Compute is CPU time on a CPU (other processes sharing the cores do not eat into the
    # budget, so equal budgets mean equal work) and wall time on a GPU.
    clock = time.time if device.type == "cuda" else time.process_time
    metrics = MetricsLog(out / "metrics.jsonl")
    parts: dict[str, float] = {}
    try:
        model.train()
        with progress() as bar:
            task = bar.add_task(f"pretrain {config.method}", total=config.steps, completed=step, status="")
            while step < config.steps and elapsed < budget:
                started = clock()
                loss, parts, series = objective.step(step, generator, device)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                if not math.isfinite(loss.item()):
                    raise UsrasrError(f"pretraining loss became {loss.item()} at step {step}; lower lr")
                step += 1
                elapsed += clock() - started
                metrics.write(stage="pretrain", model=series, step=step, loss=loss.item(), **parts)
                bar.update(task, advance=1, status=objective.status(parts))
                if step % config.checkpoint_every == 0:
                    save_state()
        save_state()
    finally:
        metrics.close()
    if elapsed >= budget and step < config.steps:
        log.info("pretrain: time budget of %.1f min reached at step %d/%d", config.time_budget_minutes, step,
                 config.steps)
    model.eval()
    summary = {"method": config.method, "arch": encoder.config.arch, "steps": step,
               "compute_seconds": round(elapsed, 1),
               "compute_clock": "wall" if device.type == "cuda" else "cpu (process time, all threads)",
               "device": str(device), "final": parts, **objective.finish(out, step, device)}
    write_json_atomic(out / "summary.json", summary)
    plot_losses(out / "metrics.jsonl", out / "losses.png")
    return summary
