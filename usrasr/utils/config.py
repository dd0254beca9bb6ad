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
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                raise UsrasrError(f"cannot read config {path}: {' '.join(str(exc).split())}") from None
            if not isinstance(values, dict):
                raise UsrasrError(f"config {path} must be a mapping of keys to values (key: value lines), "
                                  f"not a {type(values).__name__}")
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
                    value = _boolean(value) if kind is bool else kind(value)
                except ValueError:
                    raise UsrasrError(f"config key {key} expects {kind.__name__}, got '{value}'") from None
            if kind is float and type(value) is int:
                value = float(value)
            if type(value) is not kind:  # YAML gave another type (1.5 for an int, "yes" strings, a list, ...)
                raise UsrasrError(f"config key {key} expects {kind.__name__}, got {value!r}")
            typed[key] = value
        return cls(**typed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def meanings(cls) -> dict[str, str]:
        """What each key means: the comments above and beside its field in the class source."""
        import inspect

        fields = {f.name for f in dataclasses.fields(cls)}
        meanings: dict[str, str] = {}
        pending: list[str] = []
        for line in inspect.getsource(cls).splitlines():
            code, _, comment = line.strip().partition("#")
            name = code.split(":")[0].strip()
            if not code:
                pending = pending + [comment.strip()] if comment else []
            elif name in fields and name not in meanings:
                meanings[name] = "; ".join([" ".join(pending)] * bool(pending) + [comment.strip()] * bool(comment))
                pending = []
            else:
                pending = []
        return meanings

    @classmethod
    def show(cls) -> str:
        """Every key with its default, each under a comment saying what it means, as YAML."""
        defaults, meanings = cls().to_dict(), cls.meanings()
        lines = []
        for key in sorted(defaults):
            if meanings.get(key):
                lines.append(f"# {meanings[key]}")
            lines.append(yaml.safe_dump({key: defaults[key]}, default_flow_style=True, width=10**6).strip()[1:-1])
        return "\n".join(lines) + "\n"

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


_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _boolean(text: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case); anything else is an error."""
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ValueError(text) from None


def record_inputs(path: str | Path, inputs: dict, resume: bool, what: str) -> None:
    """Write ``inputs`` (e.g. a corpus's identity) to ``path``; when resuming, they must be
    what the run recorded there (a run that recorded none takes them)."""
    path = Path(path)
    if resume and path.is_file():
        recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        changed = sorted(k for k in inputs.keys() | recorded.keys() if recorded.get(k) != inputs.get(k))
        if changed:
            raise UsrasrError(f"--resume with a different {what} ({', '.join(changed)} changed since the run "
                              f"began); use a new --out")
    write_text_atomic(path, yaml.safe_dump(inputs, sort_keys=True))


def parse_overrides(items: tuple[str, ...]) -> dict[str, str]:
    """``("a=1", "b-c=x")`` -> ``{"a": "1", "b_c": "x"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsrasrError(f"--set expects key=value, got '{item}'")
        out[key.strip().replace("-", "_")] = value.strip()
    return out
