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
from collections.abc import Iterator
from typing import Any

import orjson

Fragment = orjson.Fragment

# Numbers orjson may write differently from how they were read have a fraction, an exponent,
# 19 or more digits, or are a negative zero. Each pattern starts with a literal where it can
# (so the regex engine scans for it at C speed) and ends before the ",", "}" or "]" that
# follows every number in a container, which keeps a timestamp's "10:00:00.000Z" from
# matching. A string can still match; that only costs the exact check, never correctness.
_FRACTION = re.compile(rb"\.[0-9]+(?:[eE][+-]?[0-9]+)?(?=[ \t\r\n]*[,}\]])")
_EXPONENT = re.compile(rb"[eE][+-]?[0-9]+(?=[ \t\r\n]*[,}\]])")
_NEGATIVE_ZERO = re.compile(rb"-0(?=[ \t\r\n]*[,}\]])")
_LONG = re.compile(rb"[0-9]{19,}(?=[ \t\r\n]*[,}\]])")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NUMBER_BYTES = frozenset(b"0123456789+-.eE")
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
    if isinstance(value, dict | list):
        # The usual event is compact JSON as a producer's serializer writes it. When writing the
        # parsed value back gives the very same bytes, every number token came back digit for
        # digit, and one C-speed serialisation is far cheaper than scanning for risky numbers.
        if _writes_back(value, raw) or all(_exact(t) for t in _risky_numbers(raw)):
            return value
    elif not isinstance(value, int | float) or _exact(raw.strip()):
        return value  # a bare scalar (a sealed value): the whole text is the token
    return _loads_keeping_text(raw)


def _writes_back(value: Any, raw: bytes) -> bool:
    try:
        return orjson.dumps(value) == raw
    except TypeError:  # orjson reads deeper nesting than it writes (254 levels)
        return False


def _risky_numbers(raw: bytes) -> Iterator[bytes]:
    """Every number of ``raw`` that orjson could rewrite (and some string text that looks so)."""
    patterns = [_FRACTION, _NEGATIVE_ZERO]
    # Cheap C-speed tests decide whether the slower patterns are worth running at all.
    digits = raw.translate(_DIGITS_AS_ZERO)
    if b"0e" in digits or b"0E" in digits:
        patterns.append(_EXPONENT)
    if b"0" * 19 in digits:
        patterns.append(_LONG)
    for pattern in patterns:
        if pattern.search(raw) is None:
            continue  # the usual answer, and cheaper than starting an iterator
        for match in pattern.finditer(raw):
            start = match.start()
            while start > 0 and raw[start - 1] in _NUMBER_BYTES:
                start -= 1
            yield raw[start : match.end()]


def _exact(text: bytes) -> bool:
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
