"""kube-apiservers and the state they keep in etcd (node leases, the controller lease).

An apiserver answers a request after ``apiserver.service_time`` (plus any ``slow``
fault), and ``/healthz`` with 200 while it can serve. A process crash (host up) refuses
connections; a host power-off leaves them unanswered (:mod:`hasim.sim.network`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hasim.sim.model import Model, builds
from hasim.sim.network import Network, Proc


@dataclass
class ClusterState:
    """What the apiservers store (in etcd): node lease renew times, node conditions and
    the controller-manager's leader lease."""

    lease_renewed: dict[str, float] = field(default_factory=dict)
    node_ready: dict[str, bool] = field(default_factory=dict)
    leader: str | None = None
    leader_renewed: float = 0.0


class Apiservers:
    """All apiservers: how long a request takes and whether ``/healthz`` says ok."""

    def __init__(self, net: Network, service_time: float) -> None:
        self.net = net
        self.service_time = service_time
        self.procs: list[Proc] = []
        #: Whether an apiserver's etcd access path reaches a leader with quorum. Set by the
        #: engine from the topology; without etcd in the model, storage always answers.
        self.etcd_ok: Callable[[Proc], bool] = lambda proc: True
        #: How long a write on an apiserver whose etcd cannot commit hangs before failing
        #: (etcd's request timeout), or None when it fails at once (etcd unreachable).
        self.etcd_stall: Callable[[Proc], float | None] = lambda proc: None
        # healthy()/can_write() are asked on every request and health check but change only
        # when a host, process or partition changes (Network.changed) or etcd's leader does
        # (the engine wires EtcdCluster.on_leader_change to invalidate): cache the answers
        # until then. The first place in on_change, so that every other listener (etcd,
        # VIPs) already reads fresh answers.
        self._ok: dict[Proc, bool] = {}
        net.on_change.insert(0, self.invalidate)

    def invalidate(self) -> None:
        """Forget cached answers: the network or etcd's leader changed."""
        self._ok.clear()

    def add(self, host: str) -> Proc:
        proc = (host, "apiserver")
        self.net.add_process(proc)
        self.procs.append(proc)
        return proc

    def serve_time(self, proc: Proc) -> float:
        """Time to handle one request on ``proc``."""
        return self.service_time

    def healthy(self, proc: Proc) -> bool:
        """``GET /healthz`` answers 200: the process is up and its etcd check passes."""
        ok = self._ok.get(proc)
        if ok is None:
            ok = self._ok[proc] = self.net.is_alive(proc) and self.etcd_ok(proc)
        return ok

    def write_stall(self, proc: Proc) -> float | None:
        """For a write that ``proc`` cannot commit: seconds until etcd gives up on it (the
        proposal hangs), or None when it fails at once."""
        if not self.net.is_alive(proc):
            return None
        return self.etcd_stall(proc)

    def can_write(self, proc: Proc) -> bool:
        """Whether a request served by ``proc`` succeeds. Writes need etcd's quorum, and so
        do reads in kubespray 2016 (``--etcd-quorum-read=true``) and etcd v3's default
        linearizable reads; only ``/healthz`` itself answers without it (with 500)."""
        ok = self._ok.get(proc)
        if ok is None:
            ok = self._ok[proc] = self.net.is_alive(proc) and self.etcd_ok(proc)
        return ok


@builds("apiserver", stage="servers")
def _build_apiserver(m: Model, node: str, d: dict[str, Any]) -> None:
    m.apis.add(d["host"])
