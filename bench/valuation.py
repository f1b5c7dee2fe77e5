"""Usefulness valuation at scale: exact KNN-Shapley of N contributions against M reference texts.

    python -m bench.valuation [--contributions N ...] [--references M] [--k K] [--dim D]

For each size the same job is timed in its phases: embedding the contributions and the
references (the baseline: every valuation has to read and embed its texts), then the exact
KNN-Shapley values and multipliers. The valuation's time is printed as a ratio to the
embedding time of the same run, and the process's peak resident memory after each size
(it holds N x D embeddings and N x 64 similarities at a time, never N x M).
No Kafka and no ledger: the texts are synthetic, drawn from topics like real posts.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from dataclasses import dataclass

import numpy as np

from consentgate.usefulness.embed import HashedNgramEmbedder
from consentgate.usefulness.multiplier import multipliers_milli
from consentgate.usefulness.shapley import knn_shapley

TOPICS = {
    "harbour": "harbour tide ferry boat island sail anchor pier fishing wave",
    "orchard": "orchard apple pear harvest prune blossom cider tree soil autumn",
    "cycling": "bicycle route climb summit chain gear saddle tyre descent ride",
    "cooking": "recipe oven flour butter simmer garlic sauce bake spice dough",
    "museum": "museum exhibit painting gallery ticket sculpture curator history tour",
    "weather": "thunder storm rain forecast winter cloud wind frost sunshine",
    "music": "festival concert guitar chorus stage drum melody violin crowd",
    "hiking": "canyon trail forest ridge camp map compass boots valley",
}
FILLER = "the a and of to in on with for at my we our this that it was is very just today".split()


def synthetic_texts(count: int, seed: int, topics: list[str]) -> list[str]:
    rng = random.Random(seed)
    vocab = {t: words.split() for t, words in TOPICS.items()}
    texts = []
    for _ in range(count):
        topic = vocab[rng.choice(topics)]
        words = [rng.choice(topic) if rng.random() < 0.5 else rng.choice(FILLER)
                 for _ in range(rng.randint(12, 40))]
        texts.append(" ".join(words))
    return texts


def peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Run:
    contributions: int
    references: int
    embed_s: float
    value_s: float
    peak_mib: float

    @property
    def ratio(self) -> float:
        return self.value_s / self.embed_s


def run(n: int, m: int, k: int, dim: int) -> Run:
    embedder = HashedNgramEmbedder(dim=dim)
    texts = synthetic_texts(n, seed=1, topics=list(TOPICS))
    references = synthetic_texts(m, seed=2, topics=list(TOPICS)[:3])  # the model needs three topics
    start = time.perf_counter()
    x, r = embedder.embed(texts), embedder.embed(references)
    embedded = time.perf_counter()
    values = knn_shapley(x, r, k).values
    milli = multipliers_milli(values)
    valued = time.perf_counter()
    assert len(milli) == n and np.isfinite(values).all()
    return Run(n, m, embedded - start, valued - embedded, peak_rss_mib())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contributions", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--references", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--dim", type=int, default=1024)
    args = parser.parse_args()
    runs = [run(n, args.references, args.k, args.dim) for n in sorted(args.contributions)]
    load = os.getloadavg()[0]
    print(f"\nconditions: {os.cpu_count()} cores (load average {load:.1f} at the end), K={args.k}, "
          f"{args.dim}-dimensional hashed word+char n-grams, float32 similarities, exact values in float64")
    print("| contributions | reference texts | embedding s | KNN-Shapley + multipliers s | "
          "valuation / embedding | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r.contributions:,} | {r.references:,} | {r.embed_s:.1f} | {r.value_s:.1f} | {r.ratio:.2f} | "
              f"{r.peak_mib:,.0f} |")


if __name__ == "__main__":
    main()
