"""App-only access tokens for Microsoft Graph, from msal.

msal is synchronous and does network I/O in two places: building the application
(tenant discovery) and acquiring a token on a cache miss. Both run in a worker thread
(``asyncio.to_thread``) so the event loop that serves Slack and Teams never blocks.
msal keeps its own in-memory token cache: ``acquire_token_for_client`` answers from it
until the token is close to expiry, so most calls cost one thread hop.

Every failure becomes a ``DirectoryError``; msal's error dicts keep their OAuth error
and AADSTS code in the message so an operator can act on it:

* ``DIRECTORY_AUTH_FAILED``: the token endpoint refused keyturn's credential
  (``invalid_client``, ``unauthorized_client``, ``invalid_grant``).
* ``DIRECTORY_CONFIG_INVALID``: the tenant, authority, scope or certificate is wrong
  (tenant discovery failed, ``invalid_request``/``invalid_scope``, unreadable certificate).
* ``DIRECTORY_UNAVAILABLE``: the login service could not be reached or failed.

``http_client`` is msal's own seam (any object with requests-like ``get``/``post``);
tests pass one that routes the https authority to a local stand-in, because msal
refuses a plain-http authority.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import msal  # type: ignore[import-untyped]  # msal ships no type information
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from adapters.entra.settings import EntraSettings
from core.errors import DirectoryError

_PEM_KEY_RE = re.compile(
    r"-----BEGIN (?:ENCRYPTED |RSA |EC )?PRIVATE KEY-----.+?"
    r"-----END (?:ENCRYPTED |RSA |EC )?PRIVATE KEY-----",
    re.DOTALL,
)
_PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_AADSTS_RE = re.compile(r"AADSTS\d+")

# OAuth errors (RFC 6749 §5.2 plus Entra's) that mean "your credential is not accepted".
_AUTH_ERRORS = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_grant", "access_denied"}
)
# Errors that mean "the configuration asks for something that does not exist".
_CONFIG_ERRORS = frozenset(
    {"invalid_request", "invalid_scope", "invalid_resource", "invalid_tenant"}
)


def msal_error(result: Mapping[str, Any], *, purpose: str) -> DirectoryError:
    """Turn msal's error dict into a ``DirectoryError`` with a message an operator can use."""
    error = str(result.get("error") or "unknown_error")[:80]
    description = str(result.get("error_description") or "")
    first_line = description.strip().splitlines()[0][:300] if description.strip() else ""
    aadsts = _AADSTS_RE.search(description)
    detail = f"{error}"
    if aadsts and aadsts.group(0) not in first_line:
        detail += f" {aadsts.group(0)}"
    if first_line:
        detail += f": {first_line}"
    if error in _AUTH_ERRORS:
        return DirectoryError(
            "DIRECTORY_AUTH_FAILED",
            f"The directory could not {purpose}: Entra ID refused keyturn's app credential "
            f"({detail}). Check the client id, secret or certificate (`keyturn entra check`).",
        )
    if error in _CONFIG_ERRORS:
        return DirectoryError(
            "DIRECTORY_CONFIG_INVALID",
            f"The directory could not {purpose}: Entra ID refused the token request ({detail}). "
            "Check the tenant id and Graph scope (`keyturn entra check`).",
        )
    return DirectoryError(
        "DIRECTORY_UNAVAILABLE",
        f"The directory could not {purpose}: Entra ID did not issue a token ({detail}).",
    )


def client_credential(settings: EntraSettings) -> str | dict[str, Any]:
    """msal's ``client_credential`` for the configured secret or certificate.

    Raises:
        DirectoryError: DIRECTORY_CONFIG_INVALID when the certificate file cannot be read,
            does not hold a matching key and certificate, or the thumbprint does not match.
    """
    if settings.client_secret is not None:
        return settings.client_secret.get_secret_value()
    path = settings.client_certificate_path
    assert path is not None  # EntraSettings guarantees exactly one credential
    passphrase = (
        settings.client_certificate_passphrase.get_secret_value()
        if settings.client_certificate_passphrase is not None
        else None
    )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _cert_error(path, f"cannot be read ({e.strerror})") from e
    if path.suffix.lower() in (".pfx", ".p12"):
        certificate = _check_pkcs12(path, data, passphrase)
        _check_thumbprint(settings, certificate, path)
        credential: dict[str, Any] = {"private_key_pfx_path": str(path)}
    else:
        key_pem, cert_pem = _check_pem(path, data, passphrase)
        certificate = x509.load_pem_x509_certificate(cert_pem.encode())
        _check_thumbprint(settings, certificate, path)
        credential = {"private_key": key_pem, "public_certificate": cert_pem}
        if settings.client_certificate_thumbprint:
            credential["thumbprint"] = settings.client_certificate_thumbprint
    if passphrase:
        credential["passphrase"] = passphrase
    return credential


def _describe(error: Exception) -> str:
    """``Type: first line`` of a library exception, short enough for a chat message."""
    text = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _cert_error(path: Path, why: str) -> DirectoryError:
    return DirectoryError("DIRECTORY_CONFIG_INVALID", f"The client certificate {path} {why}.")


def _public_bytes(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _check_pem(path: Path, data: bytes, passphrase: str | None) -> tuple[str, str]:
    text = data.decode("ascii", errors="replace")
    keys = _PEM_KEY_RE.findall(text)
    certs = _PEM_CERT_RE.findall(text)
    if len(keys) != 1 or not certs:
        raise _cert_error(path, "must hold exactly one private key and its certificate (PEM)")
    try:
        key = serialization.load_pem_private_key(
            keys[0].encode(), passphrase.encode() if passphrase else None
        )
        cert = x509.load_pem_x509_certificate(certs[0].encode())
    except (ValueError, TypeError) as e:
        raise _cert_error(path, f"cannot be loaded ({e})") from e
    if _public_bytes(key.public_key()) != _public_bytes(cert.public_key()):
        raise _cert_error(path, "holds a private key that does not match its certificate")
    return keys[0], certs[0]


def _check_pkcs12(path: Path, data: bytes, passphrase: str | None) -> x509.Certificate:
    try:
        key, cert, _ = pkcs12.load_key_and_certificates(
            data, passphrase.encode() if passphrase else None
        )
    except (ValueError, TypeError) as e:
        raise _cert_error(path, f"cannot be loaded ({e})") from e
    if key is None or cert is None:
        raise _cert_error(path, "must hold a private key and its certificate")
    if _public_bytes(key.public_key()) != _public_bytes(cert.public_key()):
        raise _cert_error(path, "holds a private key that does not match its certificate")
    return cert


def _check_thumbprint(settings: EntraSettings, cert: x509.Certificate, path: Path) -> None:
    wanted = settings.client_certificate_thumbprint
    if wanted and cert.fingerprint(hashes.SHA1()).hex() != wanted:  # noqa: S303 - x5t is SHA-1 by spec
        raise _cert_error(path, "does not match client_certificate_thumbprint")


class MsalTokenSource:
    """Gets app-only Graph tokens through msal's ``ConfidentialClientApplication``.

    The msal application is built on first use, in a worker thread, because msal runs
    tenant discovery in its constructor. A failed build is not kept: the next call
    tries again.
    """

    def __init__(self, settings: EntraSettings, *, http_client: Any = None) -> None:
        self._settings = settings
        self._http_client = http_client
        self._app: msal.ConfidentialClientApplication | None = None
        self._build_lock = threading.Lock()
        # One acquisition at a time: on a cold cache, concurrent checks would otherwise
        # each ask the token endpoint; after the first, msal's cache answers the rest.
        self._acquire_lock = asyncio.Lock()

    async def access_token(self, *, purpose: str) -> str:
        """A bearer token for Graph, from msal's cache or the token endpoint.

        Raises:
            DirectoryError: DIRECTORY_AUTH_FAILED, DIRECTORY_CONFIG_INVALID or
                DIRECTORY_UNAVAILABLE (see the module docstring).
        """
        async with self._acquire_lock:
            result = await asyncio.to_thread(self._acquire, purpose)
        token = result.get("access_token")
        if not isinstance(token, str) or not token:
            raise msal_error(result, purpose=purpose)
        return token

    async def token_claims(self, *, purpose: str) -> dict[str, Any]:
        """The claims of the current app token, read WITHOUT verifying its signature.

        For diagnostics only (``keyturn entra check`` reads ``roles``): the token came
        straight from the token endpoint over TLS, and Graph, not keyturn, is its audience.

        Raises:
            DirectoryError: as :meth:`access_token`; DIRECTORY_UNAVAILABLE when the token
                is not a JWT.
        """
        token = await self.access_token(purpose=purpose)
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise DirectoryError(
                "DIRECTORY_UNAVAILABLE",
                f"The directory could not {purpose}: the access token is not a readable JWT.",
            ) from e
        return dict(claims)

    def _acquire(self, purpose: str) -> dict[str, Any]:
        app = self._application(purpose)
        try:
            result = app.acquire_token_for_client(scopes=[self._settings.graph_scope])
        except Exception as e:
            # msal lets transport errors (requests.ConnectionError, timeouts) and some
            # ValueErrors escape; none of them may pass as a token.
            raise DirectoryError(
                "DIRECTORY_UNAVAILABLE",
                f"The directory could not {purpose}: the Entra ID token endpoint could not be "
                f"reached or failed ({_describe(e)}).",
            ) from e
        if not isinstance(result, dict):
            return {"error": "no_result", "error_description": "msal returned no result"}
        return result

    def _application(self, purpose: str) -> msal.ConfidentialClientApplication:
        with self._build_lock:
            if self._app is not None:
                return self._app
            credential = client_credential(self._settings)
            try:
                app = msal.ConfidentialClientApplication(
                    self._settings.client_id,
                    client_credential=credential,
                    authority=self._settings.authority,
                    http_client=self._http_client,
                    timeout=self._settings.request_timeout_seconds,
                )
            except ValueError as e:
                # Tenant discovery answered 4xx (unknown tenant) or the credential's shape
                # is wrong: a configuration problem, not an outage.
                raise DirectoryError(
                    "DIRECTORY_CONFIG_INVALID",
                    f"The directory could not {purpose}: msal refused the Entra configuration "
                    f"for tenant {self._settings.tenant_id} ({str(e).splitlines()[0][:200]}).",
                ) from e
            except Exception as e:
                raise DirectoryError(
                    "DIRECTORY_UNAVAILABLE",
                    f"The directory could not {purpose}: the Entra ID authority "
                    f"{self._settings.authority_base} could not be reached ({_describe(e)}).",
                ) from e
            self._app = app
            return app
