"""Which default matcher a field's key names: the head word decides, not any word anywhere.

English compounds put the thing last ("page name" is a name of a page, "email opt in" is an
opt-in, "zip code count" is a count), so a matcher applies when one of its phrases ends the
key, after trailing words that keep the kind ("number", "id", "code", "list", "status", units)
are set aside. How a matcher's rule treats what comes before the phrase:

- ``head``: nothing more (``email``, ``ssn``, ``password``): an identifier or a secret.
- ``person``: the qualifier (the word before, else the parent key) must name a person:
  ``first name``, ``patient.name`` yes; ``product name``, ``app.name`` no.
- ``event``: the qualifier must be a clinical or life event: ``admission date`` yes,
  ``created at`` / ``order date`` no.
- ``subject``: any qualifier but a thing: ``shipping address`` yes, ``item condition``,
  ``screen.height``, ``ab test result`` no.
- ``anywhere``: a health or protected-category fact, sensitive in any position
  (``hiv status``, ``diabetes type``, ``is pregnant``) unless the head is a UI word
  (``medication page viewed``).

A field whose sampled values are all booleans is a flag about the thing, not the thing
(``email opt in``, ``has mailing address``), for matchers whose values column says ``text``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from services.policysvc.keywords import Lexicon, normalize_key

_RANK = {"red": 0, "yellow": 1, "green": 2}


class Rule(StrEnum):
    HEAD = "head"
    PERSON = "person"
    EVENT = "event"
    SUBJECT = "subject"
    ANYWHERE = "anywhere"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Trailing words that keep the kind of what precedes them ("card number", "allergy list",
# "veteran status", "weight kg", "avatar url").
KEEPS_KIND = _words(
    "number id identifier code value status list hash digest detail info information data "
    "string raw last partial masked line plain plaintext cleartext encrypted entry field "
    "result level reading measurement score amount history record url uri link src "
    "kg lb g mg ml dl cm mm m km ft inch mi mmhg bpm year month week day ms sec second minute "
    "hour "
    "text label full given primary secondary current previous new old other"
)
# Qualifiers that name a person, for the ``person`` rule (and parents such as traits).
PERSON = _words(
    "first last middle given family full sur maiden nick legal preferred real birth "
    "patient person people user customer client member subscriber insured policyholder "
    "beneficiary guarantor dependent spouse partner husband wife parent mother father "
    "guardian child son daughter sibling brother sister relative kin next household "
    "emergency contact caregiver caretaker provider doctor physician clinician nurse "
    "practitioner therapist dentist pharmacist surgeon specialist referring attending "
    "prescriber prescribing primary care pcp cardholder holder account employee employer "
    "trait identity individual resident student participant respondent applicant "
    "recipient sender owner signer witness author attorney agent proxy representative "
    "father mother grandparent grandmother grandfather family member"
)
# Qualifiers that name a thing, for the ``person`` and ``subject`` rules.
THING = _words(
    "page product event campaign plan screen file experiment form template field library "
    "app application os item brand category company org organization store shop merchant "
    "vendor button tab section feature flag variant test ab split unit load speed typing "
    "quiz course song track album game level list team project task job role tag column "
    "table database db host server domain bucket attribute parameter param "
    "variable var metric dimension segment audience cohort channel source medium widget "
    "component module package service queue topic device browser network carrier wifi "
    "locale language country region timezone currency model manufacturer version build "
    "release environment env step stage funnel goal coupon promo discount offer deal order "
    "cart checkout sku menu icon layout theme color font style action trigger rule workflow "
    "memory contract web wallet register stored sql function method class object "
    "notification message article post blog video content document report dashboard sheet "
    "workspace space venue meeting display window viewport frame node cluster pod region "
    "item package parcel shipment box container vehicle road weather market loan payment "
    "invoice subscription tier reward loyalty survey poll question answer option choice "
    "search query filter sort key token session request response api endpoint webhook "
    "integration destination pipeline job batch export import backup email sms push "
    "sender business organization hospital clinic facility location site office "
    "release commit branch repo repository image asset media category department"
)
# Clinical and life events whose dates are identifiers under HIPAA Safe Harbor (§164.514(b)).
EVENT = _words(
    "birth death deceased admission admit admitted discharge discharged service visit "
    "appointment encounter procedure surgery operation diagnosis diagnosed onset treatment "
    "treated therapy vaccination vaccinated vaccine immunization test tested lab collection "
    "specimen prescription prescribed fill refill dispense dispensed injury accident "
    "delivery due conception pregnancy menstrual hospitalization hospital exam examination "
    "screening consultation checkup followup transfusion transplant infusion dose injection "
    "symptom care intake referral"
)
# Head words of an interface or setting about a thing: the field holds no fact of a person.
UI_HEADS = _words(
    "shown seen viewed clicked tapped opened closed focused displayed prompt prompted label "
    "placeholder tooltip page screen tab button link field form format version template "
    "icon banner modal dialog widget section menu enabled disabled toggle toggled setting "
    "flag sent requested reminder notification color style"
)
# First words that make a key a yes/no question about the thing ("has_mailing_address").
FLAG_PREFIXES = _words("is has was did can should allow enable show needs wants")


@dataclass(frozen=True)
class Concept:
    """One default key matcher: its phrases (canonical words) and how they apply."""

    name: str
    classification: str
    rule: Rule
    text_only: bool
    phrases: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class KeyFinding:
    """What a key's words say: the concept, the phrase that matched, and why, in words."""

    concept: Concept | None
    reason: str


class KeyRules:
    """Applies the concepts to a path's keys (cost linear in the path's length)."""

    def __init__(self, concepts: Sequence[Concept]) -> None:
        self._by_last: dict[str, list[tuple[tuple[str, ...], Concept]]] = {}
        self._anywhere: dict[str, list[tuple[tuple[str, ...], Concept]]] = {}
        known: set[str] = set()
        for concept in concepts:
            for phrase in concept.phrases:
                known.update(phrase)
                self._by_last.setdefault(phrase[-1], []).append((phrase, concept))
                if concept.rule is Rule.ANYWHERE:
                    self._anywhere.setdefault(phrase[-1], []).append((phrase, concept))
        for found in (*self._by_last.values(), *self._anywhere.values()):
            found.sort(key=lambda pair: -len(pair[0]))  # longest phrase first
        known.update(KEEPS_KIND, PERSON, THING, EVENT, UI_HEADS, FLAG_PREFIXES)
        self.lexicon = Lexicon(known)
        # The same few hundred keys recur in every event: remember what each one says.
        self.find = functools.lru_cache(maxsize=8192)(self._find_uncached)  # type: ignore[method-assign]

    def _at_end(self, words: Sequence[str]) -> tuple[tuple[str, ...], Concept] | None:
        for phrase, concept in self._by_last.get(words[-1], ()):
            if tuple(words[len(words) - len(phrase) :]) == phrase:
                return phrase, concept
        return None

    def _mentioned(self, words: Sequence[str]) -> tuple[tuple[str, ...], Concept] | None:
        for end in range(len(words), 0, -1):
            for phrase, concept in self._anywhere.get(words[end - 1], ()):
                if tuple(words[max(0, end - len(phrase)) : end]) == phrase:
                    return phrase, concept
        return None

    def find(
        self, key: str, parent: str | None, values: frozenset[str] = frozenset()
    ) -> KeyFinding:
        """The concept ``key`` (under ``parent``) names; ``values`` are the JSON kinds seen."""
        return self._find_uncached(key, parent, values)

    def _find_uncached(
        self, key: str, parent: str | None, values: frozenset[str] = frozenset()
    ) -> KeyFinding:
        """The concept ``key`` (under ``parent``) names; ``values`` are the JSON kinds seen."""
        words = self.lexicon.words(key)
        finding = self._find(key, words, parent, values)
        glued = normalize_key(key)
        if finding.concept is None and glued != key.lower():
            # "Pass-Word", "E-Mail": split where the writer did not mean a new word.
            again = self._find(key, self.lexicon.words(glued), parent, values)
            if again.concept is not None:
                return again
        return finding

    def _find(
        self, key: str, words: list[str], parent: str | None, values: frozenset[str]
    ) -> KeyFinding:
        parent_words = self.lexicon.words(parent) if parent else []
        flag_prefix = bool(words) and words[0] in FLAG_PREFIXES
        if flag_prefix:
            words = words[1:]
        cores, context = self._cores(words), parent_words
        if not cores:
            # "number", "id", "line1": the parent says what it is ("card.number", "device.id").
            cores, context = self._cores([*parent_words, *words]), words
        if not cores:
            return KeyFinding(None, f"key {key!r} names no kind of personal data")
        flag = flag_prefix or (bool(values) and values <= {"boolean"})
        best, why_not = self._best(key, cores, context, flag)
        if best is None and context is parent_words and parent_words:
            # "card.exp", "name.given": the key continues what its parent names.
            best, _ = self._best(key, self._cores([*parent_words, *words]), words, flag)
            if best is None and set(words) <= KEEPS_KIND | PERSON:
                # "name.family": a part of what the parent key names.
                best, _ = self._best(key, self._cores(parent_words), words, flag)
        if best is not None:
            return best
        head_word = cores[-1][-1]
        mentioned = self._mentioned([*context, *cores[0]])
        if mentioned is not None and head_word not in UI_HEADS:
            phrase, concept = mentioned
            where = "mentions" if phrase[-1] in cores[0] else "sits under a key that mentions"
            return KeyFinding(
                concept, f"key {key!r} {where} {' '.join(phrase)!r}, a health or protected fact"
            )
        return KeyFinding(
            None, why_not or f"key {key!r}: its head word {head_word!r} names no personal data"
        )

    def _cores(self, words: Sequence[str]) -> list[list[str]]:
        """``words``, then without each trailing word that keeps the kind ("number", "kg")."""
        cores = []
        core = list(words)
        while core:
            cores.append(list(core))
            if core[-1] not in KEEPS_KIND:
                break
            core.pop()
        return cores

    def _best(
        self, key: str, cores: list[list[str]], context: list[str], flag: bool
    ) -> tuple[KeyFinding | None, str]:
        """The most restrictive reading among the cores ("driver license" over "license
        number"), the fullest on a tie; else the first reason a reading was refused."""
        best: KeyFinding | None = None
        why_not = ""
        for core in cores:
            found, why = self._head(key, core, context, flag)
            why_not = why_not or why
            if found is not None and (
                best is None
                or _RANK[found.concept.classification] < _RANK[best.concept.classification]  # type: ignore[union-attr]
            ):
                best = found
        return best, why_not

    def _head(
        self, key: str, core: list[str], context_words: list[str], flag: bool
    ) -> tuple[KeyFinding | None, str]:
        """The concept at the head of ``core`` if its rule accepts, else why not."""
        found = self._at_end(core)
        if found is None:
            return None, ""
        phrase, concept = found
        said = " ".join(phrase)
        qualifier = core[: len(core) - len(phrase)]
        context = set(qualifier[-1:] or context_words)
        of = " ".join(qualifier[-1:] or context_words[-1:])
        if concept.rule is Rule.PERSON and not ((context | set(phrase)) & PERSON):
            if not of:
                return None, f"key {key!r} names {said!r} without saying of whom"
            return None, f"key {key!r} is the {said} of {of!r}, not of a person"
        if concept.rule is Rule.EVENT and not (set(qualifier) & EVENT):
            what = f"{' '.join(qualifier)!r}" if qualifier else "nothing said"
            return None, f"key {key!r} is the {said} of {what}, not of care or a life event"
        if concept.rule is Rule.SUBJECT and context & THING:
            return None, f"key {key!r} is the {said} of {of!r}, a thing rather than a person"
        if flag and concept.text_only:
            return None, f"key {key!r} is a yes/no flag about {said!r}, not the {said} itself"
        return KeyFinding(concept, f"key {key!r} names {said!r} (its head word)"), ""


def concepts_from_rows(rows: Iterable[dict[str, str]]) -> list[Concept]:
    """Concepts from the default matcher table's rows (see data/default_pii_matchers.tsv)."""
    return [
        Concept(
            name=row["name"],
            classification=row["classification"],
            rule=Rule(row["rule"]),
            text_only=row["values"] == "text",
            phrases=tuple(tuple(p.split()) for p in row["phrases"].split("|")),
        )
        for row in rows
    ]
