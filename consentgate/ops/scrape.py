"""Reading workers' metrics endpoints: fetch the exposition text and parse it into samples."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

MAX_BYTES = 16 * 1024 * 1024  # a metrics page larger than this is not one of ours


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, name: str) -> str:
        return dict(self.labels).get(name, "")


@dataclass(frozen=True)
class Page:
    """One endpoint's scrape: its samples, or why there are none."""

    url: str
    kind: str = ""
    worker: str = ""
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None


def parse(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition (raises ValueError on text that is not one)."""
    return [Sample(s.name, tuple(sorted(s.labels.items())), float(s.value))
            for family in text_string_to_metric_families(text) for s in family.samples]


def fetch(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http(s) checked by the caller
        body: bytes = resp.read(MAX_BYTES + 1)
    if len(body) > MAX_BYTES:
        raise ValueError(f"metrics page over {MAX_BYTES} bytes")
    return body.decode("utf-8")


def scrape(url: str, kind: str = "", worker: str = "", timeout: float = 2.0,
           get: Callable[[str, float], str] = fetch) -> Page:
    """One endpoint; an unreachable or malformed one is a Page with an error, never an exception."""
    try:
        return Page(url, kind, worker, parse(get(url, timeout)))
    except (OSError, urllib.error.URLError, ValueError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return Page(url, kind, worker, error=f"{type(exc).__name__}: {reason}")


def scrape_all(targets: list[tuple[str, str, str]], timeout: float = 2.0) -> list[Page]:
    """(url, kind, worker) targets, scraped in parallel so one slow worker does not stall the view."""
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        return list(pool.map(lambda t: scrape(t[0], t[1], t[2], timeout), targets))
