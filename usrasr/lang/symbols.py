"""One class owns the id <-> symbol mapping, and one table is the phone token table.

:class:`SymbolTable` reads and writes the Kaldi/k2 ``symbol id`` files
(``tokens.txt``, ``words.txt``).  :data:`PHONE_TOKENS` is the token table every
model and graph uses: ``<eps>`` = 0 (also the CTC blank), then the phones in
:data:`usrasr.lang.phones.PHONES` order; ``tokens.txt`` adds the
disambiguation symbols ``#0..#K`` after them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from usrasr.lang.phones import PHONES
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_open

EPSILON = "<eps>"


class SymbolTable:
    """A bijection between symbols and integer ids, as k2's ``SymbolTable``."""

    def __init__(self, symbols: dict[str, int] | None = None):
        self._ids: dict[str, int] = {}
        self._symbols: dict[int, str] = {}
        for symbol, index in (symbols or {}).items():
            self.add(symbol, index)

    @classmethod
    def from_symbols(cls, symbols: Iterable[str]) -> "SymbolTable":
        """Symbols numbered 0, 1, ... in the given order."""
        return cls({s: i for i, s in enumerate(symbols)})

    @classmethod
    def from_file(cls, path: str | Path) -> "SymbolTable":
        """Read ``symbol id`` per line; a malformed file is a one-line error naming the line."""
        path = Path(path)
        if not path.is_file():
            raise UsrasrError(f"missing symbol table: {path}")
        table = cls()
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not fields[1].isdigit():
                raise UsrasrError(f"{path}:{lineno}: expected 'symbol id', got '{line.strip()}'")
            try:
                table.add(fields[0], int(fields[1]))
            except ValueError as e:
                raise UsrasrError(f"{path}:{lineno}: {e}") from None
        return table

    def to_file(self, path: str | Path) -> None:
        with atomic_open(path) as f:
            f.writelines(f"{symbol} {index}\n" for symbol, index in self.items())

    def add(self, symbol: str, index: int | None = None) -> int:
        """Add ``symbol`` (at ``index``, else after the largest id); return its id."""
        if symbol in self._ids:
            if index is not None and self._ids[symbol] != index:
                raise ValueError(f"'{symbol}' has id {self._ids[symbol]}, not {index}")
            return self._ids[symbol]
        index = self.max_id + 1 if index is None else index
        if index in self._symbols:
            raise ValueError(f"id {index} is taken by '{self._symbols[index]}'")
        self._ids[symbol] = index
        self._symbols[index] = symbol
        return index

    def get(self, key: str | int, default=None):
        """The id of a symbol, or the symbol of an id."""
        table = self._symbols if isinstance(key, int) else self._ids
        return table.get(key, default)

    def __getitem__(self, key: str | int):
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: str | int) -> bool:
        return (key in self._symbols) if isinstance(key, int) else (key in self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.symbols)

    def __eq__(self, other) -> bool:
        return isinstance(other, SymbolTable) and self._ids == other._ids

    @property
    def max_id(self) -> int:
        return max(self._symbols, default=-1)

    @property
    def symbols(self) -> list[str]:
        """Symbols in id order."""
        return [self._symbols[i] for i in sorted(self._symbols)]

    def items(self) -> list[tuple[str, int]]:
        """``(symbol, id)`` pairs in id order."""
        return [(self._symbols[i], i) for i in sorted(self._symbols)]


# The model's token table: what a CTC model outputs and what tokens.txt starts with.
PHONE_TOKENS = SymbolTable.from_symbols([EPSILON, *PHONES])


def disambig_symbol(k: int) -> str:
    return f"#{k}"


def lang_tokens(num_disambig: int) -> SymbolTable:
    """``tokens.txt`` of a lang dir: :data:`PHONE_TOKENS`, then ``#0..#{num_disambig-1}``."""
    return SymbolTable.from_symbols([*PHONE_TOKENS.symbols, *(disambig_symbol(k) for k in range(num_disambig))])
