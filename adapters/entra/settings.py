"""Settings for the Entra ID directory: tenant, app credential, endpoints, time limits.

``EntraSettings`` is a pydantic model (configuration is an edge). The composition root
builds it from keyturn's settings; tests build it directly and point ``graph_base`` at
a local stand-in. Secrets are ``SecretStr`` so ``repr`` and tracebacks never show them.

Exactly one credential is accepted: a client secret, or a certificate file (PEM with
the private key and the certificate, or PKCS#12 ``.pfx``/``.p12``). Certificates are
preferred in production: a secret is a bearer password; a certificate's private key
never leaves the host.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

GUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
# A tenant is a GUID or a verified domain name (contoso.onmicrosoft.com).
_TENANT_DOMAIN_RE = re.compile(
    r"^(?=.{3,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)
# Multi-tenant aliases make no sense for an app-only token: keyturn must be pinned to
# the one tenant whose groups it trusts.
_TENANT_ALIASES = frozenset({"common", "organizations", "consumers"})

DEFAULT_AUTHORITY_BASE = "https://login.microsoftonline.com"
DEFAULT_GRAPH_BASE = "https://graph.microsoft.com/v1.0"
DEFAULT_GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def is_guid(text: str) -> bool:
    """True when ``text`` is a GUID in the 8-4-4-4-12 form Entra uses for object ids."""
    return bool(GUID_RE.match(text))


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _base_url(value: str, *, what: str, allow_path: bool) -> str:
    url = URL(value.strip())
    if not url.is_absolute() or not url.host:
        raise ValueError(f"{what} must be an absolute URL")
    if url.query_string or url.fragment or url.user or url.password:
        raise ValueError(f"{what} must not carry a query, fragment or credentials")
    # A bearer token for the directory must never cross the network in clear text;
    # plain http is accepted only for loopback stand-ins (tests, the local demo).
    if url.scheme != "https" and not (url.scheme == "http" and _is_loopback(url.host)):
        raise ValueError(f"{what} must use https (http only for a loopback address)")
    if not allow_path and url.path not in ("", "/"):
        raise ValueError(f"{what} must be an origin such as https://login.microsoftonline.com")
    return str(url).rstrip("/")


class EntraSettings(BaseModel):
    """How keyturn reaches one Entra ID tenant.

    Attributes:
        tenant_id: the tenant GUID or verified domain; ``common``/``organizations`` refused.
        client_id: the app registration's application (client) id.
        client_secret: the app's client secret (or use a certificate).
        client_certificate_path: PEM file holding the private key and certificate, or a
            PKCS#12 ``.pfx``/``.p12`` file.
        client_certificate_passphrase: passphrase of an encrypted key or PKCS#12 file.
        client_certificate_thumbprint: optional SHA-1 thumbprint (hex). Only for setups
            that need the legacy ``x5t`` header; msal otherwise uses the certificate's
            SHA-256 thumbprint. Checked against the certificate when given.
        authority_base: the login host (sovereign clouds differ); https only, because
            msal refuses anything else.
        graph_base: Microsoft Graph root including the version.
        graph_scope: the ``.default`` scope of the Graph resource.
        cache_seconds: how long an eligibility answer may be reused; 0 disables. At most
            120 s: core refuses eligibility evidence older than that (STALE_ELIGIBILITY).
        retry_deadline_seconds: how long one directory operation may wait on
            throttling (429/503/504 with ``Retry-After``) or on retries after network
            errors before it is refused. Keeps Slack's 3 s and Teams' limits.
        request_timeout_seconds: limit for one HTTP request to Graph or the token endpoint.
        cache_max_entries: bound on the eligibility cache (least recently used dropped).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: str
    client_id: str
    client_secret: SecretStr | None = None
    client_certificate_path: Path | None = None
    client_certificate_passphrase: SecretStr | None = None
    client_certificate_thumbprint: str | None = None
    authority_base: str = DEFAULT_AUTHORITY_BASE
    graph_base: str = DEFAULT_GRAPH_BASE
    graph_scope: str = DEFAULT_GRAPH_SCOPE
    cache_seconds: Annotated[float, Field(ge=0, le=120)] = 60.0
    retry_deadline_seconds: Annotated[float, Field(gt=0, le=30)] = 2.0
    request_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    cache_max_entries: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in _TENANT_ALIASES:
            raise ValueError("tenant_id must name one tenant, not a multi-tenant alias")
        if not (is_guid(value) or _TENANT_DOMAIN_RE.match(value)):
            raise ValueError("tenant_id must be a tenant GUID or a verified domain name")
        return value.lower()

    @field_validator("client_id")
    @classmethod
    def _client(cls, value: str) -> str:
        value = value.strip()
        if not is_guid(value):
            raise ValueError("client_id must be the application (client) id, a GUID")
        return value.lower()

    @field_validator("client_certificate_thumbprint")
    @classmethod
    def _thumbprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        cleaned = re.sub(r"[\s:]", "", value).lower()
        if not re.fullmatch(r"[0-9a-f]{40}", cleaned):
            raise ValueError("client_certificate_thumbprint must be a SHA-1 thumbprint (40 hex)")
        return cleaned

    @field_validator("authority_base")
    @classmethod
    def _authority(cls, value: str) -> str:
        url = _base_url(value, what="authority_base", allow_path=False)
        if not url.startswith("https://"):
            raise ValueError("authority_base must use https (msal refuses anything else)")
        return url

    @field_validator("graph_base")
    @classmethod
    def _graph(cls, value: str) -> str:
        return _base_url(value, what="graph_base", allow_path=True)

    @field_validator("graph_scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if not value.endswith("/.default") or not value.startswith("https://"):
            raise ValueError("graph_scope must be an https resource's /.default scope")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> EntraSettings:
        has_secret = self.client_secret is not None and bool(self.client_secret.get_secret_value())
        has_cert = self.client_certificate_path is not None
        if has_secret == has_cert:
            raise ValueError(
                "configure exactly one credential: client_secret or client_certificate_path"
            )
        if not has_cert and (
            self.client_certificate_passphrase is not None
            or self.client_certificate_thumbprint is not None
        ):
            raise ValueError("certificate passphrase/thumbprint given without a certificate")
        return self

    @property
    def authority(self) -> str:
        """The tenant's authority URL, as msal takes it."""
        return f"{self.authority_base}/{self.tenant_id}"
