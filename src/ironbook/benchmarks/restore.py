"""The restore benchmark: how long a replica takes to come back at N bets of
history, and how big the snapshot it restores from is.

In one run per `--bets` N, on this machine:

1. **Synthesis** with the pure core, in this process: a history of partition
   0 made of real commands and real decisions (`core.decide` + `core.apply`):
   `--accounts` accounts opened and funded, then N bets at a constant
   `--bets-per-day` of log time, over `--open-markets` markets open at once
   (every `--double-every`-th bet a double over two of them); a market that
   has taken `--bets-per-market` bets is closed and settled (every slice of
   its result), and a new one opened. 1M and 10M bets differ in the length
   of the history, not in its activity per day; most bets end up settled
   long before the end, and the markets still open at the end (with their
   bets) are its open exposure. As a leader's chore does, an
   `ArchiveSettled` (in a log entry of its own) moves the markets resulted
   more than `--retention-days` ago, with their bets, out of the state
   whenever some are due. The commands are batched into log entries of
   `SYNTH_BATCH_COMMANDS`, encoded and signed with the cluster's ledger key
   exactly as a leader does (`replication.batch.encode_signed_batch`), and
   kept only as leaves of the log's Merkle tree: the snapshot carries the
   tree's frontier, as a replica's does.
2. **Snapshot** of the state at the end of the synthesis, as a replica takes
   it (`follower.take_snapshot`), stored as the NATS snapshot store stores it
   (zstd): `snapshot_bytes` (stored) and `state_bytes` (the raw encoding).
3. **Tail**: `--tail-entries` more log entries of `--tail-batch` commands
   each, made the same way, which a restore must replay.
4. **Restore**, against a real local cluster (3 nats-server nodes, secured,
   in a temp dir): the snapshot is put in partition 0's snapshot store, the
   ledger stream is created to start right after the snapshot's sequence
   (as `ironbook restore` creates it), the tail is appended, and the
   cluster is provisioned. Then, in this process, the follower's restore
   path (`follower.restore` from the store, then `Follower.catch_up` to the
   tail's end, signatures verified) is timed: `in_process`. Then one real
   replica process is started with the cluster's settings: `restore_s` is
   from its start to its first heartbeat at or past the tail's end
   (heartbeats come once a second). Its state hash must be the fold of the
   synthesised state through the log (the tail, and anything the replica
   appended itself as leader): `hash_check`.

Baselines from the same run: `synth_s`, the pure core making the history
(the restore replays none of it); `fold_tail_s`, folding the tail in this
process, against the restore's replay of it. `rss_bytes`: this process's
peak (the synthesised state) and the replica's after the restore.

    ironbook bench restore --bets 1000000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec

from ironbook import core
from ironbook.adapters import eventloop
from ironbook.adapters.clock import SystemClock
from ironbook.adapters.ledger_keys import PartitionSigner, ledger_signing_key, ledger_verifier
from ironbook.adapters.nats.log import NatsLog, ledger_stream_config
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats, ensure_stream
from ironbook.adapters.nats.snapshots import NatsSnapshotStore, encode_object
from ironbook.adapters.procfs import process_stat
from ironbook.benchmarks.common import command_line, log, machine_info, positive_ints
from ironbook.replication.batch import ReplayState, encode_signed_batch, signed_batch_id
from ironbook.replication.follower import Follower, FollowerConfig, restore, take_snapshot
from ironbook.replication.interfaces import LogEntry, Signer, Snapshot
from ironbook.replication.tree_keeping import LogTree
from ironbook.services.local_cluster import LocalCluster
from ironbook.services.status import (
    ReplicaHeartbeat,
    decode_heartbeat,
    decode_state_hash_reply,
    replica_admin_subject,
    replica_status_subject,
)

PARTITION = 0
DAY_MS = 86_400_000
BENCH = core.acting("bench")
SYNTH_BATCH_COMMANDS = 1_000
"""Commands per synthesised log entry: a leader's largest batch."""
SYNTH_TERM = 0
"""The term in the synthesised batch ids: no lease revision is 0, so no batch
a replica appends as leader can share an id with one of them."""
SELECTIONS = 8
DEPOSIT_MINOR = 100_000_000
PROGRESS_EVERY_S = 10.0
REPLICA = "p0-r1"
RESTORE_TIMEOUT_S = 900.0
HASH_ATTEMPTS = 100
HASH_RETRY_S = 0.2


class SynthesisError(Exception):
    """The pure core refused a command of the synthesised history."""


class RestoreCheckFailed(Exception):
    """A restored state is not the synthesised one."""


@dataclass(frozen=True, slots=True)
class Shape:
    """What the synthesised history looks like (see the module doc)."""

    accounts: int
    bets_per_day: int
    open_markets: int
    bets_per_market: int
    double_every: int


def ledger_config(resettle_window_ms: int, retention_ms: int) -> core.LedgerConfig:
    """The synthesised partition's rules: limits out of the way of the load
    (the benchmark is about the state, not about refusals)."""
    return core.LedgerConfig(
        partition=PARTITION,
        max_liability_minor=10**13,
        max_market_liability_minor=10**13,
        resettle_window_ms=resettle_window_ms,
        bet_retention_ms=retention_ms,
    )


class History:
    """A partition's history decided by the pure core, batch by batch, each
    batch a signed log entry (a leaf of `tree`; kept in `entries` while
    `keep_entries`)."""

    def __init__(
        self, config: core.LedgerConfig, shape: Shape, signer: Signer, start_ms: int
    ) -> None:
        self.state = core.new_state(config)
        self.shape = shape
        self.tree = LogTree(PARTITION)
        self.entries: list[LogEntry] = []
        self.keep_entries = False
        self.seq = 0
        self.last_batch_id = ""
        self.bets = 0
        self.settled_markets = 0
        self.archive_commands = 0
        self._signer = signer
        self._start_ms = start_ms
        self._now_ms = start_ms
        self._events: list[core.AnyEvent] = []
        self._commands = 0
        self._markets = 0
        self._open: list[str] = []
        self._taken: dict[str, int] = {}
        self._accounts = [f"acct-{i}" for i in range(shape.accounts)]

    def _decide(self, command: core.AnyCommand) -> None:
        outcome = core.decide(self.state, core.issued(command, BENCH), self._now_ms)
        if not isinstance(outcome, core.Accepted):
            raise SynthesisError(f"{type(command).__name__} {command.request_id}: {outcome}")
        for event in outcome.events:
            core.apply(self.state, event)
        self._events.extend(outcome.events)
        self._commands += 1

    def _seal(self) -> None:
        """The events decided since the last entry, as the next log entry."""
        if not self._events:
            return
        self.seq += 1
        batch_id = signed_batch_id(SYNTH_TERM, self.seq)
        events = core.encode_events(self._events)
        payload = encode_signed_batch(self._signer, batch_id, self.last_batch_id, events)
        self.tree.add(self.seq, payload)
        if self.keep_entries:
            self.entries.append(LogEntry(self.seq, batch_id, payload))
        self.last_batch_id = batch_id
        self._events = []

    def open_accounts(self) -> None:
        per_entry = SYNTH_BATCH_COMMANDS // 2
        for first in range(0, len(self._accounts), per_entry):
            for account_id in self._accounts[first : first + per_entry]:
                self._decide(core.OpenAccount(request_id=f"o-{account_id}", account_id=account_id))
                self._decide(
                    core.Deposit(
                        request_id=f"d-{account_id}",
                        account_id=account_id,
                        amount_minor=DEPOSIT_MINOR,
                        reason="opening balance",
                    )
                )
            self._seal()
        while len(self._open) < self.shape.open_markets:
            self._new_market()
        self._seal()

    def _new_market(self) -> None:
        self._markets += 1
        market_id = f"m{self._markets}"
        self._decide(
            core.CreateMarket(
                request_id=f"c-{market_id}",
                market_id=market_id,
                event_id=f"e{self._markets}",
                name="Win",
                selections=tuple(
                    core.SelectionSpec(selection_id=f"s{i}", name=f"Runner {i}", odds=_odds(i))
                    for i in range(SELECTIONS)
                ),
            )
        )
        self._open.append(market_id)
        self._taken[market_id] = 0

    def _settle(self, market_id: str) -> None:
        """Close and settle the market (every slice), and open another."""
        self._open.remove(market_id)
        del self._taken[market_id]
        self._decide(core.CloseMarket(request_id=f"x-{market_id}", market_id=market_id))
        winner = core.Winner(selection_id=f"s{self._markets % SELECTIONS}")
        self._decide(
            core.SettleMarket(
                request_id=f"r-{market_id}", market_id=market_id, winners=(winner,), reason="result"
            )
        )
        while self.state.settlements:
            for continuation in core.continuations(self.state):
                self._decide(continuation)
        self.settled_markets += 1
        self._new_market()

    def _bet(self) -> None:
        n = self.bets
        shape = self.shape
        open_markets = self._open
        markets = [open_markets[n % len(open_markets)]]
        if shape.double_every and n % shape.double_every == 0:
            markets.append(open_markets[(n + 1) % len(open_markets)])
        legs = tuple(
            core.BetLeg(market_id=m, selection_id=f"s{(n + i) % SELECTIONS}", odds=_odds(n + i))
            for i, m in enumerate(markets)
        )
        self._decide(
            core.PlaceBet(
                request_id=f"b{n}",
                account_id=self._accounts[n % len(self._accounts)],
                stake_minor=100 + n % 900,
                legs=legs,
                price_change="none",
            )
        )
        self.bets += 1
        for market_id in markets:
            self._taken[market_id] += 1
        self._now_ms = self._start_ms + self.bets * DAY_MS // shape.bets_per_day
        full = [m for m in markets if self._taken[m] >= shape.bets_per_market]
        for market_id in full:
            self._settle(market_id)
        if core.archive_due(self.state, self._now_ms):
            self._archive()

    def _archive(self) -> None:
        """The leader's archive chore: `ArchiveSettled` while markets are due,
        each in a log entry of its own (one carries up to 500 final views)."""
        self._seal()
        while core.archive_due(self.state, self._now_ms):
            self.archive_commands += 1
            self._decide(core.ArchiveSettled(request_id=f"a{self.archive_commands}"))
            self._seal()

    def place(
        self, bets: int, per_entry: int, progress: Callable[[str], None] | None = None
    ) -> None:
        """`bets` more bets, `per_entry` commands at most in each log entry
        (a market's close and result go with the bet that filled it)."""
        target = self.bets + bets
        reported = time.monotonic()
        while self.bets < target:
            entry_start = self._commands
            while self.bets < target and self._commands - entry_start < per_entry:
                self._bet()
            self._seal()
            if progress is not None and time.monotonic() - reported >= PROGRESS_EVERY_S:
                reported = time.monotonic()
                progress(
                    f"  {self.bets:,} bets, {len(self.state.bets):,} in the state, "
                    f"day {(self._now_ms - self._start_ms) / DAY_MS:.1f}, "
                    f"rss {_peak_rss_bytes() / 1e9:.2f} GB"
                )

    @property
    def days(self) -> float:
        return (self._now_ms - self._start_ms) / DAY_MS


def _odds(i: int) -> int:
    return 200 + (i % SELECTIONS) * 50


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synthesise(
    bets: int, args: argparse.Namespace, signer: Signer, config: core.LedgerConfig
) -> tuple[History, Snapshot, list[LogEntry], dict[str, Any]]:
    """The history, its snapshot, the tail after it, and their figures."""
    shape = Shape(
        accounts=args.accounts,
        bets_per_day=args.bets_per_day,
        open_markets=args.open_markets,
        bets_per_market=args.bets_per_market,
        double_every=args.double_every,
    )
    tail_bets = args.tail_entries * args.tail_batch
    # The history ends about now, so that a replica's wall-clock duties see
    # a log as recent as a live one's.
    span_ms = (bets + tail_bets) * DAY_MS // shape.bets_per_day
    history = History(config, shape, signer, start_ms=time.time_ns() // 1_000_000 - span_ms)
    log(f"synthesising {bets:,} bets ({shape.accounts:,} accounts) ...")
    started = time.perf_counter()
    history.open_accounts()
    history.place(bets, SYNTH_BATCH_COMMANDS, progress=log)
    synth_s = time.perf_counter() - started
    state = history.state
    open_bets = sum(1 for bet in state.bets.values() if bet.status == "open")
    log(f"  {synth_s:.1f} s: {history.seq:,} entries, {len(state.bets):,} bets in the state")
    started = time.perf_counter()
    snapshot = take_snapshot(
        ReplayState(state, history.seq, history.last_batch_id, verifier=None), history.tree
    )
    snapshot_s = time.perf_counter() - started
    started = time.perf_counter()
    stored = encode_object(snapshot)
    compress_s = time.perf_counter() - started
    invariants = core.check_invariants(state)
    if invariants:
        raise SynthesisError(f"invariants broken: {'; '.join(invariants)}")
    figures = {
        "synth_s": round(synth_s, 3),
        "history_days": round(history.days, 2),
        "log_entries": snapshot.seq,
        "markets_settled": history.settled_markets,
        "archived_markets": state.archived_markets,
        "archived_bets": state.archived_bets,
        "archive_commands": history.archive_commands,
        "bets_in_state": len(state.bets),
        "open_bets": open_bets,
        "markets_in_state": len(state.markets),
        "accounts_in_state": len(state.accounts),
        "replies_in_state": len(state.replies),
        "snapshot_seq": snapshot.seq,
        "state_bytes": len(snapshot.state),
        "snapshot_bytes": len(stored),
        "snapshot_s": round(snapshot_s, 3),
        "compress_s": round(compress_s, 3),
    }
    history.keep_entries = True
    started = time.perf_counter()
    history.place(tail_bets, args.tail_batch)
    figures["tail_synth_s"] = round(time.perf_counter() - started, 3)
    return history, snapshot, history.entries, figures


async def _load_cluster(endpoint: NatsEndpoint, snapshot: Snapshot, tail: list[LogEntry]) -> None:
    """The stream from right after the snapshot, the tail in it, the snapshot
    in the store (as `ironbook restore` leaves a partition)."""
    nc = await endpoint.connect("bench-restore-load")
    try:
        config = replace(ledger_stream_config(PARTITION, replicas=3), first_seq=snapshot.seq + 1)
        await ensure_stream(nc.jetstream(), config)
        store = await NatsSnapshotStore.open(nc, PARTITION, replicas=3)
        await store.put(snapshot)
        ledger = NatsLog(nc, PARTITION)
        try:
            expected_last_seq = snapshot.seq
            for entry in tail:
                seq = await ledger.append(
                    entry.payload, expected_last_seq=expected_last_seq, batch_id=entry.batch_id
                )
                if seq != entry.seq:
                    raise RestoreCheckFailed(f"entry {entry.seq} landed at {seq}")
                expected_last_seq = seq
        finally:
            await ledger.close()
    finally:
        await close_nats(nc)


async def _restore_in_process(
    endpoint: NatsEndpoint, data_dir: Path, config: core.LedgerConfig, tail_end: int
) -> tuple[ReplayState, dict[str, Any]]:
    """The follower's restore path, timed: the newest snapshot from the
    store, then the log after it up to `tail_end`."""
    nc = await endpoint.connect("bench-restore-follower")
    ledger = NatsLog(nc, PARTITION)
    try:
        store = await NatsSnapshotStore.open(nc, PARTITION, replicas=3)
        started = time.perf_counter()
        replay, frontier = await restore(
            store, config, verifier=ledger_verifier(data_dir, PARTITION)
        )
        restored_s = time.perf_counter() - started
        follower = Follower(
            log=ledger,
            snapshots=store,
            clock=SystemClock(),
            replay=replay,
            # Writes no snapshot: the replica started next must restore the
            # same one.
            config=FollowerConfig(snapshot_every_entries=2**62),
            tree=LogTree(PARTITION, frontier) if frontier is not None else None,
        )
        await follower.catch_up(tail_end, max_idle_polls=100)
        total_s = time.perf_counter() - started
    finally:
        await ledger.close()
        await close_nats(nc)
    return follower.replay, {
        "restore_s": round(total_s, 3),
        "snapshot_restore_s": round(restored_s, 3),
        "catch_up_s": round(total_s - restored_s, 3),
        "quarantined": follower.quarantined,
    }


async def _restore_replica(
    cluster: LocalCluster, tail_end: int
) -> tuple[float, ReplicaHeartbeat, int]:
    """Start one replica process; (seconds to its first heartbeat at
    `tail_end` or past it, that heartbeat, its RSS then)."""
    nc = await cluster.ops.connect("bench-restore-watch")
    reached: asyncio.Future[tuple[float, ReplicaHeartbeat]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_beat(msg: Any) -> None:
        with contextlib.suppress(msgspec.MsgspecError):
            beat = decode_heartbeat(msg.data)
            if beat.applied_seq >= tail_end and not reached.done():
                reached.set_result((time.perf_counter(), beat))

    try:
        subscription = await nc.subscribe(replica_status_subject(PARTITION, REPLICA), cb=on_beat)
        process = cluster.replicas[REPLICA]
        started = time.perf_counter()
        process.start()
        async with asyncio.timeout(RESTORE_TIMEOUT_S):
            at, beat = await reached
        stat = process_stat(process.pid) if process.pid is not None else None
        rss = stat.rss_bytes if stat is not None else 0
        await subscription.unsubscribe()
    finally:
        await close_nats(nc)
    return at - started, beat, rss


async def _replica_hash(
    cluster: LocalCluster, replay: ReplayState, data_dir: Path
) -> dict[str, Any]:
    """The replica's state hash against the synthesised state folded through
    the log up to the replica's position (it may have appended entries of
    its own as leader)."""
    nc = await cluster.ops.connect("bench-restore-hash")
    ledger = NatsLog(nc, PARTITION)
    try:
        for _attempt in range(HASH_ATTEMPTS):
            reply = decode_state_hash_reply(
                (await nc.request(replica_admin_subject(REPLICA), b"", timeout=30)).data
            )
            if reply.state_hash is not None:
                break
            await asyncio.sleep(HASH_RETRY_S)
        else:
            raise RestoreCheckFailed(f"{REPLICA} never reported a settled state hash")
        fold = ReplayState(
            replay.state,
            replay.applied_seq,
            replay.last_batch_id,
            verifier=ledger_verifier(data_dir, PARTITION),
        )
        while fold.applied_seq < reply.applied_seq:
            entries = await ledger.read(fold.applied_seq + 1, max_entries=256, wait_ms=1_000)
            for entry in entries[: reply.applied_seq - fold.applied_seq]:
                fold.apply(entry)
        expected = core.state_hash(fold.state)
    finally:
        await ledger.close()
        await close_nats(nc)
    if reply.state_hash != expected:
        raise RestoreCheckFailed(
            f"{REPLICA} at seq {reply.applied_seq} hashes to {reply.state_hash}, "
            f"the synthesised history folds to {expected}"
        )
    return {"replica_seq": reply.applied_seq, "own_entries": reply.applied_seq - replay.applied_seq}


def run_one(bets: int, args: argparse.Namespace, config: core.LedgerConfig) -> dict[str, Any]:
    """Synthesise, snapshot, load a cluster and restore from it (see the
    module doc). Raises `RestoreCheckFailed` if a restored state is not the
    synthesised one, `SnapshotCorrupt` if the stored snapshot is damaged."""
    with tempfile.TemporaryDirectory(prefix="ironbook-bench-restore-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster", partitions=1)
        data_dir = cluster.data_dir
        signer = PartitionSigner(ledger_signing_key(data_dir), PARTITION)
        history, snapshot, tail, figures = synthesise(bets, args, signer, config)
        expected_hash = core.state_hash(history.state)
        tail_end = history.seq
        fold = ReplayState(
            core.restore_snapshot(snapshot.state),
            snapshot.seq,
            snapshot.last_batch_id,
            verifier=ledger_verifier(data_dir, PARTITION),
        )
        started = time.perf_counter()
        for entry in tail:
            fold.apply(entry)
        fold_tail_s = time.perf_counter() - started
        if core.state_hash(fold.state) != expected_hash:
            raise RestoreCheckFailed("the tail does not fold to the synthesised state")
        del fold
        try:
            log("starting NATS, loading the snapshot and the tail ...")
            cluster.nats.start()
            eventloop.run(_load_cluster(cluster.ops, snapshot, tail))
            cluster.provision()
            log("restoring in this process (the follower's path) ...")
            restored, in_process = eventloop.run(
                _restore_in_process(cluster.ops, data_dir, config, tail_end)
            )
            if core.state_hash(restored.state) != expected_hash:
                raise RestoreCheckFailed(
                    f"the follower's restore at {restored.applied_seq} is not the synthesised state"
                )
            del restored
            log(f"  {in_process['restore_s']} s; starting replica {REPLICA} ...")
            restore_s, beat, replica_rss = eventloop.run(_restore_replica(cluster, tail_end))
            log(f"  {restore_s:.2f} s; checking its state hash ...")
            replica = ReplayState(history.state, history.seq, history.last_batch_id, verifier=None)
            hash_check = eventloop.run(_replica_hash(cluster, replica, data_dir))
        finally:
            cluster.stop()
    return {
        "bets": bets,
        **figures,
        "replay_entries": len(tail),
        "replay_bets": args.tail_entries * args.tail_batch,
        "fold_tail_s": round(fold_tail_s, 3),
        "in_process": in_process,
        "restore_s": round(restore_s, 3),
        "restore_heartbeat_seq": beat.applied_seq,
        "hash_check": {"ok": True, **hash_check},
        "rss_bytes": {"bench_peak": _peak_rss_bytes(), "replica": replica_rss},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    config = ledger_config(
        round(args.resettle_window_days * DAY_MS), round(args.retention_days * DAY_MS)
    )
    runs = [run_one(bets, args, config) for bets in args.bets]
    result: dict[str, Any] = {
        "benchmark": "restore",
        "command": command_line(),
        "machine": machine_info(load_at_start),
        "load_at_end": [round(x, 2) for x in os.getloadavg()],
        "config": {
            "resettle_window_days": args.resettle_window_days,
            "retention_days": args.retention_days,
            "accounts": args.accounts,
            "bets_per_day": args.bets_per_day,
            "open_markets": args.open_markets,
            "bets_per_market": args.bets_per_market,
            "double_every": args.double_every,
            "synth_batch_commands": SYNTH_BATCH_COMMANDS,
            "tail_entries": args.tail_entries,
            "tail_batch": args.tail_batch,
        },
    }
    if len(runs) == 1:
        return {**result, **runs[0]}
    smallest, largest = runs[0], runs[-1]
    return {
        **result,
        "runs": runs,
        "snapshot_ratio": round(largest["snapshot_bytes"] / smallest["snapshot_bytes"], 3),
        "snapshot_ratio_of": [largest["bets"], smallest["bets"]],
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ironbook bench restore",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--bets",
        type=lambda text: sorted(positive_ints(text)),
        default=[1_000_000],
        help="bets of history, or several comma-separated (one run each, smallest first; "
        "the JSON then has `runs` and the largest's snapshot over the smallest's)",
    )
    p.add_argument("--accounts", type=int, default=50_000, help="accounts (default 50000)")
    p.add_argument(
        "--bets-per-day", type=int, default=100_000, help="bets per day of log time (100000)"
    )
    p.add_argument("--open-markets", type=int, default=20, help="markets open at once (20)")
    p.add_argument("--bets-per-market", type=int, default=500, help="bets that fill a market (500)")
    p.add_argument("--double-every", type=int, default=10, help="every Nth bet a double (10)")
    p.add_argument(
        "--resettle-window-days",
        type=float,
        default=1,
        help="how long a result may be changed, in days of log time (1)",
    )
    p.add_argument(
        "--retention-days",
        type=float,
        default=2,
        help="how long a final market and its bets stay in the state, in days (2)",
    )
    p.add_argument(
        "--tail-entries", type=int, default=1_000, help="log entries after the snapshot (1000)"
    )
    p.add_argument("--tail-batch", type=int, default=100, help="commands per tail entry (100)")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0
