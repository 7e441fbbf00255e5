"""JSON that keeps every number exactly as written: what goes in comes out, digit for digit.

orjson (like most parsers) reads numbers as int64/uint64 or a double, so
``123456789012345678901234567890`` would come back as ``1.2345678901234568e+29``, ``-0`` as
``0``, ``1E5`` as ``100000.0``, ``20.50`` as ``20.5`` and ``1e-400`` as ``0.0``; orjson refuses
``1e400`` outright. ``loads`` returns ordinary Python values for every number that orjson writes
back unchanged, and an ``orjson.Fragment`` holding the original text for every other one, so
``orjson.dumps`` of the result writes each number exactly as it was read.

It lives in the kit because both ends need it: encryptsvc seals a value's exact JSON, and the kit
must put back exactly that JSON when it decrypts. tests/common/test_json_input.py proves it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

Fragment = orjson.Fragment

# A number token is always preceded (after JSON whitespace) by ":", "," or "[", or starts the
# text (a sealed value is often a bare number). Inside strings
# the pattern can also match; that only costs the exact check below, never correctness.
_NUMBER = re.compile(rb"(?:^|[:,\[])[ \t\r\n]*(-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)")
# The only numbers orjson can rewrite: a fraction or exponent, 19+ digits, or a negative zero.
# One search over the bytes answers "all numbers are plain small integers" for most events.
_RISKY = re.compile(
    rb"(?:^|[:,\[])[ \t\r\n]*(?:-?[0-9]+[.eE]|-?[0-9]{19}|-0[ \t\r\n]*(?:[,}\]]|$))"
)
_INFINITY = "number is infinity"


def loads(raw: bytes) -> Any:
    """``raw`` parsed, numbers kept exact; raises orjson.JSONDecodeError (a ValueError)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # 1e400 is valid JSON that a double cannot hold: keep its text rather than refuse it.
        if _INFINITY not in str(exc):
            raise
        return _loads_keeping_text(raw)
    if _RISKY.search(raw) is None or all(_exact(m) for m in _NUMBER.finditer(raw)):
        return value
    return _loads_keeping_text(raw)


def _exact(match: re.Match[bytes]) -> bool:
    text = match.group(1)
    try:
        return orjson.dumps(orjson.loads(text)) == text
    except orjson.JSONDecodeError:
        return False  # 1e400: not exact


def _loads_keeping_text(raw: bytes) -> Any:
    """The slow path: the standard library parser, which hands us each number's text."""
    try:
        text = raw.decode("utf-8")
        value = json.loads(
            text, parse_int=_integer, parse_float=_float, parse_constant=_refuse_constant
        )
        # The standard parser accepts lone surrogates ("\ud800"), which orjson refuses (as does
        # any strict UTF-8 consumer downstream): writing the value back finds them.
        orjson.dumps(value)
    except json.JSONDecodeError as exc:
        # json's messages quote no input, only positions (of characters, not bytes).
        raise orjson.JSONDecodeError(exc.msg, "", exc.pos) from None
    except (ValueError, RecursionError, orjson.JSONEncodeError) as exc:
        raise orjson.JSONDecodeError(_reason(exc), "", 0) from None
    return value


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, orjson.JSONEncodeError | UnicodeError):
        return "a string is not valid UTF-8 (lone surrogate)"
    return str(exc)  # _refuse_constant's message


def _integer(text: str) -> int | Fragment:
    # Python's int() refuses more than 4300 digits; orjson writes only int64/uint64 exactly.
    if len(text) <= 20 and text != "-0":
        number = int(text)
        if -(2**63) <= number < 2**64:
            return number
    return Fragment(text.encode("ascii"))


def _float(text: str) -> float | Fragment:
    number = float(text)
    encoded = text.encode("ascii")
    return number if orjson.dumps(number) == encoded else Fragment(encoded)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def fragment_text(value: Any) -> str | None:
    """The number's text when ``value`` is a kept-exact number, else None."""
    if isinstance(value, Fragment):
        return orjson.dumps(value).decode("ascii")
    return None
