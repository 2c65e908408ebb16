"""keyturn's one error tree.

Every error carries a stable ``reason_code`` (an upper-case identifier that receipts,
API responses and tests compare) and a ``message`` fit to show a person. Nothing in
``core`` returns a "failed" result object for a security decision: it raises one of
these, and only the absence of an exception can lead to a grant, a token or an
execution.

::

    KeyturnError
     ├── CanonicalizationError   CANONICALIZATION_FAILED
     ├── InvalidDidError         INVALID_DID_FORMAT
     ├── EnvelopeError           MALFORMED_ENVELOPE, UNKNOWN_ENVELOPE_VERSION,
     │                           UNKNOWN_ENVELOPE_TYPE,
     │                           UNKNOWN_ALGORITHM, UNKNOWN_HASH_ALGORITHM, INVALID_DID_FORMAT,
     │                           EXPIRED_TTL, SCHEMA_VALIDATION_FAILED, HASH_MISMATCH,
     │                           SIGNATURE_INVALID, UNTRUSTED_SIGNER, UNEXPECTED_ENVELOPE_TYPE
     ├── PolicyError             POLICY_INVALID, POLICY_UNTRUSTED_ISSUER, POLICY_HASH_MISMATCH, …
     ├── TokenError              TOKEN_MALFORMED, TOKEN_INVALID_CLAIMS, TOKEN_SIGNATURE_INVALID,
     │                           TOKEN_EXPIRED, TOKEN_UNSUPPORTED_ALG, TOKEN_BAD_AUDIENCE,
     │                           TOKEN_INSUFFICIENT_SCOPE, TOKEN_SCOPE_HASH_MISMATCH,
     │                           TOKEN_UNKNOWN_KID, TOKEN_REVOKED, TOKEN_POLICY_MISMATCH, …
     ├── ApprovalRefusedError    REQUESTER_CANNOT_APPROVE, APPROVER_NOT_IN_GROUP, PIM_NOT_ACTIVE,
     │                           ALREADY_DECIDED, GROUP_ALREADY_COVERED, REQUEST_NOT_PENDING,
     │                           REQUEST_EXPIRED, DIRECTORY_UNAVAILABLE, ACCOUNT_DISABLED, …
     ├── IllegalTransitionError  ILLEGAL_TRANSITION
     ├── GateDeniedError         PAYLOAD_HASH_MISMATCH, ROUTE_MISMATCH, POLICY_HASH_MISMATCH,
     │                           JOB_MISMATCH, GRANT_EXPIRED, GRANT_ALREADY_USED, GRANT_INVALID,
     │                           PLAN_FINGERPRINT_MISMATCH, SIMULATION_REQUIRED, TOKEN_*, …
     ├── LogError                LOG_*, PROOF_INVALID, CHECKPOINT_*
     ├── BundleError             BUNDLE_*
     ├── DirectoryError          DIRECTORY_UNAVAILABLE, IDENTITY_NOT_FOUND, IDENTITY_AMBIGUOUS, …
     ├── StoreError              STORE_UNAVAILABLE, STORE_CONFLICT, …
     └── ConfigError             CONFIG_INVALID, CONFIG_MISSING

Adapters turn library errors into these with ``raise … from e``. New reason codes are
plain strings: add one where it is raised and document it there; the class says which
family it belongs to.
"""

from __future__ import annotations


class KeyturnError(Exception):
    """Base of every error keyturn raises on purpose.

    Attributes:
        reason_code: stable, machine-comparable identifier (``PAYLOAD_HASH_MISMATCH``).
        message: a sentence fit to show the person affected.
    """

    default_code = "KEYTURN_ERROR"

    def __init__(self, reason_code: str | None = None, message: str | None = None) -> None:
        self.reason_code = reason_code or self.default_code
        self.message = message or self.reason_code.replace("_", " ").capitalize() + "."
        super().__init__(f"{self.reason_code}: {self.message}")


class CanonicalizationError(KeyturnError):
    """A value cannot be put in canonical form (NaN, huge integers, lone surrogates…)."""

    default_code = "CANONICALIZATION_FAILED"


class InvalidDidError(KeyturnError):
    """A string is not a well-formed Ed25519 ``did:key``."""

    default_code = "INVALID_DID_FORMAT"


class EnvelopeError(KeyturnError):
    """A signed envelope failed verification; ``reason_code`` follows the Claw verifier."""

    default_code = "MALFORMED_ENVELOPE"


class PolicyError(KeyturnError):
    """A Work Policy Contract is malformed, untrusted, or cannot decide a call."""

    default_code = "POLICY_INVALID"


class TokenError(KeyturnError):
    """A scoped token (CST) is malformed, expired, revoked or does not fit its use."""

    default_code = "TOKEN_INVALID_CLAIMS"


class ApprovalRefusedError(KeyturnError):
    """A click or decision is refused; nothing is recorded as a decision."""

    default_code = "APPROVAL_REFUSED"


class IllegalTransitionError(KeyturnError):
    """A request was asked to move between states its state machine does not allow."""

    default_code = "ILLEGAL_TRANSITION"


class GateDeniedError(KeyturnError):
    """The execution gate refused a call; the action must not run."""

    default_code = "GATE_DENIED"


class LogError(KeyturnError):
    """The receipt log, a proof or a checkpoint does not verify."""

    default_code = "LOG_INVALID"


class BundleError(KeyturnError):
    """A proof bundle does not verify."""

    default_code = "BUNDLE_INVALID"


class DirectoryError(KeyturnError):
    """The directory could not confirm an identity or its eligibility."""

    default_code = "DIRECTORY_UNAVAILABLE"


class StoreError(KeyturnError):
    """Persistence failed; the operation was not recorded."""

    default_code = "STORE_UNAVAILABLE"


class ConfigError(KeyturnError):
    """Configuration is missing or invalid; keyturn refuses to start."""

    default_code = "CONFIG_INVALID"
