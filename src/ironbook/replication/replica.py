"""The role loop of one replica of one partition.

    follower --wins the lease--> candidate --caught up--> leader
        ^                                                   |
        +---- lease lost / fenced / append unknown ---------+
              (discard speculative state, restore snapshot, replay the log)

Only the log's expected-sequence check keeps the history single; the lease
only decides who should try to lead, so that usually exactly one replica does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from dataclasses import dataclass, field
from typing import Literal, NoReturn

from ironbook import core
from ironbook.replication.batch import QuarantineHook, ReplayState
from ironbook.replication.concurrency import race
from ironbook.replication.errors import CatchUpFailed, LeaseLost, StepDown
from ironbook.replication.follower import (
    CatchUpStalled,
    Follower,
    FollowerConfig,
    SnapshotCorrupt,
    restore,
    snapshot_stagger,
)
from ironbook.replication.interfaces import (
    Clock,
    Fenced,
    Lease,
    Log,
    LogUnavailable,
    ReplicationError,
    RequestServer,
    Signer,
    SnapshotStore,
    SnapshotWriter,
    Verifier,
)
from ironbook.replication.loop_blocks import LoopBlocks
from ironbook.replication.merkle import Frontier
from ironbook.replication.sequencer import Sequencer, SequencerConfig
from ironbook.replication.tree_keeping import (
    CheckpointPolicy,
    CheckpointPort,
    CheckpointSchedule,
    CheckpointSuperseded,
    CheckpointUnavailable,
    LogTree,
)

Role = Literal["starting", "follower", "candidate", "leader"]


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    lease_ttl_ms: int = 2_000
    """Must equal the lease store's TTL: a leader that could not renew for
    this long assumes the lease is gone."""
    lease_renew_interval_ms: int = 500
    lease_retry_ms: int = 250
    """How often a follower tries to take a free lease (plus jitter)."""
    follower_read_wait_ms: int = 100
    io_retry_backoff_ms: int = 50
    catch_up_attempts: int = 10
    """Failed log reads in a row after which a new leader gives the lease up
    instead of holding it while unable to serve."""
    follower: FollowerConfig = field(default_factory=FollowerConfig)
    sequencer: SequencerConfig = field(default_factory=SequencerConfig)
    ledger: core.LedgerConfig | None = None
    """The ledger rules for a brand-new (empty) state."""
    checkpoints: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    """When a leader signs (with a `CheckpointPort`; without one no tree is kept)."""


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    node_id: str
    role: Role
    term: int
    applied_seq: int
    """Follower: entries applied. Leader: entries acknowledged."""
    pending_batches: int
    terms_led: int
    quarantined: int = 0
    """Log entries quarantined up to `applied_seq` (see `replication.batch`)."""
    results_in_progress: int = 0
    """Market results with slices still to come: a leader appends them on its
    own, so a log is not finished while this is above zero."""


class Replica:
    def __init__(
        self,
        node_id: str,
        *,
        log: Log,
        lease: Lease,
        snapshots: SnapshotStore,
        server: RequestServer,
        clock: Clock,
        rng: random.Random,
        config: ReplicaConfig,
        signer: Signer,
        verifier: Verifier,
        on_quarantine: QuarantineHook | None = None,
        checkpoints: CheckpointPort | None = None,
        snapshot_writer: SnapshotWriter | None = None,
    ) -> None:
        """`snapshot_writer`: how followers write snapshots to `snapshots`
        (default: encoded on this event loop, `follower.InProcessSnapshotWriter`)."""
        if config.lease_renew_interval_ms * 2 > config.lease_ttl_ms:
            raise ValueError("renew the lease at least twice per TTL")
        self.node_id = node_id
        self._log = log
        self._lease = lease
        self._snapshots = snapshots
        self._server = server
        self._clock = clock
        self._rng = rng
        self._config = config
        self._signer = signer
        self._verifier = verifier
        self._on_quarantine = on_quarantine
        self._checkpoints = checkpoints
        self._snapshot_writer = snapshot_writer
        self._role: Role = "starting"
        self._term = 0
        self._lease_revision = 0
        self._lease_sent_ms = 0
        """When the request that last took or extended the lease was sent: the
        store's lease runs at least `lease_ttl_ms` from then."""
        self._terms_led = 0
        self._follower: Follower | None = None
        self._sequencer: Sequencer | None = None
        self.last_step_down: str = ""
        self.last_restore_problem: str = ""
        self.loop_blocks = LoopBlocks()
        """The longest event-loop block per kind of work, over every term."""
        self.checkpoint_refusal = ""
        """Why this leader signs nothing now ("": it signs)."""

    def status(self) -> ReplicaStatus:
        sequencer = self._sequencer
        in_progress = 0
        if sequencer is not None:
            applied, pending = sequencer.acked_seq, sequencer.pending_batches
            quarantined = sequencer.quarantined
            in_progress = len(sequencer.state.settlements)
        elif self._follower is not None:
            applied, pending = self._follower.applied_seq, 0
            quarantined = self._follower.quarantined
            in_progress = len(self._follower.state.settlements)
        else:
            applied, pending, quarantined = 0, 0, 0
        return ReplicaStatus(
            self.node_id,
            self._role,
            self._term,
            applied,
            pending,
            self._terms_led,
            quarantined,
            in_progress,
        )

    def leader_state(self) -> core.LedgerState | None:
        """The state this replica decides against while it leads
        (speculative: it includes batches still in flight); None otherwise.
        For the leader's own housekeeping commands; never change it."""
        if self._sequencer is None or self._role != "leader":
            return None
        return self._sequencer.state

    def state_hash(self) -> str | None:
        """Hash of the current state (speculative while batches are in flight);
        None before the first restore."""
        if self._sequencer is not None:
            return core.state_hash(self._sequencer.state)
        if self._follower is not None:
            return core.state_hash(self._follower.state)
        return None

    async def run(self) -> NoReturn:
        """Serve forever; cancel to stop."""
        first_try_ms = self._clock.now_ms()
        while True:
            follower = await self._restore()
            revision = await self._follow_until_lease(follower, first_try_ms)
            await self._lead(follower, revision)
            # Having just failed to lead, let the others try first.
            first_try_ms = self._clock.now_ms() + 2 * self._config.lease_retry_ms

    async def _restore(self) -> Follower:
        self._role = "starting"
        self._follower = None
        while True:
            try:
                replay, frontier = await restore(
                    self._snapshots,
                    self._config.ledger,
                    verifier=self._verifier,
                    on_quarantine=self._on_quarantine,
                )
                break
            except SnapshotCorrupt as error:
                # Never start from a wrong state; the log is the truth, so
                # replay all of it instead.
                self.last_restore_problem = str(error)
                replay = ReplayState.empty(
                    self._config.ledger,
                    verifier=self._verifier,
                    on_quarantine=self._on_quarantine,
                )
                frontier = Frontier()
                break
            except ReplicationError:
                await self._clock.sleep(self._config.io_retry_backoff_ms)
        tree = None
        if self._checkpoints is not None:
            tree = await self._tree_at(replay.applied_seq, frontier)
        follower = Follower(
            log=self._log,
            snapshots=self._snapshots,
            clock=self._clock,
            replay=replay,
            config=dataclasses.replace(
                self._config.follower, snapshot_stagger=snapshot_stagger(self.node_id)
            ),
            loop_blocks=self.loop_blocks,
            tree=tree,
            snapshot_writer=self._snapshot_writer,
        )
        self._follower = follower
        return follower

    async def _tree_at(self, seq: int, frontier: Frontier | None) -> LogTree | None:
        """The log's tree at `seq`: from the snapshot's frontier, or hashed
        from the log when the snapshot carries none. None when the log no
        longer holds the entries before the snapshot (a restored cluster's log
        starts past it): this replica then keeps no tree and signs nothing."""
        assert self._checkpoints is not None
        tree = LogTree(self._checkpoints.log, frontier)
        idle_reads = 0
        while tree.size < seq:
            try:
                entries = await self._log.read(
                    tree.size + 1,
                    max_entries=min(self._config.follower.read_max_entries, seq - tree.size),
                    wait_ms=self._config.follower_read_wait_ms,
                )
            except ReplicationError:
                entries = []
            if not entries:
                idle_reads += 1
                if idle_reads >= self._config.catch_up_attempts:
                    self.checkpoint_refusal = (
                        f"the snapshot at seq {seq} carries no Merkle frontier and the log "
                        f"does not give seq {tree.size + 1}: no tree to sign"
                    )
                    return None
                await self._clock.sleep(self._config.io_retry_backoff_ms)
                continue
            idle_reads = 0
            tree.add_entries(entries[: seq - tree.size])
        return tree

    async def _follow_until_lease(self, follower: Follower, first_try_ms: int) -> int:
        """Tail the log; return the lease revision once this replica wins it."""
        self._role = "follower"
        config = self._config
        next_try_ms = first_try_ms
        while True:
            now_ms = self._clock.now_ms()
            if now_ms >= next_try_ms:
                self._lease_sent_ms = now_ms
                try:
                    revision = await self._lease.acquire(self.node_id)
                except ReplicationError:
                    revision = None
                if revision is not None:
                    return revision
                next_try_ms = (
                    now_ms
                    + config.lease_retry_ms
                    + self._rng.randrange(config.lease_retry_ms // 2 + 1)
                )
            wait_ms = max(0, min(config.follower_read_wait_ms, next_try_ms - self._clock.now_ms()))
            await follower.poll(wait_ms=wait_ms)

    async def _lead(self, follower: Follower, revision: int) -> None:
        self._role = "candidate"
        self._term = revision
        self._lease_revision = revision
        duties = [self._keep_lease(), self._watch_log(), self._catch_up_and_serve(follower)]
        if self._checkpoints is not None and follower.tree is not None:
            duties.append(self._sign_checkpoints(self._checkpoints, follower.tree))
        try:
            await race(*duties)
        except (StepDown, Fenced) as reason:
            self.last_step_down = f"{type(reason).__name__}: {reason}"
        finally:
            self._sequencer = None
            self._follower = None
            self._role = "starting"
            # Also when cancelled (a graceful stop): a follower takes over at
            # once instead of waiting for the lease to expire.
            with contextlib.suppress(ReplicationError):
                await self._lease.release(self.node_id, self._lease_revision)

    async def _keep_lease(self) -> NoReturn:
        config = self._config
        while True:
            await self._clock.sleep(config.lease_renew_interval_ms)
            sent_at_ms = self._clock.now_ms()
            try:
                revision = await self._lease.renew(self.node_id, self._lease_revision)
            except ReplicationError:
                if self._clock.now_ms() - self._lease_sent_ms >= config.lease_ttl_ms:
                    raise LeaseLost("could not renew the lease for a whole TTL") from None
                continue
            if revision is None:
                raise LeaseLost("the lease was taken over")
            self._lease_revision = revision
            # The store extended the lease at some moment after `sent_at_ms`:
            # counting from the send keeps this replica's idea of its lease no
            # longer than the store's.
            self._lease_sent_ms = sent_at_ms

    def _lease_current(self) -> bool:
        """Whether the lease is certainly still this replica's: taken or
        extended less than a TTL ago, less one renewal interval of margin for
        the two clocks' rates. A leader answers reads only while it is."""
        config = self._config
        age_ms = self._clock.now_ms() - self._lease_sent_ms
        return age_ms < config.lease_ttl_ms - config.lease_renew_interval_ms

    async def _watch_log(self) -> NoReturn:
        """Step down as soon as the log holds entries this leader did not
        write that the fold applies (a rival leader's); foreign entries are
        counted and skipped instead. Not needed for safety, since its next
        append would be fenced, but without it an idle deposed leader would
        keep answering repeated requests from a stale state and hold clients."""
        while True:
            await self._clock.sleep(self._config.lease_renew_interval_ms)
            sequencer = self._sequencer
            if sequencer is None:
                continue
            try:
                last_seq = await self._log.last_seq()
            except ReplicationError:
                continue
            try:
                await sequencer.absorb_foreign_tail(last_seq)
            except LogUnavailable:
                continue

    async def _sign_checkpoints(self, port: CheckpointPort, tree: LogTree) -> NoReturn:
        """While this replica leads, sign its tree when a checkpoint is due.
        Failures to sign never end the term: the ledger keeps serving, and
        the next tick tries again (the independent verifier alerts if
        checkpoints stop)."""
        policy = self._config.checkpoints
        schedule: CheckpointSchedule | None = None
        while True:
            await self._clock.sleep(policy.tick_ms)
            if self._role != "leader":
                continue
            now_ms = self._clock.now_ms()
            try:
                if schedule is None:
                    # Started only once the last checkpoint was read: a
                    # schedule that never chained would sign as the first
                    # of a new chain.
                    last = await port.last_signed()
                    schedule = CheckpointSchedule(policy, tree)
                    self.checkpoint_refusal = schedule.start(last, now_ms)
                if schedule.refused:
                    # A leader deposed without knowing yet sees a rival's
                    # later checkpoint: look again after a while.
                    schedule = None
                    await self._clock.sleep(policy.every_ms)
                    continue
                head = schedule.due(now_ms)
                if head is None:
                    continue
                checkpoint = await port.publish(head)
            except CheckpointSuperseded:
                schedule = None
                continue
            except CheckpointUnavailable:
                continue
            schedule.signed(checkpoint, self._clock.now_ms())

    async def _catch_up_and_serve(self, follower: Follower) -> NoReturn:
        config = self._config
        for attempt in range(1, config.catch_up_attempts + 1):
            try:
                target_seq = await self._log.last_seq()
                break
            except ReplicationError as error:
                if attempt == config.catch_up_attempts:
                    raise CatchUpFailed(f"log end unreadable: {error}") from error
                await self._clock.sleep(config.io_retry_backoff_ms)
        try:
            await follower.catch_up(target_seq, max_idle_polls=config.catch_up_attempts)
        except CatchUpStalled as error:
            raise CatchUpFailed(str(error)) from error
        inbox = await self._server.listen()
        try:
            sequencer = Sequencer(
                term=self._term,
                log=self._log,
                inbox=inbox,
                clock=self._clock,
                state=follower.state,
                last_seq=follower.applied_seq,
                last_batch_id=follower.replay.last_batch_id,
                config=self._config.sequencer,
                lease_current=self._lease_current,
                signer=self._signer,
                verifier=self._verifier,
                quarantined=follower.quarantined,
                on_quarantine=self._on_quarantine,
                loop_blocks=self.loop_blocks,
                tree=follower.tree,
            )
            self._sequencer = sequencer
            self._role = "leader"
            self._terms_led += 1
            await sequencer.run()
        finally:
            await inbox.close()
