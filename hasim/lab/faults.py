"""Real faults on the stub apiservers, mapped from the scenario's fault kinds (docs/model.md,
connections and faults).

- ``crash`` (a master, or ``HOST/apiserver``): SIGKILL the stub; its kernel answers RST
  and its connections get FIN/RST. Undone by starting the stub again.
- ``poweroff``: ``iptables -A INPUT -d ADDR -j DROP`` and ``-s ADDR`` in the namespace: no
  answer, established connections hang. Undone by SIGKILL and restart of the stub (a host
  that boots has forgotten its connections: old ones get RST), then deleting the rules.
- ``partition`` between a master and the LB's host: the same DROP rules. Undone by
  deleting the rules (old connections resume).

Other kinds (``slow``, ``lb-crash``, ``random``) are not reproduced: :class:`LabFaultError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hasim.errors import HasimError
from hasim.kubespray.targets import resolve_target
from hasim.lab.netns import Namespace
from hasim.lab.runner import Stubs
from hasim.spec.scenario import FaultSpec, Scenario


class LabFaultError(HasimError):
    """A scenario fault the lab cannot reproduce."""


@dataclass(frozen=True)
class LabFault:
    """One scenario fault as the lab applies it to stubs."""

    fault_id: int
    kind: str  # crash | poweroff | partition
    target: str
    stubs: tuple[str, ...]  # the backends (stub names) it hits
    at: float
    duration: float | None


def plan_faults(scenario: Scenario, lb_host: str, backends: list[str]) -> list[LabFault]:
    """The scenario's faults as lab faults (raises on a kind the lab cannot reproduce)."""
    out = []
    for i, f in enumerate(scenario.spec.faults):
        out.append(_plan(i, f, scenario, lb_host, backends))
    if not any(f.stubs for f in out):
        raise LabFaultError(f"{scenario.path or scenario.name}: faults: no fault hits a "
                            f"backend of {lb_host}'s load balancer ({', '.join(backends)})")
    return out


def _plan(i: int, f: FaultSpec, scenario: Scenario, lb_host: str, backends: list[str]
          ) -> LabFault:
    where = f"{scenario.path or scenario.name}: faults[{i}]"
    if f.kind not in ("crash", "poweroff", "partition"):
        raise LabFaultError(f"{where}: kind {f.kind!r} is not reproduced by the lab "
                            "(crash, poweroff and partition are)")
    assert f.target is not None and f.at is not None
    pairs = resolve_target(scenario, f.target)
    if f.kind == "crash" and any(c not in (None, "apiserver") for _, c in pairs):
        raise LabFaultError(f"{where}: the lab crashes apiservers only, not {f.target!r}")
    hosts = [h for h, _ in pairs]
    if lb_host in hosts and f.kind != "partition":
        raise LabFaultError(f"{where}: the lab does not fault the load balancer's own host")
    if f.kind == "partition":
        assert f.peers is not None
        peers = [h for h, _ in resolve_target(scenario, f.peers)]
        if lb_host in peers:
            stubs = [h for h in hosts if h in backends]
        elif lb_host in hosts:
            stubs = [h for h in peers if h in backends]
        else:
            stubs = []  # the cut does not touch the LB's paths: nothing to do in the lab
    else:
        stubs = [h for h in hosts if h in backends]
    return LabFault(i, f.kind, f.target, tuple(stubs), f.at, f.duration)


class FaultActions:
    """Applies and undoes lab faults; every action returns when it took effect."""

    def __init__(self, ns: Namespace, stubs: Stubs) -> None:
        self.ns = ns
        self.stubs = stubs
        self.blackholed: set[str] = set()

    def apply(self, f: LabFault) -> float:
        t = time.monotonic()
        for name in f.stubs:
            if f.kind == "crash":
                t = self.stubs.kill(name)
            else:
                self.ns.blackhole(self.stubs.servers[name].address)
                self.blackholed.add(name)
                t = time.monotonic()  # the rule is in place once iptables returned
        return t

    def undo(self, f: LabFault) -> float:
        t = time.monotonic()
        for name in f.stubs:
            if f.kind == "crash":
                self.stubs.start(name)
            elif f.kind == "poweroff":
                if self.stubs.servers[name].proc is not None:
                    self.stubs.kill(name)
                self.stubs.start(name)
                self._unblackhole(name)
            else:
                self._unblackhole(name)
            t = time.monotonic()
        return t

    def _unblackhole(self, name: str) -> None:
        if name in self.blackholed:
            self.ns.unblackhole(self.stubs.servers[name].address)
            self.blackholed.discard(name)

    def reset(self) -> None:
        """Undo every blackhole still in place (between trials)."""
        for name in list(self.blackholed):
            self._unblackhole(name)
