"""Stage configurations: dataclasses loadable from YAML, with ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from usrasr.utils.errors import UsrasrError


class YamlConfig:
    """Mixin for a ``@dataclass`` config: ``load`` from YAML + overrides, ``to_dict``."""

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict | None = None):
        values: dict = {}
        if path is not None:
            try:
                values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise UsrasrError(f"cannot read config {path}: {exc}") from None
        values.update(overrides or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsrasrError(f"unknown config key(s): {', '.join(unknown)}")
        defaults = cls()
        typed = {}
        for key, value in values.items():
            kind = type(getattr(defaults, key))
            if isinstance(value, str) and kind is not str:
                try:
                    value = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
                except ValueError:
                    raise UsrasrError(f"config key {key} expects {kind.__name__}, got '{value}'") from None
            typed[key] = value
        return cls(**typed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_overrides(items: tuple[str, ...]) -> dict[str, str]:
    """``("a=1", "b-c=x")`` -> ``{"a": "1", "b_c": "x"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsrasrError(f"--set expects key=value, got '{item}'")
        out[key.strip().replace("-", "_")] = value.strip()
    return out
