"""The inbox keeps every message as received, so that it can be replayed byte for byte; it is
kept encrypted, because a PID segment carries ID numbers, phones and names in plain text.

The bytes are encrypted whole with the database's keyring (AES-GCM, the key rotation of the
FHIR store's sealed fields), under a context of their own so a token opens only here. Rows
written before this (plain HL7, beginning ``MSH``) are read as they are. Without a keyring (a
bare test database) messages are kept plain.
"""

from __future__ import annotations

import base64

from yilian.db import Database
from yilian.fhir.store.sealing import keyring_for
from yilian.kernel.crypto import TOKEN_PREFIX, Keyring
from yilian.kernel.errors import Category, YilianError

_CONTEXT = "exchange/hl7v2-message"
_PREFIX = TOKEN_PREFIX.encode("ascii")


def seal_raw(db: Database, raw: bytes) -> bytes:
    keyring = keyring_for(db.engine)
    if keyring is None:
        return raw
    # Encoded first: a message in GB18030 is not UTF-8 text, and the keyring seals text.
    return keyring.encrypt(base64.b64encode(raw).decode("ascii"), context=_CONTEXT).encode("ascii")


def open_raw(db: Database, stored: bytes) -> bytes:
    if not stored.startswith(_PREFIX):
        return stored  # kept before messages were sealed, or by a database without keys
    keyring = keyring_for(db.engine)
    if keyring is None:
        raise YilianError(
            Category.INTERNAL, "the inbox holds encrypted messages but the database has no keyring"
        )
    return base64.b64decode(keyring.decrypt(stored.decode("ascii"), context=_CONTEXT))


def reencrypt_raw(keyring: Keyring, stored: bytes) -> bytes | None:
    """A stored message under the current key (``yilian keys reencrypt``); None when it already is.

    A message kept plain (written before the inbox was sealed) is sealed now.
    """
    if not stored.startswith(_PREFIX):
        return keyring.encrypt(base64.b64encode(stored).decode("ascii"), context=_CONTEXT).encode("ascii")
    token = stored.decode("ascii")
    if keyring.is_current(token):
        return None
    return keyring.reencrypt(token, context=_CONTEXT).encode("ascii")
