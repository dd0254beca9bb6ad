"""``usrasr bench precision``: CTC training steps in float32 against bf16 autocast.

The network is the default acoustic model (the TDNN that the supervised oracle, self-training
and the JUST encoder share, or the conformer); the batches are random features and labels
shaped like the default corpus's utterances, since the time of a step depends on shapes only.
It says, too, what ``precision=auto`` chooses on this machine.
"""

from __future__ import annotations

import time

import click
import torch

from usrasr.models.acoustic import AcousticModelConfig, build_model
from usrasr.models.ctc_train import train_ctc
from usrasr.utils.device import has_native_bf16, resolve_device, uses_bf16


def _batches(utterances: int, seed: int = 0) -> tuple[list[torch.Tensor], list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(200, 600, (utterances,), generator=g)  # 2-6 s of 10 ms frames
    feats = [torch.randn(int(n), 80, generator=g) for n in lengths]
    return feats, [torch.randint(1, 40, (int(n) // 8,), generator=g).tolist() for n in lengths]


def _seconds_per_step(arch: str, precision: str, feats, targets, steps: int, batch: int, device) -> float:
    torch.manual_seed(0)
    model = build_model(AcousticModelConfig(num_tokens=41, arch=arch))
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    start = clock()
    train_ctc(model, feats, targets, steps=steps, batch_size=batch, device=device, precision=precision)
    return (clock() - start) / steps


@click.command("precision")
@click.option("--arch", type=click.Choice(["tdnn", "conformer"]), default="tdnn", show_default=True)
@click.option("--steps", default=20, show_default=True, help="Training steps timed per precision.")
@click.option("--batch", default=16, show_default=True, help="Utterances per step.")
@click.option("--threads", default=1, show_default=True, help="Torch threads.")
@click.option("--device", default="auto", show_default=True)
def precision(arch, steps, batch, threads, device) -> None:
    """Time CTC training steps in fp32 and under bf16 autocast; print the speed-up."""
    torch.set_num_threads(threads)
    device = resolve_device(device)
    feats, targets = _batches(4 * batch)
    _seconds_per_step(arch, "fp32", feats, targets, 1, batch, device)  # first-use costs out of the timings
    times = {p: _seconds_per_step(arch, p, feats, targets, steps, batch, device) for p in ("fp32", "bf16")}
    clock = "wall" if device.type == "cuda" else "CPU"
    click.echo(f"CTC training, {arch}, {steps} steps of {batch} utterances, {device}, {threads} thread(s)")
    for name, seconds in times.items():
        click.echo(f"  {name}: {seconds:.3f} s ({clock}) per step")
    click.echo(f"  speed-up of bf16: {times['fp32'] / times['bf16']:.2f}x; bf16 units here: "
               f"{'yes' if has_native_bf16(device) else 'no'}, so precision=auto means "
               f"{'bf16' if uses_bf16('auto', device) else 'fp32'}")
