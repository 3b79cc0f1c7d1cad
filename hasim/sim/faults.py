"""Fault injection (docs/model.md, connections and faults, docs/interfaces.md fault kinds).

``crash``: every process of the target (or the one named ``HOST/COMPONENT``) dies; the
host's kernel stays up and answers RST. ``stop``: the same processes stop cleanly
(``systemctl stop``): to their peers a stop is a crash (FIN and RST, at once), but a
keepalived MASTER first sends its priority-0 advert and removes the VIP (the hooks in
:attr:`FaultInjector.on_stop`). ``poweroff``: the host vanishes (no FIN, no RST).
``partition``: packets between the target hosts and the ``peers`` hosts are dropped both
ways; each side stays up. ``slow``: the target's processes answer ``delay`` late.
``lb-crash``: the load balancer process on the target dies; it comes back after
``duration`` (a restarted nginx or HAProxy has fresh state). Without ``duration`` a fault
is permanent. ``random``: each host of ``targets`` alternates between up times drawn
from an exponential (or Weibull, ``shape``) distribution of mean ``mtbf`` and a ``fault``
(crash or poweroff) lasting an exponential time of mean ``mttr``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from hasim.kubespray.targets import resolve_target
from hasim.sim.kernel import Environment, Wait
from hasim.sim.network import Network, Proc
from hasim.sim.records import FaultRecord, Recorder
from hasim.spec.scenario import FaultSpec, Scenario

LB_COMPONENTS = ("lb", "external-lb")


def plan_fault(
    fault_id: int, spec: FaultSpec, scenario: Scenario, net: Network
) -> tuple[set[str], set[Proc]]:
    """The hosts and processes a fault hits."""
    assert spec.target is not None
    pairs = resolve_target(scenario, spec.target)
    hosts = {h for h, _ in pairs}
    procs: set[Proc] = set()
    for host, comp in pairs:
        on_host = [p for p in net.alive if p[0] == host]
        if spec.kind == "lb-crash" or comp == "lb":
            procs |= {p for p in on_host if p[1] in LB_COMPONENTS}
        elif comp is not None:
            procs |= {p for p in on_host if p[1] == comp}
        else:
            procs |= set(on_host)
    return hosts, procs


class FaultInjector:
    """Runs the scenario's scheduled faults and records each as a :class:`FaultRecord`."""

    def __init__(self, env: Environment, net: Network, rec: Recorder, scenario: Scenario,
                 rng: np.random.Generator):
        self.env, self.net, self.rec, self.scenario = env, net, rec, scenario
        self.rng = rng
        self.next_id = len(scenario.spec.faults)
        #: Called with the processes a ``stop`` is about to stop (the VIP's priority 0).
        self.on_stop: list[Callable[[set[Proc]], None]] = []

    def start(self) -> None:
        for i, spec in enumerate(self.scenario.spec.faults):
            if spec.kind == "random":
                assert spec.targets is not None
                for host, comp in resolve_target(self.scenario, spec.targets):
                    target = host if comp is None else f"{host}/{comp}"
                    self.env.process(self._random(spec, target))
            else:
                self.env.process(self._run(i, spec))

    def _random(self, spec: FaultSpec, target: str) -> Generator[Wait, Any, None]:
        """Alternating up and repair times for one target (a renewal process)."""
        assert spec.mtbf is not None and spec.mttr is not None
        rng = self.rng
        while True:
            if spec.distribution == "weibull":
                # Scale chosen so that the mean up time is mtbf.
                scale = spec.mtbf / math.gamma(1 + 1 / spec.shape)
                up = scale * float(rng.weibull(spec.shape))
            else:
                up = float(rng.exponential(spec.mtbf))
            down = float(rng.exponential(spec.mttr))
            yield self.env.timeout(up)
            fault_id = self.next_id
            self.next_id += 1
            one = FaultSpec(kind=spec.fault, at=0.0, target=target, duration=down)
            yield from self._run(fault_id, one)

    def _run(self, fault_id: int, spec: FaultSpec) -> Generator[Wait, Any, None]:
        env, net = self.env, self.net
        assert spec.at is not None
        hosts, procs = plan_fault(fault_id, spec, self.scenario, net)
        yield env.timeout(spec.at)
        end = env.now + spec.duration if spec.duration is not None else None
        pairs: set[frozenset[str]] = set()
        if spec.kind == "partition":
            assert spec.peers is not None
            peers = {h for h, _ in resolve_target(self.scenario, spec.peers)}
            pairs = {frozenset((a, b)) for a in hosts for b in peers if a != b}
        self.rec.faults.append(
            FaultRecord(fault_id, spec.kind, spec.target or "", env.now, end, frozenset(hosts),
                        frozenset(procs), frozenset(pairs))
        )
        undo = self._apply(spec, hosts, procs, pairs)
        self.rec.state(env.now, "fault", ",".join(sorted(hosts)), spec.target or "", "",
                       spec.kind, f"fault {fault_id}")
        if spec.duration is None:
            return
        yield env.timeout(spec.duration)
        undo()
        self.rec.state(env.now, "fault", ",".join(sorted(hosts)), spec.target or "", spec.kind,
                       "healed", f"fault {fault_id}")

    def _apply(self, spec: FaultSpec, hosts: set[str], procs: set[Proc],
               pairs: set[frozenset[str]]) -> Any:
        net = self.net
        cause = f"fault {spec.kind}"
        if spec.kind == "stop":
            for hook in self.on_stop:
                hook(procs)
        if spec.kind in ("crash", "stop", "lb-crash"):
            if spec.duration is not None:
                # Down for the fault's duration: a supervisor's restarts fail meanwhile.
                # Without a duration, supervised processes (the etcd proxy's systemd unit,
                # RestartSec=15s) come back on their own.
                net.held |= procs
            for p in sorted(procs):
                net.crash(p, cause)

            def restart() -> None:
                net.held.difference_update(procs)
                for p in sorted(procs):
                    net.start(p)

            return restart
        if spec.kind == "poweroff":
            for h in sorted(hosts):
                net.power_off(h)
            def power_on() -> None:
                for h in sorted(hosts):
                    net.power_on(h)

            return power_on
        if spec.kind == "partition":
            added = net.partition(pairs)
            return lambda: net.heal(added)
        if spec.kind == "slow":
            for p in procs:
                net.add_slow(p, spec.delay)
            def unslow() -> None:
                for p in procs:
                    net.add_slow(p, -spec.delay)

            return unslow
        raise ValueError(f"unknown fault kind {spec.kind}")
