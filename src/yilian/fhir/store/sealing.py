"""Which values in a FHIR resource are sensitive, and how a resource is stored so that none
of them is readable at rest.

**Sensitive values** (PIPL art. 28; issue 5): ``Identifier.value`` whose ``system`` is in
:data:`SENSITIVE_IDENTIFIER_SYSTEMS` (or is a passport system), and ``ContactPoint.value``
whose ``system`` is ``phone`` or ``sms`` — anywhere in a resource: any type, nested elements
(``contact[].telecom``, ``Reference.identifier``, extensions), contained resources, Bundle
entries. They are recognised by shape (an object with that ``system`` and a string ``value``),
so no type model is needed and every resource type is covered by one walk.

**Sealing** (:func:`seal`) replaces, in a copy of the resource:

1. each sensitive value by an encryption token (``yilian.kernel.crypto``);
2. the narrative (``text.div``) of every resource that holds one: narratives repeat identifiers;
3. any other string in the document that contains one of the values found (a hospital using
   the ID number as its MRN, a Composition section, a note, a stored request URL), compared
   with spaces, hyphens, brackets and markup squeezed out;
4. any string that already looks like a token: a client cannot plant a token copied from a
   stolen backup and have :func:`unseal` decrypt it for them, because it comes back still
   wrapped.

So stored documents keep one invariant — every token-shaped string in them was made by
:func:`seal` — and :func:`unseal` simply opens every token it meets. Resources without
anything sensitive (most of them: Observations, Encounters…) are stored and served byte for
byte unchanged; only sealed documents pay for unsealing on the read path.

The search index never holds the plain values either: :func:`blind_token` gives the keyed
stand-in for token rows and search input, :func:`scrub_text` cleans ``_text``/``_content``.
"""

from __future__ import annotations

import re
import unicodedata
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import orjson

from yilian.kernel import naming
from yilian.kernel.crypto import TOKEN_PREFIX, BlindKind, Keyring, normalise

SENSITIVE_IDENTIFIER_SYSTEMS: Final[Mapping[str, BlindKind]] = MappingProxyType(
    {
        naming.PRC_RESIDENT_ID: "prc-id",
        # The card number is the resident's ID number for most residents: normalised alike.
        naming.HEALTH_CARD: "prc-id",
        naming.PASSPORT_CHN: "document",
        naming.HK_MACAO_PERMIT: "document",
        naming.TAIWAN_PERMIT: "document",
        naming.PHONE: "phone",
    }
)
"""``Identifier.system`` values whose ``value`` is encrypted at rest and blinded in the index,
with the normalisation their blind-index form uses. Passports of every issuing country
(``naming.passport_system(country)``, :data:`PASSPORT_SYSTEM_PREFIX`) are sensitive too.
MRNs, insurance member numbers, licence numbers and organisation codes are not: they identify
a person only together with the issuer's records, and are searched by prefix in places."""

PASSPORT_SYSTEM_PREFIX: Final = naming.PLATFORM_SID + "passport/"

SENSITIVE_TELECOM_SYSTEMS: Final[Mapping[str, BlindKind]] = MappingProxyType(
    {"phone": "phone", "sms": "phone"}
)
"""``ContactPoint.system`` values whose ``value`` is sensitive. E-mail and URLs are not covered
by issue 5; pagers and fax are institutional."""

_KINDS_BY_NAME: Final[Mapping[str, BlindKind]] = MappingProxyType(
    {**SENSITIVE_TELECOM_SYSTEMS, "prc-id": "prc-id", "document": "document"}
)

SEALED_CONTEXT: Final = "yilian/fhir/sealed-string/v1"
"""The purpose every token in a stored FHIR document is bound to (AES-GCM associated data)."""

_TOKEN_PREFIX_BYTES: Final = TOKEN_PREFIX.encode("ascii")
# Every Identifier and ContactPoint system as orjson writes it (compact, unescaped): seal()
# finds out from the bytes whether a resource names a sensitive system at all.
_SYSTEM_VALUE: Final = re.compile(rb'"system":"([^"\\]*)"')
_SENSITIVE_SYSTEM_BYTES: Final = frozenset(
    system.encode() for system in (*SENSITIVE_TELECOM_SYSTEMS, *SENSITIVE_IDENTIFIER_SYSTEMS)
)
_PASSPORT_PREFIX_BYTES: Final = PASSPORT_SYSTEM_PREFIX.encode()
# Shorter values are not looked for in other strings: a 3-digit "phone" would match dates.
_MIN_ECHO_LENGTH: Final = 7
# Never rewritten: the store, references and routing read them, and they hold no free text.
_STRUCTURAL_KEYS: Final = frozenset({"resourceType", "id"})
# Separators people write inside ID and phone numbers, squeezed out before comparing.
_SEPARATORS: Final = " \t\r\n\u00a0\u3000-‐–—.()/+（）－"
_SQUEEZE: Final = str.maketrans(dict.fromkeys(_SEPARATORS, None))
_NOT_DIGITS: Final = re.compile(r"\D+")
_NOT_ASCII_DIGIT_BYTES: Final = bytes(b for b in range(256) if not 0x30 <= b <= 0x39)
_FULL_WIDTH_DIGIT: Final = re.compile(rb"\xef\xbc[\x90-\x99]")  # U+FF10..FF19 in UTF-8
# A token as a whole JSON string value in compact JSON. The opening quote must follow ':', ','
# or '[' (checked apart, so the search can start from the literal): such a quote is never inside
# a string, where quotes are escaped and follow a backslash. A value, unlike a key, is not
# followed by ':'.
_TOKEN_STRING: Final = re.compile(rb'"(ylenc:[A-Za-z0-9_-]{1,16}:[A-Za-z0-9_-]{38,})"(?!:)')
_VALUE_OPENERS: Final = frozenset(b":,[")
# A tag holds no "<": in "<13-8<b>" the first "<" is text and 13-8 is not hidden inside a tag.
_TAGS: Final = re.compile(r"<[^<>]*>")
# Between two characters of a value in free text: separators or a tag (<b>138</b>0013…).
_SEPARATOR_CLASS: Final = "(?:[" + re.escape(_SEPARATORS) + "]|<[^<>]{0,80}>)*"


class Found(NamedTuple):
    """A sensitive value met while sealing: how it is blinded, and the value itself."""

    kind: BlindKind
    plaintext: str


@dataclass(frozen=True, slots=True)
class SealResult:
    """What :func:`seal` produced.

    ``resource`` is the JSON to store. When ``sealed`` is false it *is* the input object;
    otherwise it is a new document that shares unchanged subtrees with the input (copied only
    along the paths to what was replaced): serialise it, do not mutate it.
    """

    resource: dict[str, Any]
    found: tuple[Found, ...]
    sealed: bool

    @property
    def plaintexts(self) -> tuple[str, ...]:
        return tuple(f.plaintext for f in self.found)


# ---------------------------------------------------------------------------- classification


def identifier_kind(system: str) -> BlindKind | None:
    """The blind-index kind of an ``Identifier.system``, ``None`` if its values are not sensitive."""
    kind = SENSITIVE_IDENTIFIER_SYSTEMS.get(system)
    if kind is None and system.startswith(PASSPORT_SYSTEM_PREFIX):
        return "document"
    return kind


def _sensitive_kind(node: dict[str, Any]) -> BlindKind | None:
    """The kind of ``node`` if it is an Identifier or ContactPoint holding a sensitive value.

    Shape is enough: no other FHIR type pairs ``system`` with a string ``value`` under these
    systems (Quantity's value is a number, Coding has no value).
    """
    system = node.get("system")
    if system.__class__ is not str or node.get("value").__class__ is not str:
        return None
    return SENSITIVE_TELECOM_SYSTEMS.get(system) or identifier_kind(system)


def blind_token(system_or_kind: str, value: str, keyring: Keyring) -> str | None:
    """The blind-index form the search index stores (and searches for) instead of ``value``.

    ``system_or_kind``: an ``Identifier.system``, a ``ContactPoint.system`` (``phone``,
    ``sms``) or a blind kind (``prc-id``, ``phone``, ``document``). ``None`` if values of that
    system are not sensitive and are indexed as they are.
    """
    kind = _KINDS_BY_NAME.get(system_or_kind) or identifier_kind(system_or_kind)
    return None if kind is None else keyring.blind(value, kind=kind)


def blind_candidates(value: str, keyring: Keyring) -> tuple[str, ...]:
    """Every blind form ``value`` could be stored under: for a search without a system
    (``identifier=110105…``, ``telecom=138…``), OR-ed with the plain value."""
    return tuple(dict.fromkeys(keyring.blind(value, kind=k) for k in ("prc-id", "phone", "document")))


# ---------------------------------------------------------------------------- sealing


class _Sealer:
    """One :func:`seal` call. Walks copy-on-write: a container is copied only when something
    below it changes, so whatever holds nothing sensitive is shared with the input, not copied."""

    __slots__ = ("check_strings", "found", "keyring", "wrapped")

    def __init__(self, keyring: Keyring, *, check_strings: bool) -> None:
        self.keyring = keyring
        # Only a document with "ylenc:" somewhere can hold a token-shaped string to wrap;
        # otherwise strings are not even looked at.
        self.check_strings = check_strings
        self.found: list[Found] = []
        self.wrapped = False

    def encrypt(self, text: str) -> str:
        return self.keyring.encrypt(text, context=SEALED_CONTEXT)

    def wrap(self, text: str) -> str:
        self.wrapped = True
        return self.encrypt(text)

    def obj(self, node: dict[str, Any]) -> dict[str, Any]:
        before = len(self.found)
        out: dict[str, Any] | None = None
        kind = _sensitive_kind(node) if "system" in node else None
        if kind is not None:
            value: str = node["value"]
            self.found.append(Found(kind, value))
            out = dict(node)
            # Encrypted whatever it looks like, a token-shaped value included (it stays wrapped).
            out["value"] = self.encrypt(value)
        for key, child in node.items():
            cls = child.__class__
            new: Any
            if cls is dict:
                new = self.obj(child)
            elif cls is list:
                new = self.array(child)
            elif (
                cls is str
                and self.check_strings
                and child.startswith(TOKEN_PREFIX)
                and not (kind is not None and key == "value")
            ):
                new = self.wrap(child)
            else:
                continue
            if new is not child:
                if out is None:
                    out = dict(node)
                out[key] = new
        if len(self.found) > before and "resourceType" in node:
            out = self._seal_narrative(node, out if out is not None else dict(node))
        return node if out is None else out

    def array(self, node: list[Any]) -> list[Any]:
        out: list[Any] | None = None
        for i, child in enumerate(node):
            cls = child.__class__
            new: Any
            if cls is dict:
                new = self.obj(child)
            elif cls is list:
                new = self.array(child)
            elif cls is str and self.check_strings and child.startswith(TOKEN_PREFIX):
                new = self.wrap(child)
            else:
                continue
            if new is not child:
                if out is None:
                    out = list(node)
                out[i] = new
        return node if out is None else out

    def _seal_narrative(self, original: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        text, current = original.get("text"), out.get("text")
        if text.__class__ is not dict or current.__class__ is not dict:
            return out
        div = current.get("div")
        # A token-shaped div was wrapped by the walk already: it is not wrapped twice.
        if div.__class__ is str and div is text.get("div"):
            out["text"] = {**current, "div": self.encrypt(div)}
        return out


class _EchoSealer:
    """Second pass over a document that had sensitive values: seal every other string that
    repeats one of them (formatted differently or not)."""

    __slots__ = ("keyring", "needles", "shortest")

    def __init__(self, keyring: Keyring, needles: frozenset[str]) -> None:
        self.keyring = keyring
        self.needles = needles
        self.shortest = min(len(n) for n in needles)

    def repeats(self, text: str) -> bool:
        if len(text) < self.shortest or text.startswith(TOKEN_PREFIX):
            return False
        if any(n in text for n in self.needles):
            return True
        squeezed = _squeezed(text)
        return any(n in squeezed for n in self.needles)

    def obj(self, node: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] | None = None
        for key, child in node.items():
            if key in _STRUCTURAL_KEYS:
                continue
            new = self.any(child)
            if new is not child:
                if out is None:
                    out = dict(node)
                out[key] = new
        return node if out is None else out

    def any(self, node: Any) -> Any:
        cls = node.__class__
        if cls is str:
            return self.keyring.encrypt(node, context=SEALED_CONTEXT) if self.repeats(node) else node
        if cls is dict:
            return self.obj(node)
        if cls is list:
            out: list[Any] | None = None
            for i, child in enumerate(node):
                new = self.any(child)
                if new is not child:
                    if out is None:
                        out = list(node)
                    out[i] = new
            return node if out is None else out
        return node


def _squeezed(text: str) -> str:
    if "<" in text:
        text = _TAGS.sub("", text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)  # full-width digits: １３８ -> 138
    return text.translate(_SQUEEZE).upper()


def _may_repeat(blob: bytes, needles: frozenset[str]) -> bool:
    """A cheap necessary condition for :class:`_EchoSealer` to find anything, so that the usual
    case — every value only where it belongs, now encrypted — costs one ``orjson.dumps`` and a
    byte translation instead of a second walk. A string that repeats a value holds the value's
    digits in a row once everything but digits is dropped, and so does the whole document."""
    if _FULL_WIDTH_DIGIT.search(blob):
        return True  # １３８…: only the walk, which normalises, can tell
    digits = blob.translate(None, _NOT_ASCII_DIGIT_BYTES)
    return any(_NOT_DIGITS.sub("", n).encode("ascii") in digits for n in needles)


def _needles(found: Iterable[Found]) -> frozenset[str]:
    """The forms a found value is looked for in other strings: as written and normalised,
    both squeezed and upper-cased (the comparison squeezes and upper-cases the haystack too)."""
    forms: set[str] = set()
    for f in found:
        for form in (_squeezed(f.plaintext), _squeezed(normalise(f.plaintext, kind=f.kind))):
            if len(form) >= _MIN_ECHO_LENGTH:
                forms.add(form)
    return frozenset(forms)


def _names_sensitive_system(blob: bytes) -> bool:
    """Whether the serialised resource names a sensitive system (one C-speed scan)."""
    return any(
        system in _SENSITIVE_SYSTEM_BYTES or system.startswith(_PASSPORT_PREFIX_BYTES)
        for system in _SYSTEM_VALUE.findall(blob)
    )


def seal(resource: dict[str, Any], keyring: Keyring) -> SealResult:
    """The form of ``resource`` to store, and the sensitive values found in it.

    Never mutates ``resource``. With nothing sensitive (and no token-shaped string) it returns
    ``resource`` itself, ``sealed=False``, without a copy — and without a Python walk: one
    ``orjson.dumps`` and a byte scan of its ``"system"`` values decide that.
    """
    blob = orjson.dumps(resource)
    has_token_prefix = _TOKEN_PREFIX_BYTES in blob
    if not has_token_prefix and not _names_sensitive_system(blob):
        return SealResult(resource, (), False)
    sealer = _Sealer(keyring, check_strings=has_token_prefix)
    out = sealer.obj(resource)
    if not sealer.found and not sealer.wrapped:
        # A system's name appeared, but not as an Identifier/ContactPoint with a value.
        return SealResult(resource, (), False)
    needles = _needles(sealer.found)
    if needles and _may_repeat(orjson.dumps(out), needles):
        out = _EchoSealer(keyring, needles).obj(out)
    return SealResult(out, tuple(sealer.found), True)


# ---------------------------------------------------------------------------- reading back


def _open_tokens(node: Any, keyring: Keyring) -> Any:
    """Decrypt every token under ``node`` in place (the caller owns the freshly parsed JSON).
    Replacing a value while iterating is safe: no key is added or removed."""
    if node.__class__ is dict:
        for key, child in node.items():
            if child.__class__ is str:
                if child.startswith(TOKEN_PREFIX):
                    node[key] = keyring.decrypt(child, context=SEALED_CONTEXT)
            elif child.__class__ is dict or child.__class__ is list:
                _open_tokens(child, keyring)
    elif node.__class__ is list:
        for i, child in enumerate(node):
            if child.__class__ is str:
                if child.startswith(TOKEN_PREFIX):
                    node[i] = keyring.decrypt(child, context=SEALED_CONTEXT)
            elif child.__class__ is dict or child.__class__ is list:
                _open_tokens(child, keyring)
    return node


def _substitute_tokens(content: bytes, replace: Callable[[str], bytes]) -> bytes | None:
    """``content`` with every token string replaced by ``replace(token)`` (a JSON string),
    working on the bytes; ``None`` if some ``ylenc:`` is not a whole string value (text that
    mentions it, content not written by orjson), for which the caller parses instead."""
    total = content.count(_TOKEN_PREFIX_BYTES)
    parts: list[bytes] = []
    pos = 0
    for m in _TOKEN_STRING.finditer(content):
        start = m.start()
        if start == 0 or content[start - 1] not in _VALUE_OPENERS:
            return None
        parts += (content[pos:start], replace(m.group(1).decode("ascii")))
        pos = m.end()
    if len(parts) // 2 != total:
        return None
    parts.append(content[pos:])
    return b"".join(parts)


def unseal(content: bytes, keyring: Keyring) -> bytes:
    """The JSON bytes of the resource as written, for stored ``content``.

    Unsealed documents (no ``ylenc:`` anywhere) are returned untouched. Sealed ones are opened
    token by token in the bytes, without parsing: a token always fills a whole JSON string, and
    orjson escapes a string the same way wherever it stands, so splicing in the encoded
    plaintext gives the very bytes ``orjson.dumps`` gave for the resource as written.
    Raises :class:`yilian.kernel.crypto.DecryptionError` for a token that does not open.
    """
    if _TOKEN_PREFIX_BYTES not in content:
        return content

    def opened(token: str) -> bytes:
        return orjson.dumps(keyring.decrypt(token, context=SEALED_CONTEXT))

    spliced = _substitute_tokens(content, opened)
    if spliced is not None:
        return spliced
    return orjson.dumps(_open_tokens(orjson.loads(content), keyring))


def unseal_resource(resource: dict[str, Any], keyring: Keyring) -> dict[str, Any]:
    """Decrypt a parsed stored document *in place* and return it (for callers that parse
    stored content anyway, such as patch)."""
    result: dict[str, Any] = _open_tokens(resource, keyring)
    return result


def _rotate_tokens(node: Any, keyring: Keyring) -> bool:
    changed = False
    pairs: Iterable[tuple[Any, Any]]
    if node.__class__ is dict:
        pairs = node.items()
    elif node.__class__ is list:
        pairs = enumerate(node)
    else:
        return False
    for key, child in pairs:
        if child.__class__ is str:
            if child.startswith(TOKEN_PREFIX) and not keyring.is_current(child):
                node[key] = keyring.reencrypt(child, context=SEALED_CONTEXT)
                changed = True
        elif child.__class__ is dict or child.__class__ is list:
            changed = _rotate_tokens(child, keyring) or changed
    return changed


def reencrypt(content: bytes, keyring: Keyring) -> bytes | None:
    """``content`` with every token under an old key re-encrypted under the current key;
    ``None`` when there is nothing to do (no token, or all already current).

    Tokens wrapped inside other tokens (a client's token-shaped string) are ciphertext to
    this pass and are carried along with their wrapper.
    """
    current = f"{TOKEN_PREFIX}{keyring.current_key_id}:".encode("ascii")
    if content.count(_TOKEN_PREFIX_BYTES) == content.count(current):
        return None

    def rotated(token: str) -> bytes:
        return b'"' + keyring.reencrypt(token, context=SEALED_CONTEXT).encode("ascii") + b'"'

    spliced = _substitute_tokens(content, rotated)
    if spliced is not None:
        return spliced
    doc = orjson.loads(content)
    return orjson.dumps(doc) if _rotate_tokens(doc, keyring) else None


# ---------------------------------------------------------------------------- search text


def scrub_text(text: str, plaintexts: Iterable[str]) -> str:
    """``text`` with every occurrence of the given values removed (replaced by a space).

    For the text indexed for ``_text`` and ``_content``: the values are matched however they
    are written — separators and markup between characters, any case, full-width digits —
    so ``138-0013-8000`` goes as well as ``13800138000``. Non-ASCII text comes back in NFKC.
    """
    return Scrubber(plaintexts).scrub(text)


class Scrubber:
    """:func:`scrub_text` for many texts of one record: the values' forms worked out once."""

    __slots__ = ("forms",)

    def __init__(self, plaintexts: Iterable[str]) -> None:
        forms: set[str] = set()
        for p in plaintexts:
            squeezed = _squeezed(p)
            forms.add(squeezed)
            # The forms the value is also written in: the 18-character successor of a legacy
            # 15-digit ID number, a phone number without its +86 / 0086.
            if len(squeezed) == 15 and squeezed.isdigit():
                forms.add(normalise(squeezed, kind="prc-id"))
            if squeezed.startswith(("86", "0086")):
                forms.add(normalise(squeezed, kind="phone"))
        forms.discard("")
        self.forms = {f.upper() for f in forms}  # compared with upper-cased squeezed text

    def scrub(self, text: str) -> str:
        forms = self.forms
        if not forms:
            return text
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text)
        # A match needs the value's characters in a row once separators and markup are dropped:
        # check that first, so the usual text (which holds none) costs one pass.
        haystack = _squeezed(text)
        if not any(form in haystack for form in forms):
            return text
        return _remove_forms(text, forms)


_SEPARATOR_SET: Final = frozenset(_SEPARATORS)


def _remove_forms(text: str, forms: set[str]) -> str:
    """Replace each run of ``text`` that spells one of ``forms`` (upper case, squeezed) by a space.

    A run may have separators and markup (``<…>`` up to 80 characters) between its characters,
    as :func:`_squeezed` drops them. Done on a squeezed copy that remembers where each of its
    characters came from, rather than with a regular expression built from the values: that
    expression differs for every record, so it was compiled on every write (~5 ms a Patient,
    a third of a create).
    """
    kept: list[str] = []
    origin: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _SEPARATOR_SET:
            i += 1
            continue
        if c == "<":
            close = text.find(">", i + 1, i + 82)
            if close != -1 and text.find("<", i + 1, close) == -1:
                i = close + 1
                continue
        upper = c.upper()
        kept.append(upper if len(upper) == 1 else c)
        origin.append(i)
        i += 1
    squeezed = "".join(kept)
    spans: list[tuple[int, int]] = []
    for form in forms:
        at = squeezed.find(form)
        while at != -1:
            end = at + len(form)
            spans.append((origin[at], origin[end - 1] + 1))
            at = squeezed.find(form, end)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    last = 0
    for start, end in spans:
        if start < last:  # overlaps the previous run: extend it
            if end > last:
                last = end
            continue
        out.append(text[last:start])
        out.append(" ")
        last = end
    out.append(text[last:])
    return "".join(out)


# --- which keyring a database uses -----------------------------------------------------------

_KEYRINGS: weakref.WeakKeyDictionary[Any, Keyring] = weakref.WeakKeyDictionary()


def install(engine: Any, keyring: Keyring) -> None:
    """Seal what is written to, and open what is read from, this database with ``keyring``.

    Called once by the entry point that opens the database (server, CLI); the storage layer
    finds the keyring from the connection it is given.
    """
    _KEYRINGS[engine] = keyring


def keyring_for(engine: Any) -> Keyring | None:
    return _KEYRINGS.get(engine)


def open_content(engine: Any, content: bytes | None) -> bytes | None:
    """Stored bytes as the client sees them (tokens opened), or as they are if nothing is sealed."""
    if content is None or TOKEN_PREFIX.encode() not in content:
        return content
    keyring = _KEYRINGS.get(engine)
    return unseal(content, keyring) if keyring is not None else content
