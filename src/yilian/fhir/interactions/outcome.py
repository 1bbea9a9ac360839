"""Results of interactions, independent of HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from yilian.fhir.search.values import us_to_instant
from yilian.fhir.store.repository import StoredVersion


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource version as served: its bytes (``None`` when deleted) and its version metadata."""

    res_type: str
    res_id: str
    version: int
    last_updated: int  # µs since epoch
    content: bytes | None
    deleted: bool = False
    method: str = ""
    pk: int = 0
    patient_key: str | None = None

    @classmethod
    def of(cls, sv: StoredVersion) -> Resource:
        return cls(
            sv.res_type,
            sv.res_id,
            sv.version,
            sv.last_updated,
            sv.content,
            sv.deleted,
            sv.method,
            sv.pk,
            sv.patient_key,
        )

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def last_updated_text(self) -> str:
        return us_to_instant(self.last_updated)

    @property
    def location(self) -> str:
        return f"{self.res_type}/{self.res_id}/_history/{self.version}"

    def json(self) -> dict[str, Any]:
        assert self.content is not None
        value: dict[str, Any] = orjson.loads(self.content)
        return value


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: ``created`` (201) or not (200), ``noop`` when a conditional create found a match."""

    resource: Resource
    created: bool
    noop: bool = False
    warnings: list[str] = field(default_factory=list)
