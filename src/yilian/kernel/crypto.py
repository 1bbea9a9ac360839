"""Key material, authenticated encryption of short strings, and a keyed blind index.

Nothing here knows FHIR: ``yilian.fhir.store.sealing`` decides *what* is sensitive; this
module only protects strings and makes equality-searchable stand-ins for them.

- **Data keys** (AES-256-GCM, 32 bytes) have short ids; one is current and encrypts, every
  one decrypts, so old rows stay readable while a rotation re-encrypts them.
- **Tokens** are self-describing ASCII, ``ylenc:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>``:
  a row names the key it needs, and a scan can tell sealed from plain text.
- **Blind index**: ``hmac:`` + base64url of a truncated HMAC-SHA256 under a separate key,
  over a normalised value, so ``11010519900101123x`` and ``11010519900101123X`` (or
  ``+86 138-0013-8000`` and ``13800138000``) find each other without the number being stored.

Key material never appears in a ``repr``, an error message or a log line: messages name the
configuration variable or key id, never the bytes. docs/decisions/0006-field-encryption.md
says why AES-GCM rather than SM4 and how rotation works.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from yilian.kernel import prc_id
from yilian.kernel.errors import Category, YilianError

log = logging.getLogger(__name__)

TOKEN_PREFIX: Final = "ylenc:"
BLIND_PREFIX: Final = "hmac:"
KEY_FILE_FORMAT: Final = "yilian-keyring/1"

ENV_DATA_KEYS: Final = "YILIAN_DATA_KEYS"
ENV_INDEX_KEY: Final = "YILIAN_INDEX_KEY"
ENV_KEY_FILE: Final = "YILIAN_KEY_FILE"

DATA_KEY_BYTES: Final = 32  # AES-256
INDEX_KEY_MIN_BYTES: Final = 32  # HMAC-SHA256: shorter keys weaken it, longer than a block is hashed down
INDEX_KEY_MAX_BYTES: Final = 64
NONCE_BYTES: Final = 12  # the GCM standard nonce; random nonces are safe far beyond any row count we reach
TAG_BYTES: Final = 16
BLIND_BYTES: Final = 18  # 144 bits: collisions are out of reach, and base64url renders it in 24 characters

BlindKind = Literal["prc-id", "phone", "document", "exact"]
"""How a value is normalised before it is blinded.

``prc-id``: PRC resident ID numbers (and health card numbers, which are the ID number for most
residents): spaces dropped, upper-case ``X``, a valid legacy 15-digit number converted to 18.
``phone``: digits only, without a ``+86``/``0086`` country prefix. ``document``: passports and
permits: spaces and hyphens dropped, upper case. ``exact``: no normalisation (for keyed digests
of anything else, such as a conditional-create criteria string).
"""
BLIND_KINDS: Final[frozenset[str]] = frozenset({"prc-id", "phone", "document", "exact"})

_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")
# Shortest payload: nonce + tag around an empty plaintext.
_TOKEN = re.compile(r"ylenc:([A-Za-z0-9_-]{1,16}):([A-Za-z0-9_-]{38,})")
_NOT_DIGIT = re.compile(r"\D")
_SPACES = re.compile(r"\s+")
_DOCUMENT_NOISE = re.compile(r"[\s\-]+")


class DecryptionError(YilianError):
    """A stored token cannot be opened: unknown key id, tampered or truncated, or another purpose.

    Category ``INTERNAL``: the data at rest or the key configuration is wrong, not the request.
    """

    def __init__(self, message: str) -> None:
        super().__init__(Category.INTERNAL, message)


def _config_error(message: str) -> YilianError:
    return YilianError(Category.INVALID, message)


def is_token(value: object) -> bool:
    """``True`` if ``value`` is a string in the token format (it may still fail to decrypt)."""
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX) and _TOKEN.fullmatch(value) is not None


_TOKEN_BYTES = re.compile(_TOKEN.pattern.encode("ascii"))


def key_ids_in(stored: bytes | str) -> set[str]:
    """The key ids of every token in a stored value (a document, a sealed field): what a
    rotation has left to re-encrypt, or which keys a retirement would strand."""
    if isinstance(stored, str):
        return {m.group(1) for m in _TOKEN.finditer(stored)}
    return {m.group(1).decode("ascii") for m in _TOKEN_BYTES.finditer(stored)}


def token_key_id(token: str) -> str:
    """The key id a token was encrypted with."""
    m = _TOKEN.fullmatch(token)
    if m is None:
        raise DecryptionError("not an encrypted value: the text does not have the ylenc:<key id>:<data> form")
    return m.group(1)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _decode_key(text: str, *, what: str) -> bytes:
    """Standard or URL-safe base64, padding optional. ``what`` names the key in messages:
    the key text itself is never quoted."""
    compact = "".join(text.split()).translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _config_error(f"{what} is not valid base64") from None


def _check_key_id(key_id: str, *, where: str) -> None:
    if not _KEY_ID.fullmatch(key_id):
        # Not quoted: a mangled entry may hold key material.
        raise _config_error(
            f"{where}: a key id must be 1-16 letters, digits, '-' or '_' (it is written into every token)"
        )


def normalise(value: str, *, kind: BlindKind) -> str:
    """The canonical form of ``value`` that :meth:`Keyring.blind` hashes."""
    if kind == "prc-id":
        text = _SPACES.sub("", value).upper()
        if len(text) == 15 and text.isdigit():
            # A legacy number and its 18-character successor name one person.
            with contextlib.suppress(YilianError):
                return prc_id.parse(text).number
        return text
    if kind == "phone":
        stripped = value.strip()
        digits = _NOT_DIGIT.sub("", stripped)
        if digits.startswith("0086"):
            digits = digits[4:]
        elif digits.startswith("86") and (
            stripped.startswith("+") or (len(digits) == 13 and digits[2] == "1")
        ):
            # +86 …, or 86 written before an 11-digit mobile number
            digits = digits[2:]
        # A "phone" without digits ("unknown") still needs a stable, non-empty form.
        return digits or stripped.casefold()
    if kind == "document":
        return _DOCUMENT_NOISE.sub("", value).upper()
    if kind == "exact":
        return value
    raise _config_error(f"unknown blind-index kind {kind!r}")


class Keyring:
    """Data-encryption keys (one current) and the blind-index key.

    Immutable: rotation returns a new keyring (:meth:`with_new_current_key`), which the
    operator saves and distributes before old rows are re-encrypted.
    """

    __slots__ = ("_aead", "_current", "_data_keys", "_index_key", "_mac_keys")

    def __init__(self, data_keys: Mapping[str, bytes], *, current: str, index_key: bytes) -> None:
        if not data_keys:
            raise _config_error("the keyring needs at least one data key")
        for key_id, key in data_keys.items():
            _check_key_id(key_id, where="data key")
            if len(key) != DATA_KEY_BYTES:
                raise _config_error(
                    f"data key {key_id!r} has {len(key)} bytes; AES-256-GCM needs exactly {DATA_KEY_BYTES}"
                )
        if current not in data_keys:
            raise _config_error(
                f"the current data key {current!r} is not among the data keys ({', '.join(data_keys)})"
            )
        if not INDEX_KEY_MIN_BYTES <= len(index_key) <= INDEX_KEY_MAX_BYTES:
            raise _config_error(
                f"the blind-index key has {len(index_key)} bytes; it needs {INDEX_KEY_MIN_BYTES}-{INDEX_KEY_MAX_BYTES}"
            )
        self._data_keys: dict[str, bytes] = dict(data_keys)
        self._current = current
        self._index_key = bytes(index_key)
        # Building the cipher object once per key saves its setup on every field.
        self._aead = {key_id: AESGCM(key) for key_id, key in self._data_keys.items()}
        self._mac_keys: dict[tuple[str, str], hmac.HMAC] = {}

    def __repr__(self) -> str:
        return f"Keyring(current={self._current!r}, key_ids={list(self._data_keys)!r}, index_key=<hidden>)"

    # ------------------------------------------------------------------ construction

    @classmethod
    def generate(cls, *, key_id: str = "k1") -> Keyring:
        """Fresh random keys (the embedded default, tests)."""
        return cls({key_id: AESGCM.generate_key(bit_length=256)}, current=key_id, index_key=os.urandom(32))

    @classmethod
    def from_config(cls, env: Mapping[str, str], *, key_file: Path | None) -> Keyring:
        """The keyring a deployment is configured with, in this order:

        1. ``YILIAN_DATA_KEYS="k2:<base64>,k1:<base64>"`` (first = current) with
           ``YILIAN_INDEX_KEY=<base64>`` — production, keys from the secret store;
        2. ``YILIAN_KEY_FILE=<path>``: a key file that must exist (a mounted secret);
        3. ``key_file``: the embedded default beside the SQLite database, created on first use.
        """
        data = env.get(ENV_DATA_KEYS, "").strip()
        index = env.get(ENV_INDEX_KEY, "").strip()
        if data or index:
            if not (data and index):
                missing = ENV_INDEX_KEY if data else ENV_DATA_KEYS
                raise _config_error(f"{ENV_DATA_KEYS} and {ENV_INDEX_KEY} go together; {missing} is not set")
            return cls._from_env(data, index)
        configured_file = env.get(ENV_KEY_FILE, "").strip()
        if configured_file:
            return cls.load(Path(configured_file))
        if key_file is not None:
            return cls.load_or_create(key_file)
        raise _config_error(
            f"no encryption keys are configured: set {ENV_DATA_KEYS} and {ENV_INDEX_KEY}, or {ENV_KEY_FILE}"
        )

    @classmethod
    def _from_env(cls, data: str, index: str) -> Keyring:
        keys: dict[str, bytes] = {}
        for n, item in enumerate(data.split(","), start=1):
            key_id, sep, encoded = item.strip().partition(":")
            if not sep or not encoded:
                raise _config_error(f"{ENV_DATA_KEYS}: entry {n} must look like <key id>:<base64 key>")
            _check_key_id(key_id, where=ENV_DATA_KEYS)
            if key_id in keys:
                raise _config_error(f"{ENV_DATA_KEYS}: key id {key_id!r} appears twice")
            keys[key_id] = _decode_key(encoded, what=f"{ENV_DATA_KEYS}: key {key_id!r}")
        return cls(keys, current=next(iter(keys)), index_key=_decode_key(index, what=ENV_INDEX_KEY))

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Read a key file written by :meth:`save`."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise _config_error(f"key file {path} does not exist") from None
        except OSError as exc:
            raise _config_error(f"key file {path} cannot be read ({exc.strerror})") from None
        if os.name == "posix" and path.stat().st_mode & 0o077:
            log.warning("key file %s is readable by other users; it should have mode 0600", path)
        try:
            doc = json.loads(raw)
        except ValueError:
            raise _config_error(f"key file {path} is not JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
            raise _config_error(f"key file {path} is not a {KEY_FILE_FORMAT} key file")
        data_keys, current, index_key = doc.get("data_keys"), doc.get("current"), doc.get("index_key")
        if not isinstance(data_keys, dict) or not all(isinstance(v, str) for v in data_keys.values()):
            raise _config_error(f"key file {path}: 'data_keys' must map key ids to base64 keys")
        if not isinstance(current, str) or not isinstance(index_key, str):
            raise _config_error(f"key file {path}: 'current' and 'index_key' must be strings")
        keys = {str(k): _decode_key(v, what=f"key file {path}: data key {k!r}") for k, v in data_keys.items()}
        return cls(
            keys, current=current, index_key=_decode_key(index_key, what=f"key file {path}: index key")
        )

    @classmethod
    def load_or_create(cls, path: Path) -> Keyring:
        """Load ``path``, or create it with fresh keys (mode 0600) if it does not exist.

        Safe when several processes start at once: the file appears complete or not at all
        (written aside, then hard-linked into place, which fails if another process won), and
        the loser loads the winner's keys — two keyrings for one database would make rows
        written by one unreadable by the other.
        """
        if path.exists():
            return cls.load(path)
        keyring = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = keyring._write_aside(path)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return cls.load(path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        log.info("created encryption key file %s (current data key %s)", path, keyring.current_key_id)
        return keyring

    def save(self, path: Path) -> None:
        """Write (or atomically replace) the key file, mode 0600."""
        tmp = self._write_aside(path)
        try:
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def _write_aside(self, path: Path) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
        with os.fdopen(fd, "wb") as f:
            f.write(self._to_json())
            f.flush()
            os.fsync(f.fileno())
        return Path(name)

    def _to_json(self) -> bytes:
        doc = {
            "format": KEY_FILE_FORMAT,
            "current": self._current,
            "data_keys": {k: base64.b64encode(v).decode("ascii") for k, v in self._data_keys.items()},
            "index_key": base64.b64encode(self._index_key).decode("ascii"),
        }
        return json.dumps(doc, indent=2).encode("ascii") + b"\n"

    # ------------------------------------------------------------------ rotation

    @property
    def current_key_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every data key id, current first."""
        return (self._current, *(k for k in self._data_keys if k != self._current))

    def with_new_current_key(self, key_id: str | None = None) -> Keyring:
        """A keyring with a fresh data key as current; the old keys stay for decryption.

        The default id is ``k<n+1>`` after the highest ``k<n>`` in use. The blind-index key is
        unchanged: changing it means re-indexing, a separate operation. With several server
        processes, stage it instead: :meth:`with_new_key` everywhere, then :meth:`with_current`.
        """
        new_id = key_id or _next_key_id(self._data_keys)
        return self.with_new_key(new_id).with_current(new_id)

    def with_new_key(self, key_id: str | None = None) -> Keyring:
        """A keyring that also knows a fresh data key, without encrypting with it yet — so every
        process can read rows under the new key before any process starts writing them."""
        new_id = key_id or _next_key_id(self._data_keys)
        _check_key_id(new_id, where="new data key")
        if new_id in self._data_keys:
            raise _config_error(f"key id {new_id!r} is already in the keyring")
        keys = {**self._data_keys, new_id: AESGCM.generate_key(bit_length=256)}
        return Keyring(keys, current=self._current, index_key=self._index_key)

    def with_current(self, key_id: str) -> Keyring:
        """The same keys with ``key_id`` as the one new tokens are made with."""
        return Keyring(self._data_keys, current=key_id, index_key=self._index_key)

    def without_key(self, key_id: str) -> Keyring:
        """Retire an old data key, once :func:`yilian.fhir.store.sealing.reencrypt` has run over every row."""
        if key_id == self._current:
            raise _config_error(f"key {key_id!r} is the current key and cannot be retired")
        if key_id not in self._data_keys:
            raise _config_error(f"key {key_id!r} is not in the keyring")
        keys = {k: v for k, v in self._data_keys.items() if k != key_id}
        return Keyring(keys, current=self._current, index_key=self._index_key)

    def with_index_key(self, index_key: bytes) -> Keyring:
        """The same data keys under another blind-index key (index-key rotation: re-index afterwards)."""
        return Keyring(self._data_keys, current=self._current, index_key=index_key)

    def is_current(self, token: str) -> bool:
        """``True`` if ``token`` was encrypted with the current key (nothing to re-encrypt)."""
        return token.startswith(TOKEN_PREFIX) and token[len(TOKEN_PREFIX) :].startswith(self._current + ":")

    # ------------------------------------------------------------------ encryption

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """A token for ``plaintext`` under the current key.

        ``context`` names the purpose (``"fhir/sealed-string"``); it is authenticated, not
        stored, so a token opens only for the purpose it was made for.
        """
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self._current].encrypt(
            nonce, plaintext.encode("utf-8"), _aad(self._current, context)
        )
        return f"{TOKEN_PREFIX}{self._current}:{_b64url(nonce + sealed)}"

    def decrypt(self, token: str, *, context: str) -> str:
        """The plaintext of a token made by :meth:`encrypt` with any key of this keyring."""
        m = _TOKEN.fullmatch(token)
        if m is None:
            raise DecryptionError(
                "not an encrypted value: the text does not have the ylenc:<key id>:<data> form"
            )
        key_id, payload = m.group(1), m.group(2)
        aead = self._aead.get(key_id)
        if aead is None:
            raise DecryptionError(
                f"encrypted value uses data key {key_id!r}, which is not in the keyring "
                f"(configured: {', '.join(self.key_ids)}); was it retired before re-encryption finished?"
            )
        try:
            raw = _b64url_decode(payload)
            if len(raw) < NONCE_BYTES + TAG_BYTES:
                raise InvalidTag
            plain = aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(key_id, context))
        except (InvalidTag, binascii.Error, ValueError):
            raise DecryptionError(
                f"encrypted value under data key {key_id!r} failed authentication: "
                "it was altered or truncated, or made for another purpose"
            ) from None
        return plain.decode("utf-8")

    def reencrypt(self, token: str, *, context: str) -> str:
        """``token`` under the current key (unchanged if it already is)."""
        if self.is_current(token):
            return token
        return self.encrypt(self.decrypt(token, context=context), context=context)

    # ------------------------------------------------------------------ authentication codes

    def mac(self, message: bytes, *, purpose: str, key_id: str | None = None) -> tuple[str, bytes]:
        """(key id, HMAC-SHA256 of ``message``) under a subkey of data key ``key_id`` (default:
        the current one) derived for ``purpose`` alone.

        For records that must show they were not rewritten by anyone without the keys (the
        audit chain): the key id travels with the code, so a rotation starts new codes under
        the new key while every older one still checks against the key that made it. The
        subkey (HMAC of the purpose under the data key) keeps the two uses of a data key apart.
        """
        kid = self._current if key_id is None else key_id
        keyed = self._mac_keys.get((kid, purpose))
        if keyed is None:
            key = self._data_keys.get(kid)
            if key is None:
                raise DecryptionError(
                    f"data key {kid!r} is not in the keyring (configured: {', '.join(self.key_ids)})"
                )
            sub = hmac.new(key, b"yilian-mac/1\x1f" + purpose.encode("ascii"), hashlib.sha256).digest()
            # Keyed once; each code starts from a copy (cheaper than setting the key up again).
            keyed = self._mac_keys[(kid, purpose)] = hmac.new(sub, digestmod=hashlib.sha256)
        h = keyed.copy()
        h.update(message)
        return kid, h.digest()

    # ------------------------------------------------------------------ blind index

    def blind(self, value: str, *, kind: BlindKind) -> str:
        """The keyed stand-in stored in the search index instead of ``value``.

        Equal for values that normalise alike (see :data:`BlindKind`), different under another
        index key. The kind is hashed in, so a passport number and a phone number with the same
        digits do not share a stand-in.
        """
        message = kind.encode("ascii") + b"\x1f" + normalise(value, kind=kind).encode("utf-8")
        digest = hmac.new(self._index_key, message, hashlib.sha256).digest()
        return BLIND_PREFIX + _b64url(digest[:BLIND_BYTES])

    def keyed_hash64(self, purpose: str, value: str) -> int:
        """A signed 64-bit keyed hash of ``value`` (for lookup keys such as the patient index's
        blocking keys): equal values give equal numbers, and without the index key nobody can
        tell which ID number or phone a number stands for by hashing guesses."""
        message = b"h64\x1f" + purpose.encode("ascii") + b"\x1f" + value.encode("utf-8")
        digest = hmac.new(self._index_key, message, hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big", signed=True)


def _aad(key_id: str, context: str) -> bytes:
    # The key id is bound too, so a token relabelled with another key id fails like any tampering.
    return f"{TOKEN_PREFIX}{key_id}:{context}".encode()


def _next_key_id(existing: Iterable[str]) -> str:
    numbers = [int(k[1:]) for k in existing if re.fullmatch(r"k\d{1,14}", k)]
    return f"k{max(numbers, default=0) + 1}"


def _fsync_dir(directory: Path) -> None:
    # The new name must survive a crash, or a restart would generate a second keyring.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
