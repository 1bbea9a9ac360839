"""What went wrong with a message, in the terms an HL7 v2 ACK's ERR segment uses."""

from __future__ import annotations

# HL7 table 0357 (message error condition codes): the ones the intake reports.
ERROR_TEXT: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}


class Hl7Error(Exception):
    """A message the intake cannot store, and where the problem is.

    ``reject`` chooses the ACK code: AR (the message itself is unacceptable: unreadable,
    unsupported type or version — resending it unchanged will never work) or AE (an error in
    the content, or a failure in processing; a corrected or replayed message can succeed).
    """

    def __init__(
        self,
        reason: str,
        *,
        code: str = "207",
        segment: str = "",
        sequence: int | None = None,
        field: int | None = None,
        component: int | None = None,
        reject: bool = False,
        denied: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.segment = segment
        self.sequence = sequence
        self.field = field
        self.component = component
        self.reject = reject
        # Refused by the access decision (unknown or revoked sender, a facility it may not send
        # as, scopes): audited as a denial.
        self.denied = denied

    @property
    def ack_code(self) -> str:
        return "AR" if self.reject else "AE"

    @property
    def location(self) -> str:
        """``PID[1]-3.1`` style, for people reading the dead-letter list."""
        if not self.segment:
            return ""
        text = self.segment + (f"[{self.sequence}]" if self.sequence else "")
        if self.field is not None:
            text += f"-{self.field}"
            if self.component is not None:
                text += f".{self.component}"
        return text

    def __repr__(self) -> str:
        return f"Hl7Error({self.code}, {self.location!r}, {self.reason!r})"
