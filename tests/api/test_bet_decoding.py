"""`POST /v1/bets` is decoded by msgspec on the hot path (`models.WireBet`) and
documented by pydantic (`models.BetIn`). The edge falls back to pydantic for
whatever msgspec refuses, so the one thing that must never happen is msgspec
accepting a body pydantic refuses, or the two reading a body differently (the
Idempotency-Key fingerprint is taken from the parsed body)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ironbook.services.gateway import models as m

_decode = msgspec.json.Decoder(m.WireBet).decode

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
_VALID = {"account_id": "acc-1", "stake_minor": 100, "legs": [_VALID_LEG], "price_change": "any"}


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


def _both(body: bytes) -> tuple[Any, Any]:
    try:
        wire: Any = msgspec.to_builtins(_decode(body))
    except msgspec.MsgspecError:
        wire = None
    try:
        model: Any = m.BetIn.model_validate_json(body).model_dump(mode="json")
    except pydantic.ValidationError:
        model = None
    return wire, model


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_bodies())
def test_msgspec_never_accepts_what_pydantic_refuses(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    wire, model = _both(raw)
    if wire is not None:
        assert model == wire, raw


def test_a_valid_bet_reads_the_same_both_ways() -> None:
    raw = json.dumps(
        {
            "account_id": "acc-1",
            "stake_minor": 250,
            "legs": [{"market_id": "m1", "selection_id": "home", "odds": "2.50"}],
        }
    ).encode()
    wire, model = _both(raw)
    assert wire is not None
    assert wire == model
    assert wire["price_change"] == "none"


def test_edge_cases_refused_by_both() -> None:
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
        assert _both(json.dumps(body).encode()) == (None, None), body
