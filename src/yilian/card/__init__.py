"""The resident health card (居民健康卡): issue, activate, report lost, replace, suspend, resume,
revoke, resolve.

Other systems use :func:`require_usable` (payments: is this card usable now, and whose is it?)
and :func:`card_counts` (indicators). :class:`CardLookupGuard` is installed in the platform's FHIR
settings: a search, ``$match``, PIX or ``Person`` lookup by a lost, suspended, replaced or
revoked card's number is refused with the card's state. The card number rules are in :mod:`yilian.card.model` and
docs/identifiers.md.
"""

from yilian.card.model import (
    REGISTER_COLUMNS,
    CardNumber,
    CardRefusal,
    CardStatus,
    Refusal,
    RegisterRow,
    mask,
    parse_card_number,
    read_register,
)
from yilian.card.service import (
    REFUSED_ON_LOOKUP,
    BatchReport,
    CardCounts,
    CardEvent,
    CardLookupGuard,
    CardView,
    Resolution,
    RowOutcome,
    activate_card,
    card_counts,
    card_history,
    get_card,
    issue_card,
    issue_from_register,
    reencrypt_number,
    replace_card,
    report_lost,
    require_usable,
    resolve,
    resume_card,
    revoke_card,
    suspend_card,
    unusable_reason,
)

__all__ = [
    "REFUSED_ON_LOOKUP",
    "REGISTER_COLUMNS",
    "BatchReport",
    "CardCounts",
    "CardEvent",
    "CardLookupGuard",
    "CardNumber",
    "CardRefusal",
    "CardStatus",
    "CardView",
    "Refusal",
    "RegisterRow",
    "Resolution",
    "RowOutcome",
    "activate_card",
    "card_counts",
    "card_history",
    "get_card",
    "issue_card",
    "issue_from_register",
    "mask",
    "parse_card_number",
    "read_register",
    "reencrypt_number",
    "replace_card",
    "report_lost",
    "require_usable",
    "resolve",
    "resume_card",
    "revoke_card",
    "suspend_card",
    "unusable_reason",
]
