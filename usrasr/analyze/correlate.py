"""Which measures of a representation predict recognition: Spearman rank correlations across runs.

Each row is one ``usrasr train`` experiment (``--units encoder`` at some layer,
or fbank units). Its measures, where they exist:

- ``pretrain_loss`` and ``masked_accuracy``: the encoder's pretraining
  summary (``summary.json`` beside ``encoder.pt``): the final cross-entropy
  and accuracy of masked prediction of the input-level (anchor) labels, which
  BEST-RQ and BiRQ share;
- ``phone_probe`` and ``voice_probe``: ``usrasr analyze probe`` records of
  the same encoder (``--probe``), at the run's layer;
- ``pnmi``: the run's units against the phones, on the test split;
- ``oracle_hmm_per`` and ``seqce_per``: test PER of the oracle HMM (emissions
  fitted on the transcripts) and of the unsupervised seq-CE search.

A pair of measures is correlated over the rows that have both (at least 3).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from usrasr.analyze.representations import FBANK
from usrasr.utils.errors import UsrasrError

MEASURES = ("pretrain_loss", "masked_accuracy", "phone_probe", "voice_probe", "pnmi", "oracle_hmm_per",
            "seqce_per")
MIN_ROWS = 3


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsrasrError(f"{path}: not a readable JSON file ({e})") from None


def _encoder_dir(encoder: str) -> Path:
    path = Path(encoder)
    return path.parent if path.suffix == ".pt" else path


def _probe_index(probes: list[Path]) -> dict[tuple[str, int], dict]:
    """(resolved encoder, layer index) -> that layer's probe row."""
    index = {}
    for path in probes:
        record = _read_json(path)
        if "layers" not in record or "encoder" not in record:
            raise UsrasrError(f"{path} is not a `usrasr analyze probe` record (probe.json)")
        key = FBANK if record["encoder"] == FBANK else str(_encoder_dir(record["encoder"]).resolve())
        for row in record["layers"]:
            index[key, row["index"]] = row
    return index


def experiment_row(exp: Path, probes: dict[tuple[str, int], dict]) -> dict:
    """The measures of one ``usrasr train`` experiment (absent ones are None)."""
    if not (exp / "summary.json").is_file() or not (exp / "config.yaml").is_file():
        raise UsrasrError(f"{exp} is not a finished `usrasr train` experiment (no summary.json / config.yaml)")
    summary = _read_json(exp / "summary.json")
    config = yaml.safe_load((exp / "config.yaml").read_text(encoding="utf-8")) or {}
    row: dict = {"experiment": str(exp), "units": config.get("units"), "layer": None}
    row.update(dict.fromkeys(MEASURES))
    key = None
    if config.get("units") == "encoder":
        layer = config.get("unit_layer", -1)
        if layer < 0 and (exp / "units" / "selection.json").is_file():
            layer = _read_json(exp / "units" / "selection.json")["layer"]
        row["layer"] = layer
        encoder_dir = _encoder_dir(config["encoder"])
        key = str(encoder_dir.resolve())
        row["encoder"] = str(encoder_dir)
        if (encoder_dir / "summary.json").is_file():
            final = _read_json(encoder_dir / "summary.json").get("final", {})
            # the anchor labels; a just encoder's are those of its target (unlabelled) audio
            row["pretrain_loss"] = final.get("anchor_loss", final.get("target_anchor_loss"))
            row["masked_accuracy"] = final.get("anchor_accuracy", final.get("target_anchor_accuracy"))
    elif config.get("units") == "fbank":
        key, row["layer"], row["encoder"] = FBANK, 0, FBANK
    probe = probes.get((key, row["layer"])) if key is not None else None
    if probe:
        row["phone_probe"], row["voice_probe"] = probe["phone_accuracy"], probe["voice_accuracy"]
    row["pnmi"] = summary.get("unit_quality", {}).get("test", {}).get("pnmi")
    row["oracle_hmm_per"] = summary.get("oracle_hmm", {}).get("per_test")
    row["seqce_per"] = summary.get("seqce", {}).get("per_test")
    return row


def spearman_table(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """``table[a][b]``: Spearman's rho and its p-value over the rows with both measures, and their count."""
    from scipy.stats import spearmanr

    table: dict[str, dict[str, dict]] = {}
    for a in MEASURES:
        table[a] = {}
        for b in MEASURES:
            pairs = [(r[a], r[b]) for r in rows if r[a] is not None and r[b] is not None]
            rho = p = math.nan
            if len(pairs) >= MIN_ROWS and len({x for x, _ in pairs}) > 1 and len({y for _, y in pairs}) > 1:
                result = spearmanr(*zip(*pairs))
                rho, p = float(result.statistic), float(result.pvalue)
            table[a][b] = {"rho": None if math.isnan(rho) else round(rho, 4),
                           "p": None if math.isnan(p) else round(p, 4), "n": len(pairs)}
    return table


def correlate_experiments(experiments: list[Path], probes: list[Path]) -> dict:
    if len(experiments) < MIN_ROWS:
        raise UsrasrError(f"rank correlations need at least {MIN_ROWS} experiments, got {len(experiments)}")
    index = _probe_index(probes)
    rows = [experiment_row(exp, index) for exp in experiments]
    return {"rows": rows, "spearman": spearman_table(rows)}


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def rows_table(record: dict) -> str:
    header = ["experiment", "encoder", "layer", *MEASURES]
    lines = ["\t".join(header)]
    lines += ["\t".join(_cell(r.get(k)) for k in header) for r in record["rows"]]
    return "\n".join(lines) + "\n"


def spearman_text(record: dict) -> str:
    """The rho matrix (n below when a pair has fewer rows than all)."""
    table = record["spearman"]
    lines = ["\t".join(["spearman_rho", *MEASURES])]
    for a in MEASURES:
        cells = []
        for b in MEASURES:
            cell = table[a][b]
            cells.append("-" if cell["rho"] is None else f"{cell['rho']:+.2f} (n={cell['n']})")
        lines.append("\t".join([a, *cells]))
    return "\n".join(lines) + "\n"
