"""String functions. Each works on a single string input (empty in, empty out); anything
else in the input is an error, as the specification asks."""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from yilian.fhir.fhirpath.env import Env
from yilian.fhir.fhirpath.errors import FHIRPathError
from yilian.fhir.fhirpath.registry import eager
from yilian.fhir.fhirpath.values import single, to_system, type_label


def _input(items: list[Any], name: str) -> str | None:
    item = single(items, f"{name}()")
    if item is None:
        return None
    value = to_system(item)
    if type(value) is not str:
        raise FHIRPathError(f"{name}() expects a string, got {type_label(item)}")
    return str(value)


def _arg(arg: list[Any], name: str) -> Any:
    item = single(arg, f"argument of {name}()")
    return None if item is None else to_system(item)


def _string_arg(arg: list[Any], name: str) -> str | None:
    value = _arg(arg, name)
    if value is not None and type(value) is not str:
        raise FHIRPathError(f"{name}() expects a string argument")
    return value


def _int_arg(arg: list[Any], name: str) -> int | None:
    value = _arg(arg, name)
    if value is not None and type(value) is not int:
        raise FHIRPathError(f"{name}() expects an integer argument")
    return value


def _string_function(name: str, nargs: int, fn: Callable[..., Any]) -> None:
    """A function of one string and ``nargs`` string arguments; empty anywhere -> empty."""

    def impl(items: list[Any], env: Env, *args: list[Any]) -> list[Any]:
        text = _input(items, name)
        if text is None:
            return []
        values = [_string_arg(a, name) for a in args]
        if any(v is None for v in values):
            return []
        result = fn(text, *values)
        return [] if result is None else [result]

    eager(name, nargs)(impl)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise FHIRPathError(f"invalid regular expression {pattern!r}: {e}") from None


def _java_replacement(substitution: str) -> str:
    # FHIRPath (like Java) writes group references as $1; Python wants \g<1>
    escaped = substitution.replace("\\", "\\\\")
    return re.sub(r"\$(\d+)", r"\\g<\1>", escaped)


def _replace_matches(text: str, pattern: str, substitution: str) -> str:
    if pattern == "":
        return text
    return _regex(pattern).sub(_java_replacement(substitution), text)


def _encode(text: str, encoding: str) -> str | None:
    raw = text.encode("utf-8")
    if encoding == "base64":
        return base64.b64encode(raw).decode("ascii")
    if encoding == "urlbase64":
        return base64.urlsafe_b64encode(raw).decode("ascii")
    if encoding == "hex":
        return raw.hex()
    return None


def _decode(text: str, encoding: str) -> str | None:
    try:
        if encoding == "base64":
            return base64.b64decode(text, validate=True).decode("utf-8")
        if encoding == "urlbase64":
            return base64.urlsafe_b64decode(text).decode("utf-8")
        if encoding == "hex":
            return bytes.fromhex(text).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return None


def _escape(text: str, target: str) -> str | None:
    if target == "html":
        return html.escape(text, quote=True).replace("&#x27;", "&#39;")
    if target == "json":
        return json.dumps(text, ensure_ascii=False)[1:-1]
    return None


def _unescape(text: str, target: str) -> str | None:
    if target == "html":
        return html.unescape(text)
    if target == "json":
        return _JSON_ESCAPE.sub(_json_unescape_one, text)
    return None


_JSON_ESCAPE = re.compile(r'\\(["\\/bfnrt]|u[0-9a-fA-F]{4})')
_JSON_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _json_unescape_one(m: re.Match[str]) -> str:
    code = m.group(1)
    return chr(int(code[1:], 16)) if code[0] == "u" else _JSON_SIMPLE[code]


_string_function("startsWith", 1, lambda t, p: t.startswith(p))
_string_function("endsWith", 1, lambda t, p: t.endswith(p))
_string_function("contains", 1, lambda t, p: p in t)
_string_function("indexOf", 1, lambda t, p: t.find(p))
_string_function("lastIndexOf", 1, lambda t, p: t.rfind(p))
_string_function("matches", 1, lambda t, p: _regex(p).search(t) is not None)
_string_function("matchesFull", 1, lambda t, p: _regex(p).fullmatch(t) is not None)
_string_function("replace", 2, lambda t, a, b: t.replace(a, b))
_string_function("replaceMatches", 2, _replace_matches)
_string_function("upper", 0, str.upper)
_string_function("lower", 0, str.lower)
_string_function("length", 0, len)
_string_function("trim", 0, str.strip)
_string_function("encode", 1, _encode)
_string_function("decode", 1, _decode)
_string_function("escape", 1, _escape)
_string_function("unescape", 1, _unescape)


@eager("toChars")
def _to_chars(items: list[Any], env: Env) -> list[Any]:
    text = _input(items, "toChars")
    return [] if text is None else list(text)


@eager("split", 1)
def _split(items: list[Any], env: Env, sep: list[Any]) -> list[Any]:
    text = _input(items, "split")
    separator = _string_arg(sep, "split")
    if text is None or separator is None:
        return []
    return text.split(separator) if separator else list(text)


@eager("substring", 1, 2)
def _substring(items: list[Any], env: Env, start: list[Any], *length: list[Any]) -> list[Any]:
    text = _input(items, "substring")
    begin = _int_arg(start, "substring")
    if text is None or begin is None:
        return []
    if begin < 0 or begin >= len(text):
        return []
    if length:
        count = _int_arg(length[0], "substring")
        if count is None:
            return [text[begin:]]
        return [text[begin : begin + max(count, 0)]]
    return [text[begin:]]


@eager("join", 0, 1)
def _join(items: list[Any], env: Env, *sep: list[Any]) -> list[Any]:
    separator = _string_arg(sep[0], "join") if sep else ""
    texts = []
    for item in items:
        value = to_system(item)
        if type(value) is not str:
            raise FHIRPathError(f"join() expects strings, got {type_label(item)}")
        texts.append(value)
    return [(separator or "").join(texts)]
