"""Exact KNN-Shapley values (Jia et al. 2019, "Efficient task-specific data valuation for
nearest neighbor algorithms", Theorem 1), vectorised with numpy.

For one reference text r and contributions 1..N, the utility of a set S is

    U_r(S) = (1/K) * sum of u_r(j) over the min(K, |S|) members j of S most similar to r,

with u_r(j) the cosine similarity of j to r: how closely the K nearest contributions match
r (U_r of the empty set is 0). Sort the contributions by similarity, nearest first
(a_1 .. a_N); their Shapley values follow from the farthest up:

    s(a_N) = u(a_N) * min(K, N) / (N * K)     (u(a_N) / N in the paper, which takes K <= N)
    s(a_i) = s(a_{i+1}) + (u(a_i) - u(a_{i+1})) / K * min(K, i) / i

The utility of the whole task is the mean of U_r over the references, so by linearity a
contribution's value is the mean of its values for each reference. The recursion holds for
any per-point score averaged over the K nearest when the nearness order is the score's own
order; tied scores give tied values whichever way the sort breaks the tie, so the result
does not depend on it. Cost: one O(N log N) sort per reference, done ``block`` references
at a time so memory stays O(N x block) whatever the number of references; per-reference
values are summed into the contributions' totals with one ``bincount`` per block.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray


class KnnShapley(NamedTuple):
    values: NDArray[np.float64]  # per contribution: mean over references of its Shapley value
    nearest_reference: NDArray[np.int64]  # per contribution: the reference text most similar to it


def _steps(n: int, k: int) -> NDArray[np.float64]:
    """min(K, i) / (i K) for the nearness ranks i = N-1 .. 1: the recursion's factors, farthest first."""
    i = np.arange(n - 1, 0, -1, dtype=np.float64)
    return np.minimum(k, i) / (i * k)


def _block_sorted(similarity: NDArray[np.floating], k: int) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """For each reference row: the contributions farthest first, and their Shapley values in that order.

    Sorting ascending runs the recursion as one cumulative sum from the farthest contribution up.
    """
    rows, n = similarity.shape
    order = np.argsort(similarity, axis=1)
    u = np.take_along_axis(similarity, order, axis=1)
    values = np.empty((rows, n), dtype=np.float64)
    values[:, 0] = u[:, 0].astype(np.float64) * (min(k, n) / (n * k))  # u/N when K <= N (the paper's case)
    np.subtract(u[:, 1:], u[:, :-1], out=values[:, 1:], dtype=np.float64)
    values[:, 1:] *= _steps(n, k)
    np.cumsum(values, axis=1, out=values)
    return order, values


def knn_shapley_from_similarity(similarity: NDArray[np.floating], k: int) -> NDArray[np.float64]:
    """Mean KNN-Shapley value per contribution, given similarities (references x contributions)."""
    if k < 1:
        raise ValueError(f"k {k}: at least 1")
    m, n = similarity.shape
    if n == 0:
        return np.zeros(0)
    if m == 0:
        raise ValueError("no reference texts")
    order, values = _block_sorted(np.asarray(similarity), k)
    return np.bincount(order.ravel(), weights=values.ravel(), minlength=n) / m


def knn_shapley(contributions: NDArray[np.float32], references: NDArray[np.float32], k: int,
                block: int = 64) -> KnnShapley:
    """Mean KNN-Shapley values for embedded contributions (N x d) against references (M x d).

    Similarities come from one matrix product per block of references; only N x ``block``
    of them exist at a time.
    """
    if k < 1:
        raise ValueError(f"k {k}: at least 1")
    n, m = len(contributions), len(references)
    if m == 0:
        raise ValueError("no reference texts")
    total = np.zeros(n, dtype=np.float64)
    best = np.full(n, -np.inf, dtype=np.float32)
    nearest = np.zeros(n, dtype=np.int64)
    if n == 0:
        return KnnShapley(total, nearest)
    for start in range(0, m, block):
        similarity = references[start:start + block] @ contributions.T
        order, values = _block_sorted(similarity, k)
        total += np.bincount(order.ravel(), weights=values.ravel(), minlength=n)
        top = similarity.argmax(axis=0)
        top_similarity = similarity[top, np.arange(n)]
        closer = top_similarity > best
        best[closer] = top_similarity[closer]
        nearest[closer] = top[closer] + start
    return KnnShapley(total / m, nearest)
