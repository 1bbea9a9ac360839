"""Identifiers for new resources.

Server-assigned ids are UUIDv7-shaped: time-ordered so that new rows land at the end
of B-tree indexes (cheap inserts, good cache locality), random enough to be unguessable,
and valid FHIR ids (``[A-Za-z0-9\\-\\.]{1,64}``).
"""

from __future__ import annotations

import os
import re
import time

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def new_id() -> str:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand & ((1 << 80) - 1)
    # version 7 and RFC 4122 variant bits
    value = value & ~(0xF << 76) | (0x7 << 76)
    value = value & ~(0x3 << 62) | (0x2 << 62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_valid_fhir_id(value: str) -> bool:
    return bool(_FHIR_ID.match(value))
