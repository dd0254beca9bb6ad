"""Stage configurations: dataclasses loadable from YAML, with ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import write_text_atomic


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

    def record(self, out: Path, resume: bool, may_change: tuple[str, ...] = ()) -> None:
        """Write ``out/config.yaml``; an existing run may only be resumed, with the same
        configuration except for the keys in ``may_change``.  A key the recorded run lacks
        (an option added since) counts as its default, which is what that run used."""
        path = Path(out) / "config.yaml"
        current = self.to_dict()
        if path.exists():
            if not resume:
                raise UsrasrError(f"{out} already holds a run: pass --resume to continue it, or use a new --out")
            previous = {**type(self)().to_dict(), **(yaml.safe_load(path.read_text(encoding="utf-8")) or {})}
            changed = sorted(k for k, v in current.items() if k not in may_change and previous.get(k) != v)
            if changed:
                raise UsrasrError(f"--resume with a different config ({', '.join(changed)}); use a new --out")
        write_text_atomic(path, yaml.safe_dump(current, sort_keys=True))


def parse_overrides(items: tuple[str, ...]) -> dict[str, str]:
    """``("a=1", "b-c=x")`` -> ``{"a": "1", "b_c": "x"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsrasrError(f"--set expects key=value, got '{item}'")
        out[key.strip().replace("-", "_")] = value.strip()
    return out
