"""Load the Avro contracts shipped beside this module."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

CONTRACTS = ("ActivityEvent", "ConsentState", "ConsentChange", "TrainingRecord", "Retraction", "Decision",
             "Contribution", "DeadLetter")
NAMESPACE = "io.consentgate.v1"

# The payload branch each built-in category must use; other categories use GenericPayload.
PAYLOAD_BRANCH = {
    "post": f"{NAMESPACE}.PostPayload",
    "search": f"{NAMESPACE}.SearchPayload",
    "conversation": f"{NAMESPACE}.ConversationPayload",
    "click": f"{NAMESPACE}.ClickPayload",
    "signal": f"{NAMESPACE}.SignalPayload",
}
GENERIC_BRANCH = f"{NAMESPACE}.GenericPayload"


@cache
def schema_text(name: str) -> str:
    if name not in CONTRACTS:
        raise KeyError(f"no contract named {name!r}")
    return resources.files("consentgate.schemas").joinpath(f"avro/{name}.avsc").read_text()


def schema_json(name: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(schema_text(name))
    return parsed
