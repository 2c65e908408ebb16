"""The WPC file formats keyturn reads (pydantic, at the edge).

Two payload shapes, told apart by ``policy_version``:

* ``"1"`` + ``keyturn_wpc: "1"``: keyturn's own rules (gated routes, approvals,
  break-glass terms), a superset of the Claw v1 WPC whose optional Claw fields are
  accepted and hash-bound but not enforced by keyturn;
* ``"2"``: a Claw v2 WPC with IAM-style ``statements`` (allow/deny only).

Every model forbids unknown fields and is strict (no ``"2"`` for ``2``, no ``true``
for ``1``). Conditions are kept as JSON here and compiled (with path-naming errors)
by :mod:`core.policy.conditions`. ``manifests/schemas/wpc.schema.json`` documents the
same format as JSON Schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import PolicyError

Text = Annotated[str, Field(min_length=1, max_length=512)]
Name = Annotated[str, Field(min_length=1, max_length=128)]
Seconds = Annotated[int, Field(ge=1, le=7 * 24 * 3600)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GroupModel(_Strict):
    directory_id: Annotated[str, Field(min_length=1, max_length=256)]
    display_name: Annotated[str, Field(min_length=1, max_length=256)]


class ApprovalModel(_Strict):
    min_approvers: int
    two_person: bool = False
    independent_of_requester: bool = True
    identity_provider: Literal["entra_id", "static_directory"] = "entra_id"
    allowed_groups: list[Name] = []
    one_from_each: list[Name] = []
    require_pim: Literal["required", "optional", "none"] = "none"
    allow_guests: bool = False
    timeout_seconds: Seconds = 900
    reminder_every_seconds: Seconds | None = None
    critical: bool = False
    bind: list[Name]


class BreakglassModel(_Strict):
    max_duration_seconds: Seconds
    token_ttl_seconds: Seconds
    renewable_without_reapproval: bool = False
    rollback_steps: list[Text] = []
    kill_switch_triggers: list[Name] = []
    kill_switch_actions: list[Name] = ["revoke_cst", "halt_job"]
    executor: Name | None = None


class PriorRouteModel(_Strict):
    route: Name
    reason: Literal["SIMULATION_REQUIRED", "PRIOR_STEP_REQUIRED"] = "SIMULATION_REQUIRED"


class RequiredParamModel(_Strict):
    param: Annotated[str, Field(min_length=1, max_length=256)]
    reason: Literal["PARAM_REQUIRED", "BUNDLE_REFERENCE_REQUIRED", "TICKET_REFERENCE_REQUIRED"] = (
        "PARAM_REQUIRED"
    )
    glob: Text | None = None
    contained_in: Annotated[str, Field(min_length=1, max_length=256)] | None = None


class RuleModel(_Strict):
    id: Name
    description: Text
    routes: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]], Field(min_length=1)
    ]
    effect: Literal["allow", "gate", "deny"]
    when: dict[str, Any] | None = None
    approval: Name | None = None
    constraints: list[dict[str, Any]] = []
    requires_prior_routes: list[Name | PriorRouteModel] = []
    requires_plan_fingerprint: bool = False
    requires_param: list[
        Annotated[str, Field(min_length=1, max_length=256)] | RequiredParamModel
    ] = []
    breakglass: BreakglassModel | None = None
    sensitive_params: list[Annotated[str, Field(min_length=1, max_length=256)]] = []


class TokenModel(_Strict):
    cst_max_ttl_seconds: Annotated[int, Field(ge=60, le=86400)] = 900
    scope_hash_required: Literal[True] = True
    pin_wpc_hash: bool = True
    job_scoped_binding: Literal[True] = True


class RedactionRuleModel(_Strict):
    path: Text
    action: Literal["remove", "hash", "mask"]


class KeyturnWpcModel(_Strict):
    """keyturn WPC v1: Claw v1 fields plus keyturn's rules."""

    policy_version: Literal["1"]
    keyturn_wpc: Literal["1"]
    policy_id: Name
    policy_name: Annotated[str, Field(min_length=1, max_length=200)]
    issuer_did: Annotated[str, Field(min_length=4, max_length=256, pattern=r"^did:")]
    description: Annotated[str, Field(max_length=2000)] | None = None
    groups: dict[Name, GroupModel] = {}
    approvals: dict[Name, ApprovalModel] = {}
    rules: Annotated[list[RuleModel], Field(min_length=1, max_length=1000)]
    token: TokenModel = TokenModel()
    metadata: dict[str, Any] = {}
    # Claw v1 fields: accepted and hash-bound for compatibility; keyturn enforces none.
    allowed_providers: (
        Annotated[list[Literal["openai", "anthropic", "google"]], Field(max_length=16)] | None
    ) = None
    allowed_models: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=256)]
        | None
    ) = None
    minimum_model_identity_tier: (
        Literal["closed_opaque", "closed_provider_manifest", "openweights_hashable", "tee_measured"]
        | None
    ) = None
    required_audit_packs: (
        Annotated[
            list[Annotated[str, Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]],
            Field(max_length=64),
        ]
        | None
    ) = None
    redaction_rules: Annotated[list[RedactionRuleModel], Field(max_length=256)] | None = None
    receipt_privacy_mode: Literal["hash_only", "encrypted"] | None = None
    egress_allowlist: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=256)]
        | None
    ) = None


ConditionMap = Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)]


class ClawConditionsModel(_Strict):
    StringEquals: ConditionMap | None = None
    StringNotEquals: ConditionMap | None = None
    StringLike: ConditionMap | None = None
    StringNotLike: ConditionMap | None = None
    NumericEquals: ConditionMap | None = None
    NumericLessThan: ConditionMap | None = None
    NumericGreaterThan: ConditionMap | None = None
    Bool: ConditionMap | None = None
    IpAddress: ConditionMap | None = None


class ClawStatementModel(_Strict):
    sid: Name
    effect: Literal["Allow", "Deny"]
    actions: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]],
        Field(min_length=1, max_length=64),
    ]
    resources: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=512)]],
        Field(min_length=1, max_length=256),
    ]
    conditions: ClawConditionsModel | None = None


class QuorumModel(_Strict):
    m: Annotated[float, Field(ge=1)]
    n: Annotated[float, Field(ge=1)]


class TransparencyModel(_Strict):
    mode: Literal["optional", "warn", "enforce"] = "optional"
    required_after: str | None = None


class WitnessedWebModel(_Strict):
    mode: Literal["warn", "enforce"] = "warn"
    quorum: QuorumModel | None = None
    transparency: TransparencyModel | None = None


class ClawV2Model(_Strict):
    """Claw WPC v2 (IAM-style statements)."""

    policy_version: Literal["2"]
    policy_id: Name
    issuer_did: Annotated[str, Field(min_length=4, max_length=256, pattern=r"^did:")]
    inherits: Name | None = None
    coverage_enforcement: Literal["observe", "warn", "enforce"] | None = None
    witnessed_web_policy: WitnessedWebModel | None = None
    statements: Annotated[list[ClawStatementModel], Field(min_length=1, max_length=64)]
    metadata: dict[str, Any] = {}


# Names pydantic puts in error locations for union members; they are not field names.
_UNION_TAGS = {
    "str", "int", "bool", "float", "list", "dict", "none", "literal", "constrained-str",
    "PriorRouteModel", "RequiredParamModel", "GroupModel", "ApprovalModel",
    "BreakglassModel", "RuleModel", "TokenModel", "RedactionRuleModel",
    "ClawConditionsModel", "ClawStatementModel", "WitnessedWebModel", "QuorumModel",
    "TransparencyModel",
}  # fmt: skip
_PLAIN = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
}


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS or part.startswith(("literal[", "function-", "constrained-")):
            continue
        else:
            out += f".{part}" if out else part
    return out or "(payload)"


def describe(error: ValidationError, *, limit: int = 3) -> str:
    """One line naming the field path(s) that failed: ``rules[0].when2: unknown field``."""
    items = [(_path(tuple(e["loc"])), e["type"], e["msg"]) for e in error.errors(include_url=False)]
    seen: list[str] = []
    for path, kind, msg in items:
        # A union member that failed on type ("not a string") is noise when another
        # member got further and reports a deeper path: keep the deeper error.
        deeper = any(p.startswith((path + ".", path + "[")) for p, _, _ in items)
        if kind.endswith("_type") and deeper:
            continue
        text = f"{path}: {_PLAIN.get(kind, msg)}"
        if text not in seen:
            seen.append(text)
    extra = f" (and {len(seen) - limit} more)" if len(seen) > limit else ""
    return "; ".join(seen[:limit]) + extra


def parse_keyturn(canonical_json: bytes) -> KeyturnWpcModel:
    """Validate a keyturn WPC v1 payload given as its JCS bytes.

    Raises:
        PolicyError: ``POLICY_INVALID`` naming the field path.
    """
    try:
        return KeyturnWpcModel.model_validate_json(canonical_json)
    except ValidationError as e:
        raise PolicyError("POLICY_INVALID", describe(e)) from e


def parse_claw_v2(canonical_json: bytes) -> ClawV2Model:
    """Validate a Claw v2 payload given as its JCS bytes.

    Raises:
        PolicyError: ``POLICY_INVALID`` naming the field path.
    """
    try:
        return ClawV2Model.model_validate_json(canonical_json)
    except ValidationError as e:
        raise PolicyError("POLICY_INVALID", describe(e)) from e


def _condition_schema() -> dict[str, Any]:
    """The condition grammar of :mod:`core.policy.conditions` as JSON Schema."""
    scalar = {"type": ["string", "number", "boolean"]}
    scalars = {"type": "array", "minItems": 1, "items": scalar}
    path = {"type": "string", "minLength": 1, "maxLength": 256}
    leaf_props: dict[str, Any] = {
        "param": path,
        "context": path,
        "call": {"enum": ["route", "requester", "on_behalf_of", "resource", "plan_hash",
                          "breakglass", "prior_routes"]},
        "eq": scalar, "ne": scalar, "in": scalars, "not_in": scalars,
        "lt": {"type": "number"}, "lte": {"type": "number"},
        "gt": {"type": "number"}, "gte": {"type": "number"},
        "glob": {"type": "string", "minLength": 1},
        "contains": scalar,
        "starts_with": {"type": "string", "minLength": 1},
        "ends_with": {"type": "string", "minLength": 1},
        "exists": {"type": "boolean"},
        "domain_outside_of": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "optional": {"type": "boolean"},
        "ignore_case": {"type": "boolean"},
        "quantifier": {"enum": ["any", "all"]},
    }  # fmt: skip
    ref = {"$ref": "#/$defs/Condition"}
    return {
        "description": (
            "all/any/not or a leaf naming one subject (param, context, call) and one "
            "operator; {\"route\": GLOB} is true when the call's route matches. Missing "
            "or mistyped values are unknown: matched for gate/deny rules, not satisfied "
            "for allow rules and constraints."
        ),
        "oneOf": [
            {"type": "object", "additionalProperties": False, "required": ["all"],
             "properties": {"all": {"type": "array", "minItems": 1, "items": ref}}},
            {"type": "object", "additionalProperties": False, "required": ["any"],
             "properties": {"any": {"type": "array", "minItems": 1, "items": ref}}},
            {"type": "object", "additionalProperties": False, "required": ["not"],
             "properties": {"not": ref}},
            {"type": "object", "additionalProperties": False, "required": ["route"],
             "properties": {"route": {"type": "string", "minLength": 1}}},
            {"type": "object", "additionalProperties": False, "properties": leaf_props,
             "oneOf": [{"required": [k]} for k in ("param", "context", "call")],
             "minProperties": 2},
        ],
    }  # fmt: skip


def wpc_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of both payload shapes keyturn accepts.

    ``manifests/schemas/wpc.schema.json`` is this function's output; a test keeps
    them equal. Pydantic validation (and the rule compiler) remain the authority: the
    schema documents the format for editors and other tools.
    """
    keyturn = KeyturnWpcModel.model_json_schema(ref_template="#/$defs/{model}")
    claw = ClawV2Model.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = {**keyturn.pop("$defs", {}), **claw.pop("$defs", {})}
    defs["KeyturnWpcModel"] = keyturn
    defs["ClawV2Model"] = claw
    defs["Condition"] = _condition_schema()
    rule = defs["RuleModel"]["properties"]
    rule["when"] = {"anyOf": [{"$ref": "#/$defs/Condition"}, {"type": "null"}], "default": None}
    rule["constraints"] = {"type": "array", "items": {"$ref": "#/$defs/Condition"}, "default": []}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:keyturn:wpc-payload:1",
        "title": "keyturn Work Policy Contract payload",
        "description": (
            'policy_version "1" with keyturn_wpc "1": keyturn rules (a superset of the Claw '
            'v1 WPC). policy_version "2": Claw v2 IAM-style statements (allow/deny only). '
            "policy_hash_b64u = base64url(sha256(JCS(payload)))."
        ),
        "oneOf": [{"$ref": "#/$defs/KeyturnWpcModel"}, {"$ref": "#/$defs/ClawV2Model"}],
        "$defs": defs,
    }
