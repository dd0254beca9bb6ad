"""Stable, disjoint corpus splits by sentence hash.

A sentence's split depends only on its normalised text, so re-running on a
bigger or smaller source never moves a sentence to another split, and no
sentence can be in two splits.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train_audio", "train_text", "dev", "test")
AUDIO_SPLITS = ("train_audio", "dev", "test")
# Fractions of the hash space; train_text takes the rest.  The audio pools are
# larger than any default size so that --utterances can grow without
# re-splitting.
POOL_FRACTIONS = {"dev": 0.02, "test": 0.02, "train_audio": 0.16}


def unit_hash(text: str, salt: str = "") -> float:
    """A number in [0, 1) that depends only on ``salt + text``."""
    digest = hashlib.sha1((salt + text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(sentence: str) -> str:
    h = unit_hash(sentence, "split:")
    low = 0.0
    for split, fraction in POOL_FRACTIONS.items():
        if low <= h < low + fraction:
            return split
        low += fraction
    return "train_text"


def split_sentences(sentences) -> dict[str, list[str]]:
    """Deduplicate and assign each sentence to one split, in a stable order."""
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for sentence in dict.fromkeys(sentences):
        out[split_of(sentence)].append(sentence)
    for split in out:
        out[split].sort(key=lambda s: unit_hash(s, "order:"))
    return out
