"""The compiled kernel (``consentgate._kernel``) behind the same interface as the reference."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any

from consentgate.kernel.routing import BatchResult, Fetched, KernelConfig, Lookup

from consentgate.model import Erased

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    """Epoch microseconds, exact (the decision compares grant times at datetime precision)."""
    return (moment - _EPOCH) // _MICRO


def load() -> tuple[ModuleType | None, str]:
    """The extension module, or None and why not."""
    try:
        from consentgate import _kernel  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"consentgate._kernel is not built ({exc}); install with a Rust toolchain (cargo) on PATH"
    if _kernel.UNIDATA_VERSION != unicodedata.unidata_version:
        return None, (f"consentgate._kernel was built against Unicode {_kernel.UNIDATA_VERSION}, this Python has "
                      f"{unicodedata.unidata_version}: reinstall to rebuild it")
    return _kernel, ""


class NativeKernel:
    """``ReferenceKernel``'s interface over the compiled kernel."""

    def __init__(self, module: ModuleType, config: KernelConfig) -> None:
        cfg = config
        catalog = cfg.catalog
        purposes = [(p.name, p.terms_version, [(c, list(use.keep)) for c, use in p.categories.items()])
                    for p in catalog.purposes.values()]

        def spec(plan: Any) -> tuple[str, list[str], bytes]:
            return plan.topic, list(plan.fields), plan.header

        self.config = config
        self._kernel = module.Kernel(
            categories=list(catalog.categories), purposes=purposes, secret=cfg.secret,
            decisions=spec(cfg.decisions), dead_letters=spec(cfg.dead_letters),
            contributions=spec(cfg.contributions), training=[spec(cfg.training[p]) for p in catalog.purposes],
            known_schema_ids=sorted(cfg.known_schema_ids), worker=cfg.worker, clock_skew_ms=cfg.clock_skew_ms,
            max_record_bytes=cfg.max_record_bytes, dlq_value_bytes=cfg.dlq_value_bytes, erased_type=Erased,
            micros=_micros)

    def route(self, batch: Sequence[Fetched], lookup: Lookup, now_ms: int) -> BatchResult:
        outputs, outcomes, dead, decisions, passed, deferred = self._kernel.route(batch, lookup, now_ms)
        return BatchResult(outputs, Counter(outcomes), Counter(dead), decisions, passed, deferred)

    def measure(self, batch: Sequence[Fetched], lookup: Lookup, now_ms: int, stage: int) -> int:
        """The route's work up to ``stage`` (1 decode, 2 decide, 3 keyed hashes, 4 assess), without encoding."""
        work: int = self._kernel.measure(batch, lookup, now_ms, stage)
        return work

    def learn_schema_id(self, schema_id: int) -> None:
        """Decode records written with ``schema_id`` too (the codec found it equal to the reader schema)."""
        self._kernel.learn_schema_id(schema_id)

    @property
    def known_schema_ids(self) -> frozenset[int]:
        """The ActivityEvent writer schema ids this kernel decodes (others are deferred)."""
        return frozenset(self._kernel.known_schema_ids)
