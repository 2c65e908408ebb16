"""``@gated``: a tool function that runs only after approval and a passed gate check.

::

    @gated("payments.transfer", gate=gate)
    async def transfer(amount_usd: int, to_account: str, memo: str = "") -> str:
        ...

    await transfer(12_500, "DE89…")   # waits for approvers, then runs — or raises

For each call the decorator

1. binds the real arguments to the signature, applies defaults and turns them into
   plain JSON (the parameters approvers see and the payload hash covers);
2. asks keyturn (:meth:`Gate.require`) and waits, bounded by ``timeout``;
3. copies the arguments and derives the parameters again from the copies: if they
   changed while waiting, the changed call is shown to the gate (which refuses and
   records it) and the function does not run;
4. passes the gate with exactly those parameters;
5. runs the function once, with the copies, so nothing the caller still holds can
   change what runs after the check.

Any refusal, timeout or error raises (a :class:`KeyturnClientError`) before the
function is called. Arguments named in ``exclude`` (clients, sessions, loggers) are
passed through untouched and are not part of what is approved.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar

from adapters.agents.approval import Approval
from adapters.agents.client import Gate
from adapters.agents.errors import GateRefused
from adapters.agents.params import call_params
from core import canonical
from core.requests import payload_hash

P = ParamSpec("P")
R = TypeVar("R")


def gated(
    route: str,
    *,
    gate: Gate | Callable[[], Gate],
    timeout: float = 600.0,
    exclude: Iterable[str] = (),
    justification: str | None = None,
    plan_hash_arg: str | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Make an async function run only with keyturn's approval for its exact arguments.

    Args:
        route: the tool route the function performs.
        gate: the :class:`Gate` to use, or a function returning it (read at call time).
        timeout: seconds to wait for a decision before failing closed.
        exclude: argument names left out of the approved parameters.
        justification: a sentence shown to approvers.
        plan_hash_arg: the argument that carries a plan fingerprint, when the policy
            asks for one (it stays part of the parameters too).

    Raises:
        TypeError: at decoration, for a function that is not ``async def`` or an
            ``exclude``/``plan_hash_arg`` name the function does not have.
    """
    excluded = frozenset(exclude)

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("@gated wraps async functions only")
        signature = inspect.signature(fn)
        unknown = (excluded | ({plan_hash_arg} if plan_hash_arg else set())) - set(
            signature.parameters
        )
        if unknown:
            raise TypeError(f"{fn.__qualname__} has no argument named {sorted(unknown)}")

        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            client = gate if isinstance(gate, Gate) else gate()
            asked = call_params(signature, args, kwargs, exclude=excluded)
            plan = _plan_hash(signature, args, kwargs, plan_hash_arg)
            approval = await client.require(
                route, asked, plan_hash=plan, justification=justification, timeout=timeout
            )
            # Private copies: from here on, only these are checked and run.
            own_args, own_kwargs = _private_copies(signature, args, kwargs, excluded)
            now = call_params(signature, own_args, own_kwargs, exclude=excluded)
            if not canonical.digests_equal(payload_hash(now), approval.payload_hash_b64u):
                await _refuse_changed(client, approval, route, now, plan)
            await client.check(approval, route, now, plan_hash=plan)
            return await fn(*own_args, **own_kwargs)

        return run

    return decorate


async def _refuse_changed(
    client: Gate, approval: Approval, route: str, changed: dict[str, Any], plan: str | None
) -> None:
    """The arguments changed after approval: never run; let the gate record the attempt."""
    if approval.gated:
        # Expected to raise (PAYLOAD_HASH_MISMATCH), recorded by keyturn. A gate that
        # passed a changed call would be wrong: the grant is then spent and nothing runs.
        await client.check(approval, route, changed, plan_hash=plan)
    raise GateRefused(
        "ARGUMENTS_CHANGED",
        "the arguments changed after they were approved; the call was not run",
        request_id=approval.request_id,
    )


def _plan_hash(
    signature: inspect.Signature,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    name: str | None,
) -> str | None:
    if name is None:
        return None
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    value = bound.arguments.get(name)
    if value is not None and not isinstance(value, str):
        raise GateRefused("PLAN_HASH_INVALID", f"argument {name} must be text (a plan hash)")
    return value


def _private_copies(
    signature: inspect.Signature,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    excluded: frozenset[str],
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    bound = signature.bind(*args, **kwargs)
    for name in list(bound.arguments):
        if name not in excluded:
            bound.arguments[name] = copy.deepcopy(bound.arguments[name])
    return bound.args, bound.kwargs
