"""Splits a FHIRPath expression into tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass

from yilian.fhir.fhirpath.errors import syntax_error


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number string identifier delimited date datetime time special op eof
    text: str  # the value: identifier name, unescaped string, literal text without '@'
    pos: int


_DATETIME = (
    r"@(?P<dt>\d{4}(?:-\d{2}(?:-\d{2})?)?T"
    r"(?:\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?)?)"
)
_DATE = r"@(?P<date>\d{4}(?:-\d{2}(?:-\d{2})?)?)"
_TIME = r"@T(?P<time>\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)"
_TOKEN = re.compile(
    "|".join(
        [
            r"(?P<ws>\s+)",
            r"(?P<line>//[^\n]*)",
            r"(?P<block>/\*.*?\*/)",
            r"(?P<open>/\*)",
            _DATETIME,
            _TIME,
            _DATE,
            r"(?P<number>\d+(?:\.\d+)?)",
            r"(?P<string>'(?:[^'\\]|\\.)*')",
            r"(?P<delimited>`(?:[^`\\]|\\.)*`)",
            r"(?P<special>\$(?:this|index|total))",
            r"(?P<identifier>[A-Za-z_][A-Za-z0-9_]*)",
            r"(?P<op><=|>=|!=|!~|[-+*/&|=~<>()\[\]{},.%])",
        ]
    ),
    re.DOTALL,
)

_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def unescape(body: str, expression: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1 : i + 2]
        if nxt == "u":
            code = body[i + 2 : i + 6]
            if len(code) != 4 or not all(ch in "0123456789abcdefABCDEF" for ch in code):
                raise syntax_error(f"bad unicode escape in {body!r}", expression)
            out.append(chr(int(code, 16)))
            i += 6
            continue
        if nxt not in _ESCAPES:
            raise syntax_error(f"unknown escape \\{nxt} in {body!r}", expression)
        out.append(_ESCAPES[nxt])
        i += 2
    return "".join(out)


def tokenize(expression: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    n = len(expression)
    while pos < n:
        m = _TOKEN.match(expression, pos)
        if m is None:
            raise syntax_error(f"unexpected character {expression[pos]!r} at {pos}", expression)
        kind = m.lastgroup or ""
        start = pos
        pos = m.end()
        if kind in ("ws", "line", "block"):
            continue
        if kind == "open":
            raise syntax_error("unterminated comment", expression)
        if kind == "string":
            tokens.append(Token("string", unescape(m.group()[1:-1], expression), start))
        elif kind == "delimited":
            tokens.append(Token("delimited", unescape(m.group()[1:-1], expression), start))
        elif kind in ("dt", "date", "time"):
            name = {"dt": "datetime", "date": "date", "time": "time"}[kind]
            tokens.append(Token(name, m.group(kind), start))
        else:
            tokens.append(Token(kind, m.group(), start))
    tokens.append(Token("eof", "", n))
    return tokens
