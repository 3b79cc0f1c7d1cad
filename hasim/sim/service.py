"""The in-cluster ``kubernetes`` Service: how a pod that keeps its in-cluster config (a CNI
agent behind an external LB, today's flannel) reaches the apiservers.

The pod dials the Service's ClusterIP; kube-proxy's rules on the pod's node send each new
connection to one of the Service's endpoints, uniformly at random (iptables ``statistic
mode random``), and conntrack keeps it there. The endpoints are the apiservers themselves,
kept by their lease reconciler (kube-apiserver ``--endpoint-reconciler-type=lease``,
``pkg/controlplane``: ``DefaultEndpointReconcilerInterval`` 10 s,
``DefaultEndpointReconcilerTTL`` 15 s): every 10 s each apiserver that can write to etcd
renews its own lease key with a 15 s TTL and rewrites the endpoints from the keys still
alive. So a master that dies stays an endpoint until its key expires, 15 s after its last
renewal, and a live apiserver reconciles: 5 to 25 s after the death. Meanwhile a new
connection may be sent to it, and with a power-off hangs until the client's dial
timeout. An apiserver stopped cleanly removes its own endpoint as it shuts down.

Not modelled: the time kube-proxy takes to receive the new endpoints and rewrite its
rules (it is a watch of its own; hasim applies the change on every node at once).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from hasim.sim.apiserver import Apiservers
from hasim.sim.clients import DirectDialer
from hasim.sim.kernel import Environment, Wait
from hasim.sim.model import Model, builds
from hasim.sim.network import REFUSED, Network, Proc, Session
from hasim.sim.records import Recorder

RECONCILE_INTERVAL = 10.0
LEASE_TTL = 15.0


class KubernetesService:
    """The Service's endpoints as the apiservers reconcile them, and a dialer through it."""

    def __init__(self, env: Environment, net: Network, rec: Recorder, apis: Apiservers,
                 backends: list[Proc], rng: np.random.Generator,
                 syn_timeout: float | None = None) -> None:
        self.env, self.net, self.rec, self.apis = env, net, rec, apis
        self.backends = list(backends)
        self.rng = rng
        self.name = "service/kubernetes"
        #: Each apiserver's reconcile loop phase, and when it last renewed its lease key.
        self.phase = {b: float(rng.uniform(0.0, RECONCILE_INTERVAL)) for b in self.backends}
        self.renewed = {b: self.phase[b] - RECONCILE_INTERVAL for b in self.backends}
        #: The Service's endpoints now, in backend order.
        self.endpoints: list[Proc] = list(self.backends)
        self._direct = {b: DirectDialer(env, net, b, syn_timeout) for b in self.backends}

    def start(self) -> None:
        for b in self.backends:
            self.env.process(self._reconciler(b))

    def stopping(self, procs: set[Proc]) -> None:
        """A ``stop`` fault: a cleanly stopped apiserver deletes its own endpoint."""
        gone = {b for b in self.backends if b in procs}
        if gone:
            for b in gone:
                self.renewed[b] = -LEASE_TTL
            self._set([b for b in self.endpoints if b not in gone], "stopped: own endpoint deleted")

    def _reconciler(self, me: Proc) -> Generator[Wait, Any, None]:
        env = self.env
        yield env.sleep(self.phase[me])
        while True:
            if self.apis.can_write(me):  # renew, then rewrite from the keys not expired
                now = env.now
                self.renewed[me] = now
                self._set([b for b in self.backends if self.renewed[b] + LEASE_TTL > now],
                          f"reconciled by {me[0]}")
            yield env.sleep(RECONCILE_INTERVAL)

    def _set(self, endpoints: list[Proc], cause: str) -> None:
        """New endpoints; each one that leaves or returns is a state change of the Service."""
        old = set(self.endpoints)
        now = self.env.now
        for b in self.backends:
            if (b in old) != (b in endpoints):
                self.rec.state(now, "service", b[0], "kubernetes endpoint",
                               "listed" if b in old else "removed",
                               "removed" if b in old else "listed", cause)
        self.endpoints = endpoints

    def open_session(self, client: Proc) -> Generator[Wait, Any, Session | str]:
        """A new connection to the ClusterIP, DNATed to a random endpoint, then dialled as
        that apiserver would be directly."""
        eps = self.endpoints
        if not eps:  # kube-proxy rejects a Service without endpoints (ICMP: refused)
            yield self.env.sleep(0.0)
            return REFUSED
        target = eps[int(self.rng.integers(len(eps)))] if len(eps) > 1 else eps[0]
        return (yield from self._direct[target].open_session(client))


@builds("service", stage="service")
def _build_service(m: Model, node: str, d: dict[str, Any]) -> None:
    service = KubernetesService(m.env, m.net, m.rec, m.apis,
                                [m.proc(v) for v in m.g.successors(node)], m.rng["service"],
                                m.spec.clients.tcp_syn_timeout)
    service.start()
    m.entries[node] = service
    m.stop_hooks.append(service.stopping)
