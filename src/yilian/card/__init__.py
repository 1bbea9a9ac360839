"""The resident health card (居民健康卡): issue, activate, report lost, replace, suspend, resume,
revoke, resolve.

Other systems use :func:`require_usable` (payments: is this card usable now, and whose is it?)
and :func:`card_counts` (indicators). The card number rules are in :mod:`yilian.card.model` and
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
    BatchReport,
    CardCounts,
    CardEvent,
    CardView,
    Resolution,
    RowOutcome,
    activate_card,
    card_counts,
    card_history,
    get_card,
    issue_card,
    issue_from_register,
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
    "REGISTER_COLUMNS",
    "BatchReport",
    "CardCounts",
    "CardEvent",
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
    "replace_card",
    "report_lost",
    "require_usable",
    "resolve",
    "resume_card",
    "revoke_card",
    "suspend_card",
    "unusable_reason",
]
