"""msal against the stand-in token endpoint: credentials, error dicts, token cache."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from adapters.entra import EntraDirectory
from adapters.entra.tokens import msal_error
from core.errors import DirectoryError
from tests.adapters.graph_standin import (
    ALICE,
    APPROVERS,
    CLIENT,
    NOW,
    SECRET,
    TENANT,
    FakeTimer,
    GraphStandIn,
    Reply,
    StandInHttpClient,
    directory,
    populate,
    settings,
)


def make_certificate(common_name: str = "keyturn") -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def pem(key: rsa.RSAPrivateKey, cert: x509.Certificate, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ) + cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def certificate() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return make_certificate()


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[GraphStandIn]:
    async with GraphStandIn(tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET) as s:
        populate(s)
        yield s


async def refused(entra: EntraDirectory) -> DirectoryError:
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    return err.value


@pytest.mark.asyncio
async def test_wrong_secret_is_an_auth_failure_with_the_aadsts_code(
    standin: GraphStandIn,
) -> None:
    async with directory(standin, client_secret="not-the-secret") as entra:
        error = await refused(entra)
    assert error.reason_code == "DIRECTORY_AUTH_FAILED"
    assert "invalid_client" in error.message and "AADSTS7000215" in error.message
    assert "not-the-secret" not in error.message
    assert standin.calls_to("user") == [] and standin.calls_to("checkMemberGroups") == []


@pytest.mark.asyncio
async def test_unknown_application_is_an_auth_failure(standin: GraphStandIn) -> None:
    async with directory(standin, client_id="33333333-3333-4333-8333-333333333333") as entra:
        error = await refused(entra)
    assert error.reason_code == "DIRECTORY_AUTH_FAILED"
    assert "AADSTS700016" in error.message


@pytest.mark.asyncio
async def test_unknown_tenant_is_a_configuration_error(standin: GraphStandIn) -> None:
    async with directory(standin, tenant_id="44444444-4444-4444-8444-444444444444") as entra:
        error = await refused(entra)
    assert error.reason_code == "DIRECTORY_CONFIG_INVALID"
    assert "44444444-4444-4444-8444-444444444444" in error.message


@pytest.mark.asyncio
async def test_token_endpoint_outage_is_unavailable(standin: GraphStandIn) -> None:
    standin.script(
        "token",
        Reply(503, {"error": "temporarily_unavailable", "error_description": "AADSTS50000: busy"}),
    )
    async with directory(standin) as entra:
        error = await refused(entra)
    assert error.reason_code == "DIRECTORY_UNAVAILABLE"
    assert "could not confirm eligibility" in error.message


@pytest.mark.asyncio
async def test_token_endpoint_garbage_is_never_a_token(standin: GraphStandIn) -> None:
    standin.script("token", Reply(200, b"<html>captive portal</html>"))
    async with directory(standin) as entra:
        error = await refused(entra)
    assert error.reason_code.startswith("DIRECTORY_")
    assert standin.calls_to("user") == []


@pytest.mark.asyncio
async def test_unreachable_authority_is_unavailable(standin: GraphStandIn) -> None:
    # A client that routes nowhere: msal's transport error must not escape as-is.
    nowhere = StandInHttpClient("https://login.example.invalid", standin.origin)
    async with EntraDirectory(
        settings(standin),
        http_client=nowhere,
        timer=FakeTimer(),
    ) as entra:
        error = await refused(entra)
    assert error.reason_code == "DIRECTORY_UNAVAILABLE"
    assert nowhere.urls  # msal did try, through the injected client only


@pytest.mark.asyncio
async def test_failed_start_is_retried_on_the_next_call(standin: GraphStandIn) -> None:
    standin.script("openid", Reply(500, {"error": "server_error"}))
    async with directory(standin) as entra:
        error = await refused(entra)
        assert error.reason_code == "DIRECTORY_UNAVAILABLE"
        result = await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert result.member_of == {APPROVERS}


@pytest.mark.asyncio
async def test_token_is_reused_from_msal_cache(standin: GraphStandIn) -> None:
    async with directory(standin, cache_seconds=0) as entra:
        for _ in range(3):
            await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert len(standin.calls_to("token")) == 1
    assert len(standin.calls_to("openid")) == 1
    form = standin.calls_to("token")[0].body
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "https://graph.microsoft.com/.default"


@pytest.mark.asyncio
async def test_certificate_credential_signs_a_client_assertion(
    tmp_path: Path, certificate: tuple[rsa.RSAPrivateKey, x509.Certificate]
) -> None:
    key, cert = certificate
    path = tmp_path / "keyturn.pem"
    path.write_bytes(pem(key, cert, b"pass phrase"))
    async with GraphStandIn(
        tenant_id=TENANT,
        client_id=CLIENT,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
    ) as standin:
        populate(standin)
        async with directory(
            standin,
            client_secret=None,
            client_certificate_path=path,
            client_certificate_passphrase="pass phrase",
        ) as entra:
            result = await entra.eligibility(ALICE, [APPROVERS], now=NOW)
        (token_call,) = standin.calls_to("token")
    assert result.member_of == {APPROVERS}
    assert "client_secret" not in token_call.body
    assert token_call.body["client_assertion_type"].endswith("jwt-bearer")


@pytest.mark.asyncio
async def test_pkcs12_certificate_credential_works(
    tmp_path: Path, certificate: tuple[rsa.RSAPrivateKey, x509.Certificate]
) -> None:
    key, cert = certificate
    path = tmp_path / "keyturn.pfx"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"keyturn", key, cert, None, serialization.BestAvailableEncryption(b"pfx-pass")
        )
    )
    async with GraphStandIn(
        tenant_id=TENANT,
        client_id=CLIENT,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
    ) as standin:
        populate(standin)
        async with directory(
            standin,
            client_secret=None,
            client_certificate_path=path,
            client_certificate_passphrase="pfx-pass",
        ) as entra:
            result = await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert result.member_of == {APPROVERS}


@pytest.mark.asyncio
async def test_certificate_not_registered_on_the_app_is_an_auth_failure(
    tmp_path: Path, certificate: tuple[rsa.RSAPrivateKey, x509.Certificate]
) -> None:
    _key, cert = certificate
    other_key, other_cert = make_certificate("someone-else")
    path = tmp_path / "other.pem"
    path.write_bytes(pem(other_key, other_cert))
    async with (
        GraphStandIn(
            tenant_id=TENANT,
            client_id=CLIENT,
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
        ) as standin,
        directory(standin, client_secret=None, client_certificate_path=path) as entra,
    ):
        error = await refused(entra)
    assert error.reason_code == "DIRECTORY_AUTH_FAILED"
    assert "AADSTS700027" in error.message


@pytest.mark.asyncio
async def test_key_that_does_not_match_its_certificate_is_refused_before_any_call(
    tmp_path: Path, standin: GraphStandIn, certificate: tuple[rsa.RSAPrivateKey, x509.Certificate]
) -> None:
    key, _ = certificate
    _, other_cert = make_certificate("other")
    path = tmp_path / "mixed.pem"
    path.write_bytes(pem(key, other_cert))
    async with directory(standin, client_secret=None, client_certificate_path=path) as entra:
        error = await refused(entra)
    assert error.reason_code == "DIRECTORY_CONFIG_INVALID"
    assert "does not match" in error.message
    assert standin.calls_to("token") == []


@pytest.mark.asyncio
async def test_wrong_thumbprint_is_refused(
    tmp_path: Path, standin: GraphStandIn, certificate: tuple[rsa.RSAPrivateKey, x509.Certificate]
) -> None:
    key, cert = certificate
    path = tmp_path / "keyturn.pem"
    path.write_bytes(pem(key, cert))
    async with directory(
        standin,
        client_secret=None,
        client_certificate_path=path,
        client_certificate_thumbprint="00" * 20,
    ) as entra:
        error = await refused(entra)
    assert error.reason_code == "DIRECTORY_CONFIG_INVALID"
    assert "thumbprint" in error.message


@pytest.mark.asyncio
async def test_missing_certificate_file_is_a_configuration_error(
    tmp_path: Path, standin: GraphStandIn
) -> None:
    async with directory(
        standin, client_secret=None, client_certificate_path=tmp_path / "absent.pem"
    ) as entra:
        error = await refused(entra)
    assert error.reason_code == "DIRECTORY_CONFIG_INVALID"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("invalid_client", "DIRECTORY_AUTH_FAILED"),
        ("unauthorized_client", "DIRECTORY_AUTH_FAILED"),
        ("invalid_scope", "DIRECTORY_CONFIG_INVALID"),
        ("invalid_request", "DIRECTORY_CONFIG_INVALID"),
        ("temporarily_unavailable", "DIRECTORY_UNAVAILABLE"),
        ("something_new", "DIRECTORY_UNAVAILABLE"),
    ],
)
def test_msal_error_dicts_become_typed_directory_errors(error: str, code: str) -> None:
    result = msal_error(
        {"error": error, "error_description": "AADSTS123: first line.\r\nTrace ID: x"},
        purpose="confirm eligibility",
    )
    assert result.reason_code == code
    assert result.message.startswith("The directory could not confirm eligibility")
    assert f"{error}: AADSTS123: first line." in result.message
    assert "Trace ID" not in result.message
