"""EntraSettings refuses configurations that would weaken the directory check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.entra import EntraSettings
from tests.adapters.graph_standin import CLIENT, SECRET, TENANT


def make(**overrides: Any) -> EntraSettings:
    values: dict[str, Any] = {"tenant_id": TENANT, "client_id": CLIENT, "client_secret": SECRET}
    values.update(overrides)
    return EntraSettings(**values)


def test_defaults_point_at_the_public_cloud_with_short_limits() -> None:
    s = make()
    assert s.authority == f"https://login.microsoftonline.com/{TENANT}"
    assert s.graph_base == "https://graph.microsoft.com/v1.0"
    assert s.graph_scope == "https://graph.microsoft.com/.default"
    assert (s.cache_seconds, s.retry_deadline_seconds) == (60.0, 2.0)


def test_secret_never_shows_in_repr() -> None:
    s = make()
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())


@pytest.mark.parametrize("tenant", ["common", "organizations", "Consumers", "not a tenant", ""])
def test_multi_tenant_aliases_and_junk_tenants_are_refused(tenant: str) -> None:
    with pytest.raises(ValidationError):
        make(tenant_id=tenant)


def test_tenant_may_be_a_verified_domain() -> None:
    assert make(tenant_id="Contoso.onmicrosoft.com").tenant_id == "contoso.onmicrosoft.com"


def test_client_id_must_be_a_guid() -> None:
    with pytest.raises(ValidationError):
        make(client_id="keyturn")


def test_exactly_one_credential_is_required(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="exactly one credential"):
        make(client_secret=None)
    with pytest.raises(ValidationError, match="exactly one credential"):
        make(client_secret="")
    with pytest.raises(ValidationError, match="exactly one credential"):
        make(client_certificate_path=tmp_path / "c.pem")
    with pytest.raises(ValidationError, match="without a certificate"):
        make(client_certificate_thumbprint="ab" * 20)


@pytest.mark.parametrize(
    "graph_base",
    [
        "http://graph.microsoft.com/v1.0",  # bearer token in clear text
        "http://10.0.0.5/v1.0",
        "https://graph.microsoft.com/v1.0?x=1",
        "https://user:pw@graph.microsoft.com/v1.0",
        "graph.microsoft.com/v1.0",
    ],
)
def test_graph_base_must_be_https_unless_loopback(graph_base: str) -> None:
    with pytest.raises(ValidationError):
        make(graph_base=graph_base)


def test_loopback_graph_base_may_use_http_for_stand_ins() -> None:
    assert make(graph_base="http://127.0.0.1:8080/v1.0/").graph_base == "http://127.0.0.1:8080/v1.0"
    assert make(graph_base="http://localhost:1/v1.0").graph_base == "http://localhost:1/v1.0"


@pytest.mark.parametrize(
    "authority",
    ["http://127.0.0.1:9", "https://login.microsoftonline.com/tenant", "ftp://login.example"],
)
def test_authority_base_is_an_https_origin(authority: str) -> None:
    with pytest.raises(ValidationError):
        make(authority_base=authority)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cache_seconds", -1),
        ("cache_seconds", 121),
        ("retry_deadline_seconds", 0),
        ("request_timeout_seconds", 0),
        ("unknown_setting", 1),
    ],
)
def test_out_of_range_or_unknown_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        make(**{field: value})


def test_thumbprint_is_normalised() -> None:
    s = make(
        client_secret=None,
        client_certificate_path=Path("/k.pem"),
        client_certificate_thumbprint="AB:CD" + ":EF" * 18,
    )
    assert s.client_certificate_thumbprint == "abcd" + "ef" * 18
