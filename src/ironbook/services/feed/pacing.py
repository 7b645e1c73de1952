"""How the feed paces itself while it is busy, for the simulator and the
ingester alike.

Most of what the feed costs the cluster is per round, not per message: a
simulator frame is one fsynced R3 append (~1.7 ms of NATS CPU on the
reference machine), and an ingester round is a `FeedBatch` append to every
partition's log, its decision and application on every replica, and one
odds message per changed market. So while more than
`BUSY_ABOVE_MESSAGES_PER_S` arrive, the simulator publishes a frame and the
ingester starts a round at most once per `BUSY_INTERVAL_MS`: more changes
conflate into each, for up to that much more price latency. At 1,000
changes/s this took the feed's cost from ~0.58 to ~0.22 core above an idle
cluster (docs/feed.md). A quieter feed is not paced.
"""

BUSY_ABOVE_MESSAGES_PER_S = 250
BUSY_INTERVAL_MS = 50


def busy(messages: int, elapsed_s: float) -> bool:
    """Whether `messages` arriving in `elapsed_s` is more than the busy rate."""
    return messages > BUSY_ABOVE_MESSAGES_PER_S * elapsed_s
