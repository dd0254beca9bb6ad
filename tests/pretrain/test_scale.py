"""`usrasr pretrain` at scale: bf16 autocast, Lhotse's bucketing sampler and its exact resume,
each process's share of a batch, and torchrun."""

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from lhotse import load_manifest

from tests.pretrain.test_just import JUST_TINY, write_multilingual
from tests.pretrain.test_pretrain import TINY, run_cli
from usrasr.cli import cli
from usrasr.corpus.layout import CorpusLayout
from usrasr.models.encoder import EncoderConfig, SslEncoder, load_encoder
from usrasr.pretrain import objectives
from usrasr.pretrain.just import ArticulatoryPhoneHead, JustModel
from usrasr.pretrain.objectives import BucketedBatches, Share, padded


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_bucketed_batches_cover_each_epoch_once_and_resume_exactly(tiny_corpus):
    manifest = CorpusLayout(tiny_corpus).cuts("train_audio")
    cuts = load_manifest(manifest)
    ids = [cut.id for cut in cuts]
    durations = [cut.duration for cut in cuts]
    first, second = _epochs(BucketedBatches(manifest, ids, max_frames=1000, seed=3))
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(len(ids)))  # every utterance once
        assert all(len(batch) == 1 or sum(durations[i] for i in batch) <= 10.0 for batch in epoch)
    assert first != second  # a fresh order every epoch
    # a sampler restored from the state after a few batches of the second epoch draws what the original draws
    original = BucketedBatches(manifest, ids, max_frames=1000, seed=3)
    for _ in range(len(first) + 2):
        original.next()
    state = original.state_dict()
    restored = BucketedBatches(manifest, ids, max_frames=1000, seed=3)
    restored.load_state_dict(state)
    assert [restored.next() for _ in range(len(first))] == [original.next() for _ in range(len(first))]
    # only the utterances given are drawn, by their positions in ids
    epoch, _ = _epochs(BucketedBatches(manifest, ids[::3], max_frames=1000, seed=3))
    assert sorted(i for batch in epoch for i in batch) == list(range(len(ids[::3])))


def _epochs(batches: BucketedBatches) -> tuple[list, list]:
    """The batches of the first two epochs."""
    drawn: dict[int, list] = {0: [], 1: []}
    while True:
        batch = batches.next()
        if batches.sampler.epoch == 2:
            return drawn[0], drawn[1]
        drawn[batches.sampler.epoch].append(batch)


def _batch(count=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    feats = [torch.randn(int(torch.randint(30, 70, (), generator=generator)), 80, generator=generator)
             for _ in range(count)]
    lengths = torch.tensor([len(f) for f in feats])
    masked = objectives.span_mask(objectives.subsampled_valid(lengths, 2), 0.2, 3, torch.Generator().manual_seed(seed))
    labels = [torch.randint(1, 6, (int(torch.randint(2, 6, (), generator=generator)),), generator=generator)
              for _ in range(count)]
    return feats, masked, labels


def _model(just: bool):
    torch.manual_seed(0)
    encoder = SslEncoder(EncoderConfig(hidden_dim=32, num_layers=2, num_heads=2, dropout=0.0))
    bestrq = objectives.PretrainModel(encoder, 16, 4, seed=0)
    if not just:
        return bestrq
    features = torch.randint(-1, 2, (6, 4), generator=torch.Generator().manual_seed(1)).float()
    return JustModel(bestrq, ArticulatoryPhoneHead(32, features), weight=0.5)


def _loss_and_gradients(model, just, feats, lens, masked, labels, **share):
    model.zero_grad()
    loss, parts = model(feats, lens, masked, *([labels] if just else []), **share)
    loss.backward()
    return loss.item(), parts, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("just", [False, True])
def test_shares_of_a_batch_average_to_its_whole_loss_and_gradient(monkeypatch, just):
    """What DDP computes from the processes' shares (the mean of their losses and gradients) is the
    loss and gradient of one process on the whole batch: masked-frame and utterance means alike."""
    feats, masked, labels = _batch()
    batch = list(range(len(feats)))
    model = _model(just)
    whole = _loss_and_gradients(model, just, *padded(feats, batch, torch.device("cpu")), masked, labels)
    world = 2
    monkeypatch.setattr(objectives, "world_size", lambda: world)
    shares = []
    for rank in range(world):
        monkeypatch.setattr(objectives, "process_rank", lambda rank=rank: rank)
        share = Share.of(batch, masked)
        assert share.weight == 1 and len(share.rows) == (3, 2)[rank]  # shares of 3 and 2: the weighting matters
        x, lens = padded(feats, share.utterances_of(batch), torch.device("cpu"))
        extra = {"utterances": share.utterances} if just else {}
        shares.append(_loss_and_gradients(model, just, x, lens, share.mask(masked, lens, 2, torch.device("cpu")),
                                          [labels[i] for i in share.utterances_of(batch)],
                                          masked_frames=share.masked_frames, **extra))
    assert sum(s[0] for s in shares) / world == pytest.approx(whole[0], rel=1e-5)
    for key, value in whole[1].items():
        assert sum(s[1][key] for s in shares) / world == pytest.approx(value, rel=1e-5), key
    for name, grad in whole[2].items():
        torch.testing.assert_close(sum(s[2][name] for s in shares) / world, grad, rtol=1e-4, atol=1e-6)
    # a batch smaller than the processes: the process left without an utterance runs a copy that counts zero
    monkeypatch.setattr(objectives, "process_rank", lambda: 1)
    alone = Share.of([7], masked[:1])
    assert alone.rows == [0] and alone.weight == 0
    step = alone.weighted(objectives.Step(torch.tensor(2.0), {"anchor_loss": 2.0}, "x"))
    assert step.loss.item() == 0 and step.parts == {"anchor_loss": 0.0}


def test_bf16_autocast_runs_on_a_cpu_and_rounds_the_forward_pass(tiny_corpus, tmp_path):
    first = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        output = run_cli("-q", "pretrain", "--corpus", tiny_corpus, "--out", out, *TINY, "--set", "steps=3",
                         "--set", "dropout=0.0", "--set", f"precision={precision}")
        assert ("bf16 autocast" in output) == (precision == "bf16")
        assert json.loads((out / "summary.json").read_text())["precision"] == (
            "bf16 autocast" if precision == "bf16" else "fp32")
        first[precision] = _rows(out)[0]
    # the same batch and weights at step 1: bf16 rounding moves the loss a little, not a lot
    assert first["bf16"]["anchor_loss"] != first["fp32"]["anchor_loss"]
    assert first["bf16"]["anchor_loss"] == pytest.approx(first["fp32"]["anchor_loss"], rel=0.02)


def test_precision_must_be_one_of_three(tiny_corpus, tmp_path):
    result = CliRunner().invoke(cli, ["pretrain", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "p"),
                                      "--set", "precision=fp16"])
    assert result.exit_code != 0 and "precision must be one of auto, bf16, fp32" in result.output


def test_resume_with_another_number_of_processes_says_so_in_one_line(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    args = ["-q", "pretrain", "--corpus", str(tiny_corpus), "--out", str(out), *TINY, "--set", "steps=2"]
    run_cli(*args)
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert state["world_size"] == 1 and len(state["rng"]) == 1 and set(state["samplers"]) == {"train_audio"}
    state["world_size"] = 2  # as a two-process run writes it
    torch.save(state, out / "train_state.pt")
    result = CliRunner().invoke(cli, [*args[:-1], "steps=4", "--resume"])
    assert result.exit_code != 0
    message = f"{out / 'train_state.pt'} was written by a run of 2 process(es); resume it with as many, not 1"
    assert [line for line in result.output.splitlines() if message in line]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _one_and_two_processes(args: list[str], tmp_path) -> tuple:
    """``usrasr ARGS`` in one process (``tmp_path/one``) and under torchrun in two (``tmp_path/two``);
    the two directories and torchrun's completed process."""
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "usrasr", *args, "--out", str(one)], check=True, capture_output=True,
                   env=ENV, timeout=300)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "usrasr", *args, "--out", str(two)], check=False, capture_output=True, text=True,
                            env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return one, two, result


@pytest.mark.slow
def test_torchrun_two_processes_pretrain_as_one_does_and_resume_only_with_two(tiny_corpus, tmp_path):
    """Two gloo processes on the tiny corpus: the same batches, masks and updates as one process
    (no dropout), up to float rounding; rank 0 alone writes; resuming with one process is refused."""
    args = ["-q", "pretrain", "--corpus", str(tiny_corpus), *TINY, "--set", "steps=6", "--set", "dropout=0.0",
            "--set", "checkpoint_every=3", "--set", "precision=fp32"]  # float32 rounding, not bf16's
    one, two, result = _one_and_two_processes(args, tmp_path)
    assert "x 2 processes" in result.stdout
    rows_one, rows_two = _rows(one), _rows(two)
    assert [r["step"] for r in rows_two] == list(range(1, 7))  # one row per step: rank 0 alone writes
    for a, b in zip(rows_one, rows_two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["anchor_accuracy"] == pytest.approx(a["anchor_accuracy"], abs=1e-6)
    # Adam turns rounding-sized differences of near-zero gradients into steps of up to lr (1e-3, scaled
    # by the warm-up), so the weights agree to well under one such step, not to float rounding
    (encoder_one, _), (encoder_two, _) = load_encoder(one), load_encoder(two)
    for name, value in encoder_one.state_dict().items():
        torch.testing.assert_close(encoder_two.state_dict()[name], value, rtol=0, atol=5e-4)
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    resumed = subprocess.run([sys.executable, "-m", "usrasr", *args, "--set", "steps=8", "--out", str(two), "--resume"],
                             check=False, capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode != 0
    assert "was written by a run of 2 process(es); resume it with as many, not 1" in resumed.stderr


@pytest.mark.slow
def test_torchrun_two_processes_pretrain_just_as_one_does(tiny_corpus, tmp_path):
    """JUST's target steps leave the phone head unused (DDP must be told); its two losses, phone CTC
    over utterances and masked prediction over frames, are weighted apart and match one process."""
    multilingual = write_multilingual(tmp_path / "multilingual")
    args = ["-q", "pretrain", "--corpus", str(tiny_corpus), *JUST_TINY, "--set", f"multilingual={multilingual}",
            "--set", "steps=10", "--set", "precision=fp32"]
    one, two, _ = _one_and_two_processes(args, tmp_path)
    rows_one, rows_two = _rows(one), _rows(two)
    assert [r["model"] for r in rows_two] == [r["model"] for r in rows_one] and len(rows_two) == 10
    assert any("target" in r["model"] for r in rows_two) and any("ctc_loss" in r for r in rows_two)
    for a, b in zip(rows_one, rows_two):
        for key in ("loss", "ctc_loss", "anchor_loss", "target_anchor_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4), (a["step"], key)
