"""``usrasr bench marginals``: forward+backward throughput and peak memory of
:func:`usrasr.graph.marginals.total_scores`, side by side with a naive
reference (autograd through an unrolled per-frame logsumexp) and, where
``import k2`` works, k2's ``intersect_dense`` + ``get_tot_scores`` (k2 is never
required), on HMM or CTC x phone LM graphs built from random text with
``kaldingram``, at each of several torch thread counts.

Each measurement runs in a fresh subprocess so that the peak resident memory
(CPU) or peak allocated memory (CUDA) belongs to that measurement alone.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from usrasr.graph.fsa import Fsa
from usrasr.graph.marginals import total_scores
from usrasr.graph.topo import arpa_to_fsa, ctc_lm_graph, hmm_lm_graph


def naive_total_scores(dense: torch.Tensor, lengths: torch.Tensor, fsa: Fsa) -> torch.Tensor:
    """Reference: the same per-frame scatter-logsumexp over arcs, written
    with differentiable ops and left to autograd, which keeps every frame's
    ``(B, arcs)`` intermediates alive for the backward pass.  Unreachable
    states are clamped to the most negative float instead of -inf so that
    autograd produces no NaN."""
    lowest, tiny = torch.finfo(dense.dtype).min, torch.finfo(dense.dtype).tiny
    score, final = fsa.score.to(dense.dtype), fsa.final.to(dense.dtype)
    dst = fsa.dst.expand(dense.shape[0], -1)
    alpha = dense.new_full((dense.shape[0], fsa.num_states), float("-inf"))
    alpha[:, fsa.start] = 0.0
    for t in range(int(lengths.max())):
        values = alpha[:, fsa.src] + score + dense[:, t, fsa.label]
        peak = torch.full_like(alpha, lowest).scatter_reduce(1, dst, values.detach(), "amax")
        sums = torch.zeros_like(alpha).index_add(1, fsa.dst, (values - peak[:, fsa.dst]).exp())
        alpha = torch.where((t < lengths)[:, None], sums.clamp_min(tiny).log() + peak, alpha)
    return torch.logsumexp(alpha + final, -1)


def k2_total_scores(dense: torch.Tensor, lengths: torch.Tensor, fsa: Fsa) -> torch.Tensor:
    """k2's totals (its graph conversion is timed too: small next to the intersection)."""
    from usrasr.graph.k2_compat import k2_total_scores as totals

    return totals(dense, lengths, fsa)


METHODS = {"scan": total_scores, "naive": naive_total_scores, "k2": k2_total_scores}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _measure(
    method: str, dtype: torch.dtype, graph: Fsa, batch: int, frames: int, repeat: int, device: str, seed: int, threads: int
) -> dict:
    """Child process: time forward+backward ``repeat`` times (best taken) and
    report the peak memory above the starting point."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    dense = torch.randn(batch, frames, int(graph.label.max()) + 1, generator=generator, dtype=torch.float64)
    dense = torch.log_softmax(2 * dense, -1).to(dtype)
    lengths = torch.randint(frames * 3 // 4, frames + 1, (batch,), generator=generator)
    lengths[0] = frames
    graph, dense, lengths = graph.to(device), dense.to(device), lengths.to(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    best = float("inf")
    for _ in range(repeat):
        inputs = dense.detach().requires_grad_()
        start = time.perf_counter()
        totals = METHODS[method](inputs, lengths, graph)
        totals.sum().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"seconds": best, "peak": peak, "totals": totals.detach().cpu(), "grad": inputs.grad.cpu(), "lengths": lengths.cpu()}


def _run_isolated(*args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, args)


def _random_text(path: Path, num_phones: int, sentences: int, seed: int) -> dict[str, int]:
    """Sentences from a random sparse Markov chain over ``num_phones`` phones."""
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.full(num_phones, 0.3), num_phones)
    lines = []
    for _ in range(sentences):
        phones = [int(rng.integers(num_phones))]
        for _ in range(int(rng.integers(2, 20))):
            phones.append(int(rng.choice(num_phones, p=transition[phones[-1]])))
        lines.append(" ".join(f"p{p}" for p in phones))
    path.write_text("\n".join(lines) + "\n")
    return {f"p{p}": p + 1 for p in range(num_phones)}


def _graph(order: int, topology: str, num_phones: int, states_per_phone: int, workdir: Path,
           symbols: dict[str, int]) -> Fsa:
    arpa = workdir / f"lm{order}.arpa"
    subprocess.run(
        ["kaldingram", "train", "--ngram-order", str(order), "--text", str(workdir / "text.txt"), "--lm", str(arpa)],
        check=True,
        capture_output=True,
    )
    lm = arpa_to_fsa(arpa, symbols)
    return ctc_lm_graph(lm, num_phones) if topology == "ctc" else hmm_lm_graph(lm, num_phones, states_per_phone)


@click.command("marginals")
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
@click.option("--batch", default=16, show_default=True, help="Utterances per batch.")
@click.option("--frames", default=500, show_default=True, help="Frames of the longest utterance.")
@click.option("--repeat", default=1, show_default=True, help="Timed runs per measurement (best is kept).")
@click.option("--phones", default=40, show_default=True)
@click.option("--topology", type=click.Choice(["hmm", "ctc"]), default="hmm", show_default=True,
              help="Topology composed with the LM.")
@click.option("--states-per-phone", default=1, show_default=True, help="HMM states per phone.")
@click.option("--orders", default="2,3", show_default=True, help="LM orders to benchmark.")
@click.option("--naive/--no-naive", default=True, show_default=True, help="Also run the naive reference.")
@click.option("--threads", default="1,2", show_default=True,
              help="Torch CPU thread counts, measured side by side (comma-separated).")
@click.option("--seed", default=0, show_default=True)
def marginals(
    device: str,
    batch: int,
    frames: int,
    repeat: int,
    phones: int,
    topology: str,
    states_per_phone: int,
    orders: str,
    naive: bool,
    threads: str,
    seed: int,
) -> None:
    """Forward+backward seconds at each thread count, throughput (frame*arc/s,
    at the best count) and peak memory of the sequence marginal, against
    autograd through an unrolled logsumexp and against k2 where it imports.

    The float64 run of the scan is the accuracy reference for the float32 runs.
    """
    counts = [int(count) for count in threads.split(",")]
    runs = {"scan": ("scan", torch.float32), "naive": ("naive", torch.float32), "scan-f64": ("scan", torch.float64)}
    if not naive:
        del runs["naive"]
    has_k2 = importlib.util.find_spec("k2") is not None
    if has_k2:
        runs["k2"] = ("k2", torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        symbols = _random_text(workdir / "text.txt", phones, 4000, seed)
        graphs = {order: _graph(int(order), topology, phones, states_per_phone, workdir, symbols)
                  for order in orders.split(",")}
    click.echo(
        f"# device={device} batch={batch} frames={frames} repeat={repeat} phones={phones} topology={topology} "
        f"states_per_phone={states_per_phone} threads={threads}"
    )
    if not has_k2:
        click.echo("# k2: not installed, no ratio against it")
    seconds_columns = "".join(f"{f's@{count}thr':>9}" for count in counts)
    click.echo(
        f"{'LM':<8}{'states':>8}{'arcs':>9}  {'method':<9}{seconds_columns}{'Mframe*arc/s':>14}{'peak MiB':>10}"
        f"{'|total err|':>13}{'|grad err|':>12}"
    )
    for order, graph in graphs.items():
        # results[name][count]; peak memory and errors are those of the first thread count.
        results = {
            name: {count: _run_isolated(*run, graph, batch, frames, repeat, device, seed, count) for count in counts}
            for name, run in runs.items()
        }
        exact = results["scan-f64"][counts[0]]
        for name, by_count in results.items():
            result = by_count[counts[0]]
            work = float(result["lengths"].sum()) * graph.num_arcs
            best = min(r["seconds"] for r in by_count.values())
            total_error = (result["totals"].double() - exact["totals"]).abs().max()
            grad_error = (result["grad"].double() - exact["grad"]).abs().max()
            seconds = "".join(f"{by_count[count]['seconds']:>9.3f}" for count in counts)
            click.echo(
                f"{order + '-gram':<8}{graph.num_states:>8}{graph.num_arcs:>9}  {name:<9}{seconds}"
                f"{work / best / 1e6:>14.1f}{result['peak'] / 2**20:>10.0f}{total_error:>13.1e}{grad_error:>12.1e}"
            )
        for reference in [name for name in ("naive", "k2") if name in results]:
            faster = ", ".join(
                f"{results[reference][count]['seconds'] / results['scan'][count]['seconds']:.1f}x "
                f"at {count} thread{'s' * (count > 1)}"
                for count in counts
            )
            scan, other = results["scan"][counts[0]], results[reference][counts[0]]
            click.echo(
                f"{'':<8}float32 scan vs {reference}: faster by {faster}; "
                f"{other['peak'] / max(scan['peak'], 1):.1f}x less peak memory"
            )
