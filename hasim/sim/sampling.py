"""Sampled clients for very large clusters: K representative nodes in full, the rest in
aggregate where the nodes are symmetric (scenario ``sampling.nodes``; docs/performance.md).

Why it is sound. A node whose clients reach the apiservers through its own local LB, or
straight (the default mode), shares nothing with another node but the apiservers and
etcd, which hold no per-client state in the model (a request takes ``service_time``
whatever the load; a crash closes every session alike). Given the control plane's
timeline (faults, etcd, leader election, none of which the nodes feed back into), such
nodes are independent and identically distributed: they differ only in their random
phases. So K of them, simulated in full, are a sample of the distribution of the rest:
failover latencies, NotReady intervals, request outcomes. A node behind an external LB
shares that LB's balancing state with every other node and is never aggregated.

What stays exact. The health checks a local HAProxy sends do not depend on its clients,
only on its start phase and on the apiservers as seen from its host. The aggregated
nodes' HAProxies draw their phases from the same stream in the same order as in the full
model, and :class:`AggregateChecks` steps each of their checkers through the same state
machine (``HAProxy._checker``, ``Network.dial``) with the same arithmetic, reading the
network only while it holds still: it catches up just before any change
(``Network.before_change``, ``EtcdCluster.before_leader_change``) and at the end. So the
active checks per apiserver, the LBs' up/down transitions and detection times are those
of the full model to the last bit, with no SimPy event for them.

Symmetric nodes: same components, same endpoints (edge URLs and targets, their own host
standing for itself), no fault aimed at them, the same side of every partition; grouped
in classes, each class larger than K keeps its first K nodes (inventory order). A sampled
node stands for ``weight`` = class size / K nodes.

With ``sampling.shared_lb`` the nodes behind an external LB or a VIP are sampled too, as
an approximation: the LB then balances only the sampled nodes' connections. Its health
checks do not depend on its clients and stay exact; what a client sees depends on which
apiserver its own connection sits on, which round robin or least connections spread over
the apiservers in the same shares for K nodes as for all of them, and on the LB's view of
the backends, which is the same. What is lost is the per-connection queueing of a loaded
LB (``maxconn``), which the model does not exercise at these loads. ``hasim assess`` turns
it on for large clusters and says so in its report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from hasim.kubespray.cluster import MASTER
from hasim.kubespray.targets import resolve_target
from hasim.sim.haproxy import HealthCounter
from hasim.sim.kernel import Environment
from hasim.sim.network import BLACKHOLE, OK, REFUSED, Network, Proc
from hasim.sim.records import Recorder, Tally
from hasim.spec.scenario import Scenario, _HAProxyBase

#: Components that hold no per-client state: nodes may share them and stay independent.
STATELESS_SERVERS = frozenset({"apiserver", "etcd"})


@dataclass
class NodeClass:
    """Symmetric nodes: ``sampled`` simulated in full, the rest in aggregate."""

    members: list[str]
    sampled: list[str]

    @property
    def aggregated(self) -> list[str]:
        keep = set(self.sampled)
        return [h for h in self.members if h not in keep]

    @property
    def weight(self) -> float:
        """Nodes each sampled one stands for."""
        return len(self.members) / len(self.sampled)


@dataclass
class SamplingPlan:
    """Which nodes run in full and what each one stands for."""

    classes: list[NodeClass] = field(default_factory=list)

    @property
    def aggregated(self) -> set[str]:
        return {h for c in self.classes for h in c.aggregated}

    @property
    def weights(self) -> dict[str, float]:
        """Weight of every sampled node (1 for a node outside any sampled class)."""
        return {h: c.weight for c in self.classes for h in c.sampled}


def _host_nodes(g: nx.DiGraph) -> dict[str, list[str]]:
    by_host: dict[str, list[str]] = {}
    for n, d in g.nodes(data=True):
        by_host.setdefault(d["host"], []).append(n)
    return by_host


#: Shared balancers a node may reach and still be sampled with ``sampling.shared_lb``.
SHARED_BALANCERS = frozenset({"external-lb", "vip"})


def _signature(g: nx.DiGraph, host: str, nodes: list[str],
               shared_lb: bool = False) -> tuple[Any, ...] | None:
    """What a host runs and where each of its components connects, its own name left
    out; None when the host is not eligible (a master, a server others depend on, or a
    client of shared stateful parts such as an external LB, unless ``shared_lb``)."""
    parts = []
    for n in nodes:
        d = g.nodes[n]
        if d["component"] in STATELESS_SERVERS or d.get("virtual"):
            return None
        if any(g.nodes[p]["host"] != host for p in g.predecessors(n)):
            return None  # someone else depends on it
        edges = []
        for v in g.successors(n):
            dv = g.nodes[v]
            if dv["host"] == host:
                target: Any = ("self", dv["component"])
            elif dv["component"] in STATELESS_SERVERS:
                target = v
            elif shared_lb and (dv["component"] in SHARED_BALANCERS or dv.get("virtual")):
                target = v  # the approximation of sampling.shared_lb (module docstring)
            else:
                return None  # a shared LB or VIP: its state couples the nodes
            e = g.edges[n, v]
            edges.append((target, e.get("purpose"), e.get("url")))
        parts.append((d["component"], d.get("kind"), d.get("client_class"),
                      tuple(sorted(edges, key=repr))))
    if not any(p[0] == "kubelet" for p in parts):
        return None
    return tuple(sorted(parts, key=repr))


def plan_sampling(scenario: Scenario, g: nx.DiGraph, k: int) -> SamplingPlan:
    """The classes of symmetric nodes and their K representatives (module docstring)."""
    if k <= 0:
        return SamplingPlan()
    cluster = scenario.cluster
    targeted: set[str] = set()
    sides: list[set[str]] = []
    for f in scenario.spec.faults:
        text = f.targets if f.kind == "random" else f.target
        if text:
            targeted |= {h for h, _ in resolve_target(scenario, text)}
        if f.kind == "partition" and f.peers:
            sides.append({h for h, _ in resolve_target(scenario, f.peers)})
    by_host = _host_nodes(g)
    classes: dict[tuple[Any, ...], list[str]] = {}
    for h in cluster.hosts:
        if h.name in targeted or MASTER in h.groups or h.name not in by_host:
            continue
        sig = _signature(g, h.name, by_host[h.name], scenario.spec.sampling.shared_lb)
        if sig is None:
            continue
        key = (sig, tuple(h.name in side for side in sides))
        classes.setdefault(key, []).append(h.name)
    return SamplingPlan([NodeClass(members, members[:k]) for members in classes.values()
                         if len(members) > k])


# --- the aggregated nodes' local HAProxy health checks --------------------------------------

_START, _RESEND, _CONNECTED, _REPLIED, _REPORT = range(5)


class _Checker:
    """One aggregated HAProxy's checks of one server: where ``HAProxy._checker`` would be
    at simulated time ``t`` and what it does there (``stage``)."""

    __slots__ = ("lb", "server", "counter", "t", "stage", "checks", "outcome", "start", "i",
                 "reply", "passed", "why")

    def __init__(self, lb: _Balancer, server: Proc, t: float, checks: Tally) -> None:
        self.lb = lb
        self.server = server
        self.counter = HealthCounter(lb.spec.rise, lb.spec.fall)
        self.t = t
        self.stage = _START
        #: The checks sent, counted as HAProxy._checker counts its own (Recorder.tally).
        self.checks = checks
        self.outcome = OK
        self.start = 0.0
        self.i = 0
        self.reply = 0.0
        self.passed = False
        self.why = ""


@dataclass
class _Balancer:
    host: str
    component: str
    spec: _HAProxyBase
    connect_limit: float
    limit: float
    httpchk: bool


class AggregateChecks:
    """The health checks of the aggregated nodes' HAProxies, exact and without events
    (module docstring). :meth:`add` in place of constructing the HAProxy; the engine calls
    :meth:`finish` after the run."""

    def __init__(self, env: Environment, net: Network, rec: Recorder,
                 api_health: Callable[[Proc], bool] | None) -> None:
        self.env, self.net, self.rec = env, net, rec
        self.api_health = api_health
        self.checkers: list[_Checker] = []
        #: Up/down transitions (Recorder.states tuples), merged in by time at the end.
        self.states: list[tuple[float, str, str, str, str, str, str]] = []
        net.before_change.append(self.catch_up)

    def add(self, host: str, component: str, servers: list[Proc], spec: _HAProxyBase,
            rng: np.random.Generator) -> None:
        """The HAProxy ``component`` on ``host``: the same draw from ``rng`` as
        ``HAProxy._start_checks``, then its checkers."""
        if not spec.check:
            return
        rtt = self.net.rtt
        lb = _Balancer(
            host, component, spec,
            connect_limit=(min(spec.inter, spec.timeout_connect)
                           if (spec.timeout_check and spec.timeout_connect) else spec.inter),
            limit=spec.timeout_check or max(spec.inter - rtt, rtt),
            httpchk=spec.check_type == "httpchk")
        phase = float(rng.uniform(0.0, spec.inter))
        n = len(servers)
        now = self.env.now
        for pos, srv in enumerate(servers):
            first = phase + spec.inter * pos / n
            key = (f"{host}/{component}", f"{srv[0]}/{srv[1]}", "active")
            self.checkers.append(_Checker(lb, srv, now + first, self.rec.tally(key)))

    def catch_up(self) -> None:
        """Step every checker through its instants before now, on the state that held
        since the last change (called just before the next one)."""
        self._run(self.env.now)

    def finish(self, until: float) -> None:
        """Catch up to the end of the run (the checks counted in the recorder's tallies) and
        add the transitions to its states (in time order, each after the run's own
        records of the same instant)."""
        self._run(until)
        if self.states:
            merged = sorted(self.rec.states + self.states, key=lambda r: r[0])
            self.rec.states[:] = merged
            self.states = []

    def _run(self, until: float) -> None:
        for c in self.checkers:
            while c.t < until:
                self._step(c)

    def _step(self, c: _Checker) -> None:
        """One instant of ``HAProxy._checker`` (and ``Network.dial`` inside it), with its
        arithmetic: each wait is added to the clock as ``Environment.sleep`` adds it."""
        net, lb = self.net, c.lb
        t = c.t
        stage = c.stage
        if stage == _START:
            c.checks.n += 1
            outcome = net.connect(lb.host, c.server)
            if outcome == BLACKHOLE:
                c.start = t
                c.i = 0
                self._next_resend(c, t)
            else:
                c.t, c.stage, c.outcome = t + net.rtt, _CONNECTED, outcome
        elif stage == _RESEND:
            outcome = net.connect(lb.host, c.server)
            if outcome != BLACKHOLE:
                c.t, c.stage, c.outcome = t + net.rtt, _CONNECTED, outcome
            else:
                c.i += 1
                self._next_resend(c, t)
        elif stage == _CONNECTED:
            if c.outcome == REFUSED:
                self._report(c, t, False, "Connection refused")
            elif c.outcome != OK:
                self._report(c, t, False, "Layer4 timeout")
            else:
                rtt = net.rtt
                reply = 2 * rtt + net.slow.get(c.server, 0.0)
                if lb.httpchk:
                    reply += rtt
                if reply > lb.limit:
                    c.t, c.stage, c.passed, c.why = t + lb.limit, _REPORT, False, "Layer7 timeout"
                else:
                    c.t, c.stage, c.reply = t + reply, _REPLIED, reply
        elif stage == _REPLIED:
            if not net.reachable(lb.host, c.server[0]):
                c.t, c.stage = t + (lb.limit - c.reply), _REPORT
                c.passed, c.why = False, "Layer7 timeout"
            else:
                healthy = self.api_health is None or self.api_health(c.server)
                passed = healthy or not lb.httpchk
                self._report(c, t, passed,
                             "Layer7 check passed" if passed else "Layer7 wrong status 500")
        else:
            self._report(c, t, c.passed, c.why)

    def _next_resend(self, c: _Checker, now: float) -> None:
        """``Network.dial``'s wait for the next SYN retransmission, or for its limit."""
        resends = self.net.syn_resends
        limit = c.lb.connect_limit
        if c.i < len(resends) and resends[c.i] < limit:
            c.t, c.stage = now + (c.start + resends[c.i] - now), _RESEND
        else:
            c.t, c.stage, c.outcome = now + max(c.start + limit - now, 0.0), _CONNECTED, BLACKHOLE

    def _report(self, c: _Checker, t: float, passed: bool, why: str) -> None:
        counter, s = c.counter, c.lb.spec
        change = counter.report(passed)
        if change is not None:
            old = "up" if change == "down" else "down"
            self.states.append((t, c.lb.component, c.lb.host, c.server[0], old, change, why))
        if counter.health == counter.full:
            interval = s.inter
        elif counter.health == 0:
            interval = s.downinter or s.inter
        else:
            interval = s.fastinter or s.inter
        c.t, c.stage = t + interval, _START
