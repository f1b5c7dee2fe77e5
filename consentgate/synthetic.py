"""Synthetic platforms for the demo and the benchmarks: users, their consent, their activity.

Deterministic for a seed. Activity is Zipf-distributed over users (a few very active
users, a long tail) and spread over all five categories; payloads are 200-500 bytes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from consentgate.catalog import Catalog
from consentgate.model import ActivityEvent
from consentgate.streams.consent_writer import ConsentRequest

WORDS = ("harbour tide ferry lantern orchard meadow granite copper violet thunder quiet market river "
         "summit library bicycle recipe garden window morning planet signal crimson velvet compass "
         "journey ticket museum coffee winter autumn festival harvest canyon island forest").split()
CATEGORY_MIX = {"post": 0.2, "search": 0.25, "click": 0.3, "signal": 0.17, "conversation": 0.08}


def user_id(i: int) -> str:
    return f"user-{i:07d}"


def consent_population(catalog: Catalog, users: int, seed: int = 7, expiring_at: datetime | None = None
                       ) -> list[ConsentRequest]:
    """Grants for a realistic mix: ~40% never consent, the rest consent to some pairs.

    Of those who consent, some grants expire at ``expiring_at`` and some were accepted
    under older terms (stale) where a purpose's terms are past version 1.
    """
    rng = random.Random(seed)
    pairs = [(c, p.name) for p in catalog.purposes.values() for c in p.categories]
    requests: list[ConsentRequest] = []
    for i in range(users):
        if rng.random() < 0.4:
            continue
        paid = rng.random() < 0.7
        for n, (category, purpose) in enumerate(rng.sample(pairs, rng.randint(1, len(pairs)))):
            roll = rng.random()
            terms = catalog.purposes[purpose].terms_version
            requests.append(ConsentRequest(
                "grant", user_id(i), category, purpose,
                expires_at=expiring_at if expiring_at is not None and roll < 0.08 else None,
                terms_version=terms - 1 if terms > 1 and 0.08 <= roll < 0.14 else None,
                tier=("data_sharing" if paid else "free") if n == 0 else None,
                plan=rng.choice(("per_unit", "revenue_share", "credits", "dividend")) if paid and n == 0 else None,
                source="import"))
    return requests


def _text(rng: random.Random, low: int, high: int) -> str:
    target = rng.randint(low, high)
    words: list[str] = []
    size = 0
    while size < target:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:target]


def activity(users: int, count: int, start: datetime, seed: int = 11, zipf_s: float = 1.1,
             spacing: timedelta = timedelta(milliseconds=1)) -> Iterator[ActivityEvent]:
    """``count`` events over ``users`` users (Zipf), occurring from ``start`` at ``spacing``."""
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1.0 / (i + 1) ** zipf_s for i in range(users)))
    order = list(range(users))
    rng.shuffle(order)  # the most active users are not simply the lowest ids
    categories = list(CATEGORY_MIX)
    cat_weights = list(itertools.accumulate(CATEGORY_MIX.values()))
    chunk = 10_000
    for base in range(0, count, chunk):
        n = min(chunk, count - base)
        who = rng.choices(order, cum_weights=weights, k=n)
        what = rng.choices(categories, cum_weights=cat_weights, k=n)
        for j in range(n):
            k = base + j
            category = what[j]
            yield ActivityEvent(f"ev-{seed}-{k}", user_id(who[j]), category, start + spacing * k, "synthetic",
                                _payload(rng, category, k))


def _payload(rng: random.Random, category: str, k: int) -> dict[str, object]:
    if category == "post":
        return {"text": _text(rng, 180, 460)}
    if category == "search":
        return {"query": _text(rng, 150, 400)}
    if category == "conversation":
        return {"text": _text(rng, 160, 420), "thread_id": f"thread-{k % 997}"}
    if category == "click":
        item = rng.randint(1, 50_000)
        return {"item_id": f"item-{item}", "url": f"https://shop.example/items/{item}?ref={_text(rng, 140, 380)}"}
    return {"kind": rng.choice(("dwell_ms", "scroll_depth", "reaction")), "value": float(rng.randint(0, 60000))}
