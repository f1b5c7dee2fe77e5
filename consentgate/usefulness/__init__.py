"""Usefulness: how much each contribution helps the model it trains (pure, no I/O).

A purpose may name a reference set in the catalog: texts that show what its model needs.
Each contribution's usefulness is its exact KNN-Shapley value (Jia et al. 2019) for the
utility "how closely the K nearest contributions match each reference text", computed
over the period's contributions of that purpose and turned into a capped multiplier.

- ``embed``: the embedder interface and the shipped hashed word + character n-gram embedder;
- ``shapley``: exact KNN-Shapley values, vectorised with numpy;
- ``multiplier``: values to integer multipliers (milli), and the plain-words band a person sees;
- ``reference``: reading and checking a reference set's lines;
- ``period``: one purpose's contributions of one period valued and turned into multipliers.
"""

from __future__ import annotations

from consentgate.usefulness.embed import Embedder, HashedNgramEmbedder
from consentgate.usefulness.multiplier import Band, band_of, multipliers_milli
from consentgate.usefulness.period import METHOD_VERSION, Valued, method, value_texts
from consentgate.usefulness.reference import ReferenceSet, parse_reference
from consentgate.usefulness.shapley import KnnShapley, knn_shapley, knn_shapley_from_similarity

__all__ = ["METHOD_VERSION", "Band", "Embedder", "HashedNgramEmbedder", "KnnShapley", "ReferenceSet", "Valued",
           "band_of", "knn_shapley", "knn_shapley_from_similarity", "method", "multipliers_milli",
           "parse_reference", "value_texts"]
