"""The manifest asks for exactly the scopes the code uses, and routes to /slack/events."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = ROOT / "manifests" / "slack" / "manifest.yaml"

# Web API method → bot scopes it needs (api.slack.com/methods/<method>).
SCOPES = {
    "chat.postMessage": {"chat:write"},
    "chat.update": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "users.info": {"users:read", "users:read.email"},  # the email is what we read
    "users.lookupByEmail": {"users:read.email"},
    "views.open": set(),
}


def _methods_called() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "adapters" / "slack").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                prefix, _, rest = name.partition("_")
                if prefix in {"chat", "users", "views", "conversations", "reactions"} and rest:
                    found.add(f"{prefix}.{rest}")
    return found


def test_every_web_api_method_in_the_code_has_a_known_scope() -> None:
    called = _methods_called()
    assert called, "no Web API calls found; the parser is broken"
    assert called <= set(SCOPES), f"add scopes for {sorted(called - set(SCOPES))}"


def test_manifest_bot_scopes_are_exactly_those_the_code_needs() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    needed = set().union(*(SCOPES[m] for m in _methods_called())) | {"commands"}
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed


def test_manifest_sends_everything_to_the_one_events_path() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    urls = [manifest["settings"]["interactivity"]["request_url"]]
    urls += [c["url"] for c in manifest["features"]["slash_commands"]]
    assert all(u.endswith("/slack/events") for u in urls)
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/breakglass"]
