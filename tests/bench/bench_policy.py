"""Policy decisions per second: keyturn's compiled WPC engine next to cedarpy.

The same rules (seed 000's enterprise two-person policy) are decided both ways for a
mixed set of calls, measured in the same run:

* keyturn: ``Policy.evaluate(ToolCall(...))``, the policy compiled once at load;
* cedarpy: the equivalent Cedar policy set, ``PolicySet`` and ``Entities`` parsed
  once (LIMITS.md §2.5), one ``is_authorized`` per call. Gate rules are ``permit``
  policies annotated ``@effect("gate")``: a call is gated when Cedar allows it and any
  determining policy is a gate, which is what keyturn's evaluation order gives.
  Building Cedar's request (recipient domains, amount, dataset into ``context``) is
  part of the Cedar side, as building the ``ToolCall`` is part of ours.

Both engines must agree on every call before anything is timed. Goal: keyturn at
least 10× cedarpy's decisions per second.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.policy import Outcome, Policy, ToolCall, policy_from_payload
from core.policy.conditions import email_domain
from tests.bench.timing import per_op, row

MANIFEST = (
    Path(__file__).resolve().parents[2] / "manifests" / "policies" / "enterprise-two-person.json"
)
AGENT = "did:key:z6MkneMkZqwqRiU5mJzSG3kDwzt9P8C59N4NGTfBLfSGE7c7"

CEDAR_POLICIES = """
@id("mail-external") @effect("gate")
permit(principal, action == Action::"m365.graph.sendMail", resource)
when {
  !(context has recipient_domains) || !(["corp.example"].containsAll(context.recipient_domains))
};

@id("mail-internal") @effect("allow")
permit(principal, action == Action::"m365.graph.sendMail", resource);

@id("app-role-assignment") @effect("gate")
permit(principal, action == Action::"m365.graph.addAppRoleAssignment", resource);

@id("payments-500") @effect("gate")
permit(principal, action == Action::"payments.transfer", resource)
when { !(context has amount_usd) || context.amount_usd >= 500 };

@id("payments-small") @effect("allow")
permit(principal, action == Action::"payments.transfer", resource);

@id("export-customer-pii") @effect("gate")
permit(principal, action == Action::"storage.export", resource)
when { !(context has dataset) || context.dataset == "customer_pii" };

@id("export-other") @effect("allow")
permit(principal, action == Action::"storage.export", resource);

@id("policy-activate") @effect("gate")
permit(principal, action == Action::"keyturn.policy.activate", resource);
"""
CEDAR_ENTITIES = [{"uid": {"type": "Agent", "id": "invoice-bot"}, "attrs": {}, "parents": []}]
GATES = {
    "mail-external",
    "app-role-assignment",
    "payments-500",
    "export-customer-pii",
    "policy-activate",
}


def _mail(to: list[str], cc: list[str] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "subject": "Invoice 2026-118",
        "body": {"contentType": "text", "content": "Please find the invoice attached."},
        "toRecipients": [{"emailAddress": {"address": a}} for a in to],
    }
    if cc:
        message["ccRecipients"] = [{"emailAddress": {"address": a}} for a in cc]
    return {"message": message, "saveToSentItems": True}


CALLS: list[tuple[str, dict[str, Any]]] = [
    ("m365.graph.sendMail", _mail(["bob@corp.example"])),
    ("m365.graph.sendMail", _mail(["bob@corp.example"], cc=["eve@evil.example"])),
    ("payments.transfer", {"amount_usd": 499, "to_account": "DE89 3704 0044", "memo": "INV-1"}),
    ("payments.transfer", {"amount_usd": 12500, "to_account": "DE89 3704 0044", "memo": "INV-2"}),
    ("storage.export", {"dataset": "customer_pii", "format": "csv"}),
    ("storage.export", {"dataset": "sales_2025", "format": "csv"}),
    ("m365.graph.addAppRoleAssignment", {"principalId": "p", "appRoleId": "r"}),
    ("keyturn.policy.activate", {"policy_hash_b64u": "x" * 43}),
    ("shell.exec", {"cmd": "id"}),
    ("m365.graph.sendMail", _mail(["a@corp.example", "b@corp.example", "c@corp.example"])),
]


def keyturn_decider(policy: Policy) -> Callable[[str, dict[str, Any]], Outcome]:
    def decide(route: str, params: dict[str, Any]) -> Outcome:
        return policy.evaluate(ToolCall(route=route, params=params, requester=AGENT)).outcome

    return decide


def cedar_context(route: str, params: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if route == "m365.graph.sendMail":
        message = params.get("message", {})
        domains = []
        for field in ("toRecipients", "ccRecipients", "bccRecipients"):
            for r in message.get(field, []):
                domains.append(email_domain(r.get("emailAddress", {}).get("address")) or "")
        context["recipient_domains"] = domains
    if isinstance(params.get("amount_usd"), int):
        context["amount_usd"] = params["amount_usd"]
    if isinstance(params.get("dataset"), str):
        context["dataset"] = params["dataset"]
    return context


def cedar_decider(cedarpy: Any) -> Callable[[str, dict[str, Any]], Outcome]:
    policies = cedarpy.PolicySet.from_str(CEDAR_POLICIES)
    entities = cedarpy.Entities.from_json_str(json.dumps(CEDAR_ENTITIES))

    def decide(route: str, params: dict[str, Any]) -> Outcome:
        request = {
            "principal": 'Agent::"invoice-bot"',
            "action": f'Action::"{route}"',
            "resource": f'Tool::"{route}"',
            "context": cedar_context(route, params),
        }
        result = cedarpy.is_authorized(request, policies, entities)
        if not result.allowed:
            return Outcome.DENIED
        ids = result.diagnostics.id_annotations_by_reason.values()
        return Outcome.GATED if any(i in GATES for i in ids) else Outcome.ALLOWED

    return decide


def main() -> None:
    policy = policy_from_payload(json.loads(MANIFEST.read_text(encoding="utf-8")))
    ours = keyturn_decider(policy)
    prebuilt = [ToolCall(route=r, params=p, requester=AGENT) for r, p in CALLS]
    n = len(CALLS)

    def run_ours() -> None:
        for route, params in CALLS:
            ours(route, params)

    def run_prebuilt() -> None:
        for call in prebuilt:
            policy.evaluate(call)

    try:
        import cedarpy  # optional: only this benchmark uses it
    except ImportError:
        cedarpy = None

    if cedarpy is None:
        print("cedarpy is not installed (pip install cedarpy): printing keyturn's rate only")
        print(row(f"keyturn WPC, {n} mixed calls (incl. ToolCall build)", per_op(run_ours) / n))
        print(row("keyturn WPC, prebuilt ToolCalls", per_op(run_prebuilt) / n))
        return

    cedar = cedar_decider(cedarpy)
    for route, params in CALLS:  # the comparison only means something if they agree
        mine, theirs = ours(route, params), cedar(route, params)
        assert mine is theirs, f"{route}: keyturn {mine} but cedar {theirs}"

    def run_cedar() -> None:
        for route, params in CALLS:
            cedar(route, params)

    cedar_s = per_op(run_cedar) / n
    ours_s = per_op(run_ours) / n
    prebuilt_s = per_op(run_prebuilt) / n
    print(row(f"cedarpy {cedarpy_version()} pre-parsed, {n} mixed calls (REF)", cedar_s))
    print(row("keyturn WPC incl. ToolCall build", ours_s, cedar_s, "cedarpy"))
    print(row("keyturn WPC, prebuilt ToolCalls", prebuilt_s, cedar_s, "cedarpy"))
    speedup = cedar_s / ours_s
    verdict = "meets" if speedup >= 10 else "MISSES"
    print(f"keyturn decides {speedup:.1f}× faster than cedarpy ({verdict} the ≥10× goal)")


def cedarpy_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cedarpy")
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
