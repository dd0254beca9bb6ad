"""The tables, configs and sample audio the project ships: the top-level ``data/`` folder.

``data/README.md`` says which files are shipped and which are prepared corpora
(``data/<name>/``, never tracked).  usrasr is installed from its checkout
(``pip install -e``), so the folder sits beside the package.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_DATA = Path(__file__).resolve().parents[2] / "data"
