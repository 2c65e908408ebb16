"""Work Policy Contracts: which exact calls run, which need approval, which never run.

Public interface (``notes/policy_api.md``; other modules code against these names)::

    Outcome, ToolCall, Group, ApprovalRequirement, BreakglassTerms, RuleRef, Decision,
    Policy, policy_from_payload, sign_wpc, verify_wpc, load_policy_document, JSON

Modules: :mod:`~core.policy.model` (frozen values), :mod:`~core.policy.schema` (file
format, pydantic), :mod:`~core.policy.paths` and :mod:`~core.policy.conditions`
(three-valued conditions compiled to closures), :mod:`~core.policy.globs` (linear-time
globs), :mod:`~core.policy.rules` (keyturn rules and their evaluation order),
:mod:`~core.policy.claw` (Claw v2 statements), :mod:`~core.policy.policy` (hashing and
compiling a payload) and :mod:`~core.policy.wpc` (signed envelopes).

Errors: every refusal is a :class:`~core.errors.PolicyError` with one of
``POLICY_INVALID`` (message names the field path), ``POLICY_UNTRUSTED_ISSUER``,
``POLICY_UNSIGNED``, ``POLICY_HASH_MISMATCH``, ``INVALID_CALL`` or an envelope reason
code (``HASH_MISMATCH``, ``SIGNATURE_INVALID``, ``MALFORMED_ENVELOPE``…). Decisions
are values, not errors: :meth:`Policy.evaluate` returns a DENIED :class:`Decision`
with a reason code rather than raising.
"""

from core.policy.model import (
    JSON,
    ApprovalRequirement,
    BreakglassTerms,
    Decision,
    Group,
    Outcome,
    RuleRef,
    ToolCall,
)
from core.policy.policy import Policy, policy_from_payload
from core.policy.wpc import load_policy_document, sign_wpc, verify_wpc

__all__ = [
    "JSON",
    "ApprovalRequirement",
    "BreakglassTerms",
    "Decision",
    "Group",
    "Outcome",
    "Policy",
    "RuleRef",
    "ToolCall",
    "load_policy_document",
    "policy_from_payload",
    "sign_wpc",
    "verify_wpc",
]
