"""keyturn's one settings object: a TOML file plus ``KEYTURN_*`` environment variables.

Loaded once at start-up by :func:`load_settings`. A missing or invalid value stops
start-up with a message that names the setting; secrets are ``SecretStr`` so neither
``repr`` nor a traceback shows them. Environment variables win over the file (nested
values use ``__``: ``KEYTURN_ENTRA__CLIENT_SECRET``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from adapters.entra import EntraSettings
from adapters.entra.settings import is_guid
from adapters.slack import SlackSettings
from adapters.teams import TeamsSettings
from core.errors import ConfigError, PolicyError
from core.executor import ExecutorRegistry


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8420, ge=0, le=65535)
    #: How people and agents reach this server (links on cards); defaults to host:port.
    public_url: str | None = None
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    long_poll_max_seconds: float = Field(default=30.0, gt=0, le=120)


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: C2SP checkpoint origin: a schema-less URL-ish name, no spaces or '+'.
    origin: str = "keyturn/local"
    checkpoint_every_entries: int = Field(default=100, ge=1, le=100_000)
    checkpoint_every_seconds: float = Field(default=60.0, gt=0, le=86_400)

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        if not value or any(c.isspace() or c == "+" for c in value):
            raise ValueError("log origin must be non-empty with no spaces or '+'")
        return value


class SealingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Helper processes that run each proof bundle's self-check before it is sealed,
    #: off the event loop (bot/service/seal_checks.py); 0 runs the checks in the
    #: server process.
    processes: int = Field(default=1, ge=0, le=8)


class TokenSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audience: str = "keyturn"
    runner_ttl_seconds: int = Field(default=900, ge=60, le=86_400)
    #: Proof-of-possession challenges for POST /v1/jobs are valid this long.
    challenge_ttl_seconds: int = Field(default=120, ge=10, le=600)


#: Options each built-in executor kind understands (besides ``kind`` and ``routes``); a
#: misspelt option of a known kind stops start-up instead of being silently ignored.
#: Kinds not listed here pass their options to their adapter, which checks them.
KNOWN_EXECUTOR_OPTIONS: dict[str, frozenset[str]] = {
    "webhook": frozenset({"url", "rollback_url", "timeout_seconds"}),
    "entra.role.assign": frozenset({"roles", "directory_scope_id", "principals"}),
    "entra.group.add": frozenset({"groups", "principals"}),
}


class ExecutorSettings(BaseModel):
    """One ``[executors."NAME"]`` table: the executor the policy's ``breakglass.executor``
    names. ``routes`` defaults to ``[NAME]``; every other key is an option of the kind
    (a webhook's ``url`` and ``rollback_url``, a role executor's ``roles``…)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str
    routes: list[str] | None = None

    def to_config(self) -> dict[str, Any]:
        """The mapping :meth:`core.executor.ExecutorRegistry.from_config` reads."""
        config: dict[str, Any] = {"kind": self.kind, **(self.model_extra or {})}
        if self.routes is not None:
            config["routes"] = list(self.routes)
        return config


class ExecutionSettings(BaseModel):
    """How keyturn runs its executors: retries with backoff for transient failures."""

    model_config = ConfigDict(extra="forbid")

    #: Attempts per step (execute, verify, rollback, verify_rollback) on transient errors.
    max_attempts: int = Field(default=5, ge=1, le=20)
    first_delay_seconds: float = Field(default=0.5, ge=0, le=60)
    max_delay_seconds: float = Field(default=30.0, ge=0, le=600)
    #: Local development only: let webhook executors call http://127.0.0.1 / localhost.
    allow_loopback_http: bool = False


class ReconcileSettings(BaseModel):
    """``[reconcile]`` in keyturn's settings.

    Attributes:
        enabled: run reconciliation at all.
        every_seconds: between runs.
        lease_seconds: how long a replica holds the "I reconcile" lease without renewing
            it (it renews every run); longer than ``every_seconds``. Default 3 runs.
        grace_seconds: how long after a window's end (or its close) reconciliation
            leaves the window's own rollback to happen before it steps in.
        retry_failed_every_seconds: how often a ``rollback_failed`` execution is tried
            again (each attempt is receipted, so not every run).
        remind_findings_every_seconds: a finding that persists is reported again this
            often.
        watch_roles: directory role definition ids whose holders are checked (needs an
            ``entra.role.assign`` executor).
        watch_groups: group object ids whose PIM members and owners are checked (needs
            an ``entra.group.add`` executor).
        standing_holders: watched id → principal object ids allowed to hold it anyway
            (the emergency accounts, the owners of record). Keys must be watched ids.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    every_seconds: float = Field(60.0, ge=1, le=3600)
    lease_seconds: float | None = Field(None, gt=0, le=86400)
    grace_seconds: float = Field(120.0, ge=0, le=3600)
    retry_failed_every_seconds: float = Field(900.0, ge=0, le=86400)
    remind_findings_every_seconds: float = Field(6 * 3600.0, ge=60, le=7 * 86400)
    watch_roles: tuple[str, ...] = ()
    watch_groups: tuple[str, ...] = ()
    standing_holders: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("watch_roles", "watch_groups")
    @classmethod
    def _guids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not is_guid(v)]
        if bad:
            raise ValueError(f"watched ids are object ids (GUIDs), not {bad}")
        return tuple(sorted({v.lower() for v in value}))

    @field_validator("standing_holders")
    @classmethod
    def _holder_guids(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for target, holders in value.items():
            bad = [h for h in (target, *holders) if not is_guid(h)]
            if bad:
                raise ValueError(f"standing holders are object ids (GUIDs), not {bad}")
            out[target.lower()] = tuple(sorted({h.lower() for h in holders}))
        return out

    @model_validator(mode="after")
    def _consistent(self) -> ReconcileSettings:
        unwatched = set(self.standing_holders) - set(self.watch_roles) - set(self.watch_groups)
        if unwatched:
            raise ValueError(
                f"standing_holders names ids that are not watched: {sorted(unwatched)}"
            )
        if self.lease_seconds is not None and self.lease_seconds <= self.every_seconds:
            raise ValueError("lease_seconds must be longer than every_seconds")
        return self

    @property
    def lease(self) -> float:
        return self.lease_seconds if self.lease_seconds is not None else 3 * self.every_seconds


class KeyturnSettings(BaseSettings):
    """Everything keyturn reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="KEYTURN_", env_nested_delimiter="__", extra="forbid"
    )

    #: Where the embedded default keeps its SQLite file, keys and generated files.
    data_dir: Path = Path("keyturn-data")
    #: SQLAlchemy URL; default: SQLite in ``data_dir``. PostgreSQL for several replicas.
    database_url: str | None = None
    #: keyturn's Ed25519 key (PKCS#8 PEM, mode 0600); default ``data_dir/keys/keyturn.pem``.
    signing_key_file: Path | None = None
    #: The WPC installed at set-up time (signed envelope, or bare payload in demo mode).
    policy_file: Path | None = None
    #: did:key identities allowed to sign policies.
    trusted_policy_issuers: list[str] = Field(default_factory=list)
    #: Static YAML directory (people and groups); used when no Entra tenant is configured.
    directory_file: Path | None = None
    server: ServerSettings = Field(default_factory=ServerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    sealing: SealingSettings = Field(default_factory=SealingSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    #: Slack surface (adapters/slack); off unless configured.
    slack: SlackSettings | None = None
    #: Microsoft Teams surface (adapters/teams); off unless configured.
    teams: TeamsSettings | None = None
    #: The Entra tenant keyturn's Entra executors act on (``[entra]``); off unless configured.
    entra: EntraSettings | None = None
    #: Executors by name (``[executors."entra.role.assign"]``): which break-glass routes
    #: keyturn carries out itself once approved, and how. None configured: none run.
    executors: dict[str, ExecutorSettings] = Field(default_factory=dict)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    #: ``[reconcile]``: the periodic check of what the executors granted (runs only
    #: when executors are configured).
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)

    @field_validator("executors")
    @classmethod
    def _executors(cls, value: dict[str, ExecutorSettings]) -> dict[str, ExecutorSettings]:
        for name, spec in value.items():
            known = KNOWN_EXECUTOR_OPTIONS.get(spec.kind)
            unknown = sorted(set(spec.model_extra or {}) - known) if known is not None else []
            if unknown:
                raise ValueError(
                    f"executors.{name}: unknown option {unknown[0]!r} for kind {spec.kind} "
                    f"(known: kind, routes, {', '.join(sorted(known or ()))})"
                )
        try:
            ExecutorRegistry.from_config(executor_config(value))
        except PolicyError as e:
            raise ValueError(e.message) from e
        return value

    @property
    def executor_registry(self) -> ExecutorRegistry:
        """The configured executors as :class:`core.executor.ExecutorRegistry` (checked at load)."""
        return ExecutorRegistry.from_config(executor_config(self.executors))

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'keyturn.db').resolve()}"

    @property
    def resolved_signing_key_file(self) -> Path:
        return self.signing_key_file or self.data_dir / "keys" / "keyturn.pem"

    @property
    def public_url(self) -> str:
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}"


def executor_config(executors: dict[str, ExecutorSettings]) -> dict[str, Any]:
    return {name: spec.to_config() for name, spec in executors.items()}


def load_settings(config_file: Path | None = None, **overrides: Any) -> KeyturnSettings:
    """Settings from ``overrides``, then ``KEYTURN_*`` variables, then the TOML file.

    Raises:
        ConfigError: ``CONFIG_INVALID`` naming the first bad setting, or
            ``CONFIG_MISSING`` when the named file does not exist.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError("CONFIG_MISSING", f"configuration file {config_file} not found")

    class _Sourced(KeyturnSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            if config_file is None:
                return (init_settings, env_settings)
            toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file)
            return (init_settings, env_settings, toml)

    try:
        return _Sourced(**overrides)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError("CONFIG_INVALID", f"setting {where}: {first['msg']}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("CONFIG_INVALID", f"{config_file}: {e}") from e
