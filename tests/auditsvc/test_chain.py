"""The pure chain module: canonical form, hashes, checkpoints, and the verifier's verdicts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auditsvc import chain
from services.auditsvc.audit_log import Event
from services.common.audit_rules import check_event_type, normalize_details
from services.common.errors import InvalidArgument

AT = datetime(2026, 3, 1, 8, 30, 0, 123456, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
KEYS = chain.trust(KEY.public_key())


def fields(seq: int, **change: Any) -> dict[str, Any]:
    event = Event(
        event_id=f"00000000-0000-4000-8000-{seq:012d}",
        workspace_id="ws",
        actor_user_id="alice",
        event_type="Key Pair Generated",
        timestamp=AT,
        outcome="succeeded",
        details={"version": 2},
    )
    return {**event.fields(seq, AT), **change}


def build(n: int) -> list[chain.ChainRecord]:
    records: list[chain.ChainRecord] = []
    prev = chain.GENESIS_HASH
    for seq in range(1, n + 1):
        records.append(chain.seal(prev, fields(seq)))
        prev = records[-1].hash
    return records


def cp(rec: chain.ChainRecord) -> chain.Checkpoint:
    return chain.sign_checkpoint(KEY, "ws", rec.sequence, rec.hash, AT)


def test_canonical_form_is_fixed() -> None:
    """The canonical bytes are sorted, compact JSON with microsecond UTC times."""
    text = chain.canonical_json(fields(1)).decode()
    assert text.startswith('{"access_reason":"","actor_user_id":"alice","details":{"version":2}')
    assert '"recorded_at":"2026-03-01T08:30:00.123456Z","request_id":"","sequence":1' in text


def test_integral_doubles_hash_like_integers() -> None:
    """Struct's 2.0 and jsonb's 2 give the same hash."""
    assert normalize_details({"v": 2.0, "l": [1.0, 0.5]}) == {"v": 2, "l": [1, 0.5]}


@pytest.mark.parametrize("bad", [float("nan"), 2.0**60, "a\x00b"])
def test_unstorable_details_are_refused(bad: Any) -> None:
    """NaN, numbers beyond 2^53 and NUL characters cannot round-trip and are refused."""
    with pytest.raises(ValueError, match="details"):
        normalize_details({"v": bad})


def test_intact_chain_with_checkpoints_verifies() -> None:
    """A chain and its checkpoints verify; the latest checkpoint is reported."""
    records = build(4)
    verdict = chain.verify(records, [cp(records[1]), cp(records[3])], KEYS)
    assert (verdict.ok, verdict.records_checked, verdict.checkpoints_checked) == (True, 4, 2)
    assert verdict.latest_checkpoint == cp(records[3])


def test_rewritten_chain_is_caught_by_its_checkpoint() -> None:
    """Editing a record and re-hashing everything after it breaks the signed head."""
    records = build(4)
    checkpoint = cp(records[3])
    forged = records[:1]
    for seq in range(2, 5):
        change = {"actor_user_id": "mallory"} if seq == 2 else {}
        forged.append(chain.seal(forged[-1].hash, fields(seq, **change)))
    verdict = chain.verify(forged, [checkpoint], KEYS)
    assert verdict.problem is not None
    assert (verdict.problem.kind, verdict.problem.sequence) == (
        chain.Problem.CHECKPOINT_MISMATCH,
        4,
    )


def test_checkpoint_signed_by_another_key_is_refused() -> None:
    """A checkpoint whose signature the trusted keys do not confirm is a mismatch."""
    records = build(2)
    other = Ed25519PrivateKey.generate()
    forged = chain.sign_checkpoint(other, "ws", 2, records[1].hash, AT)
    verdict = chain.verify(records, [forged], KEYS)
    assert verdict.problem is not None
    assert verdict.problem.kind == chain.Problem.CHECKPOINT_MISMATCH


def test_duplicated_record_is_inserted() -> None:
    """A record that appears twice is INSERTED."""
    records = build(3)
    verdict = chain.verify([*records, records[2]], [], KEYS)
    assert verdict.problem is not None
    assert (verdict.problem.kind, verdict.problem.sequence) == (chain.Problem.INSERTED, 3)


def test_foreign_record_is_inserted() -> None:
    """A self-consistent record that does not follow its predecessor is INSERTED."""
    records = build(3)
    stranger = chain.seal("f" * 64, fields(2, actor_user_id="mallory"))
    verdict = chain.verify([records[0], stranger, records[2]], [], KEYS)
    assert verdict.problem is not None
    assert (verdict.problem.kind, verdict.problem.sequence) == (chain.Problem.INSERTED, 2)


@pytest.mark.parametrize(
    "event_type",
    ["Audit Log Viewed", "Private Key Sent", "Key Pair Made", "Source Debugger Raw Viewed"],
)
def test_past_tense_title_case_is_accepted(event_type: str) -> None:
    """Title Case names ending in a past participle pass."""
    check_event_type(event_type)


@pytest.mark.parametrize(
    "event_type", ["", "Viewed", "audit Log Viewed", "Audit Log View", "Audit  Log Viewed"]
)
def test_other_event_types_are_refused(event_type: str) -> None:
    """Empty, one-word, lower-case, present-tense or double-spaced names are refused."""
    with pytest.raises(InvalidArgument):
        check_event_type(event_type)
