"""Text to vectors: the embedder interface, and hashed word + character n-grams.

An embedder turns texts into L2-normalised rows, so a dot product is a cosine similarity.
The shipped one needs no downloaded model: scikit-learn's ``HashingVectorizer`` hashes word
unigrams and bigrams, and character 3- to 5-grams within words, into a fixed number of
buckets. Signed hashing (``alternate_sign``) keeps the dot product of two unrelated texts
centred on zero, so hashing collisions add noise but no bias; another model plugs in by
implementing :class:`Embedder`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, HashingVectorizer

_WORDS = re.compile(r"(?u)\b\w+\b")


@runtime_checkable
class Embedder(Protocol):
    """Texts in, one L2-normalised float32 row per text out (a zero row for a text with no features)."""

    @property
    def method(self) -> str:
        """Name, version and parameters, recorded in the ledger beside every value it produced."""
        ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        ...


class HashedNgramEmbedder:
    """Word (1-2) and character (3-5, within words) n-grams hashed into ``dim`` signed buckets.

    Words and characters are normalised separately and weighted equally, so a long text's
    many character n-grams do not drown its words. English stop words are dropped first: in
    short texts "the" and "of" would otherwise make every text look like every other. Texts are
    embedded ``chunk`` at a time so the sparse intermediate stays small whatever their number.
    """

    VERSION = 1

    def __init__(self, dim: int = 1024, chunk: int = 4096) -> None:
        if dim < 16 or dim & (dim - 1):
            raise ValueError(f"dim {dim}: a power of two of at least 16")
        self.dim = dim
        self.chunk = chunk
        common = {"n_features": dim, "alternate_sign": True, "norm": "l2", "lowercase": False,
                  "dtype": np.float32}
        self._words = HashingVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b",
                                        **common)  # type: ignore[arg-type]
        self._chars = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), **common)  # type: ignore[arg-type]

    @property
    def method(self) -> str:
        return f"hashed-ngrams/{self.VERSION} dim={self.dim}"

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.chunk):
            part = [" ".join(w for w in _WORDS.findall(t.lower()) if w not in ENGLISH_STOP_WORDS)
                    for t in texts[start:start + self.chunk]]
            rows = (self._words.transform(part) + self._chars.transform(part)).toarray()
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
            np.divide(rows, norms, out=rows, where=norms > 0)
            out[start:start + len(part)] = rows
        return out
