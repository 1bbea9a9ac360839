"""Which HL7 senders (MSH-3/MSH-4) a client's registration covers."""

from __future__ import annotations

import pytest

from yilian.kernel.errors import YilianError
from yilian.security.client_certs import check_senders, sender_allowed


@pytest.mark.parametrize(
    ("registered", "application", "facility", "allowed"),
    [
        (("HOSPA",), "HIS", "HOSPA", True),
        (("HOSPA",), "LIS", "HOSPA", True),  # a facility entry covers every application there
        (("HOSPA",), "HIS", "HOSPB", False),
        (("LIS|HOSPA",), "LIS", "HOSPA", True),
        (("LIS|HOSPA",), "HIS", "HOSPA", False),
        # HD: namespace id, universal id (an OID) or the whole field
        (("HOSPA",), "HIS", "HOSPA^1.2.156.112604.1^ISO", True),
        (("1.2.156.112604.1",), "HIS", "HOSPA^1.2.156.112604.1^ISO", True),
        (("1.2.156.112604.1",), "HIS", "HOSPA^1.2.156.112604.2^ISO", False),
        (("LIS|HOSPA",), "LIS^2.16.1^ISO", "HOSPA", True),
        (("*",), "ANY", "WHERE", True),
        ((), "HIS", "HOSPA", False),
        (("HOSPA",), "HIS", "", False),
    ],
)
def test_sender_allowed(registered: tuple[str, ...], application: str, facility: str, allowed: bool) -> None:
    assert sender_allowed(registered, application, facility) is allowed


def test_any_sender_is_for_the_operator_only() -> None:
    assert check_senders(["*"], operator=True) == ("*",)
    with pytest.raises(YilianError, match="platform-operator"):
        check_senders(["*"], operator=False)


def test_senders_are_checked_and_normalised() -> None:
    assert check_senders([" HOSPA ", "LIS | HOSPA", "HOSPA", ""], operator=False) == ("HOSPA", "LIS|HOSPA")
    for bad in ("LIS|", "A|B|C"):
        with pytest.raises(YilianError):
            check_senders([bad], operator=False)
