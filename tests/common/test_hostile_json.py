"""The one hostile-JSON parser: numbers come back digit for digit; NUL and surrogates refused."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phiseal_decrypt import exactjson
from services.common.errors import InvalidArgument
from services.common.hostile_json import parse_object
from services.policysvc.analysis import parse_event


def _round_trip(raw: bytes) -> bytes:
    return orjson.dumps(parse_object(raw, what="the event", max_bytes=1 << 20, max_depth=32))


@pytest.mark.parametrize(
    "number",
    [
        "123456789012345678901234567890",  # past 2^64: was 1.2345678901234568e+29
        "18446744073709551616",  # 2^64
        "-9223372036854775809",  # below int64
        "9" * 5000,  # past Python's int() digit limit
        "-0",  # was 0
        "1E5",  # was 100000.0
        "1e16",  # was 1e+16
        "20.50",  # was 20.5
        "1e-400",  # underflows to 0.0
        "1e400",  # overflows a double: was refused as "not valid JSON"
        "-1e400",
        "0.1000000000000000055511151231257827",  # more digits than a double holds
    ],
)
def test_every_number_leaves_as_it_came(number: str) -> None:
    """Numbers orjson would rewrite keep their text, in objects and arrays alike."""
    compact = f'{{"order_id":{number},"items":[{number},{{"n":{number}}}]}}'.encode()
    spaced = f'{{"order_id": {number} ,"items":[\n{number}\t, {{"n" :{number}}}]}}'.encode()
    assert (_round_trip(compact), _round_trip(spaced)) == (compact, compact)


@pytest.mark.parametrize(
    "number", ["0", "-1", "42", "18446744073709551615", "-9223372036854775808", "1.0", "-0.0"]
)
def test_plain_numbers_stay_ordinary_python_values(number: str) -> None:
    """Numbers orjson writes back unchanged are plain ints and floats (the fast path)."""
    value = parse_object(f'{{"a":{number}}}'.encode(), what="e", max_bytes=99, max_depth=4)["a"]
    assert (type(value) in (int, float), orjson.dumps(value).decode()) == (True, number)


def test_numbers_inside_strings_are_left_alone() -> None:
    """Text that looks like a number inside a string (a timestamp, "a:1.50,") is a string."""
    raw = b'{"t":"2024-01-05T10:00:00.000Z","s":"a:1.50,","x":[1.5e3]}'
    assert _round_trip(raw) == raw


@given(st.integers())
def test_any_integer_round_trips(number: int) -> None:
    raw = b'{"a":' + str(number).encode() + b"}"
    assert _round_trip(raw) == raw


@given(
    st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?", fullmatch=True)
)
def test_any_json_number_text_round_trips(number: str) -> None:
    raw = b'{"a":[' + number.encode() + b"]}"
    assert _round_trip(raw) == raw


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_orjson_written_floats_are_unchanged(number: float) -> None:
    raw = b'{"a":' + orjson.dumps(number) + b"}"
    assert _round_trip(raw) == raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a":"x\\u0000y"}', "has a NUL character (\\u0000) in a string or key; remove it"),
        (b'{"a\\u0000":1}', "has a NUL character (\\u0000) in a string or key; remove it"),
        (b'{"b":1e400,"a":"\\ud800"}', "is not valid JSON (a string is not valid UTF-8"),
        (b'{"a":1e400,"b":NaN}', "is not valid JSON (NaN is not JSON"),
        (b'{"a":1e400,"b":', "is not valid JSON (Expecting value at byte"),
        (b'{"a":"\xff"}', "is not valid UTF-8 (first bad byte at 6)"),
    ],
)
def test_hostile_text_is_refused_by_name(raw: bytes, message: str) -> None:
    """NUL, lone surrogates, NaN and bad UTF-8 are INVALID_ARGUMENT, also on the exact path."""
    with pytest.raises(InvalidArgument) as caught:
        parse_object(raw, what="the event", max_bytes=99, max_depth=4)
    assert caught.value.message.startswith("the event " + message), caught.value.message


def test_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    """``"\\\\u0000"`` is a backslash and the text u0000, not a NUL."""
    assert _round_trip(b'{"a":"\\\\u0000"}') == b'{"a":"\\\\u0000"}'


def test_policysvc_samples_use_the_same_parser() -> None:
    """A sample event is refused with the same words as an event sent for encryption."""
    raw = '{"a": [1, 2'
    with pytest.raises(InvalidArgument) as caught:
        parse_object(raw.encode(), what="sample_events[0]", max_bytes=1 << 18, max_depth=32)
    assert parse_event(raw, "sample_events[0]") == caught.value.message


def test_kit_keeps_numbers_exact_too() -> None:
    """The kit's parser (shared with the services) reads 1e400 and writes it back as is."""
    value = exactjson.loads(b"[1e400, 2]")
    assert (orjson.dumps(value), math.isinf(float(exactjson.fragment_text(value[0]) or 0))) == (
        b"[1e400,2]",
        True,
    )


@given(
    st.integers()
    | st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)
)
def test_a_bare_number_round_trips_in_the_kit(number: int | str) -> None:
    """A sealed value is often a bare number: the kit reads it back digit for digit."""
    text = str(number).encode()
    assert orjson.dumps(exactjson.loads(text)) == text


def test_compact_json_nested_past_the_writers_limit_is_refused_not_crashed() -> None:
    """orjson reads 300 levels but writes at most 254: the compact-input fast path must fall
    back, so the event is refused as too deep (it raised TypeError: INTERNAL)."""
    raw = b'{"a":' + b"[" * 300 + b"]" * 300 + b"}"
    with pytest.raises(InvalidArgument, match="nests deeper than the limit of 32 levels"):
        parse_object(raw, what="the event", max_bytes=1 << 20, max_depth=32)
