"""Training configuration: a dataclass, loadable from YAML, with ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from usrasr.utils.errors import UsrasrError

UNIT_SOURCES = ("fbank", "diagnostic")


@dataclass
class TrainConfig:
    # acoustic units
    units: str = "fbank"  # fbank k-means, or "diagnostic": phone ids from the scoring alignments
    num_units: int = 100
    kmeans_iterations: int = 20
    cmvn: str = "utterance"  # "utterance", or "speaker" (needs speaker labels)
    mode_width: int = 5  # majority filter over frames before merging runs (1 = off)
    merge_runs: bool = True
    diagnostic_noise: float = 0.0  # share of frames replaced by random units (diagnostic units)
    diagnostic_voice_dependent: bool = False
    # one emission table per speaker (needs speaker labels; decodes only speakers seen in training)
    speaker_emissions: bool = False
    # graph: HMM topology o phone LM
    states_per_phone: int = 1
    self_loop_prob: float = 0.1  # merged units: a phone rarely spans two different units
    silence: bool = True
    silence_prob: float = 0.05
    # sequence-level cross-entropy search
    restarts: int = 5
    iterations: int = 30
    optimizer: str = "em"
    init: str = "moments"
    learning_rate: float = 0.1
    anneal_start: float = 1.0
    anneal_iterations: int = 0
    oracle_iterations: int = 20
    # self-training (neural CTC on fbank, pseudo-labels from the previous model)
    self_training_rounds: int = 2
    arch: str = "tdnn"
    hidden_dim: int = 256
    num_layers: int = 6
    ctc_steps: int = 500  # about 5 epochs of the default 1,500 utterances at batch 16
    ctc_batch_size: int = 16
    ctc_lr: float = 1e-3
    supervised_oracle: bool = True
    # engineering
    checkpoint_every: int = 100
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.units not in UNIT_SOURCES:
            raise UsrasrError(f"units must be one of {', '.join(UNIT_SOURCES)}, got '{self.units}'")
        if self.cmvn not in ("utterance", "speaker"):
            raise UsrasrError(f"cmvn must be 'utterance' or 'speaker', got '{self.cmvn}'")

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict | None = None) -> "TrainConfig":
        values: dict = {}
        if path is not None:
            try:
                values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise UsrasrError(f"cannot read config {path}: {exc}") from None
        values.update(overrides or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UsrasrError(f"unknown config key(s): {', '.join(unknown)}")
        typed = {}
        for key, value in values.items():
            kind = type(getattr(cls(), key))
            if isinstance(value, str) and kind is not str:
                value = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
            typed[key] = value
        return cls(**typed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_overrides(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsrasrError(f"--set expects key=value, got '{item}'")
        out[key.strip().replace("-", "_")] = value.strip()
    return out
