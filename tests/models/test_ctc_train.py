"""``train_ctc`` under bf16 autocast: it learns as in float32 and keeps float32 weights."""

import torch

from usrasr.models.acoustic import AcousticModelConfig, build_model
from usrasr.models.ctc_train import train_ctc


def _toy_task(n=24, tokens=4, frames_per_token=6, seed=0):
    """Each token is a constant feature vector of its own, held for a few frames."""
    g = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(tokens, 8, generator=g)
    feats, targets = [], []
    for _ in range(n):
        labels = torch.randint(1, tokens, (4,), generator=g).tolist()
        x = torch.cat([means[t].expand(frames_per_token, 8) for t in labels])
        feats.append(x + 0.3 * torch.randn(x.shape, generator=g))
        targets.append(labels)
    return feats, targets


def test_bf16_autocast_learns_like_float32_and_keeps_float32_weights():
    feats, targets = _toy_task()
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(AcousticModelConfig(num_tokens=4, feat_dim=8, hidden_dim=32, num_layers=2, dropout=0.0))
        trace, dtypes = [], set()
        for layer in model.modules():
            if isinstance(layer, (torch.nn.Conv1d, torch.nn.Linear)):
                layer.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
        train_ctc(model, feats, targets, steps=60, lr=3e-3, batch_size=8, precision=precision,
                  on_step=lambda _step, loss: trace.append(loss))
        assert dtypes == {torch.bfloat16 if precision == "bf16" else torch.float32}
        assert all(p.dtype == torch.float32 for p in model.parameters())
        losses[precision] = trace
    for trace in losses.values():
        assert sum(trace[-5:]) < 0.3 * sum(trace[:5])
    assert abs(sum(losses["bf16"][-5:]) - sum(losses["fp32"][-5:])) < 0.2 * sum(losses["fp32"][-5:]) + 0.1


def test_bench_precision_prints_both_precisions_and_the_ratio():
    from click.testing import CliRunner

    from usrasr.cli import cli

    result = CliRunner().invoke(cli, ["bench", "precision", "--steps", "1", "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "fp32:" in result.output and "bf16:" in result.output and "speed-up of bf16" in result.output
