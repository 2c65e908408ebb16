"""/breakglass parsing: exact problems, never a guess."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.slack.commands import (
    BreakglassAsk,
    BreakglassList,
    BreakglassRevoke,
    BreakglassTokenAsk,
    parse_breakglass,
    parse_duration,
)
from core.errors import KeyturnError


def test_full_request_is_parsed() -> None:
    parsed = parse_breakglass(
        'entra.role.assign principal=alice@corp.example role="Privileged Role Administrator" '
        """count=3 tags:='["a","b"]' --for 1h30m --reason "INC-4411 mailbox" --ticket INC-4411 """
        '--rollback "Remove the role" --rollback "Revoke the CST"'
    )
    assert parsed == BreakglassAsk(
        route="entra.role.assign",
        params={
            "principal": "alice@corp.example",
            "role": "Privileged Role Administrator",
            "count": 3,
            "tags": ["a", "b"],
        },
        duration_seconds=5400,
        reason="INC-4411 mailbox",
        ticket="INC-4411",
        rollback_steps=("Remove the role", "Revoke the CST"),
    )


def test_leading_zero_numbers_stay_text() -> None:
    parsed = parse_breakglass('r account=007 --for 5m --reason "x"')
    assert isinstance(parsed, BreakglassAsk) and parsed.params == {"account": "007"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "say what you need"),
        ("r a=1 --for 30m", 'say why with --reason "…"'),
        ('r a=1 --reason "x"', "say how long with --for"),
        ('r a=1 --for soon --reason "x"', "--for soon is not a duration"),
        ('r a=1 --for 0m --reason "x"', "--for must be longer than 0"),
        ('r a=1 --for 30m --reason "x" --reason "y"', "--reason given twice"),
        ('r a=1 a=2 --for 30m --reason "x"', "parameter a given twice"),
        ('r justaword --for 30m --reason "x"', "'justaword' is not key=value"),
        ('r a=1 --for 30m --reason "x" --yolo 1', "unknown option --yolo"),
        ('r a=1 --for 30m --reason "unterminated', "check your quotes"),
        ("revoke", "/breakglass revoke takes one request id"),
        ("token a b", "/breakglass token takes one request id"),
        ('r x:={nope --for 30m --reason "x"', "x:= takes JSON"),
    ],
)
def test_bad_arguments_name_the_exact_problem(text: str, message: str) -> None:
    with pytest.raises(KeyturnError) as refused:
        parse_breakglass(text)
    assert refused.value.reason_code == "COMMAND_INVALID"
    assert message in refused.value.message


def test_subcommands() -> None:
    assert parse_breakglass("list") == BreakglassList()
    assert parse_breakglass("revoke r-7f2c9a01b3e4") == BreakglassRevoke("r-7f2c9a01b3e4")
    assert parse_breakglass("token r-7f2c9a01b3e4") == BreakglassTokenAsk("r-7f2c9a01b3e4")


@given(st.integers(0, 23), st.integers(0, 59))
def test_durations_add_up(hours: int, minutes: int) -> None:
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    if hours or minutes:
        assert parse_duration(text) == hours * 3600 + minutes * 60


@given(st.text(max_size=60))
def test_parser_raises_only_command_invalid(text: str) -> None:
    try:
        parse_breakglass(text)
    except KeyturnError as e:
        assert e.reason_code == "COMMAND_INVALID"
