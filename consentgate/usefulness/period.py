"""Value one purpose's contributions of one period against its reference set (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consentgate.usefulness.embed import Embedder
from consentgate.usefulness.multiplier import multipliers_milli
from consentgate.usefulness.reference import ReferenceSet
from consentgate.usefulness.shapley import knn_shapley

METHOD_VERSION = "knn-shapley/1"


@dataclass(frozen=True)
class Valued:
    value: float  # the mean KNN-Shapley value (before clipping), for the record
    multiplier_milli: int
    topic: str | None  # the topic of the reference it earned most from, if the set names topics


def method(embedder: Embedder, reference: ReferenceSet, k: int, cap: float) -> str:
    """What produced a value, stored beside it: enough to recompute it."""
    return f"{METHOD_VERSION} k={k} cap={cap:g} {embedder.method} reference=sha256:{reference.digest[:16]}"


def value_texts(texts: Sequence[str], reference: ReferenceSet, embedder: Embedder, k: int,
                cap: float) -> list[Valued]:
    """Each text's usefulness among ``texts`` (one purpose, one period), in input order."""
    if not texts:
        return []
    shapley = knn_shapley(embedder.embed(texts), embedder.embed(reference.texts), k)
    milli = multipliers_milli(shapley.values, cap)
    return [Valued(float(v), int(m), reference.topics[int(r)] if v > 0 else None)
            for v, m, r in zip(shapley.values, milli, shapley.nearest_reference, strict=True)]
