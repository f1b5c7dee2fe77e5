"""Usefulness: exact KNN-Shapley against brute force, the embedder, multipliers and bands."""

from __future__ import annotations

import itertools
from math import factorial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentgate.errors import CatalogError
from consentgate.usefulness.embed import HashedNgramEmbedder
from consentgate.usefulness.multiplier import band_of, band_range, multipliers_milli
from consentgate.usefulness.period import value_texts
from consentgate.usefulness.reference import parse_reference
from consentgate.usefulness.shapley import knn_shapley, knn_shapley_from_similarity


def utility(similarity: np.ndarray, members: tuple[int, ...], k: int) -> float:
    """Mean over references of (1/K) x the sum of the min(K, |S|) largest similarities in S."""
    if not members:
        return 0.0
    total = 0.0
    for row in similarity:
        top = sorted((row[j] for j in members), reverse=True)[:k]
        total += sum(top) / k
    return total / len(similarity)


def brute_force(similarity: np.ndarray, k: int) -> np.ndarray:
    """Shapley values by enumerating every subset of the other contributions."""
    n = similarity.shape[1]
    values = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = factorial(size) * factorial(n - size - 1) / factorial(n)
            for subset in itertools.combinations(others, size):
                values[i] += weight * (utility(similarity, subset + (i,), k) - utility(similarity, subset, k))
    return values


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 10), m=st.integers(1, 4), k=st.integers(1, 12), seed=st.integers(0, 2**32 - 1),
       ties=st.booleans())
def test_fast_values_equal_subset_enumeration(n: int, m: int, k: int, seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    similarity = rng.uniform(-1, 1, size=(m, n))
    if ties:  # repeated similarities: the sort's tie-break must not matter
        similarity = np.round(similarity * 2) / 2
    exact = brute_force(similarity, k)
    assert np.abs(knn_shapley_from_similarity(similarity, k) - exact).max() < 1e-9
    assert abs(exact.sum() - utility(similarity, tuple(range(n)), k)) < 1e-9  # efficiency: values add to U(all)


@pytest.mark.parametrize("block", [1, 2, 64])
def test_embedded_values_equal_subset_enumeration_in_any_block(block: int) -> None:
    rng = np.random.default_rng(5)
    # Quarters: every float32 product and sum is exact, so float32 and float64 similarities agree.
    contributions = (rng.integers(-8, 9, size=(9, 6)) / 4).astype(np.float32)
    references = (rng.integers(-8, 9, size=(5, 6)) / 4).astype(np.float32)
    result = knn_shapley(contributions, references, k=3, block=block)
    similarity = (references @ contributions.T).astype(np.float64)
    assert np.abs(result.values - brute_force(similarity, 3)).max() < 1e-9
    best = similarity.max(axis=0)
    assert [similarity[r, j] for j, r in enumerate(result.nearest_reference)] == best.tolist()


def test_a_worked_example() -> None:
    # One reference, K=2, similarities 0.9, 0.5, 0.1 (already nearest first):
    # s3 = 0.1/3; s2 = s3 + (0.5-0.1)/2 * 2/2; s1 = s2 + (0.9-0.5)/2 * 1/1
    values = knn_shapley_from_similarity(np.array([[0.5, 0.1, 0.9]]), 2)
    assert values.tolist() == pytest.approx([0.1 / 3 + 0.2, 0.1 / 3, 0.1 / 3 + 0.4], abs=1e-15)
    with pytest.raises(ValueError, match="at least 1"):
        knn_shapley_from_similarity(np.zeros((1, 2)), 0)
    assert knn_shapley_from_similarity(np.zeros((1, 0)), 3).tolist() == []


def test_embedder_rows_are_unit_cosines_that_see_topic() -> None:
    embedder = HashedNgramEmbedder(dim=1024)
    rows = embedder.embed(["the harbour ferry leaves on the morning tide",
                           "ferry times at the harbour depend on the tide",
                           "a recipe for apple cake with cinnamon", "", "   "])
    assert rows.dtype == np.float32 and rows.shape == (5, 1024)
    assert np.linalg.norm(rows[:3], axis=1) == pytest.approx([1, 1, 1], abs=1e-6)
    assert rows[3:].tolist() == np.zeros((2, 1024)).tolist()  # no features: a zero row, never NaN
    sim = rows @ rows.T
    assert sim[0, 1] > 0.3 > abs(sim[0, 2])
    assert embedder.embed(["Ferry  HARBOUR"]).tolist() == embedder.embed(["ferry harbour"]).tolist()
    assert embedder.method == "hashed-ngrams/1 dim=1024"
    with pytest.raises(ValueError, match="power of two"):
        HashedNgramEmbedder(dim=1000)


def test_multipliers_clip_normalise_and_cap() -> None:
    assert multipliers_milli(np.array([0.2, 0.1, -0.3, 0.0]), cap=3.0).tolist() == [2667, 1333, 0, 0]
    assert multipliers_milli(np.array([1.0, 0.0, 0.0, 0.0, 0.0]), cap=3.0).tolist() == [3000, 0, 0, 0, 0]
    assert multipliers_milli(np.array([0.5, 0.5]), cap=3.0).tolist() == [1000, 1000]
    assert multipliers_milli(np.array([-0.1, 0.0]), cap=3.0).tolist() == [1000, 1000]  # nothing to compare
    assert multipliers_milli(np.zeros(0), cap=3.0).tolist() == []
    with pytest.raises(ValueError, match="at least 1"):
        multipliers_milli(np.array([1.0]), cap=0.5)


def test_bands_in_plain_words() -> None:
    assert band_of(3000).words == band_of(1500).words == "were among the most useful this period"
    assert band_of(1499).words == "were more useful than most"
    assert band_of(1000).words == "were about as useful as most"
    assert band_of(899).words == "were less useful than most"
    assert band_of(0).words == "matched little of what the model needs"
    assert band_range(band_of(1200), 3000) == "x1.10 to x1.50"
    assert band_range(band_of(2000), 3000) == "x1.50 to x3.00"


def test_reference_lines_are_checked() -> None:
    ref = parse_reference(b'{"text": "a tide table", "topic": "the sea"}\n\n{"text": "apple cake"}\n', "r.jsonl")
    assert (ref.texts, ref.topics, len(ref.digest)) == (("a tide table", "apple cake"), ("the sea", None), 64)
    for data, message in [(b"", "r.jsonl: no reference texts"), (b"{", "r.jsonl:1: not JSON"),
                          (b'{"text": "ok"}\n{"txt": "x"}', "r.jsonl:2: expected"),
                          (b'{"text": "   "}', "r.jsonl:1: expected"),
                          (b'{"text": "x", "topic": 7}', "r.jsonl:1: topic must be"),
                          (b'\xff{"text": "x"}', "r.jsonl: not UTF-8")]:
        with pytest.raises(CatalogError, match=message):
            parse_reference(data, "r.jsonl")


def test_on_topic_texts_are_worth_more_and_name_their_topic() -> None:
    reference = parse_reference(
        b'{"text": "ferry timetables and tide tables for the harbour", "topic": "the harbour"}\n'
        b'{"text": "which ferry crosses to the island at high tide", "topic": "the harbour"}\n'
        b'{"text": "how to prune an apple orchard in winter", "topic": "orchards"}\n', "ref")
    texts = ["the ferry to the island waits for the tide at the harbour",
             "tide tables tell when the harbour ferry can sail",
             "my cat sleeps on the warm windowsill all afternoon",
             "stock prices fell sharply on monday morning"]
    valued = value_texts(texts, reference, HashedNgramEmbedder(), k=2, cap=3.0)
    on, off = valued[:2], valued[2:]
    assert min(v.multiplier_milli for v in on) > 1000 > max(v.multiplier_milli for v in off)
    assert [v.topic for v in on] == ["the harbour", "the harbour"]
    assert value_texts([], reference, HashedNgramEmbedder(), k=2, cap=3.0) == []
