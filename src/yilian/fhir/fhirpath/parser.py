"""Parses FHIRPath text into a syntax tree (a Pratt parser over the N1 grammar)."""

from __future__ import annotations

from decimal import Decimal

from yilian.fhir.fhirpath import syntax as s
from yilian.fhir.fhirpath import temporal
from yilian.fhir.fhirpath.errors import syntax_error
from yilian.fhir.fhirpath.lexer import Token, tokenize
from yilian.fhir.fhirpath.quantity import CALENDAR_WORDS, FPQuantity

# Binding power of each infix operator, loosest first (FHIRPath §"Operator precedence").
_INFIX: dict[str, int] = {
    "implies": 1,
    "or": 2, "xor": 2,
    "and": 3,
    "in": 4, "contains": 4,
    "=": 5, "~": 5, "!=": 5, "!~": 5,
    "<": 6, ">": 6, "<=": 6, ">=": 6,
    "|": 7,
    "is": 8, "as": 8,
    "+": 9, "-": 9, "&": 9,
    "*": 10, "/": 10, "div": 10, "mod": 10,
}  # fmt: skip
_PREFIX_POWER = 11
_POSTFIX_POWER = 12

# Words that are operators between expressions but may still name a function or element.
_KEYWORDS = frozenset(
    {"and", "or", "xor", "implies", "is", "as", "div", "mod", "in", "contains", "true", "false"}
)
_NAMES_TOO = frozenset({"as", "contains", "in", "is"})


class _Parser:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = tokenize(expression)
        self.pos = 0

    # -- token helpers -------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return tok

    def is_op(self, text: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.kind == "op" and tok.text == text

    def expect_op(self, text: str) -> None:
        tok = self.next()
        if tok.kind != "op" or tok.text != text:
            raise self.error(tok, f"expected '{text}'")

    def error(self, tok: Token, message: str) -> Exception:
        found = "end of expression" if tok.kind == "eof" else repr(tok.text)
        return syntax_error(f"{message}, found {found} at {tok.pos}", self.expression)

    def name(self) -> tuple[str, bool]:
        """An identifier (or keyword used as a name); returns (name, was_delimited)."""
        tok = self.next()
        if tok.kind == "identifier":
            return tok.text, False
        if tok.kind == "delimited":
            return tok.text, True
        raise self.error(tok, "expected a name")

    # -- grammar -------------------------------------------------------------------------

    def parse(self) -> s.Expr:
        if self.peek().kind == "eof":
            raise syntax_error("empty expression", self.expression)
        expr = self.expression_(0)
        tok = self.peek()
        if tok.kind != "eof":
            raise self.error(tok, "unexpected token")
        return expr

    def infix_power(self, tok: Token) -> int:
        if tok.kind == "op" or (tok.kind == "identifier" and tok.text in _KEYWORDS):
            return _INFIX.get(tok.text, 0)
        return 0

    def expression_(self, min_power: int) -> s.Expr:
        left = self.prefix()
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.text in (".", "["):
                left = self.postfix(left)
                continue
            power = self.infix_power(tok)
            if power <= min_power:
                return left
            self.next()
            op = tok.text
            if op in ("is", "as"):
                left = s.TypeTest(op, left, self.type_specifier())
                continue
            # implies is right-associative, everything else left-associative
            right = self.expression_(power - 1 if op == "implies" else power)
            left = s.Binary(op, left, right)

    def postfix(self, left: s.Expr) -> s.Expr:
        tok = self.next()
        if tok.text == "[":
            index = self.expression_(0)
            self.expect_op("]")
            return s.Indexer(left, index)
        name, _ = self.name()
        if self.is_op("("):
            return s.Call(left, name, self.arguments())
        return s.Member(left, name)

    def arguments(self) -> tuple[s.Expr, ...]:
        self.expect_op("(")
        args: list[s.Expr] = []
        if self.is_op(")"):
            self.next()
            return ()
        while True:
            args.append(self.expression_(0))
            tok = self.next()
            if tok.kind == "op" and tok.text == ")":
                return tuple(args)
            if not (tok.kind == "op" and tok.text == ","):
                raise self.error(tok, "expected ',' or ')'")

    def type_specifier(self) -> str:
        parts = [self.name()[0]]
        while self.is_op(".") and self.peek(1).kind in ("identifier", "delimited"):
            self.next()
            parts.append(self.name()[0])
        return ".".join(parts)

    def prefix(self) -> s.Expr:
        tok = self.next()
        kind, text = tok.kind, tok.text
        if kind == "op":
            if text in ("+", "-"):
                return s.Unary(text, self.expression_(_PREFIX_POWER))
            if text == "(":
                inner = self.expression_(0)
                self.expect_op(")")
                return inner
            if text == "{":
                self.expect_op("}")
                return s.Literal(None)
            if text == "%":
                tok = self.next()
                if tok.kind in ("identifier", "delimited", "string"):
                    return s.Variable(tok.text)
                raise self.error(tok, "expected a variable name after '%'")
            raise self.error(tok, "unexpected operator")
        if kind == "number":
            return self.number(text)
        if kind == "string":
            return s.Literal(text)
        if kind == "date":
            return s.Literal(self.temporal(tok, temporal.parse_date(text)))
        if kind == "datetime":
            body = text[:-1] if text.endswith("T") else text
            return s.Literal(self.temporal(tok, temporal.parse_datetime(body)))
        if kind == "time":
            return s.Literal(self.temporal(tok, temporal.parse_time(text)))
        if kind == "special":
            return s.Special(text)
        if kind == "identifier" and text in ("true", "false"):
            return s.Literal(text == "true")
        if kind == "identifier" and text in _KEYWORDS and text not in _NAMES_TOO:
            raise self.error(tok, "unexpected keyword")
        if kind in ("identifier", "delimited"):
            if self.is_op("("):
                return s.Call(None, text, self.arguments())
            return s.Identifier(text)
        raise self.error(tok, "expected an expression")

    def temporal(self, tok: Token, value: object) -> object:
        if value is None:
            raise self.error(tok, "invalid date/time literal")
        return value

    def number(self, text: str) -> s.Expr:
        value: int | Decimal = Decimal(text) if "." in text else int(text)
        unit = self.peek()
        if unit.kind == "string":
            self.next()
            return s.Literal(FPQuantity(Decimal(value), unit.text))
        if unit.kind == "identifier" and unit.text in CALENDAR_WORDS:
            self.next()
            return s.Literal(FPQuantity(Decimal(value), unit.text))
        return s.Literal(value)


def parse(expression: str) -> s.Expr:
    """The syntax tree of ``expression``; FHIRPathError (kind ``syntax``) if it does not parse."""
    return _Parser(expression).parse()
