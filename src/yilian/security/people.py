"""People: staff and residents who sign in (argon2id passwords, TOTP for staff, lockout), and
their sessions. A signed-in person acts as a :class:`Principal` like a system client does.

A staff member's TOTP secret is sealed at rest with the deployment's keyring (as ID numbers
are), together with the last time step a code was accepted for: a code is accepted once, and
never one from an earlier step than the last one used (RFC 6238 §5.2). Secrets stored in plain
text by earlier versions are sealed by :func:`seal_totp_secrets` when the server starts (and by
``yilian keys reencrypt``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update

from yilian.db import Database, UnitOfWork
from yilian.fhir.search.values import instant_to_us
from yilian.fhir.store.repository import get_current
from yilian.kernel import clock
from yilian.kernel.crypto import Keyring, is_token
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.naming import PRC_RESIDENT_ID
from yilian.security.keys import required_keyring
from yilian.security.principal import RESIDENT, STAFF, Principal
from yilian.security.scopes import parse_scopes
from yilian.security.tables import access_token, auth_code, session, user_account

MAX_FAILURES = 5
LOCKOUT_S = 15 * 60
SESSION_IDLE_S = 30 * 60
SESSION_ABSOLUTE_S = 12 * 3600
MIN_PASSWORD = 10
STAFF_SCOPES = "user/*.cruds"
RESIDENT_SCOPES = "patient/*.rs"
_hasher = PasswordHasher()
US = 1_000_000
TOTP_CONTEXT = "auth/totp-secret"  # what a sealed TOTP secret is for (bound into its token)
TOTP_STEP_S = 30


@dataclass(frozen=True)
class User:
    user_id: str
    username: str
    kind: str
    org_id: str | None
    patient_id: str | None
    scopes: str
    has_totp: bool
    active: bool = True
    locked_until: int | None = None  # µs since the epoch, while locked out
    display_name: str | None = None


def _now() -> int:
    return instant_to_us(clock.now())


def _keyring(uow: UnitOfWork) -> Keyring:
    return required_keyring(uow.conn.engine, "staff one-time-code secrets cannot be stored or checked")


def _seal_totp(keyring: Keyring, secret: str, last_step: int | None) -> str:
    doc = orjson.dumps({"secret": secret, "last_step": last_step}).decode()
    return keyring.encrypt(doc, context=TOTP_CONTEXT)


def _open_totp(keyring: Keyring, stored: str) -> tuple[str, int | None]:
    """(secret, last step a code was accepted for) of a stored value, sealed or legacy plain."""
    if not is_token(stored):
        return stored, None  # stored plain before secrets were sealed
    text = keyring.decrypt(stored, context=TOTP_CONTEXT)
    if not text.startswith("{"):
        return text, None
    doc = orjson.loads(text)
    last = doc.get("last_step")
    return str(doc["secret"]), None if last is None else int(last)


def _code_step(secret: str, otp: str | None, now_s: float) -> int | None:
    """The time step ``otp`` is the code of, within one step of now (clock drift); None if none."""
    code = (otp or "").strip()
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(now_s) // TOTP_STEP_S
    for step in (now_step, now_step - 1, now_step + 1):
        if hmac.compare_digest(totp.at(step * TOTP_STEP_S), code):
            return step
    return None


def _user(row: Any) -> User:
    return User(
        row.user_id,
        row.username,
        row.kind,
        row.org_id,
        row.patient_id,
        row.scopes,
        row.totp_secret is not None,
        bool(row.active),
        row.locked_until if row.locked_until and row.locked_until > _now() else None,
        row.display_name,
    )


def add_user(
    uow: UnitOfWork,
    *,
    username: str,
    kind: str,
    password: str,
    org_id: str | None = None,
    patient_id: str | None = None,
    display_name: str | None = None,
    scopes: str | None = None,
) -> tuple[User, str | None]:
    """Create an account. Staff get a TOTP secret (returned once, as an otpauth:// URI)."""
    if kind not in (STAFF, RESIDENT):
        raise YilianError(Category.INVALID, "a user is staff or resident")
    if len(password) < MIN_PASSWORD:
        raise YilianError(Category.INVALID, f"passwords have at least {MIN_PASSWORD} characters")
    if kind == RESIDENT:
        if not patient_id:
            raise YilianError(Category.INVALID, "a resident account belongs to a Patient: give --patient")
        stored = get_current(uow.conn, "Patient", patient_id)
        if stored is None or stored.deleted:
            raise YilianError(Category.NOT_FOUND, f"Patient/{patient_id} does not exist")
    if org_id is not None:
        org = get_current(uow.conn, "Organization", org_id)
        if org is None or org.deleted:
            raise YilianError(Category.NOT_FOUND, f"Organization/{org_id} does not exist")
    taken = uow.conn.execute(
        select(user_account.c.user_id).where(user_account.c.username == username)
    ).first()
    if taken is not None:
        raise YilianError(Category.CONFLICT, f"user {username} already exists")
    parse_scopes(scopes or (STAFF_SCOPES if kind == STAFF else RESIDENT_SCOPES))
    totp = pyotp.random_base32() if kind == STAFF else None
    sealed = _seal_totp(_keyring(uow), totp, None) if totp is not None else None
    user_id = "u-" + secrets.token_hex(6)
    uow.conn.execute(
        user_account.insert().values(
            user_id=user_id,
            username=username,
            display_name=display_name,
            kind=kind,
            org_id=org_id,
            patient_id=patient_id,
            scopes=scopes or (STAFF_SCOPES if kind == STAFF else RESIDENT_SCOPES),
            password_hash=_hasher.hash(password),
            totp_secret=sealed,
            failed_attempts=0,
            locked_until=None,
            active=True,
            created=_now(),
        )
    )
    user = User(user_id, username, kind, org_id, patient_id, scopes or "", totp is not None)
    uri = pyotp.TOTP(totp).provisioning_uri(name=username, issuer_name="Yilian 医联") if totp else None
    return user, uri


class LoginRefused(YilianError):
    """A refused sign-in. Everyone is told the same (``message``); why it was refused (``why``) is
    for the audit log alone."""

    def __init__(self, why: str) -> None:
        super().__init__(
            Category.UNAUTHENTICATED,
            f"wrong user name, password or one-time code (after {MAX_FAILURES} failures in a row an "
            f"account is locked for {LOCKOUT_S // 60} minutes)",
        )
        self.why = why


def authenticate(uow: UnitOfWork, *, username: str, password: str, otp: str | None) -> Principal:
    """Check a sign-in, raising on failure. The failure count is written in ``uow`` — callers
    that raise roll it back: use :func:`attempt_login` where lockout must hold."""
    result = attempt_login(uow, username=username, password=password, otp=otp)
    if isinstance(result, YilianError):
        raise result
    return result


def attempt_login(
    uow: UnitOfWork, *, username: str, password: str, otp: str | None
) -> Principal | YilianError:
    """Check a sign-in; count failures and lock the account after too many.

    Returns the error instead of raising it, so that the caller commits the failure count.
    """
    row = uow.conn.execute(select(user_account).where(user_account.c.username == username)).first()
    if row is None or not row.active:
        _hasher.hash(password)  # same time as a real check: no hint that the name does not exist
        return LoginRefused("no active account by that name")
    now = _now()
    if row.locked_until and row.locked_until > now:
        # The same answer, in the same time, as a wrong password: "locked" would tell whoever is
        # guessing names that this one exists (the message says when accounts lock instead).
        _hasher.hash(password)
        return LoginRefused("the account is locked after repeated failures")
    ok = True
    try:
        _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        ok = False
    step = None
    if ok and row.totp_secret:
        keyring = _keyring(uow)
        secret, last_step = _open_totp(keyring, row.totp_secret)
        step = _code_step(secret, otp, clock.now().timestamp())
        # A code is good once: not again, nor one from before the last accepted.
        ok = step is not None and (last_step is None or step > last_step)
    if not ok:
        failures = int(row.failed_attempts) + 1
        locked = now + LOCKOUT_S * US if failures >= MAX_FAILURES else None
        uow.conn.execute(
            update(user_account)
            .where(user_account.c.user_id == row.user_id)
            .values(failed_attempts=0 if locked else failures, locked_until=locked)
        )
        return LoginRefused(
            "wrong password or one-time code" + ("; the account is now locked" if locked else "")
        )
    values: dict[str, Any] = {"failed_attempts": 0, "locked_until": None}
    if step is not None:
        values["totp_secret"] = _seal_totp(keyring, secret, step)
    # Compare-and-set on the stored secret: of two sign-ins racing with one code, one wins.
    done = uow.conn.execute(
        update(user_account)
        .where(user_account.c.user_id == row.user_id, user_account.c.totp_secret == row.totp_secret)
        .values(**values)
        if step is not None
        else update(user_account).where(user_account.c.user_id == row.user_id).values(**values)
    )
    if done.rowcount != 1:
        return LoginRefused("the one-time code was used by a concurrent sign-in")
    return principal_of(uow, row)


def principal_of(uow: UnitOfWork, row: Any) -> Principal:
    kind = row.kind
    keys = None
    if kind == RESIDENT:
        keys = frozenset({row.patient_id, *children_of(uow, row.patient_id)})
    return Principal(
        kind=kind,
        subject=row.username,
        scopes=parse_scopes(row.scopes),
        org_id=row.org_id,
        user_id=row.user_id,
        patient_keys=keys,
    )


def children_of(uow: UnitOfWork, patient_id: str) -> set[str]:
    """Patients for whom this resident is recorded as a parent (RelatedPerson with their ID number).

    A link opens a child's record to a resident, so it counts only when it cannot have been
    forged: written by an institution (which needed a reason for the child to write into the
    child's record) or by the platform operator — never by a resident — and plausible: the
    child is under 18, and the resident was born at least 12 years before the child.
    """
    import datetime as dt

    from yilian.fhir.interactions.context import FhirContext
    from yilian.fhir.interactions.search import find
    from yilian.security.grants import writer_of
    from yilian.security.principal import OPERATOR_OWNER

    stored = get_current(uow.conn, "Patient", patient_id)
    if stored is None or stored.deleted or stored.content is None:
        return set()
    me = orjson.loads(stored.content)
    ids = [
        i.get("value")
        for i in me.get("identifier") or []
        if isinstance(i, dict) and i.get("system") == PRC_RESIDENT_ID and i.get("value")
    ]
    today = clock.now().date()

    def born(patient: dict[str, Any], number: str | None = None) -> dt.date | None:
        text = patient.get("birthDate")
        if isinstance(text, str) and len(text) == 10:
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                return None
        if number and len(number) == 18 and number[6:14].isdigit():  # GB 11643: YYYYMMDD at 7-14
            try:
                return dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
            except ValueError:
                return None
        return None

    def plausible(parent: dt.date | None, child_id: str) -> bool:
        child = get_current(uow.conn, "Patient", child_id)
        if parent is None or child is None or child.deleted or child.content is None:
            return False
        birth = born(orjson.loads(child.content))
        if birth is None or birth > today:
            return False
        age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
        older = (birth.year - 12, birth.month, birth.day) >= (parent.year, parent.month, parent.day)
        return age < 18 and older

    out: set[str] = set()
    for number in ids:
        parent = born(me, number)
        for rp in find(
            uow, FhirContext(), "RelatedPerson", f"identifier={PRC_RESIDENT_ID}|{number}", limit=20
        ):
            if rp.content is None:
                continue
            writer = writer_of(uow, "RelatedPerson", rp.res_id) or ""
            if writer != OPERATOR_OWNER and not writer.startswith("org:"):
                continue
            link = orjson.loads(rp.content)
            ref = (link.get("patient") or {}).get("reference", "")
            rel = [c.get("code") for r in link.get("relationship") or [] for c in r.get("coding") or []]
            if not ref.startswith("Patient/") or not any(
                code in ("MTH", "FTH", "PRN", "MTHF", "FTHF", "GRD") for code in rel
            ):
                continue
            child_id = ref.split("/", 1)[1]
            if child_id != patient_id and plausible(parent, child_id):
                out.add(child_id)
    return out


# --- sessions --------------------------------------------------------------------------------


def start_session(uow: UnitOfWork, principal: Principal) -> str:
    token = secrets.token_urlsafe(32)
    now = _now()
    uow.conn.execute(
        session.insert().values(
            session_hash=hashlib.sha256(token.encode()).hexdigest(),
            user_id=principal.user_id,
            created=now,
            last_seen=now,
            expires=now + SESSION_ABSOLUTE_S * US,
        )
    )
    return token


def session_principal(db: Database, token: str) -> Principal | None:
    """The signed-in person behind a session cookie; sessions end after 30 idle minutes or 12 hours."""
    key = hashlib.sha256(token.encode()).hexdigest()
    now = _now()
    with UnitOfWork(db, write=True) as uow:
        row = uow.conn.execute(select(session).where(session.c.session_hash == key)).first()
        if row is None or row.expires < now or row.last_seen + SESSION_IDLE_S * US < now:
            if row is not None:
                uow.conn.execute(delete(session).where(session.c.session_hash == key))
            return None
        user = uow.conn.execute(select(user_account).where(user_account.c.user_id == row.user_id)).first()
        if user is None or not user.active:
            return None
        uow.conn.execute(update(session).where(session.c.session_hash == key).values(last_seen=now))
        return principal_of(uow, user)


def end_session(uow: UnitOfWork, token: str) -> None:
    uow.conn.execute(
        delete(session).where(session.c.session_hash == hashlib.sha256(token.encode()).hexdigest())
    )


# --- managing accounts -----------------------------------------------------------------------


def list_users(uow: UnitOfWork) -> list[User]:
    rows = uow.conn.execute(select(user_account).order_by(user_account.c.username))
    return [_user(row) for row in rows]


def _account(uow: UnitOfWork, username: str) -> Any:
    row = uow.conn.execute(select(user_account).where(user_account.c.username == username)).first()
    if row is None:
        raise YilianError(Category.NOT_FOUND, f"no user {username}")
    return row


def revoke_user(uow: UnitOfWork, username: str) -> User:
    """Deactivate an account: no new sign-in, and its sessions, tokens and pending codes end now."""
    row = _account(uow, username)
    uow.conn.execute(update(user_account).where(user_account.c.user_id == row.user_id).values(active=False))
    for table in (session, access_token, auth_code):
        uow.conn.execute(delete(table).where(table.c.user_id == row.user_id))
    return _user(_account(uow, username))


def unlock_user(uow: UnitOfWork, username: str) -> User:
    """Clear a lockout after repeated failures (the person signs in again at once)."""
    row = _account(uow, username)
    uow.conn.execute(
        update(user_account)
        .where(user_account.c.user_id == row.user_id)
        .values(failed_attempts=0, locked_until=None)
    )
    return _user(_account(uow, username))


def totp_secret_of(uow: UnitOfWork, username: str) -> str | None:
    """A staff member's TOTP secret in the clear (the demo prints its synthetic one)."""
    row = uow.conn.execute(
        select(user_account.c.totp_secret).where(user_account.c.username == username)
    ).first()
    if row is None or row.totp_secret is None:
        return None
    return _open_totp(_keyring(uow), row.totp_secret)[0]


def seal_totp_secrets(uow: UnitOfWork) -> int:
    """Seal the TOTP secrets earlier versions stored in plain text; how many were sealed.

    Run when the server starts; safe beside running servers (each value is replaced only if it
    is still the plain one read) and cheap when there is nothing left to do.
    """
    keyring = None
    sealed = 0
    rows = uow.conn.execute(
        select(user_account.c.user_id, user_account.c.totp_secret).where(
            user_account.c.totp_secret.is_not(None), user_account.c.totp_secret.not_like("ylenc:%")
        )
    ).all()
    for row in rows:
        keyring = keyring or _keyring(uow)
        sealed += uow.conn.execute(
            update(user_account)
            .where(user_account.c.user_id == row.user_id, user_account.c.totp_secret == row.totp_secret)
            .values(totp_secret=_seal_totp(keyring, row.totp_secret, None))
        ).rowcount
    return sealed


def reencrypt_totp(keyring: Keyring, stored: str | None) -> str | None:
    """A stored TOTP secret under the current key (``yilian keys reencrypt``), a plain one
    sealed; None when it needs nothing."""
    if stored is None or (is_token(stored) and keyring.is_current(stored)):
        return None
    if not is_token(stored):
        return _seal_totp(keyring, stored, None)
    return keyring.reencrypt(stored, context=TOTP_CONTEXT)
