"""Built-in value detectors: RE2 patterns (linear time) confirmed by checksums where they exist.

A detector answers "does this sampled value look like X" for one value; it never returns or
keeps the value. Patterns find candidates, and validators reject what only looks alike: a card
number must pass Luhn, an NPI the Luhn check over the "80840" prefix, an SSN must not use an
area the SSA never assigns, an IP's octets must be bytes. A *weak* detector (a bare date, a
five-digit ZIP, an ICD-10 code without its dot) explains a decision but never makes one: those
shapes are too common in data that is not about a person.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

import re2

from services.common.hostile_json import json_type

# Only this many characters of one value are examined; detectors stay linear in the input.
MAX_SCANNED = 64 * 1024
# Elements of an array (of scalars) examined for one path.
MAX_ELEMENTS = 1000


def _re(pattern: str) -> re2._Regexp[str]:
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check used by card numbers and NPIs."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_EMAIL = _re(
    r"(?:^|[^\pL\pN._%+-])[\pL\pN._%+-]{1,64}@[\pL\pN-]{1,63}(?:\.[\pL\pN-]{1,63})*\.\pL{2,24}(?:$|[^\pL\pN-])"
)
_SSN = _re(r"(?:^|[^\d-])(\d{3})([- ])(\d{2})([- ])(\d{4})(?:$|[^\d-])")
_CARD = _re(r"(?:^|[^\d])(\d(?:[ -]?\d){12,18})(?:$|[^\d])")
_PHONE_NANP = _re(
    r"(?:^|[^\d])(?:\+?1[ .-]?)?(?:\(([2-9]\d{2})\) ?|([2-9]\d{2})[ .-])\d{3}[ .-]\d{4}(?:$|[^\d])"
)
_PHONE_E164 = _re(r"^\+[1-9]\d{7,14}$")
_PHONE_INTL = _re(r"^\+[1-9][\d ().-]{7,22}$")
_IPV4 = _re(r"(?:^|[^\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:$|[^\d.])")
_IPV6 = _re(r"^[0-9A-Fa-f:.]{2,45}$")
_MAC = _re(r"^[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}$")
_ZIP4 = _re(r"^\d{5}-\d{4}$")
_ZIP5 = _re(r"^\d{5}$")
_ICD10_DOTTED = _re(r"^[A-TV-Z]\d[0-9AB]\.[0-9A-TV-Z]{1,4}$")
_ICD10_BARE = _re(r"^[A-TV-Z]\d[0-9AB]$")
_NDC = _re(r"^(?:\d{4}-\d{4}-\d{2}|\d{5}-\d{3}-\d{2}|\d{5}-\d{4}-\d{1,2})$")
_NPI = _re(r"^[12]\d{9}$")
_MRN = _re(r"(?i)(?:^|[^a-z])mrn[ #:-]{0,2}\d{4,}")
_ISO_DATE = _re(r"^(\d{4})-(\d{2})-(\d{2})$")
_US_DATE = _re(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


def _email(text: str) -> bool:
    return "@" in text and _EMAIL.search(text) is not None


def _ssn(text: str) -> bool:
    for found in _SSN.finditer(text):
        area, sep1, group, sep2, serial = found.groups()
        # The SSA never assigns area 000, 666 or 900-999, group 00 or serial 0000.
        if sep1 != sep2 or area in ("000", "666") or area[0] == "9":
            continue
        if group != "00" and serial != "0000":
            return True
    return False


def _card(text: str) -> bool:
    for candidate in _CARD.findall(text):
        digits = candidate.replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and _card_prefix(digits) and luhn_ok(digits):
            return True
    return False


def _card_prefix(digits: str) -> bool:
    """An issuer prefix of a major network (Visa, Mastercard, Amex, Discover, JCB, Diners)."""
    two, four = int(digits[:2]), int(digits[:4])
    return (
        digits[0] == "4"
        or 51 <= two <= 55
        or 2221 <= four <= 2720
        or two in (34, 37, 36, 38, 65)
        or digits.startswith(("6011", "644", "645", "646", "647", "648", "649", "35", "30"))
    )


def _phone(text: str) -> bool:
    if _PHONE_NANP.search(text) is not None or _PHONE_E164.search(text) is not None:
        return True
    if _PHONE_INTL.search(text) is None:
        return False
    return 8 <= sum(ch.isdigit() for ch in text) <= 15


def _ipv4(text: str) -> bool:
    return any(all(int(o) <= 255 for o in m) for m in _IPV4.findall(text))


def _ipv6(text: str) -> bool:
    if text.count(":") < 2 or _IPV6.search(text) is None:
        return False
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def _npi(text: str) -> bool:
    return _NPI.search(text) is not None and luhn_ok("80840" + text)


def _valid_date(year: str, month: str, day: str) -> bool:
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        return False
    return True


def _date(text: str) -> bool:
    iso = _ISO_DATE.search(text)
    if iso is not None:
        return _valid_date(iso.group(1), iso.group(2), iso.group(3))
    us = _US_DATE.search(text)
    return us is not None and _valid_date(us.group(3), us.group(1), us.group(2))


@dataclass(frozen=True)
class Detector:
    detector_id: str
    name: str
    # Red (restricted) rather than yellow when it matches.
    restricted: bool
    # Weak detectors explain a decision but never make one.
    strong: bool
    description: str
    test: Callable[[str], bool]
    # Every pattern ``test`` searches with: it is True only if one of them matches, which lets
    # one RE2 set pass (_CANDIDATES) skip the detectors that cannot match a value. Empty: the
    # detector always runs (email: its Unicode classes alone pass the set's memory budget; its
    # test starts with a cheap "@" check instead).
    patterns: tuple[re2._Regexp[str], ...]


DETECTORS: tuple[Detector, ...] = (
    Detector(
        "ssn",
        "social security number",
        True,
        True,
        "NNN-NN-NNNN or NNN NN NNNN in an area the SSA assigns",
        _ssn,
        (_SSN,),
    ),
    Detector(
        "card",
        "payment card number",
        True,
        True,
        "13-19 digits with a card network's prefix that pass the Luhn check",
        _card,
        (_CARD,),
    ),
    Detector("email", "email address", False, True, "local-part@domain.tld", _email, ()),
    Detector(
        "phone",
        "phone number",
        False,
        True,
        "a formatted NANP number or +E.164",
        _phone,
        (_PHONE_NANP, _PHONE_E164, _PHONE_INTL),
    ),
    Detector(
        "ipv4", "IPv4 address", False, True, "four dotted octets of at most 255", _ipv4, (_IPV4,)
    ),
    Detector(
        "ipv6",
        "IPv6 address",
        False,
        True,
        "an address Python's ipaddress parses as IPv6",
        _ipv6,
        (_IPV6,),
    ),
    Detector(
        "mac",
        "MAC address",
        False,
        True,
        "six hex pairs separated by : or -",
        lambda t: _MAC.search(t) is not None,
        (_MAC,),
    ),
    Detector(
        "zip4",
        "ZIP+4 code",
        False,
        True,
        "NNNNN-NNNN",
        lambda t: _ZIP4.search(t) is not None,
        (_ZIP4,),
    ),
    Detector(
        "icd10",
        "ICD-10 diagnosis code",
        False,
        True,
        "a letter, two characters, a dot and up to four more (E11.9)",
        lambda t: _ICD10_DOTTED.search(t) is not None,
        (_ICD10_DOTTED,),
    ),
    Detector(
        "ndc",
        "NDC drug code",
        False,
        True,
        "4-4-2, 5-3-2 or 5-4-1/2 digits with dashes",
        lambda t: _NDC.search(t) is not None,
        (_NDC,),
    ),
    Detector(
        "npi",
        "NPI provider number",
        False,
        True,
        "10 digits starting 1 or 2 passing Luhn over the 80840 prefix",
        _npi,
        (_NPI,),
    ),
    Detector(
        "mrn",
        "medical record number",
        False,
        True,
        "MRN followed by at least four digits",
        lambda t: _MRN.search(t) is not None,
        (_MRN,),
    ),
    Detector(
        "date",
        "calendar date",
        False,
        False,
        "YYYY-MM-DD or M/D/YYYY that is a real date",
        _date,
        (_ISO_DATE, _US_DATE),
    ),
    Detector(
        "zip5",
        "five-digit ZIP code",
        False,
        False,
        "NNNNN",
        lambda t: _ZIP5.search(t) is not None,
        (_ZIP5,),
    ),
    Detector(
        "icd10-bare",
        "ICD-10 category",
        False,
        False,
        "a letter and two characters (I10)",
        lambda t: _ICD10_BARE.search(t) is not None,
        (_ICD10_BARE,),
    ),
)
BY_ID = {d.detector_id: d for d in DETECTORS}


def _candidate_set() -> tuple[re2.Set, tuple[int, ...], frozenset[int]]:
    options = re2.Options()
    options.log_errors = False
    patterns = re2.Set.SearchSet(options)
    owners: list[int] = []  # pattern index -> its detector's index in DETECTORS
    for number, detector in enumerate(DETECTORS):
        for pattern in detector.patterns:
            patterns.Add(pattern.pattern)
            owners.append(number)
    patterns.Compile()
    return patterns, tuple(owners), frozenset(n for n, d in enumerate(DETECTORS) if not d.patterns)


# All the detectors' patterns in one RE2 set: one linear pass says which detectors could match
# a value, and only those run their own searches and checks (15 separate searches per string
# cost about three times the one pass and the few candidates; tests/policysvc/test_detectors.py
# checks the answers agree with running every detector).
_CANDIDATES, _OWNER_OF, _ALWAYS = _candidate_set()


def _candidates(text: str) -> list[Detector]:
    """The detectors that could match ``text``, in DETECTORS order."""
    # The indices of the patterns found (the stubs type it as a bool), or None.
    matched = cast(list[int] | None, _CANDIDATES.Match(text))
    if not matched:
        return [DETECTORS[n] for n in sorted(_ALWAYS)]
    return [DETECTORS[n] for n in sorted(_ALWAYS.union(_OWNER_OF[i] for i in matched))]


def _scalars(values: Iterable[Any]) -> Iterator[Any]:
    """The values and the scalar elements of arrays among them (bounded)."""
    for value in values:
        if isinstance(value, list):
            yield from (v for v in value[:MAX_ELEMENTS] if not isinstance(v, dict | list))
        else:
            yield value


def detect(values: Iterable[Any]) -> tuple[frozenset[str], frozenset[str]]:
    """(ids of detectors any value matched, JSON kinds of the scalar values seen)."""
    hits: set[str] = set()
    kinds: set[str] = set()
    for value in _scalars(values):
        kinds.add(json_type(value))
        if not isinstance(value, str):
            continue  # numbers lose leading zeros and dashes: no detector applies to them
        text = value[:MAX_SCANNED]
        for detector in _candidates(text):
            if detector.detector_id not in hits and detector.test(text):
                hits.add(detector.detector_id)
    return frozenset(hits), frozenset(kinds)
