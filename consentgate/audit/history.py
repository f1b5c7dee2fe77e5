"""Every version of every user's consent, rebuilt from ``consent.changes`` alone. Pure: no I/O.

This is the audit's own reading of what a change does (it never calls the consent writer's
rules): a grant replaces any earlier grant for the same (category, purpose) and is stamped
with the change's time and terms version; a revoke removes every grant matching its category
and purpose (absent = any); an erase removes everything and leaves the user erased until a
later grant starts a fresh state; ``tier`` and ``gpc_opt_out`` change no grant (GPC can only
deny, and it never creates one).

A grant is in force for the consent versions ``[from_version, to_version)``; the decision
that names version v of user u is judged against the grants of u in force at v.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple


class Change(NamedTuple):
    """One ConsentChange receipt, times in epoch milliseconds."""

    user_id: str
    version: int
    action: str
    category: str | None
    purpose: str | None
    at: int
    expires_at: int | None
    terms_version: int | None
    receipt_id: str
    appended_at: int  # the record's Kafka timestamp
    where: str = ""


class VersionRow(NamedTuple):
    user_id: str
    version: int
    action: str
    erased: bool  # the user is erased in this version
    appended_at: int
    at: int
    receipt_id: str


class GrantSpan(NamedTuple):
    user_id: str
    category: str
    purpose: str
    from_version: int
    to_version: int | None  # exclusive; None: still in force at the newest version
    granted_at: int
    expires_at: int | None
    terms_version: int
    receipt_id: str


@dataclass
class History:
    versions: list[VersionRow] = field(default_factory=list)
    grants: list[GrantSpan] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (user_id, what is wrong)


KNOWN_ACTIONS = frozenset({"grant", "revoke", "erase", "tier", "gpc_opt_out"})


def rebuild(changes: Iterable[Change]) -> History:
    """Replay each user's changes in version order into versions and grant spans."""
    by_user: dict[str, list[Change]] = {}
    for change in changes:
        by_user.setdefault(change.user_id, []).append(change)
    history = History()
    for user in sorted(by_user):
        _replay(user, sorted(by_user[user], key=lambda c: c.version), history)
    return history


def _replay(user: str, items: list[Change], history: History) -> None:
    versions = [c.version for c in items]
    if versions != list(range(1, len(items) + 1)):
        history.problems.append((user, f"consent versions {_span(versions)} are not 1..{len(items)} "
                                       "(a change is missing or written twice)"))
    open_grants: dict[tuple[str, str], Change] = {}
    erased = False
    previous = 0
    for change in items:
        if change.version == previous:
            continue  # reported above; the first copy stands
        previous = change.version
        action = change.action
        if action not in KNOWN_ACTIONS:
            history.problems.append((user, f"version {change.version}: unknown action {action!r}"))
        elif action == "grant":
            if change.category is None or change.purpose is None:
                history.problems.append((user, f"version {change.version}: a grant without category and purpose"))
            else:
                key = (change.category, change.purpose)
                if key in open_grants:
                    _close(open_grants.pop(key), change.version, history)
                open_grants[key] = change
                erased = False
        elif action == "revoke":
            for key in [k for k in open_grants if (change.category is None or k[0] == change.category)
                        and (change.purpose is None or k[1] == change.purpose)]:
                _close(open_grants.pop(key), change.version, history)
        elif action == "erase":
            for key in list(open_grants):
                _close(open_grants.pop(key), change.version, history)
            erased = True
        history.versions.append(VersionRow(user, change.version, action, erased, change.appended_at, change.at,
                                           change.receipt_id))
    for grant in open_grants.values():
        _close(grant, None, history)


def _close(grant: Change, to_version: int | None, history: History) -> None:
    assert grant.category is not None and grant.purpose is not None
    history.grants.append(GrantSpan(grant.user_id, grant.category, grant.purpose, grant.version, to_version,
                                    grant.at, grant.expires_at, grant.terms_version or 0, grant.receipt_id))


def _span(versions: list[int]) -> str:
    shown = ", ".join(str(v) for v in versions[:8])
    return f"[{shown}{', ...' if len(versions) > 8 else ''}]"
