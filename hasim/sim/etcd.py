"""etcd: the raft cluster, the v2 proxy of 2016, and what an etcd client can reach.

Raft (docs/model.md, etcd; the rules in :mod:`hasim.sim.raft`): each member ticks every
``heartbeat_interval`` H on its own ticker; the leader sends a heartbeat on each of its
ticks; a follower campaigns at the tick where the ticks since it last heard a leader reach
its randomized timeout, a whole number in [E/H, 2E/H). CheckQuorum's lease makes a follower
that heard the leader less than E/H ticks ago ignore a vote request, so some elections take
a second term; ``etcd.pre_vote`` changes that. A leader that cannot reach a majority steps
down. Without a majority of members up and connected there is no leader and no write.
hasim evaluates this when the network changes and at each campaign, not at every tick: a
leader lost at ``t`` sent its last heartbeat at its last tick before ``t``.

The etcd v2 proxy (``proxy/httpproxy``; docs/model.md, the etcd v2 proxy) on each
``k8s-cluster`` host that is not a member: it tries the available endpoints in order; an
endpoint that fails is skipped for ``failure-wait`` (5 s); every ``refresh-interval``
(30 s) it shuffles the endpoints and marks all available; a connect waits at most
``dial-timeout`` (1 s); all tried and failed: 502. When the proxy dies, kubespray's unit
restarts it after 15 s (``RestartSec=15s``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Generator
from functools import partial
from typing import Any

import numpy as np

from hasim.sim.kernel import Environment, Wait
from hasim.sim.model import Model, builds
from hasim.sim.network import OK, REFUSED, Network, Proc
from hasim.sim.raft import RaftMember, RaftTimers, adopt, pre_vote, vote
from hasim.sim.records import FOLD, Recorder
from hasim.spec.scenario import EtcdSpec

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
        self.timers = RaftTimers(spec.heartbeat_interval, spec.election_timeout, rng)
        #: Each member's ticker phase, set when it starts (drawn again when it restarts).
        self.phases: dict[Proc, float] = {m: self.timers.phase() for m in self.members}
        for m in self.members:
            net.watch(m, partial(self._on_member_state, m))
        self.leader: Proc | None = self.members[0] if hosts else None
        #: The follower a gracefully stopped leader hands its leadership to (:meth:`stopping`).
        self._transferee: Proc | None = None
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
    def _connected(self, m: Proc, leaving: Collection[Proc] = ()) -> int:
        """Members up and reachable from ``m`` (itself included), less those ``leaving``."""
        net = self.net
        return sum(1 for o in self.members
                   if o not in leaving and net.is_alive(o) and net.reachable(m[0], o[0]))

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
        to, self._transferee = self._transferee, None
        if lead is not None:
            self.rec.state(now, "etcd", lead[0], "raft", "leader", "follower",
                           "leadership handed over (stop)" if to is not None
                           else "leader lost (down or no quorum)")
            self.leader = None
        self.electing = True
        self._leader_changed()
        if to is not None and self.has_quorum(to):
            self.env.process(self._hand_over(now, to))
            return
        # The leader's last heartbeat went out on its last tick.
        last_hb = self.timers.last_tick(self.phases[lead], now) if lead is not None else now
        self.env.process(self._elect(now, last_hb, lead))

    def stopping(self, procs: set[Proc]) -> None:
        """A ``stop`` fault is about to stop ``procs``. etcd's graceful stop (SIGTERM:
        ``EtcdServer.Stop`` calls ``TransferLeadership`` before ``HardStop``) hands a
        leader's role to an up-to-date follower first, so the cluster has no election to
        wait for. The follower must stay up, reach the leader and a majority."""
        lead = self.leader
        if lead is None or lead not in procs or self.electing:
            return
        net = self.net
        for m in self.members:
            if (m != lead and m not in procs and net.is_alive(m)
                    and net.reachable(lead[0], m[0])
                    and self._connected(m, procs) >= self.quorum):
                self._transferee = m
                return

    def _hand_over(self, at: float, to: Proc) -> Generator[Wait, Any, None]:
        """The transferee campaigns at once (``MsgTimeoutNow``: a transfer overrides the
        other followers' lease) and leads when its votes are back."""
        yield self.env.sleep(2 * self.net.rtt)  # MsgTimeoutNow out, RequestVote and votes
        if self.has_quorum(to):
            self._win(to, self.term + 1, at, at)
        else:  # the network changed under the transfer: an election as after a crash
            self.env.process(self._elect(at, at, None))

    def _win(self, c: Proc, term: int, lost_at: float, last_hb: float) -> None:
        for fn in self.before_leader_change:
            fn()
        self.term = term
        self.leader = c
        self.electing = False
        self._leader_changed()
        self.elections.append((self.env.now, c[0], term, lost_at, last_hb,
                               self.env.now - last_hb))
        self.rec.state(self.env.now, "etcd", c[0], "raft", "candidate", "leader",
                       f"won term {term}")

    def _on_member_state(self, m: Proc, up: bool) -> None:
        if up:  # a (re)started member's ticker starts now
            self.phases[m] = self.timers.phase()

    def _elect(self, lost_at: float, last_hb: float, old: Proc | None
               ) -> Generator[Wait, Any, None]:
        """Campaigns, in order of the members' timers, until one wins a majority.

        At the loss every follower last heard the leader at ``last_hb`` and knows it (the
        lease applies); the old leader, if alive, steps down knowing no leader. Each live
        member campaigns when its timer fires (:mod:`hasim.sim.raft`): pre-vote first if
        ``etcd.pre_vote``, then a vote in a new term; the reachable live members answer
        by raft's rules, and with a majority the candidate leads one round trip later if
        it still reaches a majority. A member that (re)starts knows no leader and times
        out from its boot. Each member's timer keeps running while the network changes
        under it (``electionElapsed`` is zeroed only by a leader, a granted vote or a new
        term), so the death of the would-be winner hands the election to the next timer,
        not to a fresh draw for everyone.
        """
        env, net, timers = self.env, self.net, self.timers
        rtt = net.rtt
        term = self.term
        # Every member draws its timeout, in member order, so that runs compare.
        st: dict[Proc, RaftMember] = {}
        for m in self.members:
            r = RaftMember(self.phases[m], term, term, m != old, last_hb, 0)
            timers.restart_timer(r, lost_at if m == old else last_hb)
            st[m] = r
        alive = {m: net.is_alive(m) for m in self.members}
        while True:
            now = env.now
            for m in self.members:
                up = net.is_alive(m)
                if up and not alive[m]:  # (re)started: no leader known, timer from boot
                    r = st[m]
                    r.phase, r.lead = self.phases[m], False
                    timers.restart_timer(r, now)
                alive[m] = up
            live = [m for m in self.members if alive[m]]
            if not any(self.has_quorum(m) for m in live):
                yield self._change  # nothing can win until the network changes
                self._after_no_quorum(st, [m for m in self.members if net.is_alive(m)])
                continue
            c = min(live, key=lambda m: st[m].fire)
            rc = st[c]
            if rc.fire > now:
                yield env.timeout(rc.fire - now) | self._change
                if env.now < rc.fire:
                    continue  # the network changed first: look again, timers still running
            t = env.now
            peers = [v for v in live if v != c and net.reachable(c[0], v[0])]
            if self.spec.pre_vote:
                grants, higher = pre_vote(timers, rc, [st[v] for v in peers], t)
                if higher > rc.term:
                    adopt(timers, rc, higher, t)
                if grants < self.quorum:
                    continue
                yield env.sleep(rtt)  # pre-votes back
                if not self.has_quorum(c):
                    continue
                t = env.now
                peers = [v for v in self.members
                         if v != c and net.is_alive(v) and net.reachable(c[0], v[0])]
            if vote(timers, rc, [st[v] for v in peers], t) < self.quorum:
                continue
            yield env.sleep(rtt)  # RequestVote out, votes back
            if not self.has_quorum(c):
                continue  # it lost its majority mid-vote; its voters' timers were reset
            self._win(c, rc.term, lost_at, last_hb)
            return

    def _after_no_quorum(self, st: dict[Proc, RaftMember], live: list[Proc]) -> None:
        """After a wait with no majority anywhere: every live member has campaigned in
        vain on its own timer (terms not followed one by one: they are made equal, and
        nobody knows a leader); a timer that fired meanwhile moves to its next campaign
        after now (:meth:`_next_campaign`), on the member's tick."""
        now = self.env.now
        top = max(r.term for r in st.values())
        for m in live:
            r = st[m]
            r.term = r.voted = top
            r.lead = False
            if r.fire < now:
                r.fire = self.timers.tick_from(r.phase, self._next_campaign(r.fire, now))

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


@builds("etcd", stage="members")
def _build_member(m: Model, node: str, d: dict[str, Any]) -> None:
    # The raft group itself is one part (EtcdCluster, built before the nodes); a member
    # node is its process.
    m.net.add_process((d["host"], "etcd"))


@builds("etcd-proxy", stage="servers")
def _build_proxy(m: Model, node: str, d: dict[str, Any]) -> None:
    if d["host"] in m.skip:
        return
    m.proxies[node] = EtcdProxy(m.env, m.net, d["host"],
                                [m.proc(v) for v in m.g.successors(node)], m.etcd,
                                m.rng["etcd-proxy"])


@builds("flannel", stage="etcd-clients")
def _build_flannel(m: Model, node: str, d: dict[str, Any]) -> None:
    if d["host"] in m.skip:
        return
    proxy, direct = m.etcd_path(node)
    m.add_client(Flannel(m.env, m.net, m.rec, d["host"], m.etcd, proxy,
                         direct[0] if direct else None, m.rng["clients"]), d)
