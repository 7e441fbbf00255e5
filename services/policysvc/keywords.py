"""A field key as canonical words: split (snake, camel, Pascal, kebab, digits), glued words
segmented, abbreviations expanded, plurals made singular, and "X of Y" read as "Y X".

The classifier compares these words with the phrases of the default matchers, so
``dob``, ``date_of_birth``, ``birthDate`` and ``BirthDate`` all become ``birth date``.
Cost is linear in the key's length (a key is at most a few hundred characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Splits "socialSecurityNo" → social Security No, "HIVStatus" → HIV Status, "icd10" → icd 10.
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+|[^\W\d_]+")
# A glued token longer than this is not segmented (it is not a field name a person wrote).
_MAX_SEGMENTED = 48

# Abbreviations and synonyms of health, insurance and identity data: token → canonical words.
ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "dob": ("birth", "date"),
    "dt": ("date",),
    "bday": ("birthday",),
    "yob": ("birth", "year"),
    "dod": ("death", "date"),
    "fname": ("first", "name"),
    "lname": ("last", "name"),
    "mname": ("middle", "name"),
    "surname": ("last", "name"),
    "forename": ("first", "name"),
    "nickname": ("nick", "name"),
    "username": ("user", "name"),
    "tel": ("phone",),
    "telephone": ("phone",),
    "cellphone": ("phone",),
    "mobilephone": ("phone",),
    "msisdn": ("phone",),
    "addr": ("address",),
    "postcode": ("postal", "code"),
    "zipcode": ("zip", "code"),
    "zip4": ("zip", "code"),
    "ssn": ("social", "security", "number"),
    "sin": ("social", "insurance", "number"),
    "itin": ("tax", "id"),
    "tin": ("tax", "id"),
    "ein": ("tax", "id"),
    "mrn": ("medical", "record", "number"),
    "emr": ("health", "record"),
    "ehr": ("health", "record"),
    "phr": ("health", "record"),
    "dx": ("diagnosis",),
    "ddx": ("diagnosis",),
    "icd": ("diagnosis", "code"),
    "hx": ("medical", "history"),
    "cpt": ("procedure", "code"),
    "hcpcs": ("procedure", "code"),
    "rx": ("prescription",),
    "meds": ("medication",),
    "medicine": ("medication",),
    "ndc": ("drug", "code"),
    "ipv": ("ip",),
    "ipaddr": ("ip", "address"),
    "cc": ("credit", "card"),
    "ccn": ("card", "number"),
    "pan": ("card", "number"),
    "cvv": ("card", "security", "code"),
    "cvv2": ("card", "security", "code"),
    "cvc": ("card", "security", "code"),
    "csc": ("card", "security", "code"),
    "exp": ("expiry",),
    "expiration": ("expiry",),
    "num": ("number",),
    "nbr": ("number",),
    "nr": ("number",),
    "no": ("number",),
    "pwd": ("password",),
    "passwd": ("password",),
    "pw": ("password",),
    "passcode": ("password",),
    "passphrase": ("password",),
    "otp": ("one", "time", "password"),
    "totp": ("one", "time", "password"),
    "mfa": ("one", "time", "password"),
    "apikey": ("api", "key"),
    "jwt": ("auth", "token"),
    "creds": ("credential",),
    "lat": ("latitude",),
    "lng": ("longitude",),
    "lon": ("longitude",),
    "geo": ("geolocation",),
    "gps": ("geolocation",),
    "coords": ("geolocation",),
    "coordinates": ("geolocation",),
    "spo2": ("oxygen", "saturation"),
    "licence": ("license",),
    "vin": ("vehicle", "identification"),
    "plate": ("license", "plate"),
    "hba1c": ("a1c",),
    "bp": ("blood", "pressure"),
    "std": ("sti",),
    "dna": ("genetic",),
    "genomic": ("genetic",),
    "ethnic": ("ethnicity",),
    "religious": ("religion",),
    "pregnant": ("pregnancy",),
    "diabetic": ("diabetes",),
    "smoking": ("smoker",),
    "tobacco": ("smoker",),
    "copayment": ("copay",),
    "insurer": ("insurance",),
    "medical": ("medical",),
    "avatar": ("photo",),
    "selfie": ("photo",),
    "headshot": ("photo",),
    "picture": ("photo",),
    "pic": ("photo",),
    "homepage": ("website",),
    "url": ("url",),
    "handicap": ("disability",),
    "disabled": ("disabled",),
    "emp": ("employer",),
    "mac": ("mac",),
    "ssnlast4": ("social", "security", "number", "last"),
}

# Words that end in "s" and are singular already.
_SINGULAR_S = frozenset(
    [
        "address",
        "alias",
        "analysis",
        "bias",
        "bus",
        "campus",
        "canvas",
        "census",
        "class",
        "diabetes",
        "diagnosis",
        "gps",
        "herpes",
        "ios",
        "is",
        "its",
        "lupus",
        "measles",
        "mumps",
        "os",
        "plus",
        "prognosis",
        "progress",
        "process",
        "sinus",
        "sms",
        "status",
        "success",
        "access",
        "business",
        "virus",
        "yes",
        "this",
        "has",
        "was",
        "less",
        "loss",
        "miss",
        "aids",
        "hiv",
        "news",
        "series",
        "species",
        "lens",
        "iris",
        "pancreas",
        "psoriasis",
        "sclerosis",
        "tuberculosis",
        "arthritis",
        "hepatitis",
        "meningitis",
        "dermatitis",
        "bronchitis",
        "thesis",
        "basis",
        "crisis",
        "ms",
        "kms",
        "cms",
        "dms",
        "sms",
        "ios",
        "macos",
        "gas",
        "us",
        "vitals",
        "wellness",
        "fitness",
        "illness",
        "sickness",
        "consciousness",
    ]
)
_IRREGULAR = {
    "diagnoses": "diagnosis",
    "analyses": "analysis",
    "prognoses": "prognosis",
    "children": "child",
    "people": "person",
    "men": "man",
    "women": "woman",
    "addresses": "address",
    "statuses": "status",
    "aliases": "alias",
    "viruses": "virus",
    "data": "data",
}


def singular(word: str) -> str:
    """The singular of an English noun, by rule (good enough for field names)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or word in _SINGULAR_S or not word.endswith("s"):
        return word
    if word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    return word[:-1]


def normalize_key(key: str) -> str:
    """The form exact key matchers compare: lower case without spaces, "_" or "-"."""
    return "".join(ch for ch in key.lower() if ch not in " _-")


def split_key(key: str) -> list[str]:
    """The raw words of a key, lower case, digits as their own words."""
    return [w.lower() for w in _WORD.findall(key)]


class Lexicon:
    """The words the classifier knows; used to segment glued tokens ("zipcode", "firstname")."""

    def __init__(self, known: Iterable[str]) -> None:
        self.known = frozenset(known) | frozenset(ABBREVIATIONS)
        self._longest = max((len(w) for w in self.known), default=1)

    def _segment(self, token: str) -> list[str] | None:
        """Fewest known words that exactly cover ``token``, or None (O(len * longest word))."""
        if len(token) > _MAX_SEGMENTED:
            return None
        best: list[list[str] | None] = [None] * (len(token) + 1)
        best[0] = []
        for end in range(1, len(token) + 1):
            for start in range(max(0, end - self._longest), end):
                prefix = best[start]
                piece = token[start:end]
                if prefix is None or (
                    piece not in self.known and singular(piece) not in self.known
                ):
                    continue
                # Pieces of one letter are too easy to find by accident ("z" + "ip").
                if len(piece) < 2:
                    continue
                candidate = [*prefix, piece]
                current = best[end]
                if current is None or len(candidate) < len(current):
                    best[end] = candidate
        return best[len(token)]

    def words(self, key: str) -> list[str]:
        """The canonical words of ``key`` (see the module docstring)."""
        out: list[str] = []
        for token in self._merged(split_key(key)):
            if token.isdigit():
                continue  # "line1", "icd10", "ssn_last4": the digits say nothing of the kind
            pieces = [token]
            if token not in self.known and singular(token) not in self.known:
                pieces = self._segment(token) or [token]
            for piece in pieces:
                expanded = ABBREVIATIONS.get(piece) or ABBREVIATIONS.get(singular(piece))
                out.extend(expanded if expanded else (singular(piece),))
        return _of_reversed(out)

    def _merged(self, tokens: list[str]) -> list[str]:
        """Rejoins tokens the splitter cut at digits when the whole is a known word
        ("a1c", "spo2", "phq9", "cvv2")."""
        out: list[str] = []
        i = 0
        while i < len(tokens):
            for width in (3, 2, 1):
                joined = "".join(tokens[i : i + width])
                if width == 1 or (i + width <= len(tokens) and joined in self.known):
                    out.append(joined)
                    i += width
                    break
        return out


def _of_reversed(words: list[str]) -> list[str]:
    """ "date of birth" → "birth date", "reason for visit" → "visit reason"; drops articles."""
    link = next((w for w in ("of", "for") if w in words), None)
    if link is not None:
        at = words.index(link)
        if 0 < at < len(words) - 1:
            words = [*words[: at - 1], *words[at + 1 :], words[at - 1]]
    return [w for w in words if w not in ("of", "for", "the", "a", "an")]
