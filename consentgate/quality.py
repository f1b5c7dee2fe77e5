"""How much a contributed record is worth, from its content alone (pure, no I/O).

The gate assesses every record it lets through and puts the result on the Contribution;
metering multiplies value by it. Nothing about the user enters the assessment: not who
they are, how much they earn or how often they post. The method, in plain words:

* **Length.** A text shorter than its category's full length (3 words for a search, 8 for
  a conversation message, 12 for a post) earns that fraction: a 6-word post earns half.
* **Information.** Repetition adds nothing: the share of distinct words scales the value
  between one half (one word repeated) and the whole (every word different).
* **Spam.** Spam phrases ("click here", "free money", ...) earn nothing. Each weaker
  sign (two or more links, mostly capital letters, a character repeated six times in a
  row) takes a quarter off; three signs together earn nothing.
* **Duplicates.** Every text gets a 64-bit SimHash fingerprint. Metering pays nothing for
  a text whose fingerprint is within 3 bits of one the same user already contributed to the
  same purpose (an exact or near copy).

Clicks and engagement signals have no text: they are worth their rate card, quality 1.
"""

from __future__ import annotations

import re
from hashlib import blake2b
from typing import Any, NamedTuple

FULL_LENGTH_WORDS = {"post": 12, "search": 3, "conversation": 8}
TEXT_FIELD = {"post": "text", "search": "query", "conversation": "text"}
SPAM_PHRASES = ("click here", "free money", "buy now", "limited offer", "you have won", "act now",
                "work from home", "100% free", "risk free", "dm me for")
NEAR_DUPLICATE_BITS = 3

_WORDS = re.compile(r"\w+")
_RUN = re.compile(r"(.)\1{5,}")
_SPREAD = [sum(((b >> bit) & 1) << (16 * bit) for bit in range(8)) for b in range(256)]
_BIAS = sum(1 << (16 * bit) for bit in range(64))
_HIGH_BITS = _BIAS << 15
_PACK = {bytes(0x80 if (b >> i) & 1 else 0 for i in range(8)): b for b in range(256)}
_spread_cache: dict[str, int] = {}


class Assessment(NamedTuple):
    quality: float  # 0.0 .. 1.0, three decimals
    fingerprint: int | None  # signed 64-bit SimHash of the text; None without text


def assess(category: str, payload: dict[str, Any]) -> Assessment:
    field = TEXT_FIELD.get(category)
    if field is None:
        return Assessment(1.0, None)
    text = payload.get(field)
    if not isinstance(text, str):
        return Assessment(0.0, None)
    lowered = text.lower()
    words = _WORDS.findall(lowered)
    if not words:
        return Assessment(0.0, None)
    length = min(1.0, len(words) / FULL_LENGTH_WORDS[category])
    information = 0.5 + 0.5 * len(set(words)) / len(words)
    quality = length * information * (1.0 - 0.25 * spam_signs(text, lowered))
    return Assessment(round(max(quality, 0.0), 3), simhash(words))


def spam_signs(text: str, lowered: str) -> int:
    """0..4; 4 (nothing earned) for a spam phrase, else one per weaker sign."""
    if any(phrase in lowered for phrase in SPAM_PHRASES):
        return 4
    signs = 0
    if lowered.count("http://") + lowered.count("https://") >= 2:
        signs += 1
    upper = sum(map(str.isupper, text))
    if upper >= 7:  # else it cannot be over 60% of at least 10 letters; counting letters is the slow part
        letters = sum(map(str.isalpha, text))
        if letters >= 10 and upper > 0.6 * letters:
            signs += 1
    if _RUN.search(text):
        signs += 1
    return 4 if signs >= 3 else signs


def simhash(words: list[str]) -> int:
    """64-bit SimHash over the words, as a signed 64-bit int (Avro long).

    Each word's 64 hash bits are spread 16 bits apart into one Python int (cached per
    word), so summing the per-bit counts is one addition per word.
    """
    counts = 0
    for word in words:
        spread = _spread_cache.get(word)
        if spread is None:
            if len(_spread_cache) >= 200_000:
                _spread_cache.clear()
            h = blake2b(word.encode(), digest_size=8).digest()
            spread = _spread_cache[word] = sum(_SPREAD[b] << (128 * i) for i, b in enumerate(h))
        counts += spread
    threshold = len(words) // 2 + 1  # a bit is set where more than half the words set it
    flagged = (counts + _BIAS * (0x8000 - threshold)) & _HIGH_BITS
    high = flagged.to_bytes(128, "little")[1::2]  # 0x80 or 0 per bit, least significant first
    value = int.from_bytes(bytes(_PACK[high[i:i + 8]] for i in range(0, 64, 8)), "little")
    return value - (1 << 64) if value >= 1 << 63 else value


def distance(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()
