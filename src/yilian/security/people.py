"""People: staff and residents who sign in (argon2id passwords, TOTP for staff, lockout), and
their sessions. A signed-in person acts as a :class:`Principal` like a system client does."""

from __future__ import annotations

import hashlib
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
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.naming import PRC_RESIDENT_ID
from yilian.security.principal import RESIDENT, STAFF, Principal
from yilian.security.scopes import parse_scopes
from yilian.security.tables import session, user_account

MAX_FAILURES = 5
LOCKOUT_S = 15 * 60
SESSION_IDLE_S = 30 * 60
SESSION_ABSOLUTE_S = 12 * 3600
MIN_PASSWORD = 10
STAFF_SCOPES = "user/*.cruds"
RESIDENT_SCOPES = "patient/*.rs"
_hasher = PasswordHasher()
US = 1_000_000


@dataclass(frozen=True)
class User:
    user_id: str
    username: str
    kind: str
    org_id: str | None
    patient_id: str | None
    scopes: str
    has_totp: bool


def _now() -> int:
    return instant_to_us(clock.now())


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
            totp_secret=totp,
            failed_attempts=0,
            locked_until=None,
            active=True,
            created=_now(),
        )
    )
    user = User(user_id, username, kind, org_id, patient_id, scopes or "", totp is not None)
    uri = pyotp.TOTP(totp).provisioning_uri(name=username, issuer_name="Yilian 医联") if totp else None
    return user, uri


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
    generic = YilianError(Category.UNAUTHENTICATED, "wrong user name, password or one-time code")
    if row is None or not row.active:
        _hasher.hash(password)  # same time as a real check: no hint that the name does not exist
        return generic
    now = _now()
    if row.locked_until and row.locked_until > now:
        return YilianError(
            Category.UNAUTHENTICATED, "the account is locked after repeated failures; try again later"
        )
    ok = True
    try:
        _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        ok = False
    if ok and row.totp_secret:
        ok = bool(otp) and pyotp.TOTP(row.totp_secret).verify(otp or "", valid_window=1)
    if not ok:
        failures = int(row.failed_attempts) + 1
        locked = now + LOCKOUT_S * US if failures >= MAX_FAILURES else None
        uow.conn.execute(
            update(user_account)
            .where(user_account.c.user_id == row.user_id)
            .values(failed_attempts=0 if locked else failures, locked_until=locked)
        )
        return generic
    uow.conn.execute(
        update(user_account)
        .where(user_account.c.user_id == row.user_id)
        .values(failed_attempts=0, locked_until=None)
    )
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
