"""``usrasr pretrain``: masked-prediction training of the encoder on the unpaired audio.

Outputs under the experiment dir::

    config.yaml        the configuration used (resume checks it)
    train_state.pt     resumable state: model, optimiser, scheduler, RNGs, batch order, compute used
    encoder.pt         the encoder alone, for ``usrasr train --set units=encoder``
    metrics.jsonl      loss and masked-prediction accuracy per step
    losses.png         loss curves
    summary.json       steps, compute used, final accuracies
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from usrasr.utils.device import resolve_device
from usrasr.models.acoustic import valid_mask
from usrasr.pretrain.config import PretrainConfig
from usrasr.models.encoder import EncoderConfig, SslEncoder, length_batches, save_encoder
from usrasr.pretrain.objectives import EnhancedLabels, PretrainModel, SpeakerAdversary, span_mask
from usrasr.corpus.reader import load_audio
from usrasr.utils.metrics import MetricsLog, plot_losses
from usrasr.utils.console import log, progress
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_path, write_json_atomic

TRAIN_SPLIT = "train_audio"


def pretrain(corpus: str | Path, out: str | Path, config: PretrainConfig, resume: bool = False) -> dict:
    """Train the encoder with BEST-RQ or BiRQ on ``corpus``'s train-audio; return the summary."""
    corpus, out = Path(corpus), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the step count and compute budget may grow on resume
    config.record(out, resume, may_change=("steps", "time_budget_minutes"))
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    audio = load_audio(corpus, TRAIN_SPLIT)
    encoder = SslEncoder(EncoderConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(EncoderConfig)
                                          if hasattr(config, f.name)}))
    birq = config.method == "birq"
    adversary, speakers = None, None
    if config.speaker_adversary_weight > 0:
        # pseudo-speakers from the audio alone: pretraining reads no labels of any kind
        clustered = audio.speakers_from("cluster", config.speaker_clusters, TRAIN_SPLIT, config.seed).speakers
        names = sorted(set(clustered))
        speakers = torch.tensor([names.index(s) for s in clustered])
        layer = config.num_layers if config.speaker_adversary_layer == -1 else config.speaker_adversary_layer
        adversary = SpeakerAdversary(len(names), layer, config.speaker_adversary_weight)
    enhanced = None
    if birq:
        enhanced = EnhancedLabels(config.birq_layer, config.birq_weight, config.quantizer_temperature,
                                  config.diversity_weight, config.label_grad_scale, config.balance_iterations)
    model = PretrainModel(encoder, config.codebook_size, config.codebook_dim, config.seed, enhanced,
                          adversary).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / config.warmup_steps,
                                 0.5 * (1 + math.cos(math.pi * min(1.0, s / config.steps)))))
    generator = torch.Generator().manual_seed(config.seed)
    batches = length_batches([len(f) for f in audio.feats], config.batch_frames)
    queue: list[int] = []  # batch indices left in this epoch
    step, elapsed = 0, 0.0
    state_path = out / "train_state.pt"
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        queue, step, elapsed = state["queue"], state["step"], state["elapsed"]
        log.info("pretrain: resumed at step %d (%.0f s of compute used)", step, elapsed)

    def save_state() -> None:
        with atomic_path(state_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                        "torch_rng": torch.get_rng_state(), "queue": queue, "step": step, "elapsed": elapsed}, tmp)

    budget = config.time_budget_minutes * 60 or math.inf
    # Compute is CPU time on a CPU (other processes sharing the cores do not eat into the
    # budget, so equal budgets mean equal work) and wall time on a GPU.
    clock = time.time if device.type == "cuda" else time.process_time
    enhanced_from = int(config.birq_start * config.steps) if birq else None
    metrics = MetricsLog(out / "metrics.jsonl")
    parts: dict[str, float] = {}
    try:
        model.train()
        with progress() as bar:
            task = bar.add_task(f"pretrain {config.method}", total=config.steps, completed=step, status="")
            while step < config.steps and elapsed < budget:
                started = clock()
                if not queue:
                    queue = torch.randperm(len(batches), generator=generator).tolist()
                batch = batches[queue.pop()]
                feats = pad_sequence([audio.feats[i] for i in batch], batch_first=True).to(device)
                lens = torch.tensor([len(audio.feats[i]) for i in batch], device=device)
                out_lens = (lens + config.subsampling - 1) // config.subsampling  # the front end's ceil(T / s)
                valid = valid_mask(out_lens, int(out_lens.max()))
                masked = span_mask(valid, config.mask_prob, config.mask_span, generator)
                loss, parts = model.loss(feats, lens, masked, birq and step >= enhanced_from,
                                         None if speakers is None else speakers[batch].to(device))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                if not math.isfinite(loss.item()):
                    raise UsrasrError(f"pretraining loss became {loss.item()} at step {step}; lower lr")
                step += 1
                elapsed += clock() - started
                metrics.write(stage="pretrain", model=config.method, step=step, loss=loss.item(), **parts)
                bar.update(task, advance=1,
                           status=f"loss {loss.item():.3f} acc {parts['anchor_accuracy']:.2f}")
                if step % config.checkpoint_every == 0:
                    save_state()
        save_state()
    finally:
        metrics.close()
    if elapsed >= budget and step < config.steps:
        log.info("pretrain: time budget of %.1f min reached at step %d/%d", config.time_budget_minutes, step,
                 config.steps)
    summary = {"method": config.method, "steps": step, "compute_seconds": round(elapsed, 1),
               "compute_clock": "wall" if device.type == "cuda" else "cpu (process time, all threads)",
               "device": str(device), "utterances": len(audio.ids),
               "hours": round(sum(len(f) for f in audio.feats) / 360000, 3), "final": parts,
               "pseudo_speakers": adversary.num_speakers if adversary else None}
    save_encoder(out / "encoder.pt", encoder, {"method": config.method, "steps": step, "corpus": str(corpus)})
    write_json_atomic(out / "summary.json", summary)
    plot_losses(out / "metrics.jsonl", out / "losses.png")
    return summary
