"""The gateway's pure parts and the core's queries, without a cluster."""

from __future__ import annotations

import pytest

from ironbook import core
from ironbook.core import acting, issued
from ironbook.core import queries as q
from ironbook.services.gateway.idempotency import fingerprint, keyed_request_id, valid_key
from ironbook.services.gateway.traffic import Admission, IpFilter, MarketAdmission, TokenBuckets
from ironbook.settings import ConfigError, GatewaySettings, load_settings

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


def test_token_bucket_allows_burst_then_refills() -> None:
    buckets = TokenBuckets(rate_per_s=10, burst=3, max_keys=100)
    assert [buckets.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait_s = buckets.take("a", now=0.0)
    assert wait_s == pytest.approx(0.1)
    assert buckets.take("b", now=0.0) == 0.0
    assert buckets.take("a", now=0.1) == 0.0
    assert buckets.take("a", now=0.1) > 0


def test_token_buckets_are_bounded() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=1, max_keys=10)
    for index in range(1_000):
        buckets.take(f"k{index}", now=0.0)
    assert len(buckets) == 10


def test_admission_bounds_inflight() -> None:
    admission = Admission(2)
    assert admission.try_enter()
    assert admission.try_enter()
    assert not admission.try_enter()
    admission.leave()
    assert admission.try_enter()


def test_ip_filter() -> None:
    everyone = IpFilter()
    assert everyone.permits("203.0.113.9")
    deny = IpFilter(deny=["203.0.113.0/24"])
    assert not deny.permits("203.0.113.9")
    assert deny.permits("198.51.100.1")
    allow = IpFilter(allow=["10.0.0.0/8", "::1/128"], deny=["10.6.6.6"])
    assert allow.permits("10.1.2.3")
    assert allow.permits("::1")
    assert not allow.permits("10.6.6.6")
    assert not allow.permits("192.0.2.1")
    assert not allow.permits("not-an-address")


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "IRONBOOK_GATEWAY_PRINCIPAL_RATE_PER_S": "7.5",
        "IRONBOOK_GATEWAY_MAX_BODY_BYTES": "1024",
        "IRONBOOK_GATEWAY_DENY_CIDRS": "10.0.0.0/8, 192.0.2.0/24",
        "IRONBOOK_GATEWAY_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2/32",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings().gateway
    assert settings.principal_rate_per_s == 7.5
    assert settings.max_body_bytes == 1024
    assert settings.deny_cidrs == ("10.0.0.0/8", "192.0.2.0/24")
    assert settings.trusted_proxies == ("10.0.0.1", "10.0.0.2/32")


def test_rate_limits_are_shared_by_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = GatewaySettings(
        principal_rate_per_s=200, principal_burst=400, ip_rate_per_s=30, ip_burst=3
    )
    assert settings.principal_rate_per_worker == (200, 400)
    shared = settings.model_copy(update={"worker_count": 4})
    assert shared.principal_rate_per_worker == (50, 100)
    assert shared.ip_rate_per_worker == (7.5, 1), "a burst never falls below one request"
    monkeypatch.setenv("IRONBOOK_GATEWAY_WORKER_COUNT", "0")
    with pytest.raises(ConfigError, match="worker_count"):
        load_settings()


def test_idempotency_helpers() -> None:
    assert keyed_request_id("alice", "k") != keyed_request_id("bob", "k")
    assert keyed_request_id("alice", "k") == keyed_request_id("alice", "k")
    assert fingerprint("POST", "/v1/bets", {"a": 1, "b": [1, 2]}) == fingerprint(
        "POST", "/v1/bets", {"b": [1, 2], "a": 1}
    )
    assert fingerprint("POST", "/v1/bets", {"a": 1}) != fingerprint("POST", "/v1/bets", {"a": 2})
    assert fingerprint("POST", "/v1/a", {}) != fingerprint("POST", "/v1/b", {})
    assert valid_key("order-123")
    assert not valid_key("")
    assert not valid_key("x" * 129)
    assert not valid_key("caf\u00e9")


def _ledger() -> core.LedgerState:
    state = core.new_state()

    def run(command: core.AnyCommand) -> None:
        outcome = core.decide(state, issued(command, PEOPLE), 1_000)
        assert isinstance(outcome, core.Accepted), outcome
        for event in outcome.events:
            core.apply(state, event)

    run(core.OpenAccount(request_id="o1", account_id="alice"))
    run(core.OpenAccount(request_id="o2", account_id="bob"))
    for account_id in ("alice", "bob"):
        run(
            core.Deposit(
                request_id=f"d-{account_id}",
                account_id=account_id,
                amount_minor=10**6,
                reason="test top-up",
            )
        )
    for market_id in ("m1", "m2", "m3"):
        run(
            core.CreateMarket(
                request_id=f"c-{market_id}",
                market_id=market_id,
                event_id="e",
                name="Win",
                selections=(core.SelectionSpec(selection_id="a", name="A", odds=250),),
            )
        )
    for n in range(7):
        run(
            core.PlaceBet(
                request_id=f"b{n}",
                account_id="alice" if n % 2 == 0 else "bob",
                stake_minor=100,
                legs=(core.BetLeg(market_id="m1", selection_id="a", odds=250),),
            )
        )
    return state


def _answer(state: core.LedgerState, query: core.AnyQuery) -> object:
    before = core.state_hash(state)
    outcome = core.decide(state, issued(query, PEOPLE), 2_000)
    assert isinstance(outcome, core.Accepted)
    assert outcome.events == ()
    assert core.state_hash(state) == before
    return outcome.result


def test_queries_read_without_events() -> None:
    state = _ledger()
    account = _answer(state, core.GetAccount(request_id="q", account_id="alice"))
    assert isinstance(account, core.AccountView)
    assert account.balance_minor == 10**6 - 400
    missing = _answer(state, core.GetAccount(request_id="q", account_id="nobody"))
    assert missing == core.ReadRefusal(code="unknown_account", message="no account 'nobody'")
    bet = _answer(state, core.GetBet(request_id="q", bet_id="B0-2"))
    assert isinstance(bet, core.BetView)
    assert bet.account_id == "bob"
    market = _answer(state, core.GetMarket(request_id="q", market_id="m2"))
    assert isinstance(market, core.MarketView)


def test_account_bets_page_through_every_bet_once() -> None:
    state = _ledger()
    seen: list[str] = []
    after = None
    for _ in range(10):
        page = _answer(
            state, core.ListAccountBets(request_id="q", account_id="alice", after=after, limit=2)
        )
        assert isinstance(page, core.BetPage)
        seen.extend(bet.bet_id for bet in page.bets)
        after = page.next_after
        if after is None:
            break
    assert seen == ["B0-1", "B0-3", "B0-5", "B0-7"]
    bad = _answer(state, core.ListAccountBets(request_id="q", account_id="alice", after="B9-1"))
    assert isinstance(bad, core.ReadRefusal)
    assert bad.code == q.INVALID_CURSOR


def test_markets_page() -> None:
    state = _ledger()
    page = _answer(state, core.ListMarkets(request_id="q", limit=2))
    assert isinstance(page, core.MarketPage)
    assert [m.market_id for m in page.markets] == ["m1", "m2"]
    assert page.next_after == "m2"
    rest = _answer(state, core.ListMarkets(request_id="q", after="m2", limit=2))
    assert isinstance(rest, core.MarketPage)
    assert [m.market_id for m in rest.markets] == ["m3"]
    assert rest.next_after is None


def test_queries_travel_and_route() -> None:
    query = core.ListAccountBets(request_id="q", account_id="alice", status="open", limit=5)
    assert core.decode_command(core.encode_command(query)) == query
    assert core.query_partition(core.GetBet(request_id="q", bet_id="B3-17"), 4) == 3
    assert core.query_partition(core.GetBet(request_id="q", bet_id="garbage"), 4) == 0
    assert core.query_partition(core.GetMarket(request_id="q", market_id="m"), 4) == 0
    assert core.query_partition(
        core.GetAccount(request_id="q", account_id="alice"), 4
    ) == core.partition_of("alice", 4)
    view = core.Accepted(events=(), result=core.ReadRefusal(code="x", message="y"))
    assert core.decode_outcome(core.encode_outcome(view)) == view


def test_market_admission_bounds_each_market_and_takes_all_legs_or_none() -> None:
    admission = MarketAdmission(1)
    assert admission.try_enter(["a"]) is None
    assert admission.try_enter(["a"]) == "a"
    # A bet with a leg on the full market takes nothing on its other legs.
    assert admission.try_enter(["b", "a"]) == "a"
    assert admission.inflight == {"a": 1}
    assert admission.try_enter(["b", "c", "b"]) is None  # a market once per bet
    assert admission.inflight == {"a": 1, "b": 1, "c": 1}
    admission.leave(["a"])
    admission.leave(["b", "c", "b"])
    assert admission.inflight == {}
    with pytest.raises(ValueError):
        MarketAdmission(0)
