"""Storage of the security system: clients, tokens, people, sessions, access grants, consent rules."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, UniqueConstraint

from yilian.db.schema import metadata

client = Table(
    "auth_client",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("org_id", String(64), nullable=True),  # None: the platform operator
    Column("scopes", Text, nullable=False),
    Column("secret_hash", String(128), nullable=True),  # for client_secret authentication
    Column("jwks", Text, nullable=True),  # public keys (JWKS JSON) for private_key_jwt
    Column("redirect_uris", Text, nullable=True),  # space-separated, for people signing in through an app
    Column("active", Boolean, nullable=False, default=True),
    Column("created", BigInteger, nullable=False),
    # HL7 v2 senders (MSH-4 facility, or "MSH-3|MSH-4") this client may send messages as over
    # MLLP, as a JSON list; None or empty: none. "*" (platform-operator clients only): any.
    Column("hl7_senders", Text, nullable=True),
)

# Client certificates bound to a client (mutual TLS on the MLLP listener), by the SHA-256 of
# the certificate's DER bytes: a certificate is pinned, not merely its subject, so another
# certificate the same CA issues with the same name is not taken for it. Several per client,
# so a certificate can be renewed before the old one expires.
client_cert = Table(
    "auth_client_cert",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("not_after", BigInteger, nullable=False),  # microseconds since the epoch
    Column("added", BigInteger, nullable=False),
    Index("ix_auth_client_cert_client", "client_id"),
)

access_token = Table(
    "auth_token",
    metadata,
    Column(
        "token_hash", String(64), primary_key=True
    ),  # SHA-256 of the bearer token; the token itself is never stored
    Column("client_id", String(64), nullable=True),
    Column("user_id", String(64), nullable=True),
    Column("kind", String(16), nullable=False),  # system | staff | resident
    Column("org_id", String(64), nullable=True),
    Column("scopes", Text, nullable=False),
    Column("patient_keys", Text, nullable=True),  # residents: space-separated patient ids
    Column("expires", BigInteger, nullable=False),
    Column("created", BigInteger, nullable=False),
    Index("ix_auth_token_expires", "expires"),
)

# Every client assertion's jti, kept until it expires: a replayed assertion is refused.
assertion_jti = Table(
    "auth_assertion_jti",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires", BigInteger, nullable=False),
)

user_account = Table(
    "auth_user",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("username", String(128), nullable=False),
    Column("display_name", Text, nullable=True),
    Column("kind", String(16), nullable=False),  # staff | resident
    Column("org_id", String(64), nullable=True),  # staff: their institution; None = platform operator staff
    Column("patient_id", String(64), nullable=True),  # residents: their Patient
    Column("scopes", Text, nullable=False),
    Column("password_hash", Text, nullable=False),  # argon2id
    # Staff second factor: the secret and the last time step a code was accepted for, sealed
    # with the keyring (security.people); plain base32 only in rows from before sealing.
    Column("totp_secret", Text, nullable=True),
    Column("failed_attempts", Integer, nullable=False, default=0),
    Column("locked_until", BigInteger, nullable=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("created", BigInteger, nullable=False),
    UniqueConstraint("username"),
)

session = Table(
    "auth_session",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
)

# Authorization codes of the SMART App Launch (authorization code + PKCE), used once, briefly valid.
auth_code = Table(
    "auth_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scopes", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("expires", BigInteger, nullable=False),
)

# Why an institution may see a patient's record: derived from the record itself (an encounter
# there, a referral or consultation to it, a family-doctor contract, authorship), one row per
# source resource so that changing or deleting the source changes the grant.
access_grant = Table(
    "access_grant",
    metadata,
    Column("patient_key", String(64), primary_key=True),
    Column("org_id", String(64), primary_key=True),
    Column(
        "reason", String(32), primary_key=True
    ),  # treatment | referral | consultation | family-doctor | author
    Column("source_type", String(64), primary_key=True),
    Column("source_id", String(64), primary_key=True),
    Index("ix_access_grant_org_patient", "org_id", "patient_key"),
)

# A resident's decisions about who may see their record (from FHIR Consent resources).
consent_rule = Table(
    "consent_rule",
    metadata,
    Column("consent_id", String(64), primary_key=True),
    Column("patient_key", String(64), primary_key=True),
    Column("org_id", String(64), primary_key=True),  # "*" = every institution
    Column("effect", String(8), nullable=False),  # permit | deny
    Index("ix_consent_rule_org", "org_id", "effect", "patient_key"),
    Index("ix_consent_rule_patient", "patient_key"),
)

ALL_ORGS = "*"

# Resource types whose resources only their owner (the institution, or the resident, that
# created them) and the platform operator may see: they are about the owner, not about a
# patient, and can hold the owner's secrets (a Subscription's endpoint headers) or tell what it
# watches (its criteria can name patients).
OWNED_TYPES: frozenset[str] = frozenset({"Subscription", "PaymentReconciliation"})

resource_owner = Table(
    "resource_owner",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    # "org:<Organization id>", "who:<kind>:<subject>" for a resident, or "operator".
    Column("owner", String(200), nullable=False),
    Index("ix_resource_owner_owner", "owner", "res_type"),
)
