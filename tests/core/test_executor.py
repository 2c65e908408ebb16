"""Executors, pure half: the state machine, the registry, target checks before anything is
sent, the retry rule, and offline verification of signed webhook calls."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import canonical
from core.envelope import sign_envelope
from core.errors import GateDeniedError, IllegalTransitionError, PolicyError
from core.executor import (
    ALERTING,
    STEPS,
    Action,
    ExecutionState,
    ExecutorRegistry,
    RetryPolicy,
    StepResult,
    advance,
    check_target,
    fold,
)
from core.grants import GRANT_TYPE, Grant
from core.keys import SigningKey
from core.policy import ToolCall
from core.requests import payload_hash
from core.times import to_epoch
from core.webhook_call import (
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    call_body,
    sign_call,
    verify_webhook_call,
)
from tests.fakes import T0, load_policy

KEYTURN = SigningKey.from_seed(bytes(range(1, 33)))
OTHER = SigningKey.from_seed(bytes(range(2, 34)))
POLICY = load_policy("breakglass-timeboxed.json")
ROUTE = "entra.role.assign"
PARAMS = {
    "tenant_id": "00000000-0000-4000-8000-0000000000aa",
    "principal": "alice@corp.example",
    "role": "Privileged Role Administrator",
}
S = ExecutionState


def grant_for(
    params: dict[str, Any], *, route: str = ROUTE, signer: SigningKey = KEYTURN
) -> dict[str, Any]:
    grant = Grant(
        grant_id="g-1",
        request_id="r-1",
        request_hash_b64u=canonical.sha256_b64u(b"request"),
        job_id="bg-1",
        policy_hash_b64u=POLICY.policy_hash_b64u,
        tool_route=route,
        payload_hash_b64u=payload_hash(params),
        approvals=(canonical.sha256_b64u(b"approval"),),
        issued_at=T0,
        expires_at=T0 + timedelta(minutes=10),
    )
    return sign_envelope(
        GRANT_TYPE, grant.to_payload(), signer, issued_at=T0, expires_at=grant.expires_at
    )


def action(params: dict[str, Any] | None = None) -> Action:
    p = dict(params or PARAMS)
    return Action("r-1", ROUTE, p, grant_for(p), T0 + timedelta(minutes=10))


class RecordingExecutor:
    """A fake executor that records whether anything was sent."""

    def __init__(self, kind: str = "entra.role.assign", refuse: bool = False) -> None:
        self._kind = kind
        self._refuse = refuse
        self.sent: list[str] = []

    @property
    def kind(self) -> str:
        return self._kind

    def check_target(self, action: Action) -> None:
        if self._refuse:
            raise GateDeniedError("TARGET_NOT_ALLOWED", "not this tenant")

    async def execute(self, action: Action) -> StepResult:
        self.sent.append("execute")
        return StepResult(True, "ok")

    async def verify(self, action: Action) -> StepResult:
        return StepResult(True, "ok")

    async def rollback(self, action: Action) -> StepResult:
        return StepResult(True, "ok")

    async def verify_rollback(self, action: Action) -> StepResult:
        return StepResult(True, "ok")


REGISTRY = ExecutorRegistry.from_config({ROUTE: {"kind": "entra.role.assign", "roles": {}}})


def _check(params: dict[str, Any], executor: RecordingExecutor | None = None) -> None:
    terms = POLICY.evaluate(
        ToolCall(route=ROUTE, params=PARAMS, requester="alice", breakglass=True)
    ).breakglass
    binding = REGISTRY.binding_for(ROUTE, terms)
    check_target(
        POLICY,
        route=ROUTE,
        params=params,
        requester="alice",
        context={},
        binding=binding,
        executor=executor or RecordingExecutor(),
        action=action(params),
        breakglass=True,
    )


# ---------------------------------------------------------------- state machine


def test_the_happy_path_executes_verifies_rolls_back_and_confirms() -> None:
    state = S.NOT_STARTED
    for step, expected in (
        ("execute", S.EXECUTED),
        ("verify", S.VERIFIED),
        ("rollback", S.ROLLBACK_SENT),
        ("verify_rollback", S.ROLLED_BACK),
    ):
        state = advance(state, step, ok=True)
        assert state is expected


def test_a_second_execute_is_an_illegal_transition() -> None:
    with pytest.raises(IllegalTransitionError):
        advance(S.EXECUTED, "execute", ok=True)


def test_a_failed_rollback_verification_stays_rollback_failed_until_resolved() -> None:
    state = advance(S.ROLLBACK_SENT, "verify_rollback", ok=False)
    assert state is S.ROLLBACK_FAILED and state in ALERTING
    assert advance(state, "resolve", ok=True) is S.RESOLVED


def test_nothing_executed_cannot_be_resolved_or_rolled_back() -> None:
    for step in ("resolve", "rollback", "verify", "verify_rollback"):
        with pytest.raises(IllegalTransitionError):
            advance(S.NOT_STARTED, step, ok=True)


@given(st.lists(st.tuples(st.sampled_from(STEPS), st.booleans()), max_size=12))
def test_every_sequence_either_follows_the_machine_or_is_refused(
    steps: list[tuple[str, bool]],
) -> None:
    state = S.NOT_STARTED
    for step, ok in steps:
        try:
            after = advance(state, step, ok=ok)
        except IllegalTransitionError:
            continue
        # Rolled back and resolved are terminal: nothing but a refusal follows them.
        assert state not in (S.ROLLED_BACK, S.RESOLVED)
        state = after


def test_fold_replays_receipt_details_and_keeps_the_execute_reference() -> None:
    status = fold(
        [
            {
                "step": "execute",
                "outcome": "ok",
                "executor": ROUTE,
                "reference": {"principal_id": "p"},
            },
            {"step": "verify", "outcome": "failed", "detail": "not visible"},
        ]
    )
    assert status.state is S.VERIFY_FAILED and status.alerting
    assert status.reference == {"principal_id": "p"} and status.executor == ROUTE


# ---------------------------------------------------------------- registry and targets


def test_a_route_the_policy_does_not_hand_to_an_executor_is_refused() -> None:
    with pytest.raises(GateDeniedError) as e:
        REGISTRY.binding_for(ROUTE, None)
    assert e.value.reason_code == "NO_EXECUTOR"


def test_an_executor_the_configuration_does_not_know_is_refused() -> None:
    registry = ExecutorRegistry.from_config({})
    terms = POLICY.evaluate(
        ToolCall(route=ROUTE, params=PARAMS, requester="alice", breakglass=True)
    ).breakglass
    assert terms is not None and terms.executor == ROUTE
    with pytest.raises(GateDeniedError) as e:
        registry.binding_for(ROUTE, terms)
    assert e.value.reason_code == "NO_EXECUTOR"


def test_malformed_executor_configuration_is_refused() -> None:
    with pytest.raises(PolicyError) as e:
        ExecutorRegistry.from_config({ROUTE: {"routes": [ROUTE]}})
    assert e.value.reason_code == "EXECUTOR_CONFIG_INVALID"
    with pytest.raises(PolicyError):
        ExecutorRegistry.from_config({ROUTE: {"kind": "webhook", "routes": ["bad route"]}})


def test_a_target_inside_the_constraints_passes() -> None:
    executor = RecordingExecutor()
    _check(PARAMS, executor)
    assert executor.sent == []  # checking never sends


def test_a_target_outside_the_policy_constraints_is_refused_before_anything_is_sent() -> None:
    executor = RecordingExecutor()
    with pytest.raises(GateDeniedError) as e:
        _check({**PARAMS, "principal": "mallory@corp.example"}, executor)
    assert e.value.reason_code == "CONSTRAINT_VIOLATED"
    assert executor.sent == []


def test_the_executors_own_target_check_runs_after_the_policy() -> None:
    with pytest.raises(GateDeniedError) as e:
        _check(PARAMS, RecordingExecutor(refuse=True))
    assert e.value.reason_code == "TARGET_NOT_ALLOWED"


def test_an_executor_of_another_kind_is_refused() -> None:
    with pytest.raises(GateDeniedError) as e:
        _check(PARAMS, RecordingExecutor(kind="webhook"))
    assert e.value.reason_code == "EXECUTOR_KIND_MISMATCH"


# ---------------------------------------------------------------- retries


def test_a_4xx_that_means_no_is_never_retried() -> None:
    policy = RetryPolicy()
    for status in (400, 401, 403, 404, 409):
        assert policy.next_delay(1, StepResult.from_status(status, "no")) is None


def test_transient_failures_back_off_exponentially_and_stop_at_the_cap() -> None:
    policy = RetryPolicy(max_attempts=4, first_delay_seconds=1, max_delay_seconds=3)
    failure = StepResult.from_status(503, "busy")
    assert [policy.next_delay(n, failure) for n in (1, 2, 3, 4)] == [1, 2, 3, None]
    assert policy.next_delay(1, StepResult.from_status(None, "timeout")) == 1
    throttled = replace(StepResult.from_status(429, "slow"), retry_after=2.5)
    assert policy.next_delay(1, throttled) == 2.5


# ---------------------------------------------------------------- webhook calls


def signed(
    params: dict[str, Any] | None = None,
    *,
    step: str = "execute",
    call_id: str = "c-1",
    at: Any = T0,
) -> tuple[bytes, dict[str, str]]:
    p = dict(params or PARAMS)
    body = call_body(call_id=call_id, step=step, route=ROUTE, params=p, grant=grant_for(p))
    return body, sign_call(body, KEYTURN, now=at)


def test_a_signed_call_verifies_offline_with_the_published_key() -> None:
    body, headers = signed()
    seen: set[str] = set()
    data = verify_webhook_call(body, headers, KEYTURN.public_key, T0, seen)
    assert data["params"] == PARAMS and data["grant"].tool_route == ROUTE
    assert seen == {"c-1"}


def test_a_tampered_body_is_refused() -> None:
    body, headers = signed()
    tampered = body.replace(b"alice@corp.example", b"mallo@corp.example")
    with pytest.raises(GateDeniedError) as e:
        verify_webhook_call(tampered, headers, KEYTURN.public_key, T0, set())
    assert e.value.reason_code == "WEBHOOK_SIGNATURE_INVALID"


def test_a_redated_call_is_refused() -> None:
    body, headers = signed()
    headers[HEADER_TIMESTAMP] = str(int(headers[HEADER_TIMESTAMP]) + 60)
    with pytest.raises(GateDeniedError) as e:
        verify_webhook_call(body, headers, KEYTURN.public_key, T0, set())
    assert e.value.reason_code == "WEBHOOK_SIGNATURE_INVALID"


def test_a_stale_call_is_refused() -> None:
    body, headers = signed()
    with pytest.raises(GateDeniedError) as e:
        verify_webhook_call(body, headers, KEYTURN.public_key, T0 + timedelta(minutes=6), set())
    assert e.value.reason_code == "WEBHOOK_STALE"


def test_a_replayed_call_is_refused() -> None:
    body, headers = signed()
    seen: set[str] = set()
    verify_webhook_call(body, headers, KEYTURN.public_key, T0, seen)
    with pytest.raises(GateDeniedError) as e:
        verify_webhook_call(body, headers, KEYTURN.public_key, T0, seen)
    assert e.value.reason_code == "WEBHOOK_REPLAYED"


def test_a_call_signed_by_another_key_is_refused() -> None:
    body, _ = signed()
    headers = sign_call(body, OTHER, now=T0)
    with pytest.raises(GateDeniedError) as e:
        verify_webhook_call(body, headers, KEYTURN.public_key, T0, set())
    assert e.value.reason_code == "WEBHOOK_KEY_UNKNOWN"
    headers = sign_call(body, KEYTURN, now=T0)
    headers[HEADER_SIGNATURE] = sign_call(body, OTHER, now=T0)[HEADER_SIGNATURE]
    with pytest.raises(GateDeniedError) as e:
        verify_webhook_call(body, headers, KEYTURN.public_key, T0, set())
    assert e.value.reason_code == "WEBHOOK_SIGNATURE_INVALID"


def test_params_that_differ_from_the_granted_ones_are_refused_even_when_signed() -> None:
    data = json.loads(signed()[0])
    data["params"] = {**PARAMS, "role": "Global Administrator"}
    body = canonical.emission(data)
    headers = sign_call(body, KEYTURN, now=T0)
    with pytest.raises(GateDeniedError) as e:
        verify_webhook_call(body, headers, KEYTURN.public_key, T0, set())
    assert e.value.reason_code == "PAYLOAD_HASH_MISMATCH"


def test_a_rollback_after_the_grant_expired_still_verifies_but_an_execute_does_not() -> None:
    later = T0 + timedelta(minutes=11)
    body, headers = signed(step="rollback", call_id="c-2", at=later)
    assert (
        verify_webhook_call(body, headers, KEYTURN.public_key, later, set())["step"] == "rollback"
    )
    body, headers = signed(step="execute", call_id="c-3", at=later)
    with pytest.raises(GateDeniedError) as e:
        verify_webhook_call(body, headers, KEYTURN.public_key, later, set())
    assert e.value.reason_code == "GRANT_EXPIRED"


def test_the_timestamp_header_is_unix_seconds() -> None:
    _, headers = signed()
    assert int(headers[HEADER_TIMESTAMP]) == to_epoch(T0)


@pytest.mark.parametrize("timestamp", ["١٧٩٥٠٠٠٠٠٠", "²", "999999999999", "+1795000000", " 1"])
def test_a_timestamp_that_is_not_ascii_unix_seconds_is_refused_with_a_reason(
    timestamp: str,
) -> None:
    """Unicode digits pass str.isdigit() (then crash encoding the signed bytes) and a
    12-digit time overflows datetime: both must be a WEBHOOK_STALE refusal, never an
    unexpected exception in the receiver."""
    body, headers = signed()
    headers[HEADER_TIMESTAMP] = timestamp
    with pytest.raises(GateDeniedError) as e:
        verify_webhook_call(body, headers, KEYTURN.public_key, T0, set())
    assert e.value.reason_code == "WEBHOOK_STALE"
