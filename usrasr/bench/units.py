"""``usrasr bench units``: which units make unsupervised training work?

Runs (resumably) BEST-RQ, BiRQ and BiRQ with gradient into its label
generator for the same number of steps (each row reports the compute it
used), BEST-RQ once more for as many steps as BiRQ's compute buys it (the
seed's claim is at equal compute), then ``usrasr train`` on fbank k-means units, each encoder's units and
per-speaker fbank units, and prints one table on the unseen-voice test split: unit purity /
PNMI, the oracle HMM's PER, the seq-CE PER, the PER after self-training, and
the pretraining compute.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

# pretraining runs: name -> (method, overrides of the defaults)
PRETRAIN_RUNS: dict[str, tuple[str, dict]] = {
    "bestrq": ("bestrq", {}),
    "birq": ("birq", {}),
    "birq_label_grad": ("birq", {"label_grad_scale": 0.1}),
}
# train runs, in the order they run: name -> (label, train overrides); a name of PRETRAIN_RUNS
# takes its units from that encoder
ENCODER_UNITS = {"kmeans_k_choices": "50,100", "supervised_oracle": False}
EQUAL_COMPUTE_RUN = "bestrq_equal_compute"  # BEST-RQ with BiRQ's compute: more steps
TRAIN_RUNS: dict[str, tuple[str, dict]] = {
    "fbank": ("fbank k-means", {"supervised_oracle": False}),
    "bestrq": ("BEST-RQ layer units", ENCODER_UNITS),
    "birq": ("BiRQ layer units", ENCODER_UNITS),
    EQUAL_COMPUTE_RUN: ("BEST-RQ at BiRQ's compute, layer units", ENCODER_UNITS),
    "birq_label_grad": ("BiRQ, label gradient 0.1 (the seed's bilevel step) layer units", ENCODER_UNITS),
    "fbank_spk": ("fbank k-means per speaker + per-speaker tables (needs speaker labels)",
                  {"cmvn": "speaker", "codebook_per_speaker": True, "speaker_emissions": True, "restarts": 3}),
}


def _pretrain(corpus: Path, out: Path, method: str, overrides: dict, steps: int, budget: float) -> dict:
    from usrasr.pretrain.config import PretrainConfig
    from usrasr.pretrain.trainer import pretrain

    config = PretrainConfig.load(None, {**overrides, "method": method, "steps": steps,
                                        "warmup_steps": max(1, steps // 10), "checkpoint_every": 50,
                                        "time_budget_minutes": budget})
    return pretrain(corpus, out, config, resume=(out / "config.yaml").exists())


def equal_compute_steps(baseline: dict, reference: dict) -> int:
    """Steps at which the ``baseline`` pretraining run (a summary) would use the ``reference`` run's compute,
    at the baseline's measured compute per step."""
    return max(1, round(reference["compute_seconds"] * baseline["steps"] / baseline["compute_seconds"]))


def _train(corpus: Path, out: Path, overrides: dict) -> dict:
    from usrasr.train.config import TrainConfig
    from usrasr.train.pipeline import train

    config = TrainConfig.load(None, overrides)
    finished = out / "summary.json"
    if finished.exists() and json.loads(finished.read_text())["config"] == config.to_dict():
        return json.loads(finished.read_text())
    return train(corpus, out, config, resume=(out / "config.yaml").exists())


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def units_table(rows: list[tuple[str, dict, dict | None, dict | None]]) -> Table:
    """One row per unit source: (label, train summary, pretrain summary, units/selection.json), the last two
    None for fbank."""
    table = Table(title="units on the unseen-voice test split (PER %)")
    for column in ("units", "layer / K", "purity", "PNMI", "oracle HMM PER", "seq-CE PER", "final PER",
                   "final WER", "pretraining"):
        table.add_column(column, justify="left" if column == "units" else "right")
    for label, summary, pre, selection in rows:
        quality = summary.get("unit_quality", {}).get("test") or summary.get("unit_quality", {}).get("train_audio", {})
        split = "test" if "test" in summary.get("unit_quality", {}) else "train"
        oracle, seqce = summary.get("oracle_hmm", {}), summary.get("seqce", {})
        final = (summary.get("self_training") or [{}])[-1]
        table.add_row(
            label, f"{selection['layer']} / {selection['k']}" if selection else f"- / {summary['config']['num_units']}",
            _fmt(quality.get("purity"), 3), _fmt(quality.get("pnmi"), 3),
            _fmt(oracle.get(f"per_{split}")) + ("" if split == "test" else " (train)"),
            _fmt(seqce.get(f"per_{split}")) + ("" if split == "test" else " (train)"),
            _fmt(final.get("per_test")), _fmt(final.get("wer_test")),
            f"{pre['steps']} steps, {pre['compute_seconds'] / 60:.0f} CPU-min" if pre else "-")
    supervised = next((s["supervised"] for _, s, _, _ in rows if "supervised" in s), None)
    if supervised:
        table.add_row("supervised oracle (CTC on true transcripts)", "-", "-", "-", "-", "-",
                      _fmt(supervised["per_test"]), _fmt(supervised["wer_test"]), "-")
    return table


@click.command()
@click.option("--corpus", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for every run (pretrain_*/, train_*/); re-running resumes.")
@click.option("--steps", type=int, default=600, show_default=True,
              help="Pretraining steps per method (10 % warm-up, then cosine decay to zero).")
@click.option("--budget-minutes", type=float, default=0.0, show_default=True,
              help="Stop pretraining earlier at this compute per method (CPU minutes over all threads, "
                   "or GPU wall minutes; 0 = no limit).")
@click.option("--equal-compute/--no-equal-compute", default=True, show_default=True,
              help="Also pretrain BEST-RQ for as many steps as BiRQ's measured compute buys it, and train on "
                   "its units.")
def units(corpus: Path, out_dir: Path, steps: int, budget_minutes: float, equal_compute: bool) -> None:
    """Unit sources side by side: fbank, BEST-RQ and BiRQ layers (hours on a CPU; resumable)."""
    pre = {name: _pretrain(corpus, out_dir / f"pretrain_{name}", method, overrides, steps, budget_minutes)
           for name, (method, overrides) in PRETRAIN_RUNS.items()}
    if equal_compute:
        more = equal_compute_steps(pre["bestrq"], pre["birq"])
        pre[EQUAL_COMPUTE_RUN] = _pretrain(corpus, out_dir / f"pretrain_{EQUAL_COMPUTE_RUN}", "bestrq", {}, more,
                                           budget_minutes)
    rows = []
    for name, (label, overrides) in TRAIN_RUNS.items():
        if name == EQUAL_COMPUTE_RUN and not equal_compute:
            continue
        if name in pre:
            overrides = {**overrides, "units": "encoder", "encoder": str(out_dir / f"pretrain_{name}")}
        run = out_dir / f"train_{name}"
        summary = _train(corpus, run, overrides)
        selection = run / "units" / "selection.json"
        rows.append((label, summary, pre.get(name), json.loads(selection.read_text()) if selection.exists() else None))
    Console().print(units_table(rows))
