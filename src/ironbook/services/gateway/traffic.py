"""Traffic protection: token buckets, admission control, IP allow/deny lists.

All of it is per worker and in memory: it must cost nothing next to a ledger
request, and it must never queue. Everything is bounded: the bucket tables
drop their least recently used keys past `max_keys`.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Iterable

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TokenBuckets:
    """One token bucket per key: `rate_per_s` refill, `burst` capacity."""

    def __init__(self, rate_per_s: float, burst: int, *, max_keys: int) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate, burst and max_keys must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """key -> (tokens, monotonic time of the last refill)."""

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 if a token was taken, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        entry = self._buckets.pop(key, None)
        if entry is None:
            tokens = float(self.burst)
        else:
            tokens = min(float(self.burst), entry[0] + (now - entry[1]) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait_s = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait_s = (1.0 - tokens) / self.rate_per_s
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait_s


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))


class Admission:
    """A bound on in-flight ledger requests. Past it a request is refused at
    once: queueing behind a saturated ledger only turns overload into
    timeouts for everyone."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the in-flight limit must be at least 1")
        self.limit = limit
        self.inflight = 0

    def try_enter(self) -> bool:
        if self.inflight >= self.limit:
            return False
        self.inflight += 1
        return True

    def leave(self) -> None:
        assert self.inflight > 0
        self.inflight -= 1


class MarketAdmission:
    """A bound on in-flight bet placements per market, below the worker's
    whole bound (`Admission`): one market flooded with bets — a pathological
    or hot market, a bot — takes at most `limit` of the worker's slots and
    is shed alone, while bets on every other market keep being admitted. A
    bet takes a slot on each market of its legs, all or none."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the per-market in-flight limit must be at least 1")
        self.limit = limit
        self.inflight: dict[str, int] = {}
        """market id → bets in flight on it (no entry: none)."""

    def try_enter(self, markets: Iterable[str]) -> str | None:
        """None if admitted (a slot taken on each market), else the first
        market at its limit (nothing taken)."""
        wanted = sorted(set(markets))
        for market in wanted:
            if self.inflight.get(market, 0) >= self.limit:
                return market
        for market in wanted:
            self.inflight[market] = self.inflight.get(market, 0) + 1
        return None

    def leave(self, markets: Iterable[str]) -> None:
        for market in set(markets):
            left = self.inflight[market] - 1
            if left:
                self.inflight[market] = left
            else:
                del self.inflight[market]


class IpFilter:
    """Deny wins over allow; an empty allow list allows every address."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in allow
        )
        self.deny: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in deny
        )

    def permits(self, address: str) -> bool:
        if not self.allow and not self.deny:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return not self.allow
        if any(ip in network for network in self.deny):
            return False
        return not self.allow or any(ip in network for network in self.allow)


class BadForwardedFor(ValueError):
    """An `X-Forwarded-For` hop that must be read is not an IP address."""


class ForwardedFor:
    """The client address behind trusted proxies.

    Only a connection from a trusted proxy has its `X-Forwarded-For` read,
    from the right (each proxy appends the address it saw): the client is
    the rightmost address that is not a trusted proxy. Hops left of it were
    written by the client and are never believed (nor parsed). A hop that must
    be read and is not a bare IP address refuses the request: guessing would
    let a client pick the address its limits are counted against."""

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self.trusted: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in trusted
        )

    def client(self, peer: str, forwarded: Iterable[str]) -> str:
        """The client address; `forwarded`: the header's values in order.
        Raises `BadForwardedFor`."""
        if not self.trusted or not self._is_trusted(peer):
            return peer
        hops = [hop.strip() for value in forwarded for hop in value.split(",")]
        if not hops:
            return peer
        for hop in reversed(hops):
            try:
                address = ipaddress.ip_address(hop)
            except ValueError:
                raise BadForwardedFor(hop[:64]) from None
            if not any(address in network for network in self.trusted):
                return str(address)
        return str(ipaddress.ip_address(hops[0]))

    def _is_trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)


class ConnectionCaps:
    """Open WebSockets per client address and per principal (one worker's)."""

    def __init__(self, per_ip: int, per_principal: int) -> None:
        if per_ip < 1 or per_principal < 1:
            raise ValueError("the WebSocket caps must be positive")
        self.per_ip = per_ip
        self.per_principal = per_principal
        self._by_ip: dict[str, int] = {}
        self._by_principal: dict[str, int] = {}

    def try_open(self, ip: str, principal: str) -> str | None:
        """None if the socket may open (and it is counted), else the reason."""
        if self._by_ip.get(ip, 0) >= self.per_ip:
            return f"at most {self.per_ip} WebSockets per address"
        if self._by_principal.get(principal, 0) >= self.per_principal:
            return f"at most {self.per_principal} WebSockets per principal"
        self._by_ip[ip] = self._by_ip.get(ip, 0) + 1
        self._by_principal[principal] = self._by_principal.get(principal, 0) + 1
        return None

    def close(self, ip: str, principal: str) -> None:
        for table, key in ((self._by_ip, ip), (self._by_principal, principal)):
            count = table[key] - 1
            if count:
                table[key] = count
            else:
                del table[key]

    @property
    def open(self) -> int:
        return sum(self._by_ip.values())
