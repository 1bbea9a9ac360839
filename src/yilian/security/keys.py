"""The deployment's keyring, as the security system needs it."""

from __future__ import annotations

from typing import Any

from yilian.fhir.store.sealing import keyring_for
from yilian.kernel.crypto import Keyring
from yilian.kernel.errors import Category, YilianError


def required_keyring(engine: Any, without: str) -> Keyring:
    """The keyring installed on ``engine``; ``UNAVAILABLE`` (saying what ``without`` keys cannot be
    done) when there is none: nothing the keys protect is ever stored or checked without them."""
    keyring = keyring_for(engine)
    if keyring is None:
        raise YilianError(Category.UNAVAILABLE, f"the database has no encryption keys installed: {without}")
    return keyring
