"""Settings for the Teams surface, and the start-up check that refuses to run unsafely.

``TeamsSettings`` is a pydantic model (configuration is an edge); ``bot/`` builds it
from keyturn's settings. Secrets are ``SecretStr`` so ``repr`` and tracebacks never
show them.

Fail closed at start (PLATFORMS.md §0.7): with an empty app id botbuilder accepts
unauthenticated POSTs from *any* channel, so :func:`check_startup` refuses to start
without an app id and exactly one credential (password or certificate) and a tenant
allowlist — unless ``insecure_dev_no_auth`` is set **and** the server is bound to a
loopback address.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

from core.errors import ConfigError

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]

#: Teams refreshes a card automatically for at most 60 listed users ("User Specific Views").
MAX_REFRESH_USERS = 60


class ConversationTarget(BaseModel):
    """Where keyturn posts proactively: a Teams channel (approvers, security feed).

    Attributes:
        service_url: the Bot Framework service URL of the tenant's region
            (``https://smba.trafficmanager.net/emea/`` …), as seen on incoming activities.
            Optional: when empty, the one Teams announced when keyturn was installed in
            the team is used (:mod:`adapters.teams.references`).
        channel_id: the channel's conversation id (``19:…@thread.tacv2``).
        tenant_id: the Entra tenant of the team.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    service_url: Text | None = None
    channel_id: Text
    tenant_id: Text


class TeamsSettings(BaseModel):
    """How keyturn talks to Microsoft Teams.

    Attributes:
        app_id: the Azure Bot registration's Microsoft app id (the JWT audience).
        app_password: its client secret (or use a certificate).
        certificate_path: PEM file with the private key (certificate credential).
        certificate_thumbprint: the certificate's SHA-1 thumbprint (hex).
        app_type: ``SingleTenant`` (recommended) or ``MultiTenant``.
        app_tenant_id: the bot registration's home tenant (required for SingleTenant).
        allowed_tenants: tenant ids whose activities are served; everything else is
            refused (a multi-tenant registration accepts tokens for any tenant).
        approvers: the channel where approval cards are posted.
        security_channel: the channel that receives the security feed (optional).
        refresh_user_ids: Teams user MRIs (``29:…``) of the approvers, for
            ``refresh.userIds`` (at most 60; Teams refreshes only these automatically).
        public_url: keyturn's public base URL (proof-bundle links, manifest domain).
        insecure_dev_no_auth: run with no app id (no JWT validation) — loopback only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_id: str = ""
    app_password: SecretStr | None = None
    certificate_path: Path | None = None
    certificate_thumbprint: str | None = None
    app_type: str = "SingleTenant"
    app_tenant_id: str | None = None
    allowed_tenants: list[Text] = Field(default_factory=list)
    approvers: ConversationTarget | None = None
    security_channel: ConversationTarget | None = None
    refresh_user_ids: list[Text] = Field(default_factory=list, max_length=MAX_REFRESH_USERS)
    public_url: str = "http://127.0.0.1:8080"
    insecure_dev_no_auth: bool = False

    @model_validator(mode="after")
    def _one_credential(self) -> TeamsSettings:
        if self.app_password is not None and self.certificate_path is not None:
            raise ValueError("configure app_password or a certificate, not both")
        if self.certificate_path is not None and not self.certificate_thumbprint:
            raise ValueError("a certificate credential needs certificate_thumbprint")
        if self.app_type not in ("SingleTenant", "MultiTenant"):
            raise ValueError("app_type must be SingleTenant or MultiTenant")
        if self.app_type == "SingleTenant" and self.app_id and not self.app_tenant_id:
            raise ValueError("a SingleTenant bot needs app_tenant_id")
        return self

    @property
    def authenticated(self) -> bool:
        """True when incoming JWTs are validated (an app id and a credential are set)."""
        has_secret = self.app_password is not None and bool(self.app_password.get_secret_value())
        return bool(self.app_id) and (has_secret or self.certificate_path is not None)

    def tenant_allowed(self, tenant_id: str | None) -> bool:
        """Fail closed: an unknown or missing tenant is refused; an empty allowlist
        admits only in the insecure loopback dev mode."""
        if not self.allowed_tenants:
            return self.insecure_dev_no_auth and not self.authenticated
        return tenant_id is not None and tenant_id.casefold() in {
            t.casefold() for t in self.allowed_tenants
        }


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_startup(settings: TeamsSettings, *, host: str) -> None:
    """Refuse to serve Teams unsafely.

    Raises:
        ConfigError: ``TEAMS_CREDENTIALS_MISSING`` (no app id or no credential, and no
            explicit insecure dev flag), ``TEAMS_INSECURE_NOT_LOOPBACK`` (the dev flag
            on a non-loopback host), ``TEAMS_TENANTS_MISSING`` (no tenant allowlist).
    """
    if not settings.authenticated:
        if not settings.insecure_dev_no_auth:
            raise ConfigError(
                "TEAMS_CREDENTIALS_MISSING",
                "Teams needs teams.app_id and teams.app_password (or a certificate); without "
                "them any POST to /api/messages would be trusted. For local development "
                "only, set teams.insecure_dev_no_auth and bind to 127.0.0.1.",
            )
        if not is_loopback(host):
            raise ConfigError(
                "TEAMS_INSECURE_NOT_LOOPBACK",
                f"teams.insecure_dev_no_auth is set but the server binds {host!r}; "
                "unauthenticated Teams traffic is only accepted on a loopback address",
            )
        return
    if not settings.allowed_tenants:
        raise ConfigError(
            "TEAMS_TENANTS_MISSING",
            "set teams.allowed_tenants: a bot registration accepts tokens for any tenant "
            "that installs the app",
        )


class BotFrameworkConfig:
    """The attribute names ``ConfigurationBotFrameworkAuthentication`` reads."""

    def __init__(self, settings: TeamsSettings) -> None:
        self.APP_ID = settings.app_id
        self.APP_PASSWORD = (
            settings.app_password.get_secret_value() if settings.app_password else ""
        )
        self.APP_TYPE = settings.app_type
        self.APP_TENANTID = settings.app_tenant_id or ""

    def __repr__(self) -> str:
        return f"BotFrameworkConfig(APP_ID={self.APP_ID!r})"


def bot_authentication(settings: TeamsSettings) -> Any:
    """The production botbuilder authentication for ``settings`` (what ``bot/`` passes
    to :func:`adapters.teams.mount_teams` as ``auth``).

    Raises:
        ConfigError: ``CONFIG_INVALID`` when the certificate cannot be read.
    """
    from botbuilder.integration.aiohttp import ConfigurationBotFrameworkAuthentication  # type: ignore[import-untyped]
    from botframework.connector.auth import CertificateServiceClientCredentialsFactory  # type: ignore[import-untyped]

    factory = None
    if settings.certificate_path is not None:
        try:
            pem = settings.certificate_path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                "CONFIG_INVALID", f"cannot read the Teams certificate {settings.certificate_path}"
            ) from e
        factory = CertificateServiceClientCredentialsFactory(
            certificate_thumbprint=settings.certificate_thumbprint or "",
            certificate_private_key=pem,
            app_id=settings.app_id,
            tenant_id=settings.app_tenant_id,
        )
    return ConfigurationBotFrameworkAuthentication(
        BotFrameworkConfig(settings), credentials_factory=factory
    )
