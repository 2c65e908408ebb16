"""Local stand-ins for Teams: a Bot Framework connector that records every call, and
a token issuer whose key botbuilder's real JWT validation trusts (PLATFORMS.md §B.7).

The metadata cache is seeded instead of serving OpenID metadata, because botbuilder
fetches it with a blocking ``requests.get`` on the event loop (a same-loop server
would deadlock). Private API (``_OpenIdMetadata``): pinned to botbuilder 4.17.1.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jwt
from aiohttp import web
from botframework.connector.auth import (
    AuthenticationConstants,
    JwtTokenExtractor,
    MicrosoftAppCredentials,
    ServiceClientCredentialsFactory,
)
from botframework.connector.auth.jwt_token_extractor import _OpenIdMetadata
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

APP_ID = "00000000-0000-4000-8000-00000000b07a"
TENANT = "00000000-0000-4000-8000-0000000000aa"
ISSUER = "https://api.botframework.com"
KID = "keyturn-test-kid"
OUTBOUND_TOKEN = "fake-outbound-token"


@dataclass
class Call:
    method: str
    path: str
    body: dict[str, Any]
    authorization: str | None


@dataclass
class Connector:
    """Records POST/PUT /v3/conversations/…; ``throttle`` answers 429 that many times."""

    calls: list[Call] = field(default_factory=list)
    throttle: int = 0
    retry_after: str = "2"
    counter: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        if self.throttle > 0:
            self.throttle -= 1
            return web.json_response(
                {"error": {"code": "Throttled", "message": "slow down"}},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        self.calls.append(
            Call(request.method, request.path, body, request.headers.get("Authorization"))
        )
        self.counter += 1
        n = self.counter
        if request.method == "POST" and request.path == "/v3/conversations":
            conv = "a:dm-" + str(n) if not body.get("isGroup") else "19:chan;messageid=" + str(n)
            return web.json_response({"id": conv, "activityId": f"act-{n}"})
        return web.json_response({"id": f"act-{n}"})

    def cards(self) -> list[dict[str, Any]]:
        """Every Adaptive Card sent (posts and updates), oldest first."""
        out = []
        for call in self.calls:
            activity = call.body.get("activity", call.body)
            for att in activity.get("attachments") or []:
                out.append(att["content"])
        return out


class Issuer:
    """Signs Bot Framework channel tokens with a local RSA key botbuilder trusts."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def install(self) -> None:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk |= {"kid": KID, "endorsements": ["msteams"]}
        metadata = _OpenIdMetadata(AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL)
        metadata.keys, metadata.last_updated = [jwk], datetime.now()
        JwtTokenExtractor.metadataCache[metadata.url] = metadata

    def token(self, service_url: str, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": APP_ID,
            "serviceurl": service_url,
            "nbf": now - 10,
            "exp": now + 3600,
        }
        key = overrides.pop("key", self.key)
        kid = overrides.pop("kid", KID)
        claims.update(overrides)
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


class _FakeCredentials(MicrosoftAppCredentials):  # type: ignore[misc]
    def get_access_token(self, force_refresh: bool = False) -> str:
        return OUTBOUND_TOKEN


class LocalCredentialsFactory(ServiceClientCredentialsFactory):  # type: ignore[misc]
    """Validates the app id for real; outbound calls carry a fixed bearer token instead
    of asking login.microsoftonline.com for one."""

    async def is_valid_app_id(self, app_id: str) -> bool:
        return app_id == APP_ID

    async def is_authentication_disabled(self) -> bool:
        return False

    async def create_credentials(
        self, app_id: str, oauth_scope: str, login_endpoint: str, validate_authority: bool
    ) -> Any:
        return _FakeCredentials(app_id, "unused", oauth_scope=oauth_scope)
