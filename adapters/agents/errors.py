"""Why the keyturn client refused to go on. Every refusal means: do not run the call.

::

    KeyturnClientError            any refusal; carries reason_code and message
     ├── PolicyDenied             the policy denies the exact call (403 on submit)
     ├── ApprovalDenied           an approver denied it, or it was cancelled or revoked
     ├── ApprovalExpired          nobody decided before the request's deadline
     ├── ApprovalTimeout          the caller's own wait ran out first
     ├── GateRefused              the gate refused the call (or the arguments changed)
     ├── TokenRefused             keyturn refused the runner or job token (401)
     ├── InvalidCall              keyturn cannot read the call (400), or the arguments
     │                            have no JSON form
     └── ServiceUnavailable       keyturn could not be reached in time (5xx, network)

``reason_code`` is keyturn's stable code (``PAYLOAD_HASH_MISMATCH``, ``REQUEST_DENIED``,
…); ``request_id`` is the approval request, when there is one; ``trace_id`` is the
``X-Request-Id`` of the HTTP exchange that failed, for the operator's log.
"""

from __future__ import annotations


class KeyturnClientError(Exception):
    """Base of every refusal the keyturn client raises."""

    default_code = "KEYTURN_REFUSED"

    def __init__(
        self,
        reason_code: str | None = None,
        message: str | None = None,
        *,
        status: int | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        self.reason_code = reason_code or self.default_code
        self.message = message or self.reason_code.replace("_", " ").capitalize() + "."
        self.status = status
        self.request_id = request_id
        self.trace_id = trace_id
        super().__init__(f"{self.reason_code}: {self.message}")


class PolicyDenied(KeyturnClientError):
    default_code = "POLICY_DENIED"


class ApprovalDenied(KeyturnClientError):
    default_code = "REQUEST_DENIED"


class ApprovalExpired(KeyturnClientError):
    default_code = "REQUEST_EXPIRED"


class ApprovalTimeout(KeyturnClientError):
    default_code = "APPROVAL_TIMEOUT"


class GateRefused(KeyturnClientError):
    default_code = "GATE_DENIED"


class TokenRefused(KeyturnClientError):
    default_code = "TOKEN_INVALID_CLAIMS"


class InvalidCall(KeyturnClientError):
    default_code = "INVALID_CALL"


class ServiceUnavailable(KeyturnClientError):
    default_code = "SERVICE_UNAVAILABLE"
