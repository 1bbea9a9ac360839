"""Reading HL7 v2: delimiters, escapes, character sets, timestamps, ACKs."""

from __future__ import annotations

import pytest

from yilian.exchange.hl7 import datatypes
from yilian.exchange.hl7.ack import Header, build_ack
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import Delimiters, escape, parse, unescape

MSH = "MSH|^~\\&|HIS|第一医院^1.2.156.1^ISO|YILIAN|CITY|20261203101500+0800||ADT^A08^ADT_A01|C-1|P|2.5|||AL|NE||{charset}"


def _msg(charset: str, *segments: str) -> str:
    return "\r".join([MSH.format(charset=charset), *segments]) + "\r"


def test_components_repetitions_and_subcomponents() -> None:
    msg = parse(_msg("UNICODE UTF-8", "PID|1||A1^^^H1&1.2.3&ISO^MR~B2^^^H2^PI||WANG&Wang^Wei").encode())
    pid = msg.first("PID")
    assert pid is not None
    assert [r.c(1) for r in pid.reps(3)] == ["A1", "B2"]
    assert pid.rep(3).c(4, 2) == "1.2.3"
    assert pid.get(5, 1, 1) == "WANG" and pid.get(5, 2) == "Wei"
    assert msg.control_id == "C-1" and msg.message_code == "ADT" and msg.trigger_event == "A08"


def test_escape_sequences() -> None:
    d = Delimiters()
    assert unescape("A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\", d) == "A|B^C&D~E\\"
    assert unescape(r"line1\.br\line2", d) == "line1\nline2"
    assert unescape(r"\H\bold\N\ text", d) == "bold text"
    assert unescape("\\XB0A1\\", d, "gb18030") == "啊"
    assert unescape("\\XE4B8AD\\", d, "utf-8") == "中"
    assert unescape(escape("a|b^c&d~e\\f", d), d) == "a|b^c&d~e\\f"


def test_escaped_delimiters_do_not_split_fields() -> None:
    msg = parse(_msg("", r"NTE|1||Dose 5\S\10 mg \T\ more\F\end").encode())
    nte = msg.first("NTE")
    assert nte is not None and nte.get(3) == "Dose 5^10 mg & more|end"


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"])
def test_segment_terminators_and_bom(separator: str) -> None:
    text = _msg("", "PID|1||X1^^^H^MR").replace("\r", separator)
    msg = parse(b"\xef\xbb\xbf" + text.encode())
    assert [s.id for s in msg.segments] == ["MSH", "PID"]


@pytest.mark.parametrize(
    ("charset", "codec"), [("GB 18030-2000", "gb18030"), ("GBK", "gbk"), ("UNICODE UTF-8", "utf-8")]
)
def test_declared_character_sets(charset: str, codec: str) -> None:
    raw = _msg(charset, "PID|1||X1^^^H^MR||张^三丰").encode(codec)
    msg = parse(raw)
    pid = msg.first("PID")
    assert pid is not None and pid.get(5, 1) == "张" and pid.get(5, 2) == "三丰"
    assert msg.codec == codec


def test_undeclared_gbk_is_read_as_gb18030() -> None:
    raw = _msg("", "PID|1||X1^^^H^MR||李^四").encode("gb18030")
    pid = parse(raw).first("PID")
    assert pid is not None and pid.get(5, 1) == "李"


def test_latin1_and_ascii() -> None:
    raw = _msg("8859/1", "PID|1||X1^^^H^MR||Müller^Jürgen").replace("第一医院", "KH").encode("latin-1")
    pid = parse(raw).first("PID")
    assert pid is not None and pid.get(5, 1) == "Müller"


def test_unknown_charset_is_rejected() -> None:
    with pytest.raises(Hl7Error) as info:
        parse(_msg("EBCDIC", "PID|1").encode())
    assert info.value.ack_code == "AR" and info.value.field == 18


def test_not_a_message() -> None:
    with pytest.raises(Hl7Error) as info:
        parse(b"hello world")
    assert info.value.reject


def test_bad_bytes_for_declared_charset() -> None:
    raw = _msg("UNICODE UTF-8", "PID|1||X").encode() + b"\xff\xfe"
    with pytest.raises(Hl7Error) as info:
        parse(raw)
    assert info.value.code == "102"


@pytest.mark.parametrize(
    ("value", "date", "date_time"),
    [
        ("1988", "1988", "1988"),
        ("198808", "1988-08", "1988-08"),
        ("19880818", "1988-08-18", "1988-08-18"),
        ("198808181126+0215", "1988-08-18", "1988-08-18T11:26:00+02:15"),
        ("20150624084727.655-0500", "2015-06-24", "2015-06-24T08:47:27.655-05:00"),
        ("20261203101500", "2026-12-03", "2026-12-03T10:15:00+08:00"),
    ],
)
def test_timestamps(value: str, date: str, date_time: str) -> None:
    assert datatypes.parse_ts(value) == (date, date_time)


@pytest.mark.parametrize("value", ["19881318", "2026-12-03", "20260230", "2026120325"])
def test_bad_timestamps(value: str) -> None:
    with pytest.raises(ValueError):
        datatypes.parse_ts(value)


def test_code_systems() -> None:
    assert datatypes.code_system("LN") == "http://loinc.org"
    assert datatypes.code_system("HL70005") == "http://terminology.hl7.org/CodeSystem/v2-0005"
    assert datatypes.code_system("2.16.840.1.113883.6.1") == "urn:oid:2.16.840.1.113883.6.1"
    assert datatypes.code_system("My Lab") is not None and str(datatypes.code_system("My Lab")).endswith(
        "/My-Lab"
    )


def test_ack_accept_echoes_control_id_and_addresses_sender() -> None:
    msg = parse(_msg("GB 18030-2000", "PID|1").encode("gb18030"))
    ack = build_ack(Header.of(msg), "AA", control_id="ACK1")
    lines = ack.decode("gb18030").split("\r")
    msh = lines[0].split("|")
    assert msh[2] == "YILIAN" and msh[4] == "HIS" and msh[5].startswith("第一医院")
    assert msh[8] == "ACK^A08^ACK" and msh[9] == "ACK1" and msh[17] == "GB 18030-2000"
    assert lines[1] == "MSA|AA|C-1|"


def test_ack_error_has_err_segment() -> None:
    msg = parse(_msg("", "PID|1").encode())
    err = Hl7Error("OBX-5 is not a number: 'abc|x'", code="102", segment="OBX", sequence=2, field=5)
    text = build_ack(Header.of(msg), err.ack_code, error=err).decode()
    segments = {line.split("|")[0]: line.split("|") for line in text.split("\r") if line}
    assert segments["MSA"][1] == "AE" and segments["MSA"][2] == "C-1"
    err_seg = segments["ERR"]
    assert err_seg[2] == "OBX^2^5"
    assert err_seg[3] == "102^Data type error^HL70357"
    assert err_seg[4] == "E"
    assert "abc\\F\\x" in err_seg[8]


def test_ack_for_unparseable_bytes_still_echoes_what_it_can() -> None:
    header = Header.salvage(b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|XYZ|P|2.5\rgarbage")
    assert header.control_id == "XYZ" and header.trigger == "R01"
    assert Header.salvage(b"junk").control_id == ""
