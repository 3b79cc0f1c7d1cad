"""The simulated side of the lab: the scenario's LB, its apiservers and faults, driven by
the lab's own clients (:mod:`hasim.lab.load`) instead of kubelets.

``hasim.simulate`` has no client that opens short connections at a steady rate (its
clients are the kubelet, kube-proxy and flannel, whose connections are long-lived); this
module builds the part of the engine the lab measures from the same topology graph, with
the engine's own classes and random streams (``hasim.sim.engine.streams``):
``Network``, ``Apiservers``, ``NginxProxy`` or ``HAProxy`` for the LB node of the lab's
host, ``FaultInjector`` for the scenario's faults, and ``hasim.sim.metrics`` for the
tables. Only the clients are the lab's: :class:`SimLoad` behaves as
:class:`hasim.lab.load.LoadGenerator` does.

A client that gives up does not interrupt the balancer's connect: it closes its end and
the balancer finishes on its own (nginx notices the closed client only once its upstream
connect is over, and still counts a failed connect against the peer; HAProxy without
``option abortonclose`` keeps connecting), so a session the balancer opens after the
client left is closed at once.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import simpy

from hasim.graph.render import balancer_node
from hasim.graph.topology import build_topology
from hasim.lab.load import LoadSpec
from hasim.sim.apiserver import Apiservers
from hasim.sim.engine import streams
from hasim.sim.faults import FaultInjector
from hasim.sim.haproxy import HAProxy
from hasim.sim.kernel import Environment
from hasim.sim.network import OK, REFUSED, RESET, Network, Proc, Session
from hasim.sim.nginx import NginxProxy
from hasim.sim.records import FaultRecord, Recorder, Tally
from hasim.spec.scenario import ExternalHAProxySpec, LocalHAProxySpec, NginxSpec, Scenario

TIMEOUT = "timeout"


class TimedTally(Tally):
    """An active check's :class:`~hasim.sim.records.Tally` that also keeps the time of
    every check it counts, so the check rate is measured from check times as at the
    stubs, not as count/duration. ``n`` is a property over ``count`` here (HAProxy's
    checker bumps ``n``), standing in front of Tally's own slot, which stays unused."""

    __slots__ = ("count", "env", "times")

    def __init__(self, key: tuple[str, str, str], env: simpy.Environment,
                 times: list[float]) -> None:
        self.key = key
        self.count = 0
        self.env = env
        self.times = times

    @property
    def n(self) -> int:
        return self.count

    @n.setter
    def n(self, value: int) -> None:
        if value > self.count:
            self.times.append(self.env.now)
        self.count = value


class TimedRecorder(Recorder):
    """A :class:`~hasim.sim.records.Recorder` whose active health checks keep their
    times: ``check_times`` maps each checked host to the times it was checked at."""

    def __init__(self, env: simpy.Environment) -> None:
        super().__init__()
        self.env = env
        self.check_times: dict[str, list[float]] = {}

    def tally(self, key: tuple[str, str, str]) -> Tally:
        if key[2] != "active":
            return super().tally(key)
        t = TimedTally(key, self.env, self.check_times.setdefault(key[1].split("/", 1)[0], []))
        self.tallies.append(t)
        return t


@dataclass
class SimTrial:
    """What one simulated trial observed, in the lab's record formats."""

    requests: list[tuple[str, str, float, float, str, str, str]]
    states: list[tuple[float, str, str, str, str, str, str]]
    faults: list[FaultRecord]
    check_times: dict[str, list[float]]
    clients: dict[str, tuple[str, str]]
    duration: float
    extra: dict[str, Any] = field(default_factory=dict)


class SimLoad:
    """The lab's clients in the simulator (see :mod:`hasim.lab.load`)."""

    def __init__(self, env: simpy.Environment, net: Network, rec: Recorder, apis: Apiservers,
                 host: str, dialer: Any, load: LoadSpec, t_start: float, t_end: float) -> None:
        self.env, self.net, self.rec, self.apis = env, net, rec, apis
        self.host = host
        self.dialer = dialer
        self.load = load
        self.t_start, self.t_end = t_start, t_end
        self.clients: dict[str, tuple[str, str]] = {}
        self.short_proc: Proc = (host, "short")
        net.add_process(self.short_proc)
        self.clients[f"{host}/short"] = (host, "short")
        for k in range(load.long_clients):
            net.add_process((host, f"long-{k}"))
            self.clients[f"{host}/long-{k}"] = (host, "long")

    def start(self) -> None:
        self.env.process(self._short_loop())
        for k in range(self.load.long_clients):
            self.env.process(self._long(k))

    # -- the pieces of one request ----------------------------------------------------------
    def _dial(self, proc: Proc, deadline: float) -> Generator[simpy.Event, Any, Session | str]:
        """Connect through the LB, then the TLS handshake end to end (2 round trips)."""
        env = self.env
        opening = env.process(self.dialer.open_session(proc))
        timer = env.timeout(max(deadline - env.now, 0.0))
        yield opening | timer
        if not opening.triggered:
            opening.callbacks.append(_close_if_session)
            return TIMEOUT
        got = opening.value
        if not isinstance(got, Session):
            return RESET if got not in (REFUSED, TIMEOUT) else str(got)
        outcome = yield from self._round_trips(got, 2, deadline, 0.0)
        if outcome != OK:
            got.close(f"tls {outcome}", env.now)
            return outcome
        return got

    def _round_trips(self, sess: Session, n: int, deadline: float, serve: float
                     ) -> Generator[simpy.Event, Any, str]:
        """``n`` exchanges over the session (plus ``serve`` at the server) by ``deadline``."""
        env = self.env
        state = sess.state()
        if state == RESET:
            yield env.timeout(self.net.rtt)
            return RESET
        if state == OK:
            d = n * sess.delay() + serve
            if env.now + d > deadline:
                yield env.timeout(max(deadline - env.now, 0.0))
                return TIMEOUT
            yield env.timeout(d)
            return OK if sess.open else RESET
        broken = sess.wait_broken()
        yield broken | env.timeout(max(deadline - env.now, 0.0))
        return RESET if broken.triggered else TIMEOUT

    def _request(self, sess: Session, deadline: float) -> Generator[simpy.Event, Any, str]:
        backend = sess.backend
        serve = self.apis.serve_time(backend) if backend else 0.0
        outcome = yield from self._round_trips(sess, 1, deadline, serve)
        if outcome == OK:
            sess.last_read = sess.last_activity = self.env.now
        return outcome

    # -- the clients ------------------------------------------------------------------------
    def _short_loop(self) -> Generator[simpy.Event, Any, None]:
        env, load = self.env, self.load
        if load.rate <= 0:
            return
        i = 0
        while True:
            at = self.t_start + i / load.rate
            if at >= self.t_end:
                return
            yield env.timeout(max(at - env.now, 0.0))
            env.process(self._short_one())
            i += 1

    def _short_one(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        start = env.now
        deadline = start + self.load.short_timeout
        got = yield from self._dial(self.short_proc, deadline)
        backend = ""
        if isinstance(got, Session):
            backend = got.backend[0] if got.backend else ""
            outcome = yield from self._request(got, deadline)
            got.close("done", env.now)
            if outcome != OK:
                backend = ""
        else:
            outcome = got
        self._record(f"{self.host}/short", start, outcome, backend, "short")

    def _long(self, k: int) -> Generator[simpy.Event, Any, None]:
        env, load = self.env, self.load
        proc: Proc = (self.host, f"long-{k}")
        name = f"{self.host}/long-{k}"
        sess: Session | None = None
        at = self.t_start + load.long_phase(k)
        while at < self.t_end:
            yield env.timeout(max(at - env.now, 0.0))
            if sess is not None and not sess.open:
                sess = None  # closed by the peer while idle: redial quietly
            start = env.now
            deadline = start + load.long_timeout
            backend = ""
            if sess is None:
                got = yield from self._dial(proc, deadline)
                if isinstance(got, Session):
                    sess = got
            if sess is not None:
                outcome = yield from self._request(sess, deadline)
                backend = sess.backend[0] if sess.backend else ""
                if outcome != OK:
                    sess.close(f"request {outcome}", env.now)
                    sess, backend = None, ""
            else:
                outcome = got  # type: ignore[assignment]
            self._record(name, start, outcome, backend, "long")
            end = env.now
            while at <= end:
                at += load.long_period

    def _record(self, client: str, start: float, outcome: str, backend: str, kind: str) -> None:
        if self.env.now <= self.t_end:
            self.rec.request(client, self.host, start, self.env.now, outcome, backend, kind)


def _close_if_session(ev: simpy.Event) -> None:
    if ev.ok and isinstance(ev.value, Session):
        ev.value.close("client gone", ev.env.now)


def balancer_spec(scenario: Scenario, component: str, kind: str
                  ) -> NginxSpec | LocalHAProxySpec | ExternalHAProxySpec:
    """The parameters of the LB the lab runs, with the defaults the engine uses."""
    spec = scenario.spec.balancers
    if component == "lb":
        return spec.local_nginx() if kind == "nginx" else spec.local_haproxy()
    return spec.external_haproxy()


def with_host_kernel(scenario: Scenario) -> Scenario:
    """The scenario with this machine's SYN retransmission sysctls: the real side of the
    lab runs on this kernel (Linux >= 6.5 resends SYNs every second four times, older
    kernels double from 1 s), so the simulated side must resend as it does."""
    proc = Path("/proc/sys/net/ipv4")
    over: dict[str, Any] = {}
    for key in ("tcp_syn_retries", "tcp_syn_linear_timeouts"):
        try:
            over[f"network.{key}"] = int((proc / key).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # an older kernel has no tcp_syn_linear_timeouts: the classic doubling
    return scenario.with_overrides(over) if over else scenario


@dataclass
class LabPart:
    """The part of the engine a lab cell exercises: its clock, records, network,
    apiservers and the LB of one host, built from the scenario's topology graph."""

    env: Environment
    rec: TimedRecorder
    net: Network
    apis: Apiservers
    lb: Any
    component: str  # the LB node's: "lb" (local) or "extlb"


def lab_part(scenario: Scenario, host: str, rng: dict[str, Any]) -> LabPart:
    """The LB of ``host`` (the scenario's nginx or HAProxy), its apiservers and the
    network between them, with the engine's own classes and random streams."""
    spec = scenario.spec
    g = build_topology(scenario)
    node = balancer_node(g, host)
    d = g.nodes[node]
    env = Environment()
    rec = TimedRecorder(env)
    net = Network(env, spec.network.rtt, rec, spec.network.tcp_syn_retries,
                  spec.network.tcp_syn_linear_timeouts)
    apis = Apiservers(net, spec.apiserver.service_time)
    clock_phase = float(rng["clock"].random())
    servers: list[Proc] = []
    for v in g.successors(node):
        proc = (g.nodes[v]["host"], g.nodes[v]["component"])
        servers.append(proc)
        if proc[1] == "apiserver":
            apis.add(proc[0])
        else:
            net.add_process(proc)
    lb: Any
    kind = "nginx" if d["component"] == "lb" and d.get("kind") == "nginx" else "haproxy"
    bspec = balancer_spec(scenario, d["component"], kind)
    if isinstance(bspec, NginxSpec):
        lb = NginxProxy(env, net, rec, d["host"], servers, bspec, rng["workers"], clock_phase)
    else:
        lb = HAProxy(env, net, rec, d["host"], d["component"], servers, bspec, rng["checks"],
                     spec.clients.tcp_syn_timeout, apis.healthy)
    return LabPart(env, rec, net, apis, lb, d["component"])


def simulate_lab(scenario: Scenario, host: str, load: LoadSpec, seed: int, t_start: float,
                 duration: float) -> SimTrial:
    """One simulated trial of the lab: the LB of ``host``, its apiservers, the scenario's
    faults, the lab's clients from ``t_start`` to ``duration``."""
    rng = streams(seed)
    part = lab_part(scenario, host, rng)
    env, rec, net = part.env, part.rec, part.net
    client_host = host if part.component == "lb" else "lab"
    clients = SimLoad(env, net, rec, part.apis, client_host, part.lb, load, t_start, duration)
    clients.start()
    FaultInjector(env, net, rec, scenario, rng["faults"]).start()
    env.run(until=duration)
    return SimTrial(list(rec.requests), list(rec.states), list(rec.faults), rec.check_times,
                    clients.clients, duration)
