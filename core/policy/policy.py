"""A loaded Work Policy Contract: its identity (hash), its people and its rules.

:func:`policy_from_payload` is the only way to build a :class:`Policy`. It hashes the
payload as given (``policy_hash_b64u = b64u(sha256(JCS(payload)))``), validates the
very bytes it hashed, and compiles every rule and condition once, so that
:meth:`Policy.evaluate` is pure lookups and closure calls. A payload that is not
exactly right is refused with :class:`~core.errors.PolicyError` (``POLICY_INVALID``,
message naming the field path): keyturn never runs a policy it only partly understood.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from core import canonical
from core.errors import CanonicalizationError, InvalidDidError, PolicyError
from core.keys import public_key_from_did
from core.policy.claw import StatementEngine, compile_statements
from core.policy.model import (
    JSON,
    ApprovalRequirement,
    BreakglassTerms,
    Decision,
    Group,
    Outcome,
    TokenRequirements,
    ToolCall,
    invalid,
)
from core.policy.rules import RuleEngine, compile_rules
from core.policy.schema import KeyturnWpcModel, RuleModel, parse_claw_v2, parse_keyturn

log = logging.getLogger(__name__)

#: A policy larger than this (as JCS bytes) is refused before it is parsed.
MAX_POLICY_BYTES = 1024 * 1024

#: Compiled policies by policy hash, with the exact canonical bytes they were compiled
#: from. Compiling is a pure function of those bytes and a :class:`Policy` is immutable,
#: so a verifier that meets the same WPC again (every sealed bundle carries one) reuses
#: the compiled policy instead of validating and compiling it again. The bytes are
#: compared, not only the hash, so even a SHA-256 collision could not swap a policy.
#: Least recently used first; bounded.
_COMPILED: OrderedDict[str, tuple[bytes, Policy]] = OrderedDict()
_COMPILED_MAX = 64


class Policy:
    """An immutable, compiled WPC. Build it with :func:`policy_from_payload`.

    Attributes:
        policy_hash_b64u: ``b64u(sha256(JCS(payload)))``: the policy's identity.
        policy_id: the payload's ``policy_id``.
        name: ``policy_name`` (or ``policy_id`` for a Claw v2 policy).
        issuer_did: who issued it (for a signed WPC, also its signer).
        policy_version: ``"1"`` (keyturn rules) or ``"2"`` (Claw v2 statements).
        groups: approver groups by key.
        requirements: approval requirements by name.
        token: what a scoped token under this policy must carry.
        cst_max_ttl_seconds: the token lifetime cap (``token.cst_max_ttl_seconds``).
        tool_surface: every route pattern an allow or gate rule names (the routes a
            job's scoped token may cover); empty for Claw v2 policies.
    """

    __slots__ = (
        "_engine",
        "_payload",
        "description",
        "groups",
        "issuer_did",
        "name",
        "policy_hash_b64u",
        "policy_id",
        "policy_version",
        "requirements",
        "token",
        "tool_surface",
    )

    _payload: dict[str, Any]
    _engine: RuleEngine | StatementEngine
    policy_hash_b64u: str
    policy_id: str
    name: str
    issuer_did: str
    policy_version: str
    description: str | None
    groups: Mapping[str, Group]
    requirements: Mapping[str, ApprovalRequirement]
    token: TokenRequirements
    tool_surface: tuple[str, ...]

    def __init__(self, *, _payload: dict[str, Any], _hash: str, _build: dict[str, Any]) -> None:
        object.__setattr__(self, "_payload", _payload)
        object.__setattr__(self, "policy_hash_b64u", _hash)
        for key, value in _build.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Policy is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Policy is immutable")

    @property
    def payload(self) -> dict[str, JSON]:
        """A copy of the exact payload that was hashed (callers cannot alter the policy)."""
        return copy.deepcopy(self._payload)

    @property
    def cst_max_ttl_seconds(self) -> int:
        return self.token.cst_max_ttl_seconds

    def evaluate(self, call: ToolCall) -> Decision:
        """Decide one exact call. Never raises for a well-formed :class:`ToolCall`.

        Should anything unexpected go wrong inside a rule, the answer is a denial
        (``POLICY_EVALUATION_FAILED``), never an allow.
        """
        try:
            return self._engine.evaluate(call)
        except Exception:
            log.exception(
                "policy %s failed to evaluate %s", self.policy_id, getattr(call, "route", "?")
            )
            return Decision(
                outcome=Outcome.DENIED,
                reason_code="POLICY_EVALUATION_FAILED",
                message="The policy could not decide this call, so it is denied.",
                rules=(),
                requirements=(),
                breakglass=None,
                sensitive_params=frozenset(),
                requires_plan_fingerprint=False,
            )

    def requirement_text(self, req: ApprovalRequirement) -> str:
        """The quorum in words, with the groups' display names.

        ``2 approvers: one from Finance-Approvers, one from Security-Approvers; not the
        requester or the person the agent acts for``.
        """
        return requirement_text(req, self.groups)

    def __repr__(self) -> str:
        return f"Policy(policy_id={self.policy_id!r}, hash={self.policy_hash_b64u!r})"


def requirement_text(req: ApprovalRequirement, groups: Mapping[str, Group]) -> str:
    """:meth:`Policy.requirement_text` for a requirement and the groups it names."""

    def label(key: str) -> str:
        group = groups.get(key)
        return group.display_name if group is not None else key

    n = req.needed
    head = f"{n} approver{'s' if n != 1 else ''}"
    pool = [label(k) for k in req.eligible_groups]
    if not req.one_from_each:
        body = f"{head} from {_either(pool)}"
    else:
        body = f"{head}: " + ", ".join(f"one from {label(k)}" for k in req.one_from_each)
        rest = n - len(req.one_from_each)
        if rest > 0:
            body += f", and {rest} more from {_either(pool)}"
    body += "; not the requester or the person the agent acts for"
    if req.require_pim == "required":
        body += "; PIM role activation required"
    if req.allow_guests:
        body += "; guest accounts may approve"
    if req.critical:
        body += "; approvers confirm by typing the last 4 characters of the payload hash"
    return body


def _either(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]


def policy_from_payload(unverified_payload: Mapping[str, JSON]) -> Policy:
    """Hash, validate and compile a WPC payload (not its envelope).

    Raises:
        PolicyError: ``POLICY_INVALID`` naming the field path for anything malformed:
            unknown fields, a payload with no canonical JSON form, an unsupported
            ``policy_version``, an issuer that is not an Ed25519 did:key, impossible
            quorums, unknown groups, and every refusal of the model classes.
    """
    if not isinstance(unverified_payload, Mapping):
        raise invalid("a WPC payload is a JSON object")
    try:
        canonical_json = canonical.jcs(unverified_payload)
    except CanonicalizationError as e:
        raise invalid(f"payload has no canonical JSON form: {e.message}") from e
    if len(canonical_json) > MAX_POLICY_BYTES:
        raise invalid(f"payload is larger than {MAX_POLICY_BYTES} bytes")
    policy_hash = canonical.sha256_b64u(canonical_json)
    known = _COMPILED.get(policy_hash)
    if known is not None and known[0] == canonical_json:
        _COMPILED.move_to_end(policy_hash)
        return known[1]
    version = unverified_payload.get("policy_version")
    if version == "1":
        build = _build_keyturn(parse_keyturn(canonical_json))
    elif version == "2":
        build = _build_claw_v2(canonical_json)
    else:
        raise invalid('policy_version: must be "1" (keyturn WPC) or "2" (Claw v2 statements)')
    _check_issuer(build["issuer_did"])
    payload = copy.deepcopy(dict(unverified_payload))
    policy = Policy(_payload=payload, _hash=policy_hash, _build=build)
    _COMPILED[policy_hash] = (canonical_json, policy)
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return policy


def _check_issuer(did: str) -> None:
    try:
        public_key_from_did(did)
    except InvalidDidError as e:
        raise invalid(f"issuer_did: {e.message}") from e


def _build_keyturn(model: KeyturnWpcModel) -> dict[str, Any]:
    groups: dict[str, Group] = {}
    for key, g in model.groups.items():
        groups[key] = Group(key=key, directory_id=g.directory_id, display_name=g.display_name)
    requirements: dict[str, ApprovalRequirement] = {}
    for name, a in model.approvals.items():
        req = ApprovalRequirement(
            name=name,
            min_approvers=a.min_approvers,
            allowed_groups=tuple(a.allowed_groups),
            one_from_each=tuple(a.one_from_each),
            require_pim=a.require_pim,
            allow_guests=a.allow_guests,
            timeout_seconds=a.timeout_seconds,
            reminder_every_seconds=a.reminder_every_seconds,
            critical=a.critical,
            bind=tuple(a.bind),
            two_person=a.two_person,
            independent_of_requester=a.independent_of_requester,
            identity_provider=a.identity_provider,
        )
        unknown = [k for k in req.eligible_groups if k not in groups]
        if unknown:
            raise invalid(f"approvals.{name}: unknown group key(s) {', '.join(unknown)}")
        requirements[name] = req
    token = TokenRequirements(
        cst_max_ttl_seconds=model.token.cst_max_ttl_seconds,
        scope_hash_required=model.token.scope_hash_required,
        pin_wpc_hash=model.token.pin_wpc_hash,
        job_scoped_binding=model.token.job_scoped_binding,
    )

    def terms_for(rule: RuleModel, where: str) -> BreakglassTerms | None:
        b = rule.breakglass
        if b is None:
            return None
        try:
            terms = BreakglassTerms(
                max_duration_seconds=b.max_duration_seconds,
                token_ttl_seconds=b.token_ttl_seconds,
                renewable_without_reapproval=b.renewable_without_reapproval,
                rollback_steps=tuple(b.rollback_steps),
                kill_switch_triggers=tuple(b.kill_switch_triggers),
                executor=b.executor,
                kill_switch_actions=tuple(b.kill_switch_actions),
            )
        except PolicyError as e:
            raise invalid(f"{where}.{e.message}") from e
        if terms.token_ttl_seconds > token.cst_max_ttl_seconds:
            raise invalid(f"{where}.breakglass.token_ttl_seconds exceeds token.cst_max_ttl_seconds")
        return terms

    rules = compile_rules(model.rules, requirements, terms_for)
    groups_view = MappingProxyType(groups)
    surface = tuple(
        dict.fromkeys(g.pattern for r in rules if r.effect != "deny" for g in r.patterns)
    )
    partial: dict[str, Any] = {
        "policy_id": model.policy_id,
        "name": model.policy_name,
        "issuer_did": model.issuer_did,
        "policy_version": "1",
        "description": model.description,
        "groups": groups_view,
        "requirements": MappingProxyType(requirements),
        "token": token,
        "tool_surface": surface,
    }
    partial["_engine"] = RuleEngine(
        rules,
        policy_name=model.policy_name,
        describe=lambda req: requirement_text(req, groups_view),
    )
    return partial


def _build_claw_v2(canonical_json: bytes) -> dict[str, Any]:
    model = parse_claw_v2(canonical_json)
    if model.inherits is not None:
        raise invalid(
            "inherits: strict intersection with a parent policy is not supported; "
            "publish the flattened policy instead"
        )
    statements = compile_statements(model.statements)
    return {
        "policy_id": model.policy_id,
        "name": model.policy_id,
        "issuer_did": model.issuer_did,
        "policy_version": "2",
        "description": None,
        "groups": MappingProxyType({}),
        "requirements": MappingProxyType({}),
        "token": TokenRequirements(),
        "tool_surface": (),
        "_engine": StatementEngine(statements, policy_name=model.policy_id),
    }
