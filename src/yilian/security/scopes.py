"""SMART on FHIR scopes (v2 ``cruds`` and v1 ``read``/``write``) and what they permit.

``system/Patient.rs``, ``user/*.cruds``, ``patient/Observation.read``… A scope names a context
(patient, user, system), a resource type (or ``*``) and permissions. Who the caller may see is
decided elsewhere (by relationship and consent); scopes decide what the caller may *do*.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from yilian.fhir.model import model
from yilian.kernel.errors import Category, YilianError

_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|c?r?u?d?s?)$")
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
# Scopes that carry no data permission but are legitimate to ask for.
NON_DATA = frozenset(
    {"openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access"}
)


@dataclass(frozen=True)
class Scope:
    context: str  # patient | user | system
    resource_type: str  # a type or "*"
    permissions: frozenset[str]  # subset of c r u d s

    def __str__(self) -> str:
        perms = "".join(p for p in "cruds" if p in self.permissions)
        return f"{self.context}/{self.resource_type}.{perms}"


@dataclass(frozen=True)
class Scopes:
    items: tuple[Scope, ...] = ()
    extras: frozenset[str] = frozenset()

    def allows(self, permission: str, resource_type: str) -> bool:
        return any(
            permission in s.permissions and s.resource_type in ("*", resource_type) for s in self.items
        )

    def contexts(self) -> set[str]:
        return {s.context for s in self.items}

    def __str__(self) -> str:
        return " ".join([*(str(s) for s in self.items), *sorted(self.extras)])

    def intersect(self, granted: Scopes) -> Scopes:
        """What of ``self`` (requested) the ``granted`` scopes cover."""
        out: list[Scope] = []
        for s in self.items:
            for g in granted.items:
                if g.context != s.context or g.resource_type not in ("*", s.resource_type):
                    continue
                perms = s.permissions & g.permissions
                if perms:
                    out.append(Scope(s.context, s.resource_type, perms))
        return Scopes(tuple(out), self.extras & (granted.extras | NON_DATA))


def parse_scope(text: str) -> Scope:
    if "?" in text:
        raise YilianError(
            Category.INVALID,
            f"scope {text!r}: finer-grained scopes with search parameters are not supported; ask for the resource type",
        )
    m = _SCOPE.match(text)
    if m is None:
        raise YilianError(
            Category.INVALID,
            f"scope {text!r} is not a SMART scope (context/Type.permissions, e.g. system/Patient.rs or user/*.cruds)",
        )
    context, rtype, perms = m.groups()
    if rtype != "*" and not model().is_resource_type(rtype):
        raise YilianError(Category.INVALID, f"scope {text!r} names unknown resource type {rtype!r}")
    letters = V1.get(perms, perms)
    if not letters:
        raise YilianError(Category.INVALID, f"scope {text!r} grants no permission")
    return Scope(context, rtype, frozenset(letters))


def parse_scopes(text: str) -> Scopes:
    items: list[Scope] = []
    extras: set[str] = set()
    for word in text.split():
        if word in NON_DATA:
            extras.add(word)
        else:
            items.append(parse_scope(word))
    return Scopes(tuple(items), frozenset(extras))
