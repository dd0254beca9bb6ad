"""Multi-process training with torch.distributed (gloo, 2 CPU processes)."""

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from usrasr.models.acoustic import AcousticModelConfig, build_model
from usrasr.models.ctc_train import train_ctc
from usrasr.utils.distributed import process_group, process_rank, shard

TINY = ["--set", "num_units=20", "--set", "kmeans_iterations=5", "--set", "restarts=1", "--set", "iterations=5",
        "--set", "oracle_iterations=5", "--set", "hidden_dim=32", "--set", "num_layers=2",
        "--set", "self_training_rounds=1", "--set", "ctc_steps=10", "--set", "ctc_batch_size=5"]


def test_shards_are_disjoint_and_cover_the_batch():
    batch = [7, 3, 9, 0, 4]
    shares = [shard(batch, rank, 2) for rank in range(2)]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(batch)
    assert [len(s) for s in shares] == [3, 2]
    assert shard(batch, 0, 1) == batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(dropout: float, steps: int, checkpoint=None) -> list[float]:
    """A tiny CTC model on random data; each process draws its own dropout masks."""
    data = torch.Generator().manual_seed(0)
    feats = [torch.randn(int(torch.randint(20, 40, (1,), generator=data)), 8, generator=data) for _ in range(10)]
    targets = [torch.randint(1, 5, (int(torch.randint(2, 6, (1,), generator=data)),), generator=data).tolist()
               for _ in range(10)]
    torch.manual_seed(0)
    model = build_model(AcousticModelConfig(num_tokens=5, feat_dim=8, hidden_dim=16, num_layers=2, dropout=dropout))
    torch.manual_seed(100 + process_rank())
    losses: list[float] = []
    # batch 5 over 2 processes: shares of 3 and 2, so the weighting of the shares matters
    train_ctc(model, feats, targets, steps=steps, lr=3e-3, batch_size=5, checkpoint=checkpoint, checkpoint_every=3,
              on_step=lambda step, loss: losses.append(loss))
    return losses


def _runs(rank: int, world: int, port: int, out) -> None:
    if world > 1:
        os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with process_group(torch.device("cpu")):
        results = {"no_dropout": _train(0.0, 6),
                   "uninterrupted": _train(0.1, 6, out / f"uninterrupted{world}.pt"),
                   "first_half": _train(0.1, 3, out / f"resumed{world}.pt"),
                   "resumed": _train(0.1, 6, out / f"resumed{world}.pt")}
    if rank == 0:
        torch.save(results, out / f"losses{world}.pt")


def test_two_processes_train_as_one_does_on_the_whole_batch(tmp_path):
    mp.spawn(_runs, args=(2, _free_port(), tmp_path), nprocs=2)
    _runs(0, 1, 0, tmp_path)
    one, two = torch.load(tmp_path / "losses1.pt"), torch.load(tmp_path / "losses2.pt")
    # the same batches and updates: equal up to float rounding where no dropout differs
    assert two["no_dropout"] == pytest.approx(one["no_dropout"], rel=1e-4)
    # every process restores its own dropout stream: resume ends as the uninterrupted run
    assert two["resumed"] == two["uninterrupted"][3:]
    assert len(torch.load(tmp_path / "resumed2.pt")["torch_rng"]) == 2


def test_torchrun_two_processes_train_on_cpu(tiny_corpus, tmp_path):
    out = tmp_path / "exp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "usrasr", "-q", "train", "--corpus", str(tiny_corpus), "--out", str(out), *TINY],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "processes: 2" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert (out / "round1" / "model.pt").exists() and (out / "supervised" / "model.pt").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for model in ("self-training round1", "supervised oracle"):
        losses = [r["loss"] for r in rows if r.get("model") == model]
        assert len(losses) == 10  # one row per step: rank 0 alone writes
        assert all(math.isfinite(x) for x in losses)
