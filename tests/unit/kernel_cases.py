"""Shared material for the kernel tests: a config over the shipped catalog, both output shapes,
event encoding, and Hypothesis strategies with adversarial Unicode."""

from __future__ import annotations

import copy
import io
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from consentgate.kernel import KernelConfig, available, plan_output, unavailable_reason
from consentgate.schemas.contracts import schema_json
from hypothesis import strategies as st

from consentgate.catalog import load_catalog
from consentgate.model import ConsentState, Erased, Grant

SECRET = b"kernel-test-secret-0123456789abcdef"
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ACTIVITY_ID = 7
CATALOG = load_catalog()

MIN_RUST = (1, 82)


def _can_build() -> bool:
    """A cargo recent enough to build kernel/ is on PATH (Debian's 1.63 is not)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        return False
    found = re.search(r"(\d+)\.(\d+)", subprocess.run([cargo, "-V"], capture_output=True, text=True).stdout)
    return found is not None and (int(found[1]), int(found[2])) >= MIN_RUST


# Without a usable cargo there is no compiled kernel to compare, so its tests skip; with one it must be built.
requires_kernel = pytest.mark.skipif(not available() and not _can_build(),
                                     reason=f"no Rust toolchain: {unavailable_reason()}")


def fail_unless_built() -> None:
    if not available():
        pytest.fail(f"cargo is on PATH but the kernel is not usable: {unavailable_reason()}")


def header(schema_id: int) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big")


def reordered(schema: dict[str, Any]) -> dict[str, Any]:
    """The same record with its fields in reverse order: the kernel writes whatever order is registered."""
    out = copy.deepcopy(schema)
    out["fields"] = out["fields"][::-1]
    return out


def schemas(shape: str) -> dict[str, dict[str, Any]]:
    out = {c: schema_json(c) for c in ("Decision", "DeadLetter", "Contribution", "TrainingRecord")}
    if shape == "reordered":
        out = {c: reordered(s) for c, s in out.items()}
    return out


def config(shape: str = "shipped", *, max_record_bytes: int = 1_000_000, dlq_value_bytes: int = 65_536
           ) -> tuple[KernelConfig, dict[str, Any]]:
    s = schemas(shape)
    training = {p.name: plan_output(p.sink_topic, "TrainingRecord", s["TrainingRecord"], header(20 + i))
                for i, p in enumerate(CATALOG.purposes.values())}
    cfg = KernelConfig(
        catalog=CATALOG, secret=SECRET,
        decisions=plan_output("gate.decisions", "Decision", s["Decision"], header(11)),
        dead_letters=plan_output("gate.dlq", "DeadLetter", s["DeadLetter"], header(12)),
        contributions=plan_output("metering.contributions", "Contribution", s["Contribution"], header(13)),
        training=training, known_schema_ids=frozenset({ACTIVITY_ID}), worker="worker-ü",
        clock_skew_ms=300_000, max_record_bytes=max_record_bytes,
        dlq_value_bytes=dlq_value_bytes)
    return cfg, s


_ACTIVITY = fastavro.parse_schema(schema_json("ActivityEvent"))


def encode_event(value: dict[str, Any], schema_id: int = ACTIVITY_ID) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, _ACTIVITY, value)
    return header(schema_id) + out.getvalue()


def at(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


# -- strategies --------------------------------------------------------------------------------

# Adversarial text: any encodable code point, plus the ones Python's lower() and \w treat specially.
SPECIAL = "ΣσςİIıßǅᾼΐﬃ\u0345\u0307\u00ad'.:_ \t\n\u2028\u00a0\u3000١٢３Ⅻ𝟘𐐀😀\u200d\u0301"
chars = st.characters(exclude_categories=["Cs"])
adversarial = st.text(st.one_of(chars, st.sampled_from(SPECIAL)), max_size=60)
spammy = st.sampled_from(["click here", "FREE MONEY", "http://a https://b", "AAAAAAAAAAAA", "!!!!!!", "ΣΑΣ ΟΔΟΣ",
                          "word word word", "İstanbul", "", " "])
texts = st.lists(st.one_of(adversarial, spammy), min_size=1, max_size=4).map(" ".join)
ids = st.one_of(st.text(st.sampled_from("abcu-0123"), min_size=1, max_size=6),
                st.text(chars, max_size=8), st.text(st.sampled_from("x"), min_size=199, max_size=202))
categories = st.sampled_from(["post", "search", "conversation", "click", "signal", "video", "Post"])
USERS = ["u1", "u2", "u3", "ü4"]
PURPOSES = list(CATALOG.purposes)
offsets_ms = st.integers(-10 * 86_400_000, 10 * 86_400_000)
doubles = st.floats(allow_nan=True, allow_infinity=True)

BRANCH_OF = {"post": "PostPayload", "search": "SearchPayload", "conversation": "ConversationPayload",
             "click": "ClickPayload", "signal": "SignalPayload"}


@st.composite
def payloads(draw: st.DrawFn, category: str) -> tuple[str, dict[str, Any]]:
    branch = BRANCH_OF.get(category, "GenericPayload")
    if draw(st.integers(0, 9)) == 0:
        branch = draw(st.sampled_from([*BRANCH_OF.values(), "GenericPayload"]))
    body: dict[str, Any] = {
        "PostPayload": lambda: {"text": draw(texts)},
        "SearchPayload": lambda: {"query": draw(texts)},
        "ConversationPayload": lambda: {"text": draw(texts), "thread_id": draw(ids)},
        "ClickPayload": lambda: {"item_id": draw(ids), "url": draw(adversarial)},
        "SignalPayload": lambda: {"kind": draw(ids), "value": draw(doubles)},
        "GenericPayload": lambda: {"fields": draw(st.dictionaries(st.sampled_from(["text", "query", "kind", "x"]),
                                                                  adversarial, max_size=3))},
    }[branch]()
    return f"io.consentgate.v1.{branch}", body


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    category = draw(categories)
    user = draw(st.one_of(st.sampled_from(USERS), ids))
    return {"event_id": draw(ids), "user_id": user, "category": category,
            "occurred_at": NOW_MS + draw(st.one_of(offsets_ms, st.integers(-NOW_MS - 10, 400_000))),
            "source": draw(st.text(chars, max_size=5)), "payload": draw(payloads(category))}


@st.composite
def consents(draw: st.DrawFn, user: str) -> ConsentState | Erased | None:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return None
    if kind == 1:
        return Erased(user)
    grants = []
    for category, purpose in draw(st.lists(st.tuples(categories, st.sampled_from(PURPOSES)), max_size=6)):
        granted = NOW_MS + draw(offsets_ms)
        expires = draw(st.one_of(st.none(), st.integers(granted, NOW_MS + 20 * 86_400_000)))
        grants.append(Grant(category, purpose, at(granted), None if expires is None else at(expires),
                            draw(st.integers(0, 4)), draw(st.text(chars, max_size=10))))
    tier = draw(st.sampled_from(["free", "data_sharing"]))
    plan = draw(st.sampled_from([None, "per_unit", "revenue_share", "credits", "dividend"]))
    return ConsentState(user, draw(st.integers(0, 2**63 - 1)), at(NOW_MS), tier, plan, tuple(grants))
