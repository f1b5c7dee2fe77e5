"""Who may touch what (SPEC §7): each role's ACL bindings, from settings and the catalog. Pure.

The same set is applied by ``consentgate up --secure`` and printed by ``consentgate acls --print``
for a cluster whose operator names the principals. Topics are named exactly (LITERAL) except where a
role reads a whole family (the auditor: every ``training.`` topic under the prefix); groups and
transactional ids follow what each worker uses:

- gate: consumer group ``group_id`` (joined, and its offsets committed in each transaction);
  transactional ids ``{transactional_id_prefix}-{worker_id}``; its consent view's groups
  ``consent-view-<uuid>``;
- consent writer and consent service: transactional ids ``{topic_prefix}consent-writer-<partition>``;
  groups ``consent-writer-<...>`` and ``consent-service-<...>``;
- metering: consumer group ``metering_group_id``; groups ``consentgate-value-<...>`` (the usefulness
  valuation's reads of the training topics);
- auditor: groups ``consentgate-audit-<uuid>``; trainers (the training-set sink):
  ``consentgate-sink-<...>``; both also ``consentgate-tail-<uuid>`` for ``consentgate tail``.

A reader that assigns partitions itself still needs READ on its group: librdkafka looks up the
group's coordinator for every consumer, and a refusal surfaces as an error on poll.

Departures from SPEC §7: ``metering`` also reads each ``training.<purpose>`` topic, because the
usefulness valuation (SPEC §11) joins a contribution to its minimised text by record id; ``consent``
also reads ``consent.changes``, because the consent service shows people their receipts (SPEC §9).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from consentgate.catalog import Catalog
from consentgate.errors import ConfigurationError
from consentgate.settings import Settings

Resource = Literal["cluster", "topic", "group", "transactional_id"]
Pattern = Literal["literal", "prefixed"]
Operation = Literal["all", "read", "write", "describe", "create", "alter"]

CLUSTER = "kafka-cluster"
FIXED_ROLES = ("admin", "platform", "consent", "gate", "metering", "auditor")
TRAINER = "trainer."


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding: ``principal`` may do ``operation`` on the resource (from any host)."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation


def roles(catalog: Catalog) -> list[str]:
    """Every role of SPEC §7, with one trainer per purpose of the catalog."""
    return [*FIXED_ROLES, *(f"{TRAINER}{name}" for name in sorted(catalog.purposes))]


def parse_principals(pairs: list[str], catalog: Catalog) -> dict[str, str]:
    """``ROLE=User:name`` pairs into a role -> principal map; unknown roles are refused."""
    known = roles(catalog)
    out: dict[str, str] = {}
    for pair in pairs:
        role, sep, principal = pair.partition("=")
        if not sep or not principal or ":" not in principal:
            raise ConfigurationError(f"--principal {pair!r}: expected ROLE=Type:name, e.g. gate=User:svc-gate")
        if role not in known:
            raise ConfigurationError(f"--principal {pair!r}: unknown role {role!r} (roles: {', '.join(known)})")
        out[role] = principal
    return out


def acl_set(settings: Settings, catalog: Catalog, principals: Mapping[str, str] | None = None) -> list[Acl]:
    """The whole ACL set, sorted; a role without a named principal is ``User:<role>``."""
    named = dict(principals or {})
    out: list[Acl] = []
    for role in roles(catalog):
        principal = named.get(role, f"User:{role}")
        out.extend(Acl(principal, r, n, p, o) for r, n, p, o in role_grants(role, settings, catalog))
    return sorted(set(out))


Grant = tuple[Resource, str, Pattern, Operation]


def role_grants(role: str, settings: Settings, catalog: Catalog) -> list[Grant]:
    """What ``role`` may do, as (resource, name, pattern, operation)."""
    t = settings.topic
    sinks = [t(p.sink_topic) for p in catalog.purposes.values()]

    def groups(*prefixes: str) -> list[Grant]:
        return [("group", prefix, "prefixed", "read") for prefix in prefixes]

    def topics(op: Operation, *names: str) -> list[Grant]:
        return [("topic", name, "literal", op) for name in names]

    if role == "admin":
        everything: Pattern = "prefixed" if settings.topic_prefix else "literal"
        return [("cluster", CLUSTER, "literal", "all"),
                ("topic", settings.topic_prefix or "*", everything, "all"),
                ("group", "*", "literal", "all"), ("transactional_id", "*", "literal", "all")]
    if role == "platform":
        return topics("write", t("activity.events"))
    if role == "consent":
        return [*topics("read", t("consent.state"), t("consent.changes")),
                *topics("write", t("consent.state"), t("consent.changes"), t("training.retractions")),
                ("transactional_id", f"{settings.topic_prefix}consent-writer-", "prefixed", "write"),
                *groups("consent-writer-", "consent-service-")]
    if role == "gate":
        return [*topics("read", t("activity.events"), t("consent.state")),
                *topics("write", t("gate.decisions"), t("gate.dlq"), t("metering.contributions"), *sinks),
                ("group", settings.group_id, "literal", "read"), *groups("consent-view-"),
                ("transactional_id", f"{settings.transactional_id_prefix}-", "prefixed", "write")]
    if role == "metering":
        return [*topics("read", t("metering.contributions"), *sinks),
                *topics("write", t("metering.dlq")),
                ("group", settings.metering_group_id, "literal", "read"),
                *groups("consentgate-value-")]  # `metering value` reads training texts (assigned, never joined)
    if role == "auditor":
        return [*topics("read", t("consent.changes"), t("gate.decisions"), t("gate.dlq"),
                        t("metering.contributions")),
                ("topic", t("training."), "prefixed", "read"),  # every sink and the retractions
                *topics("describe", t("activity.events")),  # offsets, never content
                *groups("consentgate-audit-", "consentgate-tail-")]
    if role.startswith(TRAINER) and role[len(TRAINER):] in catalog.purposes:
        purpose = catalog.purposes[role[len(TRAINER):]]
        return [*topics("read", t(purpose.sink_topic), t("training.retractions")),
                *groups("consentgate-sink-", "consentgate-tail-")]
    raise ConfigurationError(f"unknown role {role!r} (roles: {', '.join(roles(catalog))})")
