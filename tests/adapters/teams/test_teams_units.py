"""Pure parts of the Teams surface: card rendering, the command parser, the start-up
check, the app package, and what the notifier queues."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.teams import cards
from adapters.teams.commands import (
    BreakglassList,
    BreakglassRequest,
    BreakglassRevoke,
    Help,
    parse_command,
    parse_duration,
)
from adapters.teams.outbound import DM_TOKEN, POST, UPDATE, TeamsNotifier
from adapters.teams.package import build_package, render_manifest
from adapters.teams.references import references_from
from adapters.teams.settings import ConversationTarget, TeamsSettings, check_startup
from core.cards import Card, ParamLine, ParamStyle
from core.errors import ConfigError, KeyturnError
from core.requests import RequestState

ROOT = Path(__file__).resolve().parents[3]
GUID = "00000000-0000-4000-8000-00000000b07a"
HASH = "3q2-7wKx9QfL0aZ1bY8cW6dV5eU4fT3gS2hR1iQ0K9xq"


def a_card(**overrides: Any) -> Card:
    base: dict[str, Any] = {
        "request_id": "r-7f2c",
        "route": "payments.transfer",
        "title": "🔐 Approval needed · payments.transfer",
        "breakglass": False,
        "state": RequestState.PENDING,
        "requested_by": "invoice-bot acting for Alice Chen",
        "job_line": "j-8f3a21 · requested 10:41 UTC · expires 10:56 UTC (in 14 min)",
        "why_gated": 'rule "payments of $500 or more" (amount_usd ≥ 500)',
        "policy_line": "two_person_rule · hash Qm3vZp0w",
        "params": (
            ParamLine("amount_usd", "12,500"),
            ParamLine("memo", "[click](https://evil.example) **APPROVED**"),
            ParamLine("iban", "•••• (sha256 abcd…wxyz)", ParamStyle.SENSITIVE),
        ),
        "payload_hash": HASH,
        "payload_hash_short": HASH[-4:],
        "exact_payload": '{\n  "amount_usd": 12500\n}',
        "needs": ("2 approvers: one from Finance-Approvers, one from Security-Approvers",),
        "approved_so_far": ("✅ Bob Li (Finance-Approvers) 10:43",),
        "progress_line": "1 of 2 approvals",
        "status_line": None,
        "critical": True,
    }
    base.update(overrides)
    return Card(**base)


def texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [str(node["text"])] if node.get("type") in ("TextRun", "TextBlock") else []
        return own + [t for v in node.values() for t in texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in texts(v)]
    return []


def executes(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        own = [node] if node.get("type") == "Action.Execute" else []
        return own + [a for v in node.values() for a in executes(v)]
    if isinstance(node, list):
        return [a for v in node for a in executes(v)]
    return []


def test_the_card_shows_every_fact_and_the_full_payload_hash() -> None:
    rendered = cards.adaptive_card(a_card(), refresh_user_ids=["29:bob"])
    shown = "\n".join(texts(rendered))
    assert rendered["version"] == "1.5" and rendered["type"] == "AdaptiveCard"
    for fact in (
        HASH,
        "K9xq",
        "invoice-bot acting for Alice Chen",
        "expires 10:56 UTC",
        "payments of $500 or more",
        "Qm3vZp0w",
        "Finance-Approvers",
        "1 of 2 approvals",
        "✅ Bob Li (Finance-Approvers) 10:43",
        "12,500",
        '"amount_usd": 12500',
    ):
        assert fact in shown, fact
    assert rendered["refresh"]["userIds"] == ["29:bob"]
    assert {a["verb"] for a in executes(rendered)} >= {"approve", "deny", "refreshCard"}


def test_untrusted_text_is_never_markdown() -> None:
    rendered = cards.adaptive_card(a_card())
    blocks = [n for n in json.dumps(rendered).split('"type": "TextBlock"')][1:]
    assert blocks == []  # every value is a TextRun, which hosts never parse as markdown
    assert "[click](https://evil.example) **APPROVED**" in texts(rendered)


def test_a_critical_route_asks_for_the_last_four_and_deny_requires_a_reason() -> None:
    rendered = json.dumps(cards.adaptive_card(a_card()))
    assert '"id": "confirm"' in rendered and '"id": "reason"' in rendered
    assert '"id": "confirm"' not in json.dumps(cards.adaptive_card(a_card(critical=False)))


def test_a_final_card_has_no_buttons_and_shows_the_status_line() -> None:
    final = a_card(state=RequestState.DENIED, status_line='❌ Denied by Carol Diaz: "wrong"')
    rendered = cards.adaptive_card(final, refresh_user_ids=["29:bob"])
    assert executes(rendered) == [] and "refresh" not in rendered
    assert '❌ Denied by Carol Diaz: "wrong"' in texts(rendered)


def test_breakglass_cards_carry_the_badge_window_and_rollback_steps() -> None:
    rendered = cards.adaptive_card(
        a_card(
            breakglass=True,
            window_line="30 minutes from approval",
            rollback_steps=("remove the role", "rotate the secret"),
        )
    )
    shown = texts(rendered)
    assert "BREAK-GLASS" in shown and "30 minutes from approval" in shown
    assert "1. remove the role" in shown and "2. rotate the secret" in shown


def test_refresh_lists_at_most_sixty_users() -> None:
    users = [f"29:u{i}" for i in range(80)]
    assert len(cards.adaptive_card(a_card(), refresh_user_ids=users)["refresh"]["userIds"]) == 60


# ------------------------------------------------------------------ commands


def test_commands_parse() -> None:
    assert parse_command("help") == Help()
    assert parse_command("") == Help()
    assert parse_command("breakglass list") == BreakglassList()
    assert parse_command("breakglass revoke r-7f2c9a01b3e4") == BreakglassRevoke("r-7f2c9a01b3e4")
    request = parse_command(
        'breakglass entra.role.assign principal=alice@corp.example role="Privileged Role '
        'Administrator" n=5 --for 1h30m --reason “INC-4411 mailbox” --ticket INC-4411 '
        'rollback "remove the role"'
    )
    assert request == BreakglassRequest(
        route="entra.role.assign",
        params={"principal": "alice@corp.example", "role": "Privileged Role Administrator", "n": 5},
        duration_seconds=5400,
        reason="INC-4411 mailbox",
        ticket="INC-4411",
        rollback_steps=("remove the role",),
    )
    assert parse_command('breakglass x n="5" for 5m reason r').params == {"n": "5"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("deploy prod", 'I don\'t know "deploy". Type "help" for what I can do.'),
        ("breakglass", "say which route you need"),
        ("breakglass x a=1 reason y", 'say for how long, e.g. "for 30m"'),
        ("breakglass x a=1 for 30m", 'say why, e.g. reason "INC-4411 mailbox compromise"'),
        ("breakglass x a=1 for 2x reason y", '"2x" is not a duration: use 30m, 2h or 1h30m'),
        ("breakglass x a for 1m reason y", '"a" is not key=value'),
        ("breakglass x a=1 a=2 for 1m reason y", "a is given twice"),
        ('breakglass x a="1 for 1m reason y', "a quote is not closed"),
        ("breakglass revoke", "breakglass revoke needs one request id"),
        ("breakglass x a=1 for 1m for 2m reason y", '"for" is given twice'),
    ],
)
def test_parse_errors_say_exactly_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(KeyturnError) as e:
        parse_command(text)
    assert e.value.reason_code == "COMMAND_INVALID"
    assert e.value.message.startswith(message)


@given(st.text(max_size=80))
def test_the_parser_never_crashes(text: str) -> None:
    try:
        parse_command(text)
    except KeyturnError as e:
        assert e.reason_code == "COMMAND_INVALID"


def test_durations() -> None:
    assert (parse_duration("30m"), parse_duration("2h"), parse_duration("1h5m")) == (
        1800,
        7200,
        3900,
    )
    for bad in ("0m", "", "30", "m", "-5m"):
        with pytest.raises(KeyturnError):
            parse_duration(bad)


# ------------------------------------------------------------------ settings


def test_no_credentials_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as e:
        check_startup(TeamsSettings(), host="127.0.0.1")
    assert e.value.reason_code == "TEAMS_CREDENTIALS_MISSING"


def test_the_insecure_dev_flag_works_only_on_loopback() -> None:
    dev = TeamsSettings(insecure_dev_no_auth=True)
    check_startup(dev, host="127.0.0.1")
    check_startup(dev, host="::1")
    with pytest.raises(ConfigError) as e:
        check_startup(dev, host="0.0.0.0")
    assert e.value.reason_code == "TEAMS_INSECURE_NOT_LOOPBACK"


def test_credentials_without_a_tenant_allowlist_refuse_to_start() -> None:
    settings = TeamsSettings(app_id=GUID, app_password="s", app_tenant_id=GUID)
    with pytest.raises(ConfigError) as e:
        check_startup(settings, host="0.0.0.0")
    assert e.value.reason_code == "TEAMS_TENANTS_MISSING"
    assert "s" not in repr(settings.app_password)


def test_tenant_allowlist_fails_closed() -> None:
    settings = TeamsSettings(
        app_id=GUID, app_password="s", app_tenant_id=GUID, allowed_tenants=[GUID]
    )
    assert settings.tenant_allowed(GUID.upper())
    assert not settings.tenant_allowed(None)
    assert not settings.tenant_allowed("00000000-0000-4000-8000-000000000000")


# ------------------------------------------------------------------ package


def test_package_holds_a_filled_manifest_and_both_icons(tmp_path: Path) -> None:
    out = build_package(
        ROOT / "manifests" / "teams",
        tmp_path / "keyturn.zip",
        teams_app_id=GUID,
        bot_app_id=GUID,
        domain="keyturn.example.com",
    )
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(zf.read("manifest.json"))
        assert zf.read("color.png").startswith(b"\x89PNG")
    assert manifest["bots"][0]["botId"] == GUID
    assert manifest["bots"][0]["scopes"] == ["team", "personal"]
    assert manifest["validDomains"] == ["keyturn.example.com"]
    assert manifest["$schema"].endswith(
        f"v{manifest['manifestVersion']}/MicrosoftTeams.schema.json"
    )
    titles = {c["title"] for c in manifest["bots"][0]["commandLists"][0]["commands"]}
    assert {"breakglass", "breakglass list", "breakglass revoke", "help"} <= titles


def test_package_refuses_bad_ids() -> None:
    template = (ROOT / "manifests" / "teams" / "manifest.json").read_text(encoding="utf-8")
    with pytest.raises(ConfigError):
        render_manifest(template, teams_app_id="x", bot_app_id=GUID, domain="a.example")
    with pytest.raises(ConfigError):
        render_manifest(template, teams_app_id=GUID, bot_app_id=GUID, domain="https://a.example/")


# ------------------------------------------------------------------ notifier


def test_the_outbox_never_holds_a_token_and_updates_coalesce() -> None:
    target = ConversationTarget(
        service_url="https://smba.example/", channel_id="19:a", tenant_id=GUID
    )
    notifier = TeamsNotifier(
        store=None,  # type: ignore[arg-type]
        settings=TeamsSettings(approvers=target),
        clock=None,
        signer_did="did:key:z6Mktest",
    )
    created = notifier.messages_for(
        SimpleNamespace(kind="request", request_id="r-1", data={"created": True})
    )
    assert [(k, kind, c) for k, kind, _, c in created] == [("teams:19:a", POST, None)]
    approved = notifier.messages_for(
        SimpleNamespace(kind="request", request_id="r-1", data={"state": "approved"})
    )
    kinds = {kind: (payload, c) for _, kind, payload, c in approved}
    assert kinds[UPDATE] == ({"request_id": "r-1"}, "card:r-1")
    assert kinds[DM_TOKEN][0] == {"request_id": "r-1"}  # minted at send time, never stored


# ------------------------------------------------------------------ conversation references


def _install(service_url: str, kind: str = "installationUpdate") -> Any:
    return SimpleNamespace(
        type=kind,
        service_url=service_url,
        conversation=SimpleNamespace(id="19:general@thread.tacv2;messageid=7"),
        channel_data={"team": {"id": "19:general@thread.tacv2"}, "channel": {"id": "19:ops@x"}},
    )


def test_an_install_announces_its_team_channel_and_tenant() -> None:
    refs = references_from(_install("https://smba.example/emea/"), tenant_id=GUID)
    assert [r.key for r in refs] == [
        "19:general@thread.tacv2",
        "19:ops@x",
        f"tenant:{GUID}",
    ]
    assert {r.service_url for r in refs} == {"https://smba.example/emea/"}


def test_a_plain_http_service_url_is_never_captured_unless_loopback() -> None:
    assert references_from(_install("http://smba.example/"), tenant_id=GUID) == []
    assert references_from(_install("ftp://smba.example/"), tenant_id=GUID) == []
    assert references_from(_install("http://127.0.0.1:9/"), tenant_id=GUID)


def test_only_install_activities_without_a_tenant_capture_nothing() -> None:
    assert references_from(_install("https://s.example/", kind="message"), tenant_id=GUID) == []
    assert references_from(_install("https://s.example/"), tenant_id=None) == []
