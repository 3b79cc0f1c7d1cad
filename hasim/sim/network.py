"""Hosts, processes and TCP connections as a peer sees them (docs/model.md, connections and faults).

A connect ends three ways: accepted after a round trip; refused after one round trip (the
process is down but its host's kernel answers RST); or unanswered (host off, blackhole,
partition) until the connector's own timeout. An established connection learns of a
process crash at once (the kernel sends FIN/RST) and of a blackhole never: only a timer
of a peer (HTTP/2 ping, nginx ``proxy_timeout``, HAProxy timeouts, ``tcp_retries2``)
ends it. A host that comes back has forgotten its connections: the next packet of an old
connection gets RST.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import simpy

from hasim.sim.kernel import Environment, Wait

if TYPE_CHECKING:
    from hasim.sim.records import Recorder

Proc = tuple[str, str]  # (host, component)

OK = "ok"
REFUSED = "refused"
BLACKHOLE = "blackhole"
RESET = "reset"
#: Why a client closes its own session while it lives on and redials at once: its HTTP/2
#: health check failed, an HTTP/1.1 request timed out, the kernel gave up on unacked data
#: or on keepalive probes, or the kubelet closes after repeated heartbeat failures.
CLIENT_CLOSES = frozenset({"http2 ping timeout", "request timeout", "tcp_retries2",
                           "tcp keepalive", "repeated heartbeat failure"})


def syn_schedule(retries: int = 6, linear: int = 0) -> tuple[tuple[float, ...], float]:
    """When Linux retransmits an unanswered SYN, and when it gives up.

    RTOs start at ``TCP_TIMEOUT_INIT`` (1 s); the first ``tcp_syn_linear_timeouts`` + 1 of
    them stay at 1 s (Linux >= 6.5: "1, 1, 1, 1, 1, 2, 4, ..." at its default 4), the rest
    double; ``tcp_syn_retries`` retransmissions, then the last RTO runs out. Classic
    (linear 0, retries 6): SYNs at 1, 3, 7, 15, 31, 63 s after the first, failure at 127 s.
    """
    rtos = [1.0] * (linear + 1) + [2.0 ** k for k in range(1, retries + 1)]
    rtos = rtos[: retries + 1]
    return tuple(accumulate(rtos[:-1])), float(sum(rtos))


class Network:
    """Up/down state of hosts and processes, partitions, slowness, and live sessions."""

    def __init__(self, env: Environment, rtt: float, recorder: Recorder,
                 syn_retries: int = 6, syn_linear_timeouts: int = 0) -> None:
        self.env = env
        self.rtt = rtt
        #: SYN retransmission times after a connect's first SYN, and the kernel's give-up.
        self.syn_resends, self.syn_give_up = syn_schedule(syn_retries, syn_linear_timeouts)
        self.rec = recorder
        #: Bumped by every change of what a packet meets (hosts, processes, epochs,
        #: partitions, slowness): a Session re-evaluates its path only when it moved.
        self.version = 0
        self.host_up: dict[str, bool] = {}
        self.alive: dict[Proc, bool] = {}
        self.epoch: dict[Proc, int] = {}
        self.slow: dict[Proc, float] = {}
        self.blocked: set[frozenset[str]] = set()
        # Insertion-ordered (dict keys, not a set): a crash closes sessions in the order
        # they opened, so the same seed wakes clients in the same order in every process.
        self.sessions: dict[Proc, dict[Session, None]] = {}
        #: Called with (proc, up) when a process starts or stops, for components to react.
        self.watchers: dict[Proc, list[Callable[[bool], None]]] = {}
        #: Called after any change of hosts, processes or partitions (etcd, VIPs re-evaluate).
        self.on_change: list[Callable[[], None]] = []
        #: Called just BEFORE any change of what a packet meets (hosts, processes,
        #: partitions, slowness), while the old state still holds: what catches up lazily
        #: on the state (hasim.sim.sampling's aggregate health checks) does it then.
        self.before_change: list[Callable[[], None]] = []
        #: Processes a supervisor restarts after a crash (systemd ``RestartSec``), in seconds.
        self.restart_after: dict[Proc, float] = {}
        #: Processes a fault holds down: the supervisor's restarts fail until it ends.
        self.held: set[Proc] = set()

    # -- state ------------------------------------------------------------------------------
    def add_process(self, proc: Proc) -> None:
        self.host_up.setdefault(proc[0], True)
        self.alive[proc] = True
        self.epoch[proc] = 0
        self.version += 1

    def reachable(self, a: str, b: str) -> bool:
        """Whether packets flow between hosts ``a`` and ``b`` (both up, not partitioned)."""
        if a == b:
            return self.host_up.get(a, True)
        return (
            self.host_up.get(a, True)
            and self.host_up.get(b, True)
            and (not self.blocked or frozenset((a, b)) not in self.blocked)
        )

    def is_alive(self, proc: Proc) -> bool:
        return self.alive.get(proc, False) and self.host_up.get(proc[0], True)

    def connect(self, src: str, dst: Proc) -> str:
        """Outcome of a TCP connect from host ``src`` to ``dst``: OK, REFUSED or BLACKHOLE."""
        if not self.reachable(src, dst[0]):
            return BLACKHOLE
        if not self.alive.get(dst, False):
            return REFUSED
        return OK

    def dial(self, src: str, dst: Proc, limit: float) -> Generator[Wait, Any, str]:
        """A TCP connect as it takes time: OK or REFUSED one round trip after the SYN that
        got through, or BLACKHOLE when ``limit`` (the connector's own connect timeout)
        runs out first. An unanswered SYN is resent at the kernel's retransmission times
        (:func:`syn_schedule`), so a path that heals mid-connect answers the next
        resend: the lab measured a connect blackholed for 4 s completing 0.07 s after the
        DROP rules went (Linux 6.x, SYNs every second)."""
        env = self.env
        start = env.now
        outcome = self.connect(src, dst)
        if outcome == BLACKHOLE:
            for t in self.syn_resends:
                if t >= limit:
                    break
                yield env.sleep(start + t - env.now)
                outcome = self.connect(src, dst)
                if outcome != BLACKHOLE:
                    break
            if outcome == BLACKHOLE:
                yield env.sleep(max(start + limit - env.now, 0.0))
                return BLACKHOLE
        yield env.sleep(self.rtt)
        return outcome

    # -- faults -----------------------------------------------------------------------------
    def crash(self, proc: Proc, cause: str) -> None:
        """The process dies; its kernel closes every connection of it at once (FIN/RST)."""
        if not self.alive.get(proc, False):
            return
        self._before()
        self.alive[proc] = False
        self.version += 1
        self._notify(proc, False)
        for sess in list(self.sessions.get(proc, ())):
            sess.close(cause, self.env.now)
        self.changed()
        if proc in self.restart_after:
            self.env.process(self._supervise(proc))

    def _supervise(self, proc: Proc):  # type: ignore[no-untyped-def]
        """systemd restarts a crashed unit after ``RestartSec`` while its host is up."""
        while not self.alive.get(proc, False):
            yield self.env.sleep(self.restart_after[proc])
            if self.host_up.get(proc[0], True) and proc not in self.held:
                self.start(proc)

    def start(self, proc: Proc) -> None:
        """The process (re)starts with no memory of old connections."""
        if self.alive.get(proc, False):
            return
        self._before()
        self.alive[proc] = True
        self.epoch[proc] = self.epoch.get(proc, 0) + 1
        self.version += 1
        self._notify(proc, True)
        self.changed()

    def power_off(self, host: str) -> None:
        """The host vanishes: no FIN, no RST; its peers hear nothing at all."""
        self._before()
        self.host_up[host] = False
        self.version += 1
        for proc in [p for p in self.alive if p[0] == host]:
            if self.alive[proc]:
                self.alive[proc] = False
                self.epoch[proc] += 1
                self.version += 1
                self._notify(proc, False)
        self.changed()

    def power_on(self, host: str) -> None:
        """The host boots and its processes start afresh."""
        self._before()
        self.host_up[host] = True
        self.version += 1
        for proc in [p for p in self.alive if p[0] == host]:
            self.start(proc)
        self.changed()

    def partition(self, pairs: set[frozenset[str]]) -> set[frozenset[str]]:
        """Drop packets between each pair of hosts; returns the pairs newly blocked."""
        self._before()
        new = pairs - self.blocked
        self.blocked |= new
        self.version += 1
        self.changed()
        return new

    def heal(self, pairs: set[frozenset[str]]) -> None:
        self._before()
        self.blocked.difference_update(pairs)
        self.version += 1
        self.changed()

    def add_slow(self, proc: Proc, delay: float) -> None:
        """``proc`` answers ``delay`` seconds later (negative: a slow fault ends)."""
        self._before()
        self.slow[proc] = self.slow.get(proc, 0.0) + delay
        self.version += 1

    def new_epoch(self, proc: Proc) -> None:
        """``proc`` forgets its connections without dying (a VIP moving to a new holder):
        an old connection's next packet meets RST."""
        self._before()
        self.epoch[proc] = self.epoch.get(proc, 0) + 1
        self.version += 1

    def _before(self) -> None:
        for fn in self.before_change:
            fn()

    def changed(self) -> None:
        for fn in list(self.on_change):
            fn()

    def _notify(self, proc: Proc, up: bool) -> None:
        for fn in self.watchers.get(proc, ()):
            fn(up)

    def watch(self, proc: Proc, fn: Callable[[bool], None]) -> None:
        self.watchers.setdefault(proc, []).append(fn)

    # -- sessions ---------------------------------------------------------------------------
    def register(self, sess: Session) -> None:
        for proc in sess.procs:
            self.sessions.setdefault(proc, {})[sess] = None

    def unregister(self, sess: Session) -> None:
        for proc in sess.procs:
            s = self.sessions.get(proc)
            if s is not None:
                s.pop(sess, None)


class Session:
    """A client's connection to an apiserver, possibly through proxies (one TCP
    connection per hop). Closing any hop closes the whole chain: a proxy that sees FIN
    or RST on one side closes the other at once (nginx stream, HAProxy mode tcp).

    ``hops`` lists ``(src_host, dst_proc, dst_epoch)`` of each TCP connection.
    """

    __slots__ = (
        "net",
        "client",
        "hops",
        "procs",
        "backend",
        "opened_at",
        "last_read",
        "last_activity",
        "closed_at",
        "cause",
        "broken",
        "on_close",
        "unacked_since",
        "lb",
        "_ver",
        "_st",
        "_dver",
        "_delay",
    )

    def __init__(
        self,
        net: Network,
        client: Proc,
        hops: list[tuple[str, Proc]],
        backend: Proc | None,
        lb: str | None = None,
    ) -> None:
        self.net = net
        self.client = client
        self.hops = [(src, dst, net.epoch.get(dst, 0)) for src, dst in hops]
        # Ordered and de-duplicated, for deterministic registration.
        self.procs = list(dict.fromkeys([client] + [dst for _, dst in hops]))
        self.backend = backend
        self.lb = lb
        now = net.env.now
        self.opened_at = now
        self.last_read = now
        self.last_activity = now
        self.closed_at: float | None = None
        self.cause = ""
        self.broken: simpy.Event | None = None
        self.on_close: list[Callable[[Session], None]] = []
        self.unacked_since: float | None = None
        # state() and delay() as of Network.version _ver/_dver (-1: not yet computed).
        self._ver = -1
        self._st = OK
        self._dver = -1
        self._delay = 0.0
        net.register(self)

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def state(self) -> str:
        """What a packet sent now meets: OK, BLACKHOLE, or RESET (the chain is closed or a
        hop's far end has restarted and answers RST)."""
        if self.closed_at is not None:
            return RESET
        net = self.net
        if self._ver == net.version:
            return self._st
        st = OK
        for src, dst, epoch in self.hops:
            if not net.reachable(src, dst[0]):
                st = BLACKHOLE
                break
            if net.epoch.get(dst, 0) != epoch or not net.alive.get(dst, False):
                st = RESET
                break
        self._ver = net.version
        self._st = st
        return st

    def delay(self) -> float:
        """One request-response exchange: a round trip per hop plus slowness of the hops."""
        net = self.net
        if self._dver == net.version:
            return self._delay
        extra = 0.0
        if net.slow:
            for _, dst, _ in self.hops:
                extra += net.slow.get(dst, 0.0)
        self._dver = net.version
        self._delay = d = len(self.hops) * net.rtt + extra
        return d

    def add_hop(self, src: str, dst: Proc) -> None:
        """Put a first hop in front of the chain (a VIP between client and LB)."""
        self.hops.insert(0, (src, dst, self.net.epoch.get(dst, 0)))
        self._ver = self._dver = -1

    def wait_broken(self) -> simpy.Event:
        """An event that fires when the session closes."""
        if self.broken is None:
            self.broken = self.net.env.event()
            if self.closed_at is not None:
                self.broken.succeed(self.cause)
        return self.broken

    def close(self, cause: str, now: float) -> None:
        if self.closed_at is not None:
            return
        self.closed_at = now
        self.cause = cause
        self.net.unregister(self)
        if self.broken is not None and not self.broken.triggered:
            self.broken.succeed(cause)
        for fn in self.on_close:
            fn(self)
