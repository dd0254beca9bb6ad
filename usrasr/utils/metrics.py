"""Training metrics as JSON lines, and a PNG of the loss curves."""

from __future__ import annotations

import json
import time
from pathlib import Path

from usrasr.utils.io import atomic_path


class MetricsLog:
    """Appends one JSON object per event to ``metrics.jsonl`` (line-buffered, so a
    killed run keeps every line written before it died)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, **fields) -> None:
        self._file.write(json.dumps({"time": round(time.time(), 3), **fields}, default=float) + "\n")

    def close(self) -> None:
        self._file.close()


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_losses(metrics_path: Path, out: Path) -> None:
    """One panel per stage: loss per iteration (seq-CE restarts) or per step (CTC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_path) if "loss" in r]
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    if not stages:
        return
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.5), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        series: dict[str, list] = {}
        for r in rows:
            if r["stage"] == stage:
                key = f"restart {r['restart']}" if "restart" in r else r.get("model", stage)
                series.setdefault(key, []).append((r.get("iteration", r.get("step", 0)), r["loss"]))
        for key, points in series.items():
            ax.plot(*zip(*sorted(dict(points).items())), label=key)
        ax.set_title(stage)
        ax.set_xlabel("iteration" if stage == "seqce" else "step")
        ax.set_ylabel("loss (nats per frame)" if stage == "seqce" else "loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
