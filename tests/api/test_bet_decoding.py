"""`POST /v1/bets` has one model, `models.BetIn`, decoded by `decode_bet` on
the edge's fast path and on the documented route alike; its JSON Schema is
the OpenAPI document's. Here: what it refuses, where the refusal points,
and that the schema shown to clients agrees with the decoder (the
Idempotency-Key fingerprint is taken from the decoded body, so a body must
read one way only)."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ironbook.services.gateway import models as m

_SAMPLES = ["m1", "home", "a" * 64, "a" * 65, "", " x", "x\n", "x y", "é", "٢", "2.50", "2.5",
            "1000.00", "10000", "2.505", "-2", "2.50\n", "0.50", "any", "better"]  # fmt: skip
_strings = st.one_of(st.sampled_from(_SAMPLES), st.text(max_size=8))
_values = st.one_of(
    _strings,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 100, 10**12, 10**12 + 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
_VALID_LEG = {"market_id": "m1", "selection_id": "home", "odds": "2.50"}
_VALID = {
    "account_id": "acc-1",
    "stake_minor": 100,
    "legs": [_VALID_LEG],
    "price_change": "any",
    "each_way": True,
}


@st.composite
def _bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid bet with a few fields replaced, added or dropped: most
    examples are then one mistake away from valid, where parsers differ."""
    body: dict[str, Any] = {**_VALID, "legs": [dict(_VALID_LEG)]}
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(["top", "leg", "legs", "drop", "extra"]))
        if where == "top":
            body[draw(st.sampled_from(list(_VALID)))] = draw(_values)
        elif where == "leg" and isinstance(body.get("legs"), list) and body["legs"]:
            leg = body["legs"][0]
            if isinstance(leg, dict):
                leg[draw(st.sampled_from(list(_VALID_LEG)))] = draw(_values)
        elif where == "legs":
            body["legs"] = [dict(_VALID_LEG)] * draw(st.integers(min_value=0, max_value=13))
        elif where == "drop":
            body.pop(draw(st.sampled_from(list(_VALID))), None)
        else:
            body[draw(st.sampled_from(["extra", "legs_", "Account_id"]))] = draw(_values)
    return body


_SCHEMAS = m.openapi_components(m.BetIn)


def _decoded(body: bytes) -> Any:
    try:
        return msgspec.to_builtins(m.decode_bet(body))
    except msgspec.MsgspecError:
        return None


def _schema_accepts(value: Any, schema: dict[str, Any]) -> bool:
    """The documented JSON Schema, checked by hand for the keywords it uses."""
    if "$ref" in schema:
        return _schema_accepts(value, _SCHEMAS[schema["$ref"].rsplit("/", 1)[1]])
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict) or not set(schema["required"]) <= set(value):
            return False
        if set(value) - set(schema["properties"]):
            return False
        return all(_schema_accepts(v, schema["properties"][k]) for k, v in value.items())
    if kind == "array":
        return (
            isinstance(value, list)
            and schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 10**9)
            and all(_schema_accepts(item, schema["items"]) for item in value)
        )
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value > schema.get("exclusiveMinimum", -(2**64))
            and value <= schema.get("maximum", 2**64)
        )
    if kind == "string":
        return (
            isinstance(value, str)
            and schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 10**9)
            and re.fullmatch(schema["pattern"].strip("^$"), value) is not None
        )
    raise AssertionError(f"unexpected schema {schema}")


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_bodies())
def test_the_decoder_and_the_documented_schema_agree(body: dict[str, Any]) -> None:
    decoded = _decoded(json.dumps(body).encode())
    assert (decoded is not None) == _schema_accepts(body, _SCHEMAS["BetIn"]), body
    if decoded is not None:
        assert decoded == {"price_change": "none", "each_way": False, **body}


def test_a_valid_bet_reads_with_its_default() -> None:
    leg = {"market_id": "m1", "selection_id": "home", "odds": "2.50"}
    raw = json.dumps({"account_id": "acc-1", "stake_minor": 250, "legs": [leg]}).encode()
    assert _decoded(raw) == {
        "account_id": "acc-1",
        "stake_minor": 250,
        "legs": [leg],
        "price_change": "none",
        "each_way": False,
    }


def test_edge_cases_refused() -> None:
    leg = {"market_id": "m1", "selection_id": "home", "odds": "2.50"}
    for body in (
        {"account_id": "a\n", "stake_minor": 1, "legs": [leg]},
        {"account_id": "a", "stake_minor": True, "legs": [leg]},
        {"account_id": "a", "stake_minor": 1.0, "legs": [leg]},
        {"account_id": "a", "stake_minor": 10**12 + 1, "legs": [leg]},
        {"account_id": "a", "stake_minor": 1, "legs": [{**leg, "odds": "2.50\n"}]},
        {"account_id": "a", "stake_minor": 1, "legs": [{**leg, "odds": "٢.٥٠"}]},
        {"account_id": "a", "stake_minor": 1, "legs": [leg] * 13},
        {"account_id": "a", "stake_minor": 1, "legs": [leg], "unknown": 1},
    ):
        assert _decoded(json.dumps(body).encode()) is None, body


def test_refusals_say_where() -> None:
    leg = {"market_id": "m1", "selection_id": "home", "odds": "2.50"}
    cases = {
        b"{not json": ["body"],
        json.dumps({"stake_minor": 1, "legs": [leg]}).encode(): ["body", "account_id"],
        json.dumps({"account_id": "a", "stake_minor": 1, "legs": [leg], "x": 1}).encode(): [
            "body",
            "x",
        ],
        json.dumps(
            {"account_id": "a", "stake_minor": 1, "legs": [leg, {**leg, "odds": ""}]}
        ).encode(): ["body", "legs", 1, "odds"],
    }
    for body, loc in cases.items():
        try:
            m.decode_bet(body)
        except msgspec.MsgspecError as err:
            (error,) = m.body_errors(err)
            assert error["loc"] == loc, (body, error)
            assert error["type"] == ("json_invalid" if body == b"{not json" else "value_error")
        else:
            raise AssertionError(body)
