"""`decide`: judge one command against the state, producing events or a refusal.

Pure: the time arrives as `now_ms`, prices and statuses live in the state.
`decide` never mutates the state; `apply` does, from the events alone.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

from ironbook.core import commands as c
from ironbook.core import events as e
from ironbook.core import queries as q
from ironbook.core.archiving import archive_settled, resettle_window_closed
from ironbook.core.cashout import (
    cash_out_refusal,
    cash_out_stake_refusal,
    cash_out_value_minor,
    quote_expiry_ms,
)
from ironbook.core.odds import (
    Ladder,
    Odds,
    PlaceTerms,
    Price,
    as_price,
    combined_price,
    format_decimal,
    format_price,
    is_valid_price,
    ladder_allows,
    longer_price,
    on_market_ladder,
    payout_minor,
    same_price,
    valid_ladder,
    valid_place_terms,
)
from ironbook.core.odds import (
    potential_payout_minor as potential_payout_minor_of,
)
from ironbook.core.outcomes import Accepted, Outcome, Rejected
from ironbook.core.outcomes import RejectionCode as R
from ironbook.core.principal import command_refusal
from ironbook.core.settling import begin_result, continue_result
from ironbook.core.state import (
    CASHIER,
    DAY_MS,
    HOUSE,
    LIMIT_WINDOWS_MS,
    STAKES_HELD,
    SYSTEM_PREFIX,
    Account,
    Bet,
    LedgerState,
    Market,
    Selection,
)

MAX_BET_DELAY_S = 300
MAX_RELEASED_BETS = 1_000
"""Held bets one `ReleaseBets` judges at most: bounded work per command."""
END_OF_TIME_MS = 2**63 - 1


def decide(state: LedgerState, command: c.AnyCommand | q.AnyQuery, now_ms: int) -> Outcome:
    """Accept (events + reply) or reject (code + message) one command.

    First the principal: a command without one, from a role that may not
    issue it, or naming an account outside the principal's scope is refused
    with no events (nothing logged, no reply stored: a forbidden command
    cannot take a request id from its rightful sender). A request id seen
    within the retention window returns its first outcome and no events.
    Log time never goes backwards: `now_ms` below the state's clock is
    raised to it.
    """
    forbidden = command_refusal(command)
    if forbidden is not None:
        return Rejected(code=forbidden[0], message=forbidden[1])
    reply = state.replies.get(command.request_id)
    if reply is not None:
        if isinstance(reply, e.Refusal):
            return Rejected(code=reply.code, message=reply.message)
        return Accepted(events=(), result=reply)
    now_ms = max(now_ms, state.now_ms)
    decision = _DECIDERS[type(command)](state, command, now_ms)
    if isinstance(decision, e.Refusal):
        rejected = e.CommandRejected(
            request_id=command.request_id, at_ms=now_ms, reply=decision, actor=_actor(command)
        )
        return Rejected(code=decision.code, message=decision.message, events=(rejected,))
    return decision


Decision = Accepted | e.Refusal


def _refuse(code: str, message: str) -> e.Refusal:
    return e.Refusal(code=code, message=message)


def _valid_id(state: LedgerState, value: str) -> bool:
    return (
        0 < len(value) <= state.config.max_id_length
        and value.isprintable()
        and not any(ch.isspace() for ch in value)
    )


def _valid_amount(state: LedgerState, amount_minor: int) -> bool:
    return 0 < amount_minor <= state.config.max_amount_minor


def _player(state: LedgerState, account_id: str) -> Account | e.Refusal:
    account = state.accounts.get(account_id)
    if account is None or account.kind != "player":
        return _refuse(R.UNKNOWN_ACCOUNT, f"no account {account_id!r}")
    return account


def _market(state: LedgerState, market_id: str) -> Market | e.Refusal:
    market = state.markets.get(market_id)
    if market is None:
        return _refuse(R.UNKNOWN_MARKET, f"no market {market_id!r}")
    return market


def _market_to_result(state: LedgerState, market_id: str, now_ms: int) -> Market | e.Refusal:
    """The market, unless it is unknown (or archived), a result of it is
    still being applied slice by slice, or its latest result is older than
    the resettlement window."""
    market = state.markets.get(market_id)
    if market is None:
        return _refuse(
            R.UNKNOWN_MARKET,
            f"no market {market_id!r} (a market resulted longer ago than the bet "
            "retention window is archived: it can no longer be resulted)",
        )
    if market_id in state.settlements:
        return _refuse(
            R.INVALID_STATUS_CHANGE,
            f"market {market_id!r} is settling: wait for its result to finish",
        )
    if resettle_window_closed(state, market, now_ms):
        days = state.config.resettle_window_ms / DAY_MS
        return _refuse(
            R.RESETTLE_WINDOW_CLOSED,
            f"market {market_id!r} was {market.status} more than the resettlement window "
            f"({days:g} days) ago: its result is final",
        )
    return market


def _actor(cmd: c.Command) -> str:
    """The subject of the command's principal (`decide` refused it without one)."""
    return "" if cmd.principal is None else cmd.principal.subject


def _staff_reason_refusal(cmd: c.Deposit | c.Withdraw, what: str) -> e.Refusal | None:
    """Money moved by staff (not by the account's own bettor) needs a reason."""
    principal = cmd.principal
    if principal is not None and principal.role != "bettor" and not cmd.reason.strip():
        return _refuse(R.MISSING_REASON, f"a {what} by staff needs a reason")
    return None


def _transaction_id(state: LedgerState) -> str:
    return f"T{state.config.partition}-{state.next_transaction_number}"


# Accounts and money.


def _open_account(state: LedgerState, cmd: c.OpenAccount, now_ms: int) -> Decision:
    if not _valid_id(state, cmd.account_id) or cmd.account_id.startswith(SYSTEM_PREFIX):
        return _refuse(R.INVALID_ACCOUNT_ID, f"{cmd.account_id!r} is not a valid account id")
    if cmd.account_id in state.accounts:
        return _refuse(R.ACCOUNT_EXISTS, f"account {cmd.account_id!r} already exists")
    reply = e.AccountReply(account_id=cmd.account_id, balance_minor=0)
    event = e.AccountOpened(
        request_id=cmd.request_id,
        at_ms=now_ms,
        account_id=cmd.account_id,
        reply=reply,
        actor=_actor(cmd),
    )
    return Accepted(events=(event,), result=reply)


def _deposit(state: LedgerState, cmd: c.Deposit, now_ms: int) -> Decision:
    account = _player(state, cmd.account_id)
    if isinstance(account, e.Refusal):
        return account
    if not _valid_amount(state, cmd.amount_minor):
        return _refuse(R.INVALID_AMOUNT, f"deposit amount {cmd.amount_minor} is out of range")
    refusal = _staff_reason_refusal(cmd, "deposit")
    if refusal is not None:
        return refusal
    if now_ms < account.excluded_until_ms:
        return _refuse(R.SELF_EXCLUDED, "the account is self-excluded: deposits are refused")
    for period, limit in account.limits.items():
        limit_minor = limit.effective(now_ms)
        if limit_minor is None:
            continue
        window_start_ms = now_ms - LIMIT_WINDOWS_MS[period]
        used_minor = sum(amount for at_ms, amount in account.deposits if at_ms > window_start_ms)
        if used_minor + cmd.amount_minor > limit_minor:
            return _refuse(
                R.DEPOSIT_LIMIT_EXCEEDED,
                f"the {period} deposit limit is {limit_minor}; {used_minor} already deposited",
            )
    transaction_id = _transaction_id(state)
    reply = e.TransactionReply(
        account_id=cmd.account_id,
        balance_minor=account.balance_minor + cmd.amount_minor,
        transaction_id=transaction_id,
    )
    event = e.Deposited(
        request_id=cmd.request_id,
        at_ms=now_ms,
        postings=((cmd.account_id, cmd.amount_minor), (CASHIER, -cmd.amount_minor)),
        account_id=cmd.account_id,
        amount_minor=cmd.amount_minor,
        transaction_id=transaction_id,
        reply=reply,
        actor=_actor(cmd),
        reason=cmd.reason,
    )
    return Accepted(events=(event,), result=reply)


def _withdraw(state: LedgerState, cmd: c.Withdraw, now_ms: int) -> Decision:
    account = _player(state, cmd.account_id)
    if isinstance(account, e.Refusal):
        return account
    if not _valid_amount(state, cmd.amount_minor):
        return _refuse(R.INVALID_AMOUNT, f"withdrawal amount {cmd.amount_minor} is out of range")
    refusal = _staff_reason_refusal(cmd, "withdrawal")
    if refusal is not None:
        return refusal
    if cmd.amount_minor > account.balance_minor:
        return _refuse(
            R.INSUFFICIENT_FUNDS,
            f"balance {account.balance_minor} is less than {cmd.amount_minor}",
        )
    transaction_id = _transaction_id(state)
    reply = e.TransactionReply(
        account_id=cmd.account_id,
        balance_minor=account.balance_minor - cmd.amount_minor,
        transaction_id=transaction_id,
    )
    event = e.Withdrawn(
        request_id=cmd.request_id,
        at_ms=now_ms,
        postings=((cmd.account_id, -cmd.amount_minor), (CASHIER, cmd.amount_minor)),
        account_id=cmd.account_id,
        amount_minor=cmd.amount_minor,
        transaction_id=transaction_id,
        reply=reply,
        actor=_actor(cmd),
        reason=cmd.reason,
    )
    return Accepted(events=(event,), result=reply)


def _adjust_balance(state: LedgerState, cmd: c.AdjustBalance, now_ms: int) -> Decision:
    account = _player(state, cmd.account_id)
    if isinstance(account, e.Refusal):
        return account
    if cmd.amount_minor == 0 or not _valid_amount(state, abs(cmd.amount_minor)):
        return _refuse(R.INVALID_AMOUNT, f"adjustment {cmd.amount_minor} is out of range")
    if not cmd.reason.strip():
        return _refuse(R.MISSING_REASON, "an adjustment needs a reason")
    if account.balance_minor + cmd.amount_minor < 0:
        return _refuse(
            R.INSUFFICIENT_FUNDS,
            f"balance {account.balance_minor} cannot absorb {cmd.amount_minor}",
        )
    transaction_id = _transaction_id(state)
    reply = e.TransactionReply(
        account_id=cmd.account_id,
        balance_minor=account.balance_minor + cmd.amount_minor,
        transaction_id=transaction_id,
    )
    event = e.BalanceAdjusted(
        request_id=cmd.request_id,
        at_ms=now_ms,
        postings=((cmd.account_id, cmd.amount_minor), (HOUSE, -cmd.amount_minor)),
        account_id=cmd.account_id,
        amount_minor=cmd.amount_minor,
        transaction_id=transaction_id,
        actor=_actor(cmd),
        reason=cmd.reason,
        reply=reply,
    )
    return Accepted(events=(event,), result=reply)


def _set_deposit_limits(state: LedgerState, cmd: c.SetDepositLimits, now_ms: int) -> Decision:
    account = _player(state, cmd.account_id)
    if isinstance(account, e.Refusal):
        return account
    requested: tuple[tuple[e.LimitPeriod, int | None], ...] = (
        ("day", cmd.day_minor),
        ("week", cmd.week_minor),
        ("month", cmd.month_minor),
    )
    changes: list[e.LimitChange] = []
    for period, limit_minor in requested:
        if limit_minor is not None and not 0 <= limit_minor <= state.config.max_amount_minor:
            return _refuse(R.INVALID_LIMIT, f"{period} limit {limit_minor} is out of range")
        existing = account.limits.get(period)
        current = existing.effective(now_ms) if existing is not None else None
        tightens = limit_minor is not None and (current is None or limit_minor <= current)
        effective_ms = now_ms if tightens else now_ms + state.config.limit_increase_delay_ms
        if limit_minor is None and current is None:
            effective_ms = now_ms
        changes.append(
            e.LimitChange(period=period, limit_minor=limit_minor, effective_ms=effective_ms)
        )
    reply = e.LimitsReply(account_id=cmd.account_id, changes=tuple(changes))
    event = e.DepositLimitsSet(
        request_id=cmd.request_id,
        at_ms=now_ms,
        account_id=cmd.account_id,
        changes=tuple(changes),
        reply=reply,
        actor=_actor(cmd),
    )
    return Accepted(events=(event,), result=reply)


def _self_exclude(state: LedgerState, cmd: c.SelfExclude, now_ms: int) -> Decision:
    account = _player(state, cmd.account_id)
    if isinstance(account, e.Refusal):
        return account
    if not 1 <= cmd.days <= state.config.max_self_exclusion_days:
        return _refuse(R.INVALID_DAYS, f"self-exclusion of {cmd.days} days is out of range")
    until_ms = max(account.excluded_until_ms, now_ms + cmd.days * DAY_MS)
    reply = e.ExclusionReply(account_id=cmd.account_id, excluded_until_ms=until_ms)
    event = e.SelfExcluded(
        request_id=cmd.request_id,
        at_ms=now_ms,
        account_id=cmd.account_id,
        until_ms=until_ms,
        reply=reply,
        actor=_actor(cmd),
    )
    return Accepted(events=(event,), result=reply)


# Markets.


def _quote_refusal(odds: Odds, ladder: Ladder) -> e.Refusal | None:
    """Why a trader or feed may not set this price on a market with `ladder`."""
    price = as_price(odds)
    if not is_valid_price(price):
        return _refuse(R.INVALID_ODDS, f"odds {odds!r} are outside 1/100..1000/1")
    if not on_market_ladder(price, ladder):
        return _refuse(
            R.OFF_LADDER,
            f"{format_price(price, ladder.display)} ({price.numerator}/{price.denominator}) "
            f"is not on the market's {ladder.kind} ladder",
        )
    return None


def _new_market_refusal(
    state: LedgerState,
    market_id: str,
    event_id: str,
    selections: tuple[c.SelectionSpec, ...],
    bet_delay_s: int,
    ladder: Ladder,
) -> e.Refusal | None:
    """Why a market with these attributes cannot be created, or None."""
    for value in (market_id, event_id):
        if not _valid_id(state, value):
            return _refuse(R.INVALID_MARKET, f"{value!r} is not a valid id")
    if market_id in state.markets:
        return _refuse(R.MARKET_EXISTS, f"market {market_id!r} already exists")
    if not 1 <= len(selections) <= state.config.max_selections:
        return _refuse(
            R.INVALID_MARKET, f"a market needs 1..{state.config.max_selections} selections"
        )
    if not 0 <= bet_delay_s <= MAX_BET_DELAY_S:
        return _refuse(R.INVALID_MARKET, f"bet delay must be 0..{MAX_BET_DELAY_S} s")
    seen: set[str] = set()
    for spec in selections:
        if not _valid_id(state, spec.selection_id) or spec.selection_id in seen:
            return _refuse(
                R.INVALID_MARKET, f"selection id {spec.selection_id!r} is invalid or repeated"
            )
        seen.add(spec.selection_id)
        refusal = _quote_refusal(spec.odds, ladder)
        if refusal is not None:
            return refusal
    return None


def _create_market(state: LedgerState, cmd: c.CreateMarket, now_ms: int) -> Decision:
    if not valid_ladder(cmd.ladder):
        return _refuse(R.INVALID_MARKET, "a decimal ladder's tick is 1..100 hundredths")
    if cmd.place_terms is not None and not valid_place_terms(cmd.place_terms):
        return _refuse(
            R.INVALID_MARKET, "each-way terms are a fraction 1/10..1 of the odds, 1..10 places"
        )
    refusal = _new_market_refusal(
        state, cmd.market_id, cmd.event_id, cmd.selections, cmd.bet_delay_s, cmd.ladder
    )
    if refusal is not None:
        return refusal
    if cmd.producer and not _valid_id(state, cmd.producer):
        return _refuse(R.INVALID_PRODUCER, f"{cmd.producer!r} is not a valid producer id")
    reply = e.MarketReply(market_id=cmd.market_id, status="open")
    event = e.MarketCreated(
        request_id=cmd.request_id,
        at_ms=now_ms,
        market_id=cmd.market_id,
        event_id=cmd.event_id,
        name=cmd.name,
        selections=tuple(
            c.SelectionSpec(spec.selection_id, spec.name, as_price(spec.odds))
            for spec in cmd.selections
        ),
        in_play=cmd.in_play,
        bet_delay_s=cmd.bet_delay_s,
        reply=reply,
        producer=cmd.producer,
        ladder=cmd.ladder,
        place_terms=cmd.place_terms,
        actor=_actor(cmd),
        reason=cmd.reason,
    )
    return Accepted(events=(event,), result=reply)


def _update_prices(state: LedgerState, cmd: c.UpdatePrices, now_ms: int) -> Decision:
    market = _market(state, cmd.market_id)
    if isinstance(market, e.Refusal):
        return market
    if market.status not in ("open", "suspended"):
        return _refuse(R.MARKET_CLOSED, f"market {cmd.market_id!r} is {market.status}")
    if not 1 <= len(cmd.prices) <= len(market.selections):
        return _refuse(R.INVALID_ODDS, "a price update needs 1 price per selection at most")
    seen: set[str] = set()
    for price in cmd.prices:
        if price.selection_id not in market.selections or price.selection_id in seen:
            return _refuse(
                R.UNKNOWN_SELECTION, f"selection {price.selection_id!r} is unknown or repeated"
            )
        seen.add(price.selection_id)
        refusal = _quote_refusal(price.odds, market.ladder)
        if refusal is not None:
            return refusal
    reply = e.MarketReply(market_id=cmd.market_id, status=market.status)
    event = e.PricesUpdated(
        request_id=cmd.request_id,
        at_ms=now_ms,
        market_id=cmd.market_id,
        prices=tuple(c.SelectionPrice(p.selection_id, as_price(p.odds)) for p in cmd.prices),
        reply=reply,
        actor=_actor(cmd),
        reason=cmd.reason,
    )
    return Accepted(events=(event,), result=reply)


_STATUS_MOVES: dict[type[c.Command], tuple[tuple[e.MarketStatus, ...], e.MarketStatus]] = {
    c.SuspendMarket: (("open",), "suspended"),
    c.ResumeMarket: (("suspended",), "open"),
    c.CloseMarket: (("open", "suspended"), "closed"),
}


def _change_status(
    state: LedgerState, cmd: c.SuspendMarket | c.ResumeMarket | c.CloseMarket, now_ms: int
) -> Decision:
    market = _market(state, cmd.market_id)
    if isinstance(market, e.Refusal):
        return market
    allowed_from, target = _STATUS_MOVES[type(cmd)]
    if market.status not in allowed_from:
        return _refuse(
            R.INVALID_STATUS_CHANGE,
            f"market {cmd.market_id!r} is {market.status}, not {target}-able",
        )
    reply = e.MarketReply(market_id=cmd.market_id, status=target)
    event = e.MarketStatusChanged(
        request_id=cmd.request_id,
        at_ms=now_ms,
        market_id=cmd.market_id,
        status=target,
        reply=reply,
        actor=_actor(cmd),
        reason=cmd.reason,
    )
    return Accepted(events=(event,), result=reply)


# Feeds and producers.

_FEED_STATUS_MOVES: dict[str, tuple[str, ...]] = {
    "open": ("suspended", "closed"),
    "suspended": ("open", "closed"),
    "closed": ("open", "suspended"),
}
"""What a feed may do to a market's status (a provider may reopen a closed
market); settled and voided markets are out of the feed's hands."""
_FEED_LADDER = Ladder()
"""A market a feed creates is on the exchange ladder."""


def _feed_batch(state: LedgerState, cmd: c.FeedBatch, now_ms: int) -> Decision:
    if not _valid_id(state, cmd.producer):
        return _refuse(R.INVALID_PRODUCER, f"{cmd.producer!r} is not a valid producer id")
    if cmd.to_cursor < 0:
        return _refuse(R.INVALID_FEED, f"cursor {cmd.to_cursor} is negative")
    cursor = state.feed_cursors.get(cmd.producer, 0)
    if cmd.to_cursor <= cursor:
        reply = e.FeedReply(producer=cmd.producer, cursor=cursor, applied=0, skipped=0)
        return Accepted(events=(), result=reply)
    # Each item is judged against the markets as the earlier items of this
    # batch leave them: (status, selection ids) of every market touched.
    touched: dict[str, tuple[str, Container[str], int]] = {}
    items: list[c.FeedMarket] = []
    skipped = 0
    for item in cmd.markets:
        if item.seq <= cursor:
            continue
        view = _feed_item_result(state, cmd.producer, item, touched)
        if view is None:
            skipped += 1
            continue
        touched[item.market_id] = view
        items.append(item)
    reply = e.FeedReply(
        producer=cmd.producer, cursor=cmd.to_cursor, applied=len(items), skipped=skipped
    )
    event = e.FeedApplied(
        request_id=cmd.request_id,
        at_ms=now_ms,
        producer=cmd.producer,
        to_cursor=cmd.to_cursor,
        markets=tuple(items),
        skipped=skipped,
        actor=_actor(cmd),
        reason=f"feed {cmd.producer}",
    )
    return Accepted(events=(event,), result=reply)


def _feed_item_result(
    state: LedgerState,
    producer: str,
    item: c.FeedMarket,
    touched: dict[str, tuple[str, Container[str], int]],
) -> tuple[str, Container[str], int] | None:
    """The market's (status, selection ids, selection count) after `item`, or
    None if the item is invalid and must be skipped."""
    view = touched.get(item.market_id)
    if view is None:
        market = state.markets.get(item.market_id)
        if market is not None:
            if market.producer and market.producer != producer:
                return None
            view = (market.status, market.selections, len(market.selections))
        elif item.selections:
            refusal = _new_market_refusal(
                state,
                item.market_id,
                item.event_id,
                item.selections,
                item.bet_delay_s or 0,
                _FEED_LADDER,
            )
            if refusal is not None:
                return None
            ids = frozenset(spec.selection_id for spec in item.selections)
            view = ("open", ids, len(ids))
        else:
            return None
    status, selection_ids, count = view
    if status not in _FEED_STATUS_MOVES:
        return None
    if item.bet_delay_s is not None and not 0 <= item.bet_delay_s <= MAX_BET_DELAY_S:
        return None
    if item.status is not None and item.status != status:
        if item.status not in _FEED_STATUS_MOVES[status]:
            return None
        status = item.status
    if len(item.prices) > count:
        return None
    seen: set[str] = set()
    market = state.markets.get(item.market_id)
    ladder = _FEED_LADDER if market is None else market.ladder
    for price in item.prices:
        if price.selection_id not in selection_ids or price.selection_id in seen:
            return None
        if not ladder_allows(price.odds, ladder):
            return None
        seen.add(price.selection_id)
    return status, selection_ids, count


def _set_producer_status(state: LedgerState, cmd: c.SetProducerStatus, now_ms: int) -> Decision:
    if not _valid_id(state, cmd.producer):
        return _refuse(R.INVALID_PRODUCER, f"{cmd.producer!r} is not a valid producer id")
    reply = e.ProducerReply(producer=cmd.producer, down=cmd.down)
    event = e.ProducerStatusChanged(
        request_id=cmd.request_id,
        at_ms=now_ms,
        producer=cmd.producer,
        down=cmd.down,
        reply=reply,
        actor=_actor(cmd),
        reason=cmd.reason,
    )
    return Accepted(events=(event,), result=reply)


def _result_refusal(market: Market, winners: tuple[c.Winner, ...]) -> e.Refusal | None:
    seen: set[str] = set()
    runners = len(market.selections)
    for winner in winners:
        if winner.selection_id not in market.selections or winner.selection_id in seen:
            return _refuse(
                R.INVALID_RESULT, f"winner {winner.selection_id!r} is unknown or repeated"
            )
        seen.add(winner.selection_id)
        if not 1 <= winner.dead_heat <= runners:
            return _refuse(R.INVALID_RESULT, f"dead heat {winner.dead_heat} is out of range")
        if not 1 <= winner.position <= runners:
            return _refuse(R.INVALID_RESULT, f"position {winner.position} is out of range")
    return None


def _settle(state: LedgerState, cmd: c.SettleMarket, now_ms: int) -> Decision:
    market = _market_to_result(state, cmd.market_id, now_ms)
    if isinstance(market, e.Refusal):
        return market
    if market.status not in ("suspended", "closed"):
        hint = "resettle it" if market.status == "settled" else "suspend or close it first"
        return _refuse(
            R.INVALID_STATUS_CHANGE, f"market {cmd.market_id!r} is {market.status}: {hint}"
        )
    refusal = _result_refusal(market, cmd.winners)
    if refusal is not None:
        return refusal
    return begin_result(state, cmd, market, "settle", cmd.winners, _actor(cmd), cmd.reason, now_ms)


def _void(state: LedgerState, cmd: c.VoidMarket, now_ms: int) -> Decision:
    market = _market_to_result(state, cmd.market_id, now_ms)
    if isinstance(market, e.Refusal):
        return market
    if market.status == "voided":
        return _refuse(R.INVALID_STATUS_CHANGE, f"market {cmd.market_id!r} is already void")
    if not cmd.reason.strip():
        return _refuse(R.MISSING_REASON, "voiding a market needs a reason")
    if cmd.placed_from_ms is None and cmd.placed_to_ms is None:
        return begin_result(state, cmd, market, "void", (), _actor(cmd), cmd.reason, now_ms)
    window = (
        0 if cmd.placed_from_ms is None else cmd.placed_from_ms,
        END_OF_TIME_MS if cmd.placed_to_ms is None else cmd.placed_to_ms,
    )
    if not 0 <= window[0] < window[1] <= END_OF_TIME_MS:
        return _refuse(
            R.INVALID_WINDOW, f"the window [{window[0]}, {window[1]}) is empty or out of range"
        )
    # The market keeps its status and result: only the window's bets change.
    kept = (
        *(c.Winner(selection_id=s, dead_heat=d) for s, d in market.winners.items()),
        *(c.Winner(s, dead_heat=tied, position=at) for s, (at, tied) in market.placed.items()),
    )
    return begin_result(state, cmd, market, "void", kept, _actor(cmd), cmd.reason, now_ms, window)


def _rollback(state: LedgerState, cmd: c.RollbackSettlement, now_ms: int) -> Decision:
    market = _market_to_result(state, cmd.market_id, now_ms)
    if isinstance(market, e.Refusal):
        return market
    if market.status not in ("settled", "voided"):
        return _refuse(
            R.INVALID_STATUS_CHANGE,
            f"market {cmd.market_id!r} is {market.status}: only a result can be rolled back",
        )
    if not cmd.reason.strip():
        return _refuse(R.MISSING_REASON, "a rollback needs a reason")
    return begin_result(state, cmd, market, "rollback", (), _actor(cmd), cmd.reason, now_ms)


def _resettle(state: LedgerState, cmd: c.ResettleMarket, now_ms: int) -> Decision:
    market = _market_to_result(state, cmd.market_id, now_ms)
    if isinstance(market, e.Refusal):
        return market
    if market.status not in ("settled", "voided"):
        return _refuse(
            R.INVALID_STATUS_CHANGE, f"market {cmd.market_id!r} is {market.status}: settle it"
        )
    if not cmd.reason.strip():
        return _refuse(R.MISSING_REASON, "a resettlement needs a reason")
    refusal = _result_refusal(market, cmd.winners)
    if refusal is not None:
        return refusal
    return begin_result(
        state, cmd, market, "resettle", cmd.winners, _actor(cmd), cmd.reason, now_ms
    )


def _continue_result(state: LedgerState, cmd: c.ContinueResult, now_ms: int) -> Decision:
    market = _market(state, cmd.market_id)
    if isinstance(market, e.Refusal):
        return market
    return continue_result(state, cmd, now_ms)


# Bets: the hot path. Keep it lean.


def _place_bet(  # noqa: C901 — one guard per refusal, in the order the rules are checked
    state: LedgerState, cmd: c.PlaceBet, now_ms: int
) -> Decision:
    config = state.config
    account = state.accounts.get(cmd.account_id)
    if account is None or account.kind != "player":
        return _refuse(R.UNKNOWN_ACCOUNT, f"no account {cmd.account_id!r}")
    if now_ms < account.excluded_until_ms:
        return _refuse(R.SELF_EXCLUDED, "the account is self-excluded: bets are refused")
    stake_minor = cmd.stake_minor
    if stake_minor < config.min_stake_minor:
        return _refuse(R.STAKE_TOO_LOW, f"the minimum stake is {config.min_stake_minor}")
    if stake_minor > config.max_stake_minor:
        return _refuse(R.STAKE_TOO_HIGH, f"the maximum stake is {config.max_stake_minor}")
    legs = cmd.legs
    if not legs:
        return _refuse(R.NO_LEGS, "a bet needs at least one leg")
    if len(legs) > config.max_legs:
        return _refuse(R.TOO_MANY_LEGS, f"a bet may have at most {config.max_legs} legs")
    accepted_legs: list[c.BetLeg] = []
    prices: list[Price] = []
    selections: list[Selection] = []
    leg_markets: list[Market] = []
    delay_s = 0
    markets = state.markets
    producers_down = state.producers_down
    policy = cmd.price_change
    for leg in legs:
        market = markets.get(leg.market_id)
        if market is None:
            return _refuse(R.UNKNOWN_MARKET, f"no market {leg.market_id!r}")
        selection = market.selections.get(leg.selection_id)
        if selection is None:
            return _refuse(R.UNKNOWN_SELECTION, f"no selection {leg.selection_id!r}")
        for earlier in accepted_legs:
            if earlier.market_id == leg.market_id:
                if earlier.selection_id == leg.selection_id:
                    return _refuse(R.DUPLICATE_SELECTION, f"{leg.selection_id!r} appears twice")
                return _refuse(R.RELATED_LEGS, f"two legs on market {leg.market_id!r}")
        if market.status != "open":
            if market.status == "suspended":
                return _refuse(R.MARKET_SUSPENDED, f"market {leg.market_id!r} is suspended")
            return _refuse(R.MARKET_CLOSED, f"market {leg.market_id!r} is {market.status}")
        if market.producer and market.producer in producers_down:
            return _refuse(
                R.MARKET_SUSPENDED,
                f"market {leg.market_id!r} is suspended: producer {market.producer!r} is down",
            )
        if market.in_play and market.bet_delay_s > delay_s:
            delay_s = market.bet_delay_s
        requested = as_price(leg.odds)
        current = selection.odds
        if requested is current:
            # The common case, a leg quoted at the market's very price.
            accepted_legs.append(leg)
        elif not is_valid_price(requested):
            return _refuse(R.INVALID_ODDS, f"odds {leg.odds!r} are outside 1/100..1000/1")
        elif (
            same_price(current, requested)
            or policy == "any"
            or (policy == "better" and longer_price(current, requested))
        ):
            # The leg is taken at the market's exact price, as quoted there.
            accepted_legs.append(
                c.BetLeg(market_id=leg.market_id, selection_id=leg.selection_id, odds=current)
            )
        else:
            return _refuse(
                R.PRICE_CHANGED,
                f"{leg.selection_id!r} is now {format_decimal(current)}, "
                f"not {format_decimal(requested)}",
            )
        prices.append(current)
        selections.append(selection)
        leg_markets.append(market)
    combined_odds = prices[0] if len(prices) == 1 else combined_price(prices)
    staked_minor = stake_minor
    place_terms: tuple[PlaceTerms, ...] = ()
    if cmd.each_way:
        terms = [market.place_terms for market in leg_markets]
        if None in terms:
            return _refuse(R.NO_EACH_WAY, "every leg's market must offer each-way terms")
        place_terms = tuple(t for t in terms if t is not None)
        staked_minor = 2 * stake_minor
    potential_payout_minor = (
        potential_payout_minor_of(stake_minor, prices, place_terms)
        if place_terms
        else payout_minor(stake_minor, prices)
    )
    liability_minor = potential_payout_minor - staked_minor
    max_liability_minor = config.max_liability_minor
    max_market_liability_minor = config.max_market_liability_minor
    # O(legs): a market's worst case is kept up to date by `apply`, so no
    # check here walks a market's selections or bets, however big it is.
    for selection, market in zip(selections, leg_markets, strict=True):
        new_liability_minor = selection.liability_minor + liability_minor
        if new_liability_minor > max_liability_minor:
            return _refuse(
                R.LIABILITY_EXCEEDED,
                f"selection {selection.selection_id!r} cannot take more liability",
            )
        if max(market.max_liability_minor, new_liability_minor) > max_market_liability_minor:
            return _refuse(
                R.LIABILITY_EXCEEDED, f"market {market.market_id!r} cannot take more liability"
            )
    if account.balance_minor < staked_minor:
        return _refuse(
            R.INSUFFICIENT_FUNDS, f"balance {account.balance_minor} is less than {staked_minor}"
        )
    bet_id = f"B{config.partition}-{state.next_bet_number}"
    release_ms = now_ms + 1000 * delay_s if delay_s else 0
    reply = e.BetReply(
        bet_id=bet_id,
        status="pending" if release_ms else "open",
        odds=combined_odds,
        potential_payout_minor=potential_payout_minor,
        balance_minor=account.balance_minor - staked_minor,
    )
    event = e.BetPlaced(
        request_id=cmd.request_id,
        at_ms=now_ms,
        postings=((cmd.account_id, -staked_minor), (STAKES_HELD, staked_minor)),
        bet_id=bet_id,
        account_id=cmd.account_id,
        stake_minor=stake_minor,
        legs=tuple(accepted_legs),
        potential_payout_minor=potential_payout_minor,
        reply=reply,
        release_ms=release_ms,
        price_change=policy,
        each_way=cmd.each_way,
        place_terms=place_terms,
        actor=_actor(cmd),
    )
    return Accepted(events=(event,), result=reply)


def _release_bets(state: LedgerState, cmd: c.ReleaseBets, now_ms: int) -> Decision:
    """Judge the held bets whose delay is over, oldest first: a bet is
    accepted at the odds it was placed at if every leg's market is still open
    (its producer up) and every price still suits the bet's policy; else it is
    rejected and its stake refunded."""
    accepted: list[str] = []
    rejected: list[tuple[str, str]] = []
    postings: list[e.Posting] = []
    refunded_minor = 0
    for release_ms, bet_id in state.pending_bets[:MAX_RELEASED_BETS]:
        if release_ms > now_ms:
            break
        bet = state.bets[bet_id]
        code = _release_refusal(state, bet)
        if code is None:
            accepted.append(bet_id)
            continue
        rejected.append((bet_id, code))
        postings.append((bet.account_id, bet.staked_minor))
        refunded_minor += bet.staked_minor
    reply = e.ReleaseReply(accepted=len(accepted), rejected=len(rejected))
    if not accepted and not rejected:
        return Accepted(events=(), result=reply)
    if refunded_minor:
        postings.append((STAKES_HELD, -refunded_minor))
    event = e.BetsReleased(
        request_id=cmd.request_id,
        at_ms=now_ms,
        postings=tuple(postings),
        accepted=tuple(accepted),
        rejected=tuple(rejected),
        reply=reply,
        actor=_actor(cmd),
    )
    return Accepted(events=(event,), result=reply)


def _cash_out(state: LedgerState, cmd: c.CashOut, now_ms: int) -> Decision:
    """Settle the quoted part of a bet now, if the quote still stands: the
    player is paid the amount, the stake leaves `stakes_held`, the house
    keeps the difference."""
    bet = state.bets.get(cmd.bet_id)
    if bet is None:
        return _refuse(R.UNKNOWN_BET, f"no bet {cmd.bet_id!r}")
    refusal = cash_out_refusal(state, bet, cmd.account_id)
    stake_minor = bet.stake_minor if cmd.stake_minor is None else cmd.stake_minor
    if refusal is None:
        refusal = cash_out_stake_refusal(state, bet, stake_minor)
    if refusal is not None:
        return refusal
    expires_ms = quote_expiry_ms(cmd.quote_id, bet, stake_minor, cmd.amount_minor)
    if expires_ms is None or expires_ms > now_ms + state.config.cash_out_quote_ttl_ms:
        return _refuse(R.INVALID_QUOTE, "the quote is not one for this bet, stake and amount")
    if now_ms > expires_ms:
        return _refuse(R.QUOTE_EXPIRED, "the quote has expired: ask for a new one")
    amount_minor = cash_out_value_minor(state, bet, stake_minor)
    if amount_minor != cmd.amount_minor:
        return _refuse(R.QUOTE_CHANGED, f"the prices moved: cashing out now pays {amount_minor}")
    parts = 2 if bet.each_way else 1
    remaining_minor = bet.stake_minor - stake_minor
    potential_minor = 0
    if remaining_minor:
        potential_minor = potential_payout_minor_of(
            remaining_minor,
            [leg.odds for leg in bet.legs],
            tuple(leg.place.terms for leg in bet.legs if leg.place is not None),
        )
    released_minor = parts * stake_minor
    postings: list[e.Posting] = [(bet.account_id, amount_minor), (STAKES_HELD, -released_minor)]
    if released_minor != amount_minor:
        postings.append((HOUSE, released_minor - amount_minor))
    reply = e.CashOutReply(
        bet_id=bet.bet_id,
        status="open" if remaining_minor else "cashed_out",
        amount_minor=amount_minor,
        stake_minor=remaining_minor,
        balance_minor=state.accounts[bet.account_id].balance_minor + amount_minor,
    )
    event = e.BetCashedOut(
        request_id=cmd.request_id,
        at_ms=now_ms,
        postings=tuple(postings),
        bet_id=bet.bet_id,
        account_id=bet.account_id,
        stake_minor=stake_minor,
        amount_minor=amount_minor,
        remaining_stake_minor=remaining_minor,
        potential_payout_minor=potential_minor,
        reply=reply,
        actor=_actor(cmd),
    )
    return Accepted(events=(event,), result=reply)


def _release_refusal(state: LedgerState, bet: Bet) -> str | None:
    """Why a held bet cannot be accepted now, or None."""
    policy = bet.price_change
    for leg in bet.legs:
        market = state.markets[leg.market_id]
        if market.status != "open":
            if market.status == "suspended":
                return R.MARKET_SUSPENDED
            return R.MARKET_CLOSED
        if market.producer and market.producer in state.producers_down:
            return R.MARKET_SUSPENDED
        current = market.selections[leg.selection_id].odds
        if not (
            same_price(current, leg.odds)
            or policy == "any"
            or (policy == "better" and longer_price(current, leg.odds))
        ):
            return R.PRICE_CHANGED
    return None


_DECIDERS: dict[type[c.Command], Callable[[LedgerState, Any, int], Decision]] = {
    c.OpenAccount: _open_account,
    c.Deposit: _deposit,
    c.Withdraw: _withdraw,
    c.AdjustBalance: _adjust_balance,
    c.SetDepositLimits: _set_deposit_limits,
    c.SelfExclude: _self_exclude,
    c.CreateMarket: _create_market,
    c.CreateMarketV1: _create_market,
    c.UpdatePrices: _update_prices,
    c.SuspendMarket: _change_status,
    c.ResumeMarket: _change_status,
    c.CloseMarket: _change_status,
    c.SettleMarket: _settle,
    c.VoidMarket: _void,
    c.ResettleMarket: _resettle,
    c.PlaceBet: _place_bet,
    c.PlaceBetV1: _place_bet,
    c.RollbackSettlement: _rollback,
    c.FeedBatch: _feed_batch,
    c.SetProducerStatus: _set_producer_status,
    c.ReleaseBets: _release_bets,
    c.ArchiveSettled: archive_settled,
    c.ContinueResult: _continue_result,
    q.GetAccount: q.get_account,
    q.ListAccountBets: q.list_account_bets,
    q.GetBet: q.get_bet,
    q.QuoteCashOut: q.quote_cash_out,
    c.CashOut: _cash_out,
    q.GetMarket: q.get_market,
    q.ListMarkets: q.list_markets,
    q.GetFeedCursor: q.get_feed_cursor,
}
