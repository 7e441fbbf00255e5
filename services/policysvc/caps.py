"""policysvc's caps on what one request, and one workspace, may make it do (docs/security.md).

Past a cap the answer is RESOURCE_EXHAUSTED naming it. Checked after the caller is authorized
and before anything is parsed, so refusing costs no more than the counting.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common.errors import ResourceExhausted

# Field paths in one request (fields, add + remove, proposed_fields, paths).
MAX_PATHS_PER_REQUEST = 500
# Field paths one policy version may hold.
MAX_POLICY_FIELDS = 500
# Sample events in one request, and their total size in characters.
MAX_SAMPLE_EVENTS = 1000
MAX_SAMPLE_CHARS = 4 * 1024 * 1024
# Distinct paths one request's sample events may show.
MAX_SAMPLED_PATHS = 5_000
# What value matching costs: sampled values times the workspace's value matchers, plus sampled
# strings times the built-in detectors (15). Room for ~30,000 strings with no custom matcher.
MAX_VALUE_CHECKS = 500_000
# Distinct sampled paths a workspace keeps, and overrides it may set.
MAX_STORED_PATHS = 20_000
MAX_OVERRIDES = 10_000


def check_paths(count: int, what: str) -> None:
    if count > MAX_PATHS_PER_REQUEST:
        raise ResourceExhausted(
            f"{count} paths in {what}; the cap is {MAX_PATHS_PER_REQUEST} field paths per "
            "request: send them in several requests"
        )


def check_policy_size(count: int) -> None:
    if count > MAX_POLICY_FIELDS:
        raise ResourceExhausted(
            f"the policy would hold {count} fields; the cap is {MAX_POLICY_FIELDS} fields per "
            "policy: encrypt a parent object instead of its fields one by one"
        )


def check_samples(samples: Sequence[str], what: str = "sample_events") -> None:
    """The count and total size of a request's sample events, before any is parsed."""
    if len(samples) > MAX_SAMPLE_EVENTS:
        raise ResourceExhausted(
            f"{len(samples)} {what}; the cap is {MAX_SAMPLE_EVENTS} sample events per "
            "request: send them in batches"
        )
    total = sum(len(text) for text in samples)
    if total > MAX_SAMPLE_CHARS:
        raise ResourceExhausted(
            f"{what} total {total} characters; the cap is {MAX_SAMPLE_CHARS} per request: "
            "send them in batches"
        )


def check_sampled(paths: int, value_checks: int) -> None:
    """What the parsed samples hold, before any value is matched."""
    if paths > MAX_SAMPLED_PATHS:
        raise ResourceExhausted(
            f"the sample events hold {paths} distinct paths; the cap is {MAX_SAMPLED_PATHS} "
            "per request: send fewer events per request"
        )
    if value_checks > MAX_VALUE_CHECKS:
        raise ResourceExhausted(
            f"matching the sample events' values would take {value_checks} value checks; the "
            f"cap is {MAX_VALUE_CHECKS} value checks (values x value matchers, plus strings x "
            "built-in detectors) per request: send fewer events per request"
        )


def check_stored_paths(count: int, workspace_id: str) -> None:
    if count > MAX_STORED_PATHS:
        raise ResourceExhausted(
            f"workspace {workspace_id} would know {count} sampled paths; the cap is "
            f"{MAX_STORED_PATHS} per workspace: sample events with fewer distinct fields"
        )


def check_overrides(count: int, workspace_id: str) -> None:
    if count > MAX_OVERRIDES:
        raise ResourceExhausted(
            f"workspace {workspace_id} already has {MAX_OVERRIDES} overrides, the cap; remove "
            "one (SetClassification override without classification) before adding another"
        )
