"""The gate's per-batch work (decode, decide, keyed hashes, quality, encode) as one call.

Two implementations of one interface, ``route(batch, lookup, now_ms) -> BatchResult``:

- ``ReferenceKernel`` (``routing.py``): plain Python over the project's own modules; the readable
  reference, and the fallback.
- the compiled kernel (Rust, ``kernel/`` in the repository, built by ``pip install`` when a Rust
  toolchain is present) behind ``NativeKernel``; tests hold it byte-identical to the reference.

``available()`` says whether the compiled one can be used here; ``kernel_for`` picks it when it is.
"""

from __future__ import annotations

from typing import Any

from consentgate.errors import ConfigurationError
from consentgate.kernel.native import NativeKernel, load
from consentgate.kernel.plan import OutputPlan, UnsupportedSchema, plan_output
from consentgate.kernel.routing import BatchResult, Fetched, KernelConfig, ReferenceKernel

_MODULE, _WHY_NOT = load()


def available() -> bool:
    """True when the compiled kernel is built and matches this Python's Unicode database."""
    return _MODULE is not None


def unavailable_reason() -> str:
    """Why the compiled kernel cannot be used ("" when it can)."""
    return _WHY_NOT


def kernel_for(config: KernelConfig, schemas: dict[str, dict[str, Any]], *, compiled: bool | None = None
               ) -> NativeKernel | ReferenceKernel:
    """The compiled kernel when available (or ``compiled=True``, which raises if it is not), else the reference."""
    if compiled is None:
        compiled = available()
    if compiled:
        if _MODULE is None:
            raise ConfigurationError(f"the compiled kernel is not available: {_WHY_NOT}")
        return NativeKernel(_MODULE, config)
    return ReferenceKernel(config, schemas)


__all__ = ["BatchResult", "Fetched", "KernelConfig", "NativeKernel", "OutputPlan", "ReferenceKernel",
           "UnsupportedSchema", "available", "kernel_for", "plan_output", "unavailable_reason"]
