"""Reading an HL7 v2 message from the bytes a sender put on the wire.

Senders differ in what they send: a UTF-8 byte-order mark before ``MSH``, segments ended by CR
(the standard), LF or CRLF, a character set named in MSH-18 (UTF-8, GB 18030/GBK from Chinese
HIS, ASCII, ISO 8859-1) or none at all. Everything is accepted here; what a message *means* is
left to ``to_fhir``. Field values stay escaped until they are read, so a ``\\F\\`` in a name can
never be taken for a field separator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from yilian.exchange.hl7.errors import Hl7Error

BOM = b"\xef\xbb\xbf"

# MSH-18 values (HL7 table 0211) and the spellings Chinese HIS vendors use, as Python codecs.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "US-ASCII": "ascii",
    "8859/1": "latin-1",
    "ISO-8859-1": "latin-1",
    "ISO8859-1": "latin-1",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "UNICODE": "utf-8",
    "GB 18030-2000": "gb18030",
    "GB18030": "gb18030",
    "GB 18030": "gb18030",
    "GB18030-2000": "gb18030",
    "GB18030-2005": "gb18030",
    "GBK": "gbk",
    "CP936": "gbk",
    "GB2312": "gb18030",  # GB 18030 is a superset; decoding as it never loses a character
    "GB 2312": "gb18030",
    "UNICODE UTF-16": "utf-16",
}

_SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent


def charset_of(raw: bytes) -> tuple[str, str | None]:
    """The Python codec for ``raw`` and the MSH-18 value it was chosen from (None when absent).

    MSH is plain ASCII up to MSH-18 in every charset we accept (GB 18030 and UTF-8 keep ASCII
    bytes as they are), so the header is read as Latin-1 before the message is decoded.
    Without MSH-18 the message is taken as UTF-8 when it decodes as such, else as GB 18030: a
    Chinese HIS that omits MSH-18 almost always sends GBK, and no valid UTF-8 text is misread
    that way.
    """
    body = raw[len(BOM) :] if raw.startswith(BOM) else raw
    header = re.split(rb"\r|\n", body, maxsplit=1)[0].decode("latin-1")
    if not header.startswith("MSH") or len(header) < 8:
        raise Hl7Error(
            "the message does not start with an MSH segment",
            code="100",
            segment="MSH",
            sequence=1,
            reject=True,
        )
    sep = header[3]
    fields = header.split(sep)
    declared = fields[17].strip() if len(fields) > 17 else ""
    declared = declared.split(header[4] if len(header) > 4 else "^")[0].strip()
    if raw.startswith(BOM):
        return "utf-8", declared or None
    if declared:
        codec = CHARSETS.get(declared.upper())
        if codec is None:
            raise Hl7Error(
                f"MSH-18 character set {declared!r} is not supported (use UNICODE UTF-8, GB 18030-2000, ASCII or 8859/1)",
                code="203",
                segment="MSH",
                sequence=1,
                field=18,
                reject=True,
            )
        return codec, declared
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "gb18030", None
    return "utf-8", None


def decode(raw: bytes) -> tuple[str, str, str | None]:
    """The message text, the codec it was decoded with, and the declared MSH-18."""
    codec, declared = charset_of(raw)
    body = raw[len(BOM) :] if raw.startswith(BOM) else raw
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        raise Hl7Error(
            f"the message is not valid {declared or codec} at byte {exc.start}",
            code="102",
            segment="MSH",
            sequence=1,
            field=18,
            reject=True,
        ) from None
    return text.lstrip("\ufeff"), codec, declared


# --------------------------------------------------------------------------- escapes


def unescape(value: str, d: Delimiters, codec: str = "utf-8") -> str:
    """Resolve HL7 escape sequences in one field value (a leaf: no delimiters left to split on).

    ``\\X..\\`` carries bytes in the message's own character set, so a GBK sender's
    ``\\XB0A1\\`` is 啊; formatting escapes (``\\H\\``, ``\\N\\``) are dropped and ``\\.br\\`` becomes a
    line break, since FHIR strings carry no highlighting.
    """
    esc = d.escape
    if esc not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = value.find(esc, i + 1)
        if end < 0:  # a lone escape character is taken literally
            out.append(value[i:])
            break
        seq = value[i + 1 : end]
        i = end + 1
        if seq == "F":
            out.append(d.field)
        elif seq == "S":
            out.append(d.component)
        elif seq == "T":
            out.append(d.subcomponent)
        elif seq == "R":
            out.append(d.repetition)
        elif seq == "E":
            out.append(d.escape)
        elif seq == "P":
            out.append("#")  # truncation character (v2.7)
        elif seq.startswith("X") and len(seq) % 2 == 1:
            try:
                out.append(bytes.fromhex(seq[1:]).decode(codec if codec != "ascii" else "latin-1"))
            except (ValueError, UnicodeDecodeError):
                out.append(esc + seq + esc)
        elif seq in (".br", ".sp"):
            out.append("\n")
        elif seq in ("H", "N") or seq.startswith(("C", "M", "Z", ".")):
            continue
        else:
            out.append(esc + seq + esc)
    return "".join(out)


def escape(value: str, d: Delimiters = Delimiters()) -> str:
    """The inverse of :func:`unescape` for text we write into a message (ACK reasons)."""
    out = value.replace(d.escape, f"{d.escape}E{d.escape}")
    for ch, code in ((d.field, "F"), (d.component, "S"), (d.subcomponent, "T"), (d.repetition, "R")):
        out = out.replace(ch, f"{d.escape}{code}{d.escape}")
    return out.replace("\r", " ").replace("\n", f"{d.escape}.br{d.escape}")


# --------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class Rep:
    """One repetition of a field: components of subcomponents, read unescaped, 1-based."""

    raw: str
    d: Delimiters
    codec: str

    def c(self, component: int = 1, sub: int = 1) -> str:
        comps = self.raw.split(self.d.component)
        if component > len(comps):
            return ""
        subs = comps[component - 1].split(self.d.subcomponent)
        if sub > len(subs) or subs[sub - 1] == '""':
            # ``""`` is HL7's explicit null ("delete this value"): for a snapshot such as a PID,
            # which replaces what was stored, that is the same as leaving the value out.
            return ""
        return unescape(subs[sub - 1], self.d, self.codec).strip()

    def subs(self, component: int) -> list[str]:
        comps = self.raw.split(self.d.component)
        if component > len(comps):
            return []
        return [unescape(s, self.d, self.codec) for s in comps[component - 1].split(self.d.subcomponent)]

    @property
    def empty(self) -> bool:
        return not self.raw.strip(self.d.component + self.d.subcomponent + " ") or self.raw == '""'


@dataclass
class Segment:
    id: str
    fields: list[str]  # fields[0] is the segment id; for MSH, fields[1] is the field separator
    d: Delimiters
    codec: str
    sequence: int  # 1-based position of this segment among those with the same id

    def raw(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[Rep]:
        raw = self.raw(n)
        if not raw:
            return []
        return [Rep(r, self.d, self.codec) for r in raw.split(self.d.repetition) if r]

    def rep(self, n: int, index: int = 0) -> Rep:
        reps = self.reps(n)
        return reps[index] if index < len(reps) else Rep("", self.d, self.codec)

    def get(self, n: int, component: int = 1, sub: int = 1) -> str:
        return self.rep(n).c(component, sub)

    def text(self, n: int) -> str:
        """The whole first repetition as readable text (components joined by spaces)."""
        r = self.rep(n)
        return " ".join(x for x in (r.c(i) for i in range(1, r.raw.count(self.d.component) + 2)) if x)


@dataclass
class Message:
    segments: list[Segment]
    d: Delimiters
    codec: str
    charset: str | None
    text: str = field(repr=False)

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def all(self, seg_id: str) -> list[Segment]:
        return [s for s in self.segments if s.id == seg_id]

    def first(self, seg_id: str) -> Segment | None:
        return next((s for s in self.segments if s.id == seg_id), None)

    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @property
    def sending_application(self) -> str:
        return self.msh.get(3)

    @property
    def sending_facility(self) -> str:
        return self.msh.get(4)

    @property
    def message_code(self) -> str:
        return self.msh.get(9, 1).upper()

    @property
    def trigger_event(self) -> str:
        event = self.msh.get(9, 2).upper()
        if not event:
            evn = self.first("EVN")
            event = evn.get(1).upper() if evn else ""
        return event

    @property
    def version(self) -> str:
        return self.msh.get(12)

    @property
    def z_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.id.startswith("Z")]


def split_groups(
    segments: list[Segment], starter: str, members: frozenset[str] | None = None
) -> list[list[Segment]]:
    """Cut a run of segments into groups each opened by ``starter`` (``ORC`` for orders, ``OBR``
    for results); segments before the first starter are left out."""
    groups: list[list[Segment]] = []
    for seg in segments:
        if seg.id == starter:
            groups.append([seg])
        elif groups and (members is None or seg.id in members):
            groups[-1].append(seg)
    return groups


def parse(raw: bytes) -> Message:
    """Parse one message. Raises :class:`Hl7Error` (with its ACK code and location) when the
    bytes are not a message we can read at all."""
    text, codec, declared = decode(raw)
    lines = [ln for ln in _SEGMENT_SPLIT.split(text) if ln.strip()]
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise Hl7Error(
            "the message does not start with an MSH segment",
            code="100",
            segment="MSH",
            sequence=1,
            reject=True,
        )
    head = lines[0]
    sep = head[3]
    enc = head[4:].split(sep, 1)[0]
    if len(enc) < 3:
        raise Hl7Error(
            "MSH-2 must hold the encoding characters (^~\\&)",
            code="102",
            segment="MSH",
            sequence=1,
            field=2,
            reject=True,
        )
    d = Delimiters(sep, enc[0], enc[1], enc[2], enc[3] if len(enc) > 3 else "&")
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for line in lines:
        line = line.strip("\x00").rstrip()  # stray NULs and padding some interfaces add
        seg_id = line[:3]
        if not _SEGMENT_ID.match(seg_id) or (len(line) > 3 and line[3] != sep):
            raise Hl7Error(
                f"segment {len(segments) + 1} does not begin with a segment id: {line[:20]!r}",
                code="100",
                segment=seg_id if seg_id.isalnum() else "",
                sequence=len(segments) + 1,
                reject=True,
            )
        counts[seg_id] = counts.get(seg_id, 0) + 1
        parts = line.split(sep)
        # MSH-1 is the field separator itself, so MSH's own fields are shifted by one.
        fields = [seg_id, sep, *parts[1:]] if seg_id == "MSH" else parts
        segments.append(Segment(seg_id, fields, d, codec, counts[seg_id]))
    return Message(segments, d, codec, declared, text)
