"""Building the acknowledgement (original mode: AA, AE, AR) for a received message.

The ACK goes back in the sender's own character set and delimiters, addressed to the sender
(MSH-5/6 are the original MSH-3/4), with MSA-2 echoing the original MSH-10 so the sender can
match it. ERR carries both the v2.3 layout (ERR-1, error code and location in one field) and
the v2.5+ one (ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 text) because a region's
systems span those versions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from yilian.exchange.hl7.errors import ERROR_TEXT, Hl7Error
from yilian.exchange.hl7.parse import CHARSETS, Delimiters, Message, escape
from yilian.kernel.ids import new_id

RECEIVING_APPLICATION = "YILIAN"
RECEIVING_FACILITY = "YILIAN"


@dataclass(frozen=True)
class Header:
    """What an ACK needs from the original MSH (read leniently: it may be a broken message)."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    control_id: str = ""
    trigger: str = ""
    processing_id: str = "P"
    version: str = "2.5"
    charset: str | None = None
    codec: str = "utf-8"
    d: Delimiters = field(default_factory=Delimiters)

    @classmethod
    def of(cls, msg: Message) -> Header:
        m = msg.msh
        return cls(
            sending_application=m.raw(3),
            sending_facility=m.raw(4),
            receiving_application=m.raw(5),
            receiving_facility=m.raw(6),
            control_id=m.raw(10),
            trigger=msg.trigger_event,
            processing_id=m.raw(11) or "P",
            version=m.raw(12) or "2.5",
            charset=msg.charset,
            codec=msg.codec,
            d=msg.d,
        )

    @classmethod
    def salvage(cls, raw: bytes) -> Header:
        """Whatever can be read from the first line of bytes that did not parse."""
        body = raw.removeprefix(b"\xef\xbb\xbf")
        line = body.replace(b"\n", b"\r").split(b"\r", 1)[0].decode("latin-1")
        if not line.startswith("MSH") or len(line) < 8:
            return cls()
        sep = line[3]
        f = line.split(sep)
        enc = f[1] if len(f) > 1 else ""
        enc = enc + "^~\\&"[len(enc) :] if len(enc) < 4 else enc
        d = Delimiters(sep, enc[0], enc[1], enc[2], enc[3])

        def at(n: int) -> str:
            return f[n - 1] if len(f) >= n else ""

        charset = at(18).split(d.component)[0] or None
        codec = CHARSETS.get((charset or "").upper(), "utf-8")
        # Without a readable header the ACK still echoes MSH-10 when it can be found.
        return cls(
            at(3),
            at(4),
            at(5),
            at(6),
            at(10),
            at(9).split(d.component)[1] if d.component in at(9) else "",
            at(11) or "P",
            at(12) or "2.5",
            charset,
            codec,
            d,
        )


def timestamp(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%d%H%M%S") + "+0000"


def build_ack(
    header: Header,
    code: str,
    *,
    error: Hl7Error | None = None,
    text: str = "",
    now: dt.datetime | None = None,
    control_id: str | None = None,
) -> bytes:
    """The ACK as bytes ready for MLLP framing (segments ended by CR, in the sender's charset)."""
    d = header.d
    f = d.field
    trigger = header.trigger or ""
    msh = [
        "MSH",
        d.encoding_characters,
        header.receiving_application or RECEIVING_APPLICATION,
        header.receiving_facility or RECEIVING_FACILITY,
        header.sending_application,
        header.sending_facility,
        timestamp(now),
        "",
        f"ACK{d.component}{trigger}{d.component}ACK" if trigger else "ACK",
        control_id or new_id().replace("-", "")[:20],
        header.processing_id,
        header.version,
    ]
    if header.charset:
        msh += ["", "", "", "", "", header.charset]
    message = escape(text or (error.reason if error else ""), d)
    segments = [f.join(msh), f.join(["MSA", code, header.control_id, message[:80]])]
    if error is not None:
        c, s = d.component, d.subcomponent
        err_code = error.code
        err_text = ERROR_TEXT.get(err_code, "")
        location = c.join(
            [
                error.segment,
                str(error.sequence or ""),
                str(error.field or ""),
                "",
                str(error.component or ""),
            ]
        ).rstrip(c)
        eld = c.join(
            [
                error.segment,
                str(error.sequence or ""),
                str(error.field or ""),
                s.join([err_code, err_text, "HL70357"]),
            ]
        )
        segments.append(
            f.join(
                [
                    "ERR",
                    eld,
                    location,
                    c.join([err_code, err_text, "HL70357"]),
                    "E",
                    "",
                    "",
                    "",
                    escape(error.reason, d),
                ]
            )
        )
    return ("\r".join(segments) + "\r").encode(header.codec, errors="replace")
