"""The chain hash's encoding is part of what is stored: rows sealed by an earlier release must
still check after an upgrade. These digests were computed by the release that sealed the first
rows of the log; any change to how a row is encoded for its hash changes them."""

from __future__ import annotations

from typing import Any

import pytest

from yilian.kernel.crypto import Keyring
from yilian.security.audit.chain import keyed_hash, legacy_hash

# Every kind of value a driver hands back: ints as ints or text, SQLite's 1 for true, psycopg's
# memoryview for bytes, NULLs, and text beyond ASCII.
ROWS: list[dict[str, Any]] = [
    {"id": 1, "seq": 1, "recorded": 1765000000123456, "action": "R", "subtype": "read", "outcome": 0,
     "agent_kind": "system", "agent_id": "client-1", "org_id": "hosp-a", "patient_keys": "p-1 p-2",
     "entity": "Patient/p-1", "purpose": None, "flagged": False, "source_ip": "10.0.0.7",
     "content": b'{"resourceType":"AuditEvent"}'},
    {"id": "42", "seq": 7, "recorded": 1, "action": "C", "subtype": "break-glass", "outcome": 4,
     "agent_kind": "user", "agent_id": "何平", "org_id": None, "patient_keys": None,
     "entity": None, "purpose": "BTG", "flagged": 1, "source_ip": None,
     "content": memoryview(b"\x00\xff json")},
]  # fmt: skip
KEYRING = Keyring({"b1": b"\x01" * 32, "b2": b"\x02" * 32}, current="b2", index_key=b"\x03" * 32)


@pytest.mark.parametrize(
    ("row", "prev", "digest"),
    [
        (0, "0" * 64, "d16cfc96421a8ce85a0390aade56fe2114f10416cf5efb53d5c2f07b64db03f3"),
        (0, "ab" * 32, "3968d579e6f364d6993e6ece1214426af5db6567211d700222e3e29a19ad8538"),
        (1, "0" * 64, "aaa523af2daab4d870031f7804a18f1bf72dd32c31cd1f7a4848b14a555ae881"),
        (1, "ab" * 32, "19e1fafd4dc01a61952c28ccd092613885e9de840f9118112c17e92a07808ea3"),
    ],
)
def test_unkeyed_rows_of_the_first_release_still_check(row: int, prev: str, digest: str) -> None:
    assert legacy_hash(prev, ROWS[row]) == digest


@pytest.mark.parametrize(
    ("row", "key_id", "digest"),
    [
        (0, "b2", "v2:b2:Jsx7i8dsp9Z_UOuodeyRHxhZmOEGtIMqCL4DKQeC9ko"),
        (0, "b1", "v2:b1:bUMTjHPo-1jk0kyt91ULB587CBqZxAdwWXu8VEAgDag"),
        (1, "b2", "v2:b2:FHA6x3sqyV0mgaPHkQWIciCUpF6iLUKckwKIKwn3jV8"),
        (1, "b1", "v2:b1:R2K5TLqqKbNBacAW7u-LTwCe9DqRPsuceXI5YyMH3RU"),
    ],
)
def test_keyed_rows_sealed_before_an_upgrade_still_check(row: int, key_id: str, digest: str) -> None:
    assert keyed_hash("0" * 64, ROWS[row], KEYRING, key_id) == digest


def test_the_current_key_seals_new_rows() -> None:
    assert keyed_hash("0" * 64, ROWS[0], KEYRING).startswith("v2:b2:")
