"""etcd: the raft cluster, the v2 proxy of 2016, and what an etcd client can reach.

Raft (MODEL.md §3, etcd ``raft/raft.go``): the leader sends a heartbeat every
``heartbeat_interval``; a follower that hears nothing for its randomized election timeout
(drawn in [E, 2E) afresh each term) becomes a candidate, and wins with the votes of a
majority one round trip later. A leader that cannot reach a majority steps down
(CheckQuorum). Without a majority of members up and connected there is no leader and no
write. hasim evaluates this when the network changes rather than simulating every
heartbeat: a leader loss at ``t`` means the last heartbeat was at ``t - U(0, H)``, and
each surviving follower times out at that instant plus its own U[E, 2E).

The etcd v2 proxy (``proxy/httpproxy``; MODEL.md §2.4) on each ``k8s-cluster`` host that
is not a member: it tries the available endpoints in order; an endpoint that fails is
skipped for ``failure-wait`` (5 s); every ``refresh-interval`` (30 s) it shuffles the
endpoints and marks all available; a connect waits at most ``dial-timeout`` (1 s); all
tried and failed: 502. When the proxy dies, kubespray's unit restarts it after 15 s
(``RestartSec=15s``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from hasim.scenario import EtcdSpec
from hasim.sim.kernel import Environment, Wait
from hasim.sim.network import OK, REFUSED, Network, Proc
from hasim.sim.records import FOLD, Recorder

FAILURE_WAIT = 5.0
REFRESH_INTERVAL = 30.0
DIAL_TIMEOUT = 1.0
PROXY_RESTART_SEC = 15.0


def request_timeout(spec: EtcdSpec) -> float:
    """etcd's ``ReqTimeout``: 5 s + 2 x election timeout (etcdserver ``config.go``). A
    proposal made while a member knows no live leader waits this long and then fails with
    "etcdserver: request timed out" (docs/lab.md, etcd writes)."""
    return 5.0 + 2.0 * spec.election_timeout


def writes_back_after(election_s: float, client_timeout: float, spec: EtcdSpec) -> float:
    """When a client writing in a loop (one write at a time, each with
    ``client_timeout``) succeeds again after the leader dies, under this model: every
    write proposed before the new leader exists hangs ``min(request_timeout,
    client_timeout)`` and fails (the one in flight at the death included), the first one
    proposed after it succeeds. The lab's etcd write cell compares this with real etcd."""
    hang = min(request_timeout(spec), client_timeout)
    return hang * max(1, math.ceil(election_s / hang - 1e-12))


class EtcdCluster:
    """The raft group: who leads, and whether a member can reach a leader with quorum."""

    def __init__(self, env: Environment, net: Network, rec: Recorder, hosts: list[str],
                 spec: EtcdSpec, rng: np.random.Generator) -> None:
        self.env, self.net, self.rec = env, net, rec
        self.members: list[Proc] = [(h, "etcd") for h in hosts]
        self.spec = spec
        self.rng = rng
        self.quorum = len(hosts) // 2 + 1
        self.leader: Proc | None = self.members[0] if hosts else None
        self.term = 1
        self.electing = False
        #: Bumped on every change of ``leader`` or ``electing`` (what ``committed`` reads
        #: besides the network), so that a caller may keep an answer while it and
        #: ``Network.version`` stay put.
        self.version = 0
        #: (time, member, term, lost_at, last_heartbeat_at, election_s)
        self.elections: list[tuple[float, str, int, float, float, float]] = []
        self._change = env.event()
        #: Called whenever the leader or the electing flag changes (what :meth:`committed`
        #: reads besides the network): the apiservers' health cache listens.
        self.on_leader_change: list[Callable[[], None]] = []
        #: Called just before such a change, while the old leader still counts.
        self.before_leader_change: list[Callable[[], None]] = []
        if self.leader is not None:
            rec.state(0.0, "etcd", self.leader[0], "raft", "follower", "leader", "initial leader")
        net.on_change.append(self._on_change)

    # -- what clients can reach ---------------------------------------------------------------
    def _connected(self, m: Proc) -> int:
        net = self.net
        return sum(1 for o in self.members if net.is_alive(o) and net.reachable(m[0], o[0]))

    def has_quorum(self, m: Proc) -> bool:
        """Whether member ``m`` is up and connected to a majority (itself included)."""
        return self.net.is_alive(m) and self._connected(m) >= self.quorum

    def committed(self, member: Proc) -> bool:
        """Whether a request handed to ``member`` is committed: a leader with quorum exists
        and ``member`` reaches it (a follower forwards to the leader)."""
        lead = self.leader
        net = self.net
        return (
            lead is not None
            and not self.electing
            and net.is_alive(member)
            and (member == lead or net.reachable(member[0], lead[0]))
        )

    def stalls(self, src_host: str, endpoints: list[Proc]) -> bool:
        """Whether a write from ``src_host`` would hang rather than fail at once: a member
        of ``endpoints`` is up and reachable, but no leader can commit (an election, or a
        lost quorum). The member accepts the proposal, forwards it to a leader that is
        gone or drops it, and the proposal waits for :func:`request_timeout`."""
        if self.leader is not None and not self.electing:
            return False
        net = self.net
        return any(net.is_alive(m) and net.reachable(src_host, m[0]) for m in endpoints)

    def serves(self, src_host: str, endpoints: list[Proc]) -> bool:
        """Whether a client on ``src_host`` given ``endpoints`` (members) gets an answer."""
        net = self.net
        return any(
            net.reachable(src_host, m[0]) and self.committed(m) for m in endpoints
        )

    # -- raft ---------------------------------------------------------------------------------
    def _leader_changed(self) -> None:
        self.version += 1
        for fn in self.on_leader_change:
            fn()

    def _on_change(self) -> None:
        if not self._change.triggered:
            self._change.succeed()
        self._change = self.env.event()
        lead = self.leader
        if lead is not None and self.has_quorum(lead):
            return
        if self.electing:
            return
        now = self.env.now
        for fn in self.before_leader_change:
            fn()
        if lead is not None:
            self.rec.state(now, "etcd", lead[0], "raft", "leader", "follower",
                           "leader lost (down or no quorum)")
            self.leader = None
        self.electing = True
        self._leader_changed()
        last_hb = now - float(self.rng.uniform(0, self.spec.heartbeat_interval))
        self.env.process(self._elect(now, last_hb))

    def _elect(self, lost_at: float, last_hb: float) -> Generator[Wait, Any, None]:
        """Followers time out at ``last_hb + U[E, 2E)``; the first that can gather a
        majority campaigns and wins one round trip later.

        Each member's election timer keeps running from the last heartbeat it heard while
        the network changes under it (etcd ``raft.go``: ``electionElapsed`` is reset only by
        a message from a leader or a higher-term candidate, ``randomizedElectionTimeout``
        only on a term change). So when the would-be winner dies before its timer fires,
        the next survivor campaigns on its own, already running timer. Before, the model
        waited for the dead member's timer and then drew fresh timeouts for everyone,
        which stretched the election to up to 4E after the last heartbeat. A member that
        campaigns without a majority starts a new term with a new timeout (``becomeCandidate``
        resets it), so it campaigns again every U[E, 2E); a member that (re)starts draws
        its first timeout from its boot.
        """
        env, spec, net = self.env, self.spec, self.net
        e = spec.election_timeout

        def draw(since: float) -> float:
            return since + float(self.rng.uniform(e, 2 * e))

        # Every member draws its timeout, in member order, so that runs compare.
        timeouts = {m: draw(last_hb) for m in self.members}
        alive = {m: net.is_alive(m) for m in self.members}
        while True:
            now = env.now
            for m in self.members:
                up = net.is_alive(m)
                if up and not alive[m]:
                    timeouts[m] = draw(now)
                elif up and timeouts[m] < now:  # campaigned in vain: new term, new timeout
                    timeouts[m] = self._next_campaign(timeouts[m], now)
                alive[m] = up
            able = [m for m in self.members if self.has_quorum(m)]
            if not able:
                yield self._change  # nothing can win until the network changes
                continue
            winner = min(able, key=lambda m: timeouts[m])
            if timeouts[winner] > now:
                yield env.timeout(timeouts[winner] - now) | self._change
                if env.now < timeouts[winner]:
                    continue  # the network changed first: look again, timers still running
            yield env.sleep(net.rtt)  # RequestVote out, votes back
            if self.has_quorum(winner):
                for fn in self.before_leader_change:
                    fn()
                self.term += 1
                self.leader = winner
                self.electing = False
                self._leader_changed()
                self.elections.append((env.now, winner[0], self.term, lost_at, last_hb,
                                       env.now - last_hb))
                self.rec.state(env.now, "etcd", winner[0], "raft", "candidate", "leader",
                               f"won term {self.term}")
                return
            # The candidate lost its majority mid-vote: its RequestVote (a higher term)
            # reset the timers of the members it reached, and a new term starts.
            last_hb = env.now
            timeouts = {m: draw(last_hb) for m in self.members}


    def _next_campaign(self, since: float, now: float) -> float:
        """The first campaign after ``now`` of a member that has campaigned in vain every
        U[E, 2E) since ``since``. Long runs of failed campaigns (a quorum lost for hours)
        jump to the renewal process's stationary forward recurrence time: a gap drawn
        length-biased, a uniform point within it."""
        e = self.spec.election_timeout
        t = since
        for _ in range(64):
            t += float(self.rng.uniform(e, 2 * e))
            if t >= now:
                return t
        while True:  # density of a length-biased gap on [E, 2E) is proportional to g
            g = float(self.rng.uniform(e, 2 * e))
            if float(self.rng.random()) * 2 * e <= g:
                return now + g * float(self.rng.random())


class EtcdProxy:
    """The etcd v2 proxy on one host (2016, ``etcd_multiaccess: false``). Slotted, as
    :class:`hasim.sim.clients.Client` is: flannel goes through it every ``period``."""

    __slots__ = ("env", "net", "etcd", "backends", "died_at", "failed_until", "host",
                 "next_refresh", "perm", "proc", "rng", "_fast")

    def __init__(self, env: Environment, net: Network, host: str, backends: list[Proc],
                 etcd: EtcdCluster, rng: np.random.Generator) -> None:
        self.env, self.net, self.etcd = env, net, etcd
        self.host = host
        self.proc: Proc = (host, "etcd-proxy")
        self.backends = list(backends)
        #: The order the endpoints are tried in, as positions in ``backends``: shuffling
        #: these small ints draws the same permutation from ``rng`` as shuffling the
        #: endpoints themselves would, without touching the endpoint tuples.
        self.perm = list(range(len(self.backends)))
        self.failed_until: dict[Proc, float] = {}
        self.rng = rng
        self.next_refresh = REFRESH_INTERVAL * float(rng.random())
        self.died_at: float | None = None
        #: (client host, Network.version, EtcdCluster.version) at which a request from
        #: that host was last answered by the first endpoint of the order with nothing
        #: marked failed: while all still hold, the next one is answered the same way.
        self._fast: tuple[str, int, int] | None = None
        net.add_process(self.proc)
        net.watch(self.proc, self._on_state)

    @property
    def order(self) -> list[Proc]:
        """The endpoints in the order they are tried."""
        return [self.backends[i] for i in self.perm]

    def _on_state(self, up: bool) -> None:
        """systemd (``Restart=always``, ``RestartSec=15s``) starts the unit again 15 s after
        it died, if its host is up and no fault holds it down; a fault that holds it
        starts it itself when it ends, and a host that boots starts all its processes.

        One restart attempt per death, not ``Network.restart_after``'s supervisor: that
        one re-checks every RestartSec for as long as a fault holds the process down,
        28.6 million events in a 50-year structural run with 72 h repairs (524 s instead
        of 2 s). A restarted proxy has no memory of failed endpoints."""
        if up:
            self.failed_until.clear()
            return
        self.died_at = died_at = self.env.now
        self.env.process(self._restart(died_at))

    def _restart(self, died_at: float) -> Generator[Wait, Any, None]:
        yield self.env.sleep(PROXY_RESTART_SEC)
        net = self.net
        if (self.died_at == died_at and not net.alive.get(self.proc, False)
                and net.host_up.get(self.host, True) and self.proc not in net.held):
            net.start(self.proc)

    def _refresh(self) -> None:
        now = self.env.now
        while now >= self.next_refresh:
            self.next_refresh += REFRESH_INTERVAL
            self.rng.shuffle(self.perm)
            self.failed_until.clear()
        self._fast = None

    def request(self, client_host: str) -> Generator[Wait, Any, str]:
        """One client request through the proxy: ``ok``, ``refused`` (proxy down) or
        ``error`` (502/503: no endpoint answered)."""
        env, net = self.env, self.net
        now = env.now
        fast = self._fast
        if (fast is not None and now < self.next_refresh and not self.failed_until
                and fast[0] == client_host and fast[1] == net.version
                and fast[2] == self.etcd.version):
            # Nothing a packet meets and no leader changed since a request from this host
            # was answered by the first endpoint, and none is marked failed: the lookups
            # below would give the same answer.
            yield env.sleep(2 * net.rtt)
            return OK
        if net.connect(client_host, self.proc) != OK:
            yield env.sleep(0.0)
            return REFUSED
        if now >= self.next_refresh:
            self._refresh()
        failed_until = self.failed_until
        first = not failed_until
        for m in self.order:
            if failed_until and failed_until.get(m, -1.0) > now:
                continue
            outcome = net.connect(self.host, m)
            if outcome == OK and self.etcd.committed(m):
                if first:
                    self._fast = (client_host, net.version, self.etcd.version)
                yield env.sleep(2 * net.rtt)
                return OK
            first = False
            self._fast = None
            yield env.sleep(net.rtt if outcome in (OK, REFUSED) else DIAL_TIMEOUT)
            self.failed_until[m] = env.now + FAILURE_WAIT
            now = env.now
        return "error"


class Flannel:
    """flannel's etcd traffic (2016): its subnet watch, re-established every ``period``.

    Its config writer takes ONE ``--etcd-server`` (the first of the list), so with
    ``etcd_multiaccess`` it has no failover; through the local proxy it has the proxy's.
    """

    __slots__ = ("env", "net", "rec", "etcd", "host", "member", "name", "offset", "proc",
                 "proxy", "up")

    PERIOD = 10.0
    TIMEOUT = 10.0

    def __init__(self, env: Environment, net: Network, rec: Recorder, host: str,
                 etcd: EtcdCluster, proxy: EtcdProxy | None, member: Proc | None,
                 rng: np.random.Generator) -> None:
        self.env, self.net, self.rec, self.etcd = env, net, rec, etcd
        self.host = host
        self.proc: Proc = (host, "flannel")
        self.name = f"{host}/flannel"
        self.proxy = proxy
        self.member = member
        self.offset = float(rng.uniform(0, self.PERIOD))
        net.add_process(self.proc)
        #: Network.is_alive(self.proc), kept by the watcher (every change notifies).
        self.up = True
        net.watch(self.proc, self._on_state)

    def _on_state(self, up: bool) -> None:
        self.up = up

    def start(self) -> None:
        self.env.process(self._run())

    def _once(self) -> Generator[Wait, Any, tuple[str, str]]:
        env, net = self.env, self.net
        if self.proxy is not None:
            outcome = yield from self.proxy.request(self.host)
            return outcome, self.host
        assert self.member is not None
        m = self.member
        outcome = net.connect(self.host, m)
        if outcome == OK:
            yield env.sleep(2 * net.rtt)
            return (OK if self.etcd.committed(m) else "error"), m[0]
        if outcome == REFUSED:
            yield env.sleep(net.rtt)
            return REFUSED, m[0]
        yield env.sleep(self.TIMEOUT)
        return "timeout", m[0]

    def _run(self) -> Generator[Wait, Any, None]:
        env, proxy = self.env, self.proxy
        # Recorder.request's fields, added to the request log's latest rows directly
        # (one call less per poll); the log folds them into its columns.
        requests = self.rec.requests
        rows = requests.rows
        yield env.sleep(self.offset)
        while True:
            if self.up:
                start = env.now
                if proxy is not None:  # the common case, without _once's generator
                    outcome = yield from proxy.request(self.host)
                    backend = self.host
                else:
                    outcome, backend = yield from self._once()
                rows += (self.name, self.host, start, env.now, outcome, backend, "etcd")
                if len(rows) >= FOLD:
                    requests.fold()
            yield env.sleep(self.PERIOD)
