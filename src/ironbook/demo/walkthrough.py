"""`ironbook demo --walkthrough`: a race meeting run through the ledger core
in one process (no cluster).

Punters open accounts and deposit; three races and a football match take bets
(singles and accumulators) while prices drift; races are settled — one with a
dead heat, one resettled after a stewards' enquiry — and the match is voided.
At the end every balance is printed with the conservation check, and the whole
log is replayed from empty to prove the state is reproduced exactly.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

from ironbook import core
from ironbook.core.odds import format_price, snap_to_ladder, ticks_away

MINUTE_MS = 60_000
PEOPLE = core.acting("demo")
"""Every command's principal: the punter, cashier or trader who would send it."""


class Meeting:
    """Drives the core the way the sequencer will: decide, apply, keep the log."""

    def __init__(self, seed: int) -> None:
        self.state = core.new_state(core.LedgerConfig(currency="GBP"))
        self.log: list[core.AnyEvent] = []
        self.rng = random.Random(seed)
        self.now_ms = 1_700_000_000_000
        self.rejections: Counter[str] = Counter()
        self._request_numbers = iter(range(1, 10**9))
        self.deposited_minor = 0
        self.withdrawn_minor = 0

    def request_id(self) -> str:
        return f"demo-{next(self._request_numbers)}"

    def run(self, command: core.AnyCommand) -> core.Outcome:
        outcome = core.decide(self.state, core.issued(command, PEOPLE), self.now_ms)
        for event in outcome.events:
            core.apply(self.state, event)
            self.log.append(event)
        if isinstance(outcome, core.Rejected):
            self.rejections[outcome.code] += 1
        return outcome

    def must(self, command: core.AnyCommand) -> core.Accepted:
        outcome = self.run(command)
        if not isinstance(outcome, core.Accepted):
            raise RuntimeError(f"{type(command).__name__} refused: {outcome.message}")
        return outcome

    def advance(self, minutes: float) -> None:
        self.now_ms += int(minutes * MINUTE_MS)


PUNTERS = ("alice", "bob", "carol", "dev", "erin", "frank", "grace", "hamid")
RACES = (
    (
        "r1430",
        "Ascot 14:30",
        ("Frankel's Echo", "Sea Dancer", "Iron Duke", "Night Owl", "Red Rum II"),
    ),
    ("r1505", "Ascot 15:05", ("Golden Hour", "Paddy's Pride", "Tiger Roll On", "Quiet Storm")),
    (
        "r1540",
        "Ascot 15:40",
        ("Desert Orchid", "Kauto Star Jr", "Best Mate", "Arkle's Heir", "Shergar"),
    ),
)


def _selections(rng: random.Random, names: tuple[str, ...]) -> tuple[core.SelectionSpec, ...]:
    return tuple(
        core.SelectionSpec(
            selection_id=f"s{index}",
            name=name,
            odds=snap_to_ladder(rng.randint(150, 2_000), "nearest"),
        )
        for index, name in enumerate(names, start=1)
    )


def _open_markets(meeting: Meeting) -> None:
    for market_id, name, runners in RACES:
        meeting.must(
            core.CreateMarket(
                request_id=meeting.request_id(),
                market_id=market_id,
                event_id="ascot",
                name=name,
                selections=_selections(meeting.rng, runners),
            )
        )
    meeting.must(
        core.CreateMarket(
            request_id=meeting.request_id(),
            market_id="fb-ars-che",
            event_id="ars-che",
            name="Arsenal v Chelsea: match result",
            selections=(
                core.SelectionSpec(selection_id="home", name="Arsenal", odds=210),
                core.SelectionSpec(selection_id="draw", name="Draw", odds=340),
                core.SelectionSpec(selection_id="away", name="Chelsea", odds=360),
            ),
        )
    )


def _open_accounts(meeting: Meeting) -> None:
    for punter in PUNTERS:
        meeting.must(core.OpenAccount(request_id=meeting.request_id(), account_id=punter))
        amount_minor = meeting.rng.choice((5_000, 10_000, 25_000, 50_000))
        meeting.must(
            core.Deposit(
                request_id=meeting.request_id(),
                account_id=punter,
                amount_minor=amount_minor,
                reason="demo top-up",
            )
        )
        meeting.deposited_minor += amount_minor
    meeting.must(
        core.SetDepositLimits(request_id=meeting.request_id(), account_id="hamid", day_minor=10_000)
    )


def _open_market_ids(meeting: Meeting) -> list[str]:
    return [m.market_id for m in meeting.state.markets.values() if m.status == "open"]


def _random_bet(meeting: Meeting) -> core.PlaceBet | None:
    rng = meeting.rng
    open_ids = _open_market_ids(meeting)
    if not open_ids:
        return None
    leg_count = 1 if rng.random() < 0.75 or len(open_ids) < 2 else rng.randint(2, len(open_ids))
    legs = []
    for market_id in rng.sample(open_ids, leg_count):
        market = meeting.state.markets[market_id]
        selection = rng.choice(list(market.selections.values()))
        # Some bettors saw the price a tick ago: `none` and `better` then refuse.
        seen_odds = ticks_away(selection.odds, 1) if rng.random() < 0.15 else selection.odds
        legs.append(
            core.BetLeg(market_id=market_id, selection_id=selection.selection_id, odds=seen_odds)
        )
    return core.PlaceBet(
        request_id=meeting.request_id(),
        account_id=rng.choice(PUNTERS),
        stake_minor=rng.choice((50, 100, 200, 500, 1_000, 2_500, 5_000)),
        legs=tuple(legs),
        price_change=rng.choice(("none", "better", "any")),
    )


def _drift_prices(meeting: Meeting) -> None:
    rng = meeting.rng
    for market_id in _open_market_ids(meeting):
        market = meeting.state.markets[market_id]
        selection = rng.choice(list(market.selections.values()))
        new_odds = ticks_away(selection.odds, rng.choice((-2, -1, 1, 2)))
        meeting.must(
            core.UpdatePrices(
                request_id=meeting.request_id(),
                market_id=market_id,
                prices=(core.SelectionPrice(selection_id=selection.selection_id, odds=new_odds),),
            )
        )


def _betting_window(meeting: Meeting, bets: int) -> None:
    for _ in range(bets):
        meeting.advance(0.25)
        if meeting.rng.random() < 0.3:
            _drift_prices(meeting)
        bet = _random_bet(meeting)
        if bet is not None:
            meeting.run(bet)
            if meeting.rng.random() < 0.05:
                meeting.run(bet)  # a network retry: the same request id, no second bet


def _off_and_result(
    meeting: Meeting, market_id: str, winners: tuple[core.Winner, ...]
) -> core.Accepted:
    meeting.must(core.SuspendMarket(request_id=meeting.request_id(), market_id=market_id))
    meeting.advance(3)
    meeting.must(core.CloseMarket(request_id=meeting.request_id(), market_id=market_id))
    return meeting.must(
        core.SettleMarket(
            request_id=meeting.request_id(), market_id=market_id, winners=winners, actor="steward"
        )
    )


def _say(line: str = "") -> None:
    print(line)


def _money(state: core.LedgerState, amount_minor: int) -> str:
    sign = "-" if amount_minor < 0 else ""
    pounds, pence = divmod(abs(amount_minor), 100)
    return f"{sign}{state.config.currency} {pounds:,}.{pence:02d}"


def _settlement_line(meeting: Meeting, market_id: str, outcome: core.Accepted) -> str:
    reply = outcome.result
    assert isinstance(reply, core.events.SettlementReply)
    return (
        f"  {meeting.state.markets[market_id].name:<32} {reply.status:<8} "
        f"{reply.bets_affected:>4} bets  paid {_money(meeting.state, reply.paid_minor)}"
    )


def _races(meeting: Meeting) -> Iterator[str]:
    rng = meeting.rng
    r1, r2, r3 = (race[0] for race in RACES)
    winner = rng.choice(list(meeting.state.markets[r1].selections))
    yield _settlement_line(meeting, r1, _off_and_result(meeting, r1, (core.Winner(winner),)))
    _betting_window(meeting, 40)
    tied = rng.sample(list(meeting.state.markets[r2].selections), 2)
    dead_heat = tuple(core.Winner(selection_id, dead_heat=2) for selection_id in tied)
    yield _settlement_line(meeting, r2, _off_and_result(meeting, r2, dead_heat)) + "  (dead heat)"
    _betting_window(meeting, 40)
    first, second = rng.sample(list(meeting.state.markets[r3].selections), 2)
    yield _settlement_line(meeting, r3, _off_and_result(meeting, r3, (core.Winner(first),)))
    meeting.advance(10)
    resettled = meeting.must(
        core.ResettleMarket(
            request_id=meeting.request_id(),
            market_id=r3,
            winners=(core.Winner(second),),
            actor="steward:j.smith",
            reason="stewards' enquiry: placings reversed for interference",
        )
    )
    yield _settlement_line(meeting, r3, resettled) + "  (resettled)"
    meeting.must(core.SuspendMarket(request_id=meeting.request_id(), market_id="fb-ars-che"))
    voided = meeting.must(
        core.VoidMarket(
            request_id=meeting.request_id(),
            market_id="fb-ars-che",
            actor="trader:k.lee",
            reason="match abandoned: floodlight failure",
        )
    )
    yield _settlement_line(meeting, "fb-ars-che", voided) + "  (void: stakes returned)"


def _cash_out(meeting: Meeting) -> None:
    for punter in PUNTERS[:4]:
        balance_minor = meeting.state.accounts[punter].balance_minor
        if balance_minor > 0:
            meeting.must(
                core.Withdraw(
                    request_id=meeting.request_id(), account_id=punter, amount_minor=balance_minor
                )
            )
            meeting.withdrawn_minor += balance_minor


def run_demo(seed: int) -> bool:
    meeting = Meeting(seed)
    state = meeting.state
    _say(f"ironbook demo — a race meeting through the ledger core (seed {seed})")
    _say()
    _open_accounts(meeting)
    _open_markets(meeting)
    _say(f"{len(PUNTERS)} punters deposited {_money(state, meeting.deposited_minor)}")
    for market in state.markets.values():
        prices = ", ".join(
            f"{s.name} {format_price(s.odds, market.ladder.display)}"
            for s in list(market.selections.values())[:3]
        )
        _say(f"  market {market.name}: {prices}, ...")
    _betting_window(meeting, 80)
    bets_before = len(state.bets)
    _say(f"\n{bets_before} bets taken before the first off; results:")
    for line in _races(meeting):
        _say(line)
    _cash_out(meeting)
    _say(f"\n{len(state.bets)} bets in all, {len(meeting.log)} events in the log")
    if meeting.rejections:
        refused = ", ".join(f"{code} {n}" for code, n in meeting.rejections.most_common())
        _say(f"refused (by rule, logged, nothing changed): {refused}")
    _say("\nbalances:")
    for punter in PUNTERS:
        _say(f"  {punter:<8} {_money(state, state.accounts[punter].balance_minor):>16}")
    house = state.accounts[core.HOUSE].balance_minor
    held = state.accounts[core.STAKES_HELD].balance_minor
    cashier = state.accounts[core.CASHIER].balance_minor
    players = sum(a.balance_minor for a in state.accounts.values() if a.kind == "player")
    _say(f"  {'house':<8} {_money(state, house):>16}  (the book's result)")
    _say(f"  {'held':<8} {_money(state, held):>16}  (stakes on open bets)")
    _say(f"  {'cashier':<8} {_money(state, cashier):>16}  (deposits − withdrawals, negated)")
    total = sum(a.balance_minor for a in state.accounts.values())
    net_in = meeting.deposited_minor - meeting.withdrawn_minor
    replayed = core.new_state(state.config)
    for event in meeting.log:
        core.apply(replayed, event)
    checks = {
        "sum of all balances is 0": total == 0,
        "deposits − withdrawals = players + held + house": net_in == players + held + house,
        "every ledger invariant holds": core.check_invariants(state) == [],
        "replaying the log from empty gives the same state hash": core.state_hash(replayed)
        == core.state_hash(state),
    }
    _say("\nconservation check:")
    for label, ok in checks.items():
        _say(f"  [{'ok' if ok else 'FAIL'}] {label}")
    _say(f"\nstate hash {core.state_hash(state)[:16]}…")
    return all(checks.values())
