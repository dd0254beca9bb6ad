"""Text-word embeddings: word2vec (gensim) on the unpaired train text."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usrasr.utils.errors import UsrasrError


@dataclass
class TextEmbeddings:
    words: list[str]  # most frequent first
    counts: list[int]
    vectors: np.ndarray


def word2vec(path: str | Path, dim: int = 50, window: int = 3, min_count: int = 5, max_words: int = 1000,
             epochs: int = 5, seed: int = 0) -> TextEmbeddings:
    """Skip-gram word2vec of the ``max_words`` most frequent words seen ``min_count`` times."""
    from gensim.models import Word2Vec

    path = Path(path)
    if not path.is_file():
        raise UsrasrError(f"train text not found: {path} (run `usrasr prepare` first)")
    sentences = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    counts = Counter(w for s in sentences for w in s)
    frequent = [w for w, n in counts.most_common(max_words) if n >= min_count]
    if len(frequent) < 2:
        raise UsrasrError(f"{path}: fewer than 2 words occur {min_count} times")
    # One worker: gensim is then deterministic for a seed.
    model = Word2Vec(sentences, vector_size=dim, window=window, min_count=min_count, sg=1, epochs=epochs,
                     workers=1, seed=seed)
    return TextEmbeddings(frequent, [counts[w] for w in frequent], np.stack([model.wv[w] for w in frequent]))
