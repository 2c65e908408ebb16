"""What a call's parameters are: the real arguments, defaults applied, as plain JSON."""

from __future__ import annotations

import enum
import inspect
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.agents.sdk import InvalidCall, call_params, json_params
from core.requests import payload_hash


def transfer(amount_usd: int, to_account: str, memo: str = "", *tags: str, **extra: Any) -> None:
    return None


SIG = inspect.signature(transfer)


class Currency(enum.StrEnum):
    EUR = "EUR"


class Loud(str):
    def __str__(self) -> str:
        return "SOMETHING ELSE"


def test_defaults_are_part_of_what_is_approved() -> None:
    assert call_params(SIG, (12_500, "DE89"), {}) == {
        "amount_usd": 12_500,
        "to_account": "DE89",
        "memo": "",
        "tags": [],
    }


def test_positional_and_keyword_spellings_of_one_call_hash_the_same() -> None:
    a = call_params(SIG, (12_500, "DE89"), {"memo": "x"})
    b = call_params(SIG, (), {"memo": "x", "to_account": "DE89", "amount_usd": 12_500})
    assert payload_hash(a) == payload_hash(b)


def test_star_args_and_keyword_extras_are_kept() -> None:
    params = call_params(SIG, (1, "DE89", "m", "urgent", "q4"), {"currency": Currency.EUR})
    assert params["tags"] == ["urgent", "q4"]
    assert params["currency"] == "EUR" and type(params["currency"]) is str


def test_excluded_arguments_are_left_out() -> None:
    assert "memo" not in call_params(SIG, (1, "DE89"), {}, exclude=frozenset({"memo"}))


def test_a_str_subclass_is_hashed_by_its_content_not_its_str() -> None:
    assert json_params({"to": Loud("DE89")}) == {"to": "DE89"}


@pytest.mark.parametrize(
    "value",
    [{1, 2}, b"bytes", float("nan"), float("inf"), object(), {1: "int key"}],
    ids=["set", "bytes", "nan", "inf", "object", "int-key"],
)
def test_values_without_a_json_form_are_refused(value: Any) -> None:
    with pytest.raises(InvalidCall) as refused:
        json_params({"value": value})
    assert refused.value.reason_code == "PARAMS_NOT_JSON"
    assert "value" in refused.value.message


def test_arguments_that_do_not_fit_the_signature_are_refused() -> None:
    with pytest.raises(InvalidCall) as refused:
        call_params(SIG, (), {"amount": 1})
    assert refused.value.reason_code == "ARGUMENTS_INVALID"


def test_deep_nesting_is_refused() -> None:
    value: Any = "leaf"
    for _ in range(80):
        value = [value]
    with pytest.raises(InvalidCall):
        json_params({"deep": value})


def test_the_copy_shares_nothing_with_the_caller() -> None:
    inner = {"a": [1, 2]}
    copied = json_params({"x": inner})
    inner["a"].append(3)
    assert copied == {"x": {"a": [1, 2]}}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_normalized_parameters_are_what_json_would_carry(params: dict[str, Any]) -> None:
    normalized = json_params(params)
    assert normalized == json.loads(json.dumps(params))
    assert payload_hash(normalized) == payload_hash(json.loads(json.dumps(params)))
