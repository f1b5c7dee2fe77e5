"""consentgate: consent-first, exactly-once enforcement of per-purpose AI training consent."""

__version__ = "0.1.0"
