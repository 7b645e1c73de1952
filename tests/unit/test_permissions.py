"""The ledger re-checks the principal: every role × command family, allowed
and refused; an account out of the principal's scope; no principal at all;
and a refusal of the principal changes nothing, not even the remembered
answers. The actor and reason land in the log; entries logged before
principals still decode and replay to the same state."""

from __future__ import annotations

import msgspec
import pytest
from ledger_driver import Ledger

from ironbook.core import (
    PERMITTED,
    AdjustBalance,
    AnyCommand,
    ArchiveSettled,
    BetLeg,
    CashOut,
    CloseMarket,
    ContinueResult,
    CreateMarket,
    Deposit,
    FeedBatch,
    GetAccount,
    GetBet,
    GetFeedCursor,
    GetMarket,
    ListAccountBets,
    ListMarkets,
    OpenAccount,
    PlaceBet,
    Principal,
    QuoteCashOut,
    ReleaseBets,
    ResettleMarket,
    ResumeMarket,
    RollbackSettlement,
    SelectionPrice,
    SelectionSpec,
    SelfExclude,
    SetDepositLimits,
    SetProducerStatus,
    SettleMarket,
    SuspendMarket,
    UpdatePrices,
    VoidMarket,
    Winner,
    Withdraw,
    acting,
    apply,
    decide,
    decode_command,
    decode_events,
    encode_command,
    encode_events,
    issued,
    new_state,
    snapshot_bytes,
)
from ironbook.core.events import (
    AccountOpened,
    BalanceAdjusted,
    BetPlaced,
    Deposited,
    MarketCreated,
    MarketResulted,
    MarketStatusChanged,
    Withdrawn,
)

ROLES = tuple(PERMITTED)


def commands() -> list[AnyCommand]:
    """One command of every kind, on the account "alice" where it names one."""
    leg = BetLeg(market_id="m1", selection_id="a", odds=200)
    return [
        OpenAccount(request_id="x", account_id="alice"),
        Deposit(request_id="x", account_id="alice", amount_minor=5, reason="r"),
        Withdraw(request_id="x", account_id="alice", amount_minor=5, reason="r"),
        AdjustBalance(request_id="x", account_id="alice", amount_minor=5, actor="a", reason="r"),
        SetDepositLimits(request_id="x", account_id="alice", day_minor=5),
        SelfExclude(request_id="x", account_id="alice", days=1),
        CreateMarket(
            request_id="x",
            market_id="m2",
            event_id="e",
            name="n",
            selections=(SelectionSpec("a", "A", 200),),
        ),
        UpdatePrices(request_id="x", market_id="m1", prices=(SelectionPrice("a", 300),)),
        SuspendMarket(request_id="x", market_id="m1"),
        ResumeMarket(request_id="x", market_id="m1"),
        CloseMarket(request_id="x", market_id="m1"),
        SettleMarket(request_id="x", market_id="m1", winners=(Winner("a"),)),
        VoidMarket(request_id="x", market_id="m1", actor="a", reason="r"),
        ResettleMarket(
            request_id="x", market_id="m1", winners=(Winner("a"),), actor="a", reason="r"
        ),
        RollbackSettlement(request_id="x", market_id="m1", actor="a", reason="r"),
        FeedBatch(request_id="x", producer="p", to_cursor=1, markets=()),
        SetProducerStatus(request_id="x", producer="p", down=True),
        ContinueResult(request_id="x", market_id="m1", cursor=0),
        ReleaseBets(request_id="x"),
        PlaceBet(request_id="x", account_id="alice", stake_minor=100, legs=(leg,)),
        CashOut(request_id="x", account_id="alice", bet_id="B0-1", quote_id="q", amount_minor=1),
        GetAccount(request_id="x", account_id="alice"),
        ListAccountBets(request_id="x", account_id="alice"),
        GetBet(request_id="x", bet_id="B0-1"),
        QuoteCashOut(request_id="x", account_id="alice", bet_id="B0-1"),
        GetMarket(request_id="x", market_id="m1"),
        ListMarkets(request_id="x"),
        GetFeedCursor(request_id="x", producer="p"),
    ]


def book() -> Ledger:
    ledger = Ledger()
    ledger.open_account("alice", 1_000)
    ledger.open_account("bob", 1_000)
    ledger.create_market("m1", {"a": 200, "b": 300})
    return ledger


def principal(role: str) -> Principal:
    return Principal(
        subject=f"{role}:someone",
        role=role,  # type: ignore[arg-type]
        account_id="alice" if role == "bettor" else None,
        token_id="jti-1",
    )


def refused_untouched(ledger: Ledger, command: AnyCommand) -> str:
    """Decide `command` as it is; it must be refused with no events and leave
    the state byte for byte as it was. Its rejection code."""
    before = snapshot_bytes(ledger.state)
    outcome = decide(ledger.state, command, ledger.now_ms)
    assert outcome.events == ()
    assert snapshot_bytes(ledger.state) == before
    assert outcome.code in ("forbidden", "unauthenticated")  # type: ignore[union-attr]
    assert outcome.message  # type: ignore[union-attr]
    return outcome.code  # type: ignore[union-attr]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("command", commands(), ids=lambda c: type(c).__name__)
def test_each_role_issues_exactly_what_the_table_allows(role: str, command: AnyCommand) -> None:
    ledger = book()
    signed = msgspec.structs.replace(command, principal=principal(role))
    if type(command) in PERMITTED[role]:  # type: ignore[index]
        # Allowed: whatever the ledger says next, it is not the principal.
        outcome = decide(ledger.state, signed, ledger.now_ms)
        assert getattr(outcome, "code", None) not in ("forbidden", "unauthenticated")
    else:
        assert refused_untouched(ledger, signed) == "forbidden"


def test_the_table_keeps_money_from_services_and_markets_from_cashiers() -> None:
    for service in ("ingest", "ledger", "ops"):
        assert not {Deposit, Withdraw, AdjustBalance, OpenAccount} & PERMITTED[service]
    assert not {PlaceBet, CashOut} & (PERMITTED["admin"] | PERMITTED["trader"])
    assert not {CreateMarket, SettleMarket, VoidMarket} & PERMITTED["cashier"]
    assert PERMITTED["auditor"] <= PERMITTED["ops"] | {GetAccount, ListAccountBets, QuoteCashOut}
    assert PERMITTED["ledger"] == frozenset({ReleaseBets, ContinueResult, ArchiveSettled})


@pytest.mark.parametrize(
    "command",
    [c for c in commands() if type(c) in PERMITTED["bettor"] and getattr(c, "account_id", None)],
    ids=lambda c: type(c).__name__,
)
def test_a_bettor_may_only_act_on_its_own_account(command: AnyCommand) -> None:
    ledger = book()
    bob = Principal(subject="bettor:bob", role="bettor", account_id="bob")
    assert refused_untouched(ledger, issued(command, bob)) == "forbidden"


def test_a_bettor_principal_without_an_account_is_refused() -> None:
    ledger = book()
    unscoped = Principal(subject="bettor:?", role="bettor")
    command = GetMarket(request_id="x", market_id="m1", principal=unscoped)
    assert refused_untouched(ledger, command) == "forbidden"


def test_a_command_without_a_principal_is_refused_and_never_logged() -> None:
    ledger = book()
    deposit = Deposit(request_id="d-1", account_id="alice", amount_minor=5, reason="r")
    assert refused_untouched(ledger, deposit) == "unauthenticated"
    # The request id was not taken: its rightful sender is still answered.
    ledger.ok(issued(deposit, principal("cashier")))
    assert ledger.balance("alice") == 1_005


def test_a_command_from_the_wire_without_a_principal_is_refused() -> None:
    """What an older client (or a process that did not set one) sends: the
    array without the trailing principal decodes, with None, and is refused."""
    deposit = Deposit(request_id="d-1", account_id="alice", amount_minor=5, reason="r")
    legacy = msgspec.msgpack.decode(encode_command(deposit))[:-1]
    decoded = decode_command(msgspec.msgpack.encode(legacy))
    assert decoded == deposit and decoded.principal is None
    assert refused_untouched(book(), decoded) == "unauthenticated"


def test_a_forbidden_command_cannot_take_a_request_id() -> None:
    ledger = book()
    stolen = Withdraw(
        request_id="w-1",
        account_id="alice",
        amount_minor=10,
        principal=Principal(subject="bettor:bob", role="bettor", account_id="bob"),
    )
    refused_untouched(ledger, stolen)
    mine = Withdraw(
        request_id="w-1",
        account_id="alice",
        amount_minor=10,
        principal=Principal(subject="bettor:alice", role="bettor", account_id="alice"),
    )
    ledger.ok(mine)
    assert ledger.balance("alice") == 990


@pytest.mark.parametrize("reason", ["", "   "])
@pytest.mark.parametrize("role", ["cashier", "admin"])
def test_staff_money_needs_a_reason(role: str, reason: str) -> None:
    ledger = book()
    deposit = Deposit(
        request_id="d", account_id="alice", amount_minor=5, reason=reason, principal=principal(role)
    )
    assert ledger.refused(deposit) == "missing_reason"
    if role == "admin":
        withdrawal = Withdraw(
            request_id="w", account_id="alice", amount_minor=5, principal=principal(role)
        )
        assert ledger.refused(withdrawal) == "missing_reason"
    assert ledger.balance("alice") == 1_000


def test_a_bettor_withdraws_without_a_reason() -> None:
    ledger = book()
    ledger.ok(
        Withdraw(request_id="w", account_id="alice", amount_minor=5, principal=principal("bettor"))
    )
    [event] = ledger.log[-1:]
    assert isinstance(event, Withdrawn)
    assert (event.actor, event.reason) == ("bettor:someone", "")


def test_events_record_the_actor_and_the_reason() -> None:
    ledger = book()
    cashier = Principal(subject="cashier:carol", role="cashier", token_id="j1")
    trader = Principal(subject="trader:tom", role="trader", token_id="j2")
    admin = Principal(subject="admin:ann", role="admin", token_id="j3")
    ledger.ok(
        Deposit(
            request_id="d",
            account_id="alice",
            amount_minor=50,
            reason="cash at the counter",
            principal=cashier,
        )
    )
    ledger.ok(
        AdjustBalance(
            request_id="adj",
            account_id="alice",
            amount_minor=5,
            actor="ignored",
            reason="goodwill",
            principal=admin,
        )
    )
    ledger.ok(SuspendMarket(request_id="s", market_id="m1", reason="injury news", principal=trader))
    ledger.ok(CloseMarket(request_id="c", market_id="m1", reason="off", principal=trader))
    ledger.ok(
        SettleMarket(
            request_id="st",
            market_id="m1",
            winners=(Winner("a"),),
            reason="photo finish",
            principal=trader,
        )
    )
    by_type = {type(event): event for event in ledger.log}
    deposited = by_type[Deposited]
    assert (deposited.actor, deposited.reason) == ("cashier:carol", "cash at the counter")
    adjusted = by_type[BalanceAdjusted]
    assert (adjusted.actor, adjusted.reason) == ("admin:ann", "goodwill")
    changed = [e for e in ledger.log if isinstance(e, MarketStatusChanged)]
    assert [(e.status, e.actor, e.reason) for e in changed] == [
        ("suspended", "trader:tom", "injury news"),
        ("closed", "trader:tom", "off"),
    ]
    settled = by_type[MarketResulted]
    assert (settled.actor, settled.reason) == ("trader:tom", "photo finish")
    created = by_type[MarketCreated]
    assert created.actor == "test:trader"  # the driver's own principal


def test_a_log_from_before_principals_decodes_and_replays_to_the_same_state() -> None:
    """Entries encoded without the trailing actor/reason fields (as logged
    before principals) decode with "" and fold into the same state as the
    same entries with them: the actor is in the log, not in the state."""
    ledger = Ledger()
    ledger.open_account("alice", 1_000)
    ledger.create_market("m1", {"a": 200})
    ledger.bet("alice", 100, ("m1", "a", 200))
    ledger.ok(
        CloseMarket(request_id="c", market_id="m1", reason="off", principal=principal("trader"))
    )
    ledger.ok(
        SettleMarket(
            request_id="s", market_id="m1", winners=(Winner("a"),), principal=principal("trader")
        )
    )
    new_fields = {
        AccountOpened: 1,
        Deposited: 2,
        MarketCreated: 2,
        MarketStatusChanged: 2,
        BetPlaced: 1,
        MarketResulted: 0,
    }
    assert {type(event) for event in ledger.log} == set(new_fields)
    old_entries = []
    for event in ledger.log:
        raw = msgspec.msgpack.decode(encode_events([event]))[0]
        old_entries.append(raw[: len(raw) - new_fields[type(event)]])
    old = decode_events(msgspec.msgpack.encode(old_entries))
    assert [type(e) for e in old] == [type(e) for e in ledger.log]
    assert all(getattr(e, "actor", "") == "" for e in old if not isinstance(e, MarketResulted))
    replayed = new_state()
    for event in old:
        apply(replayed, event)
    current = new_state()
    for event in ledger.log:
        apply(current, event)
    assert snapshot_bytes(replayed) == snapshot_bytes(current)


def test_acting_principals_name_the_least_role_and_the_account() -> None:
    people = acting("sim")
    bet = PlaceBet(request_id="b", account_id="alice", stake_minor=1, legs=())
    assert issued(bet, people).principal == Principal(
        subject="sim:bettor", role="bettor", account_id="alice"
    )
    # A bettor principal names an account: a read of no account is staff's.
    read = GetMarket(request_id="g", market_id="m1")
    assert issued(read, people).principal == Principal(subject="sim:cashier", role="cashier")
    deposit = Deposit(request_id="d", account_id="alice", amount_minor=1)
    assert issued(deposit, people).principal == Principal(subject="sim:cashier", role="cashier")
    # A command that names its principal keeps it.
    mine = issued(deposit, principal("admin"))
    assert issued(mine, people).principal == principal("admin")
