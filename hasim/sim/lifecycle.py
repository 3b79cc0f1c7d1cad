"""kube-controller-manager: leader election and the node lifecycle controller.

Leader election (client-go ``leaderelection``, component-base defaults): every candidate
tries every ``retry_period`` (2 s) through its own master's apiserver (in 2016
``--master=http://127.0.0.1:8080``). The leader renews on each try and steps down when it
has not renewed for ``renew_deadline`` (10 s); a candidate takes over once the lease is
``lease_duration`` (15 s) old.

Node lifecycle (``pkg/controller/nodelifecycle``): every ``node_monitor_period`` (5 s)
the leader looks at each node's lease; when its renew time moved, the node's
``probeTimestamp`` becomes NOW (the controller's clock at observation, not the renew
time); when ``now > probeTimestamp + node_monitor_grace_period`` the node's Ready
condition goes Unknown (NotReady). A new leader knows no probe times and starts every
node's grace period at its takeover ("Missing timestamp for Node ... Assuming now").
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from hasim.scenario import ControllerManagerSpec
from hasim.sim.apiserver import Apiservers, ClusterState
from hasim.sim.network import Network, Proc
from hasim.sim.records import Recorder


class ControllerManager:
    """One kube-controller-manager on a master, candidate for the leader lease."""

    def __init__(
        self,
        env: simpy.Environment,
        net: Network,
        rec: Recorder,
        apis: Apiservers,
        state: ClusterState,
        host: str,
        spec: ControllerManagerSpec,
        nodes: list[str],
        phase: float,
    ) -> None:
        self.env, self.net, self.rec, self.apis, self.state = env, net, rec, apis, state
        self.host = host
        self.proc: Proc = (host, "controller-manager")
        self.api: Proc = (host, "apiserver")
        self.spec = spec
        self.nodes = nodes
        self.phase = phase
        self.leading = False
        self.last_renew = 0.0
        self.term = 0
        net.add_process(self.proc)

    def start(self, leader: bool) -> None:
        if leader:
            self._acquire("initial leader")
        self.env.process(self._elect())

    def _api_ok(self) -> bool:
        return self.net.is_alive(self.proc) and self.apis.can_write(self.api)

    def _elect(self) -> Generator[simpy.Event, Any, None]:
        env, spec, st = self.env, self.spec, self.state
        yield env.timeout(self.phase)
        while True:
            now = env.now
            ok = self._api_ok()
            if self.leading:
                if ok and st.leader == self.host:
                    st.leader_renewed = now
                    self.last_renew = now
                elif now - self.last_renew >= spec.leader_elect_renew_deadline or (
                    st.leader != self.host
                ):
                    self._step_down("renew deadline exceeded" if ok is False else "lost lease")
            elif ok and (st.leader is None or now - st.leader_renewed > spec.leader_elect_lease_duration):
                self._acquire("lease expired" if st.leader else "no leader")
            yield env.timeout(spec.leader_elect_retry_period)

    def _acquire(self, cause: str) -> None:
        st = self.state
        old = st.leader
        st.leader = self.host
        st.leader_renewed = self.env.now
        self.leading = True
        self.last_renew = self.env.now
        self.term += 1
        self.rec.state(self.env.now, "controller-manager", self.host, "leader",
                       "follower", "leader", cause + (f" (was {old})" if old else ""))
        self.env.process(self._monitor(self.term))

    def _step_down(self, cause: str) -> None:
        self.leading = False
        self.term += 1
        self.rec.state(self.env.now, "controller-manager", self.host, "leader",
                       "leader", "follower", cause)

    def _monitor(self, term: int) -> Generator[simpy.Event, Any, None]:
        """monitorNodeHealth, every node_monitor_period while this one leads."""
        env, spec, st = self.env, self.spec, self.state
        grace = spec.node_monitor_grace_period
        seen: dict[str, float] = {}
        probe: dict[str, float] = {}
        while self.term == term and self.leading:
            now = env.now
            if self._api_ok():
                renewed = st.lease_renewed
                ready = st.node_ready
                for node in self.nodes:
                    r = renewed.get(node, -1.0)
                    renewal = False
                    if node not in probe:
                        probe[node] = now  # "Missing timestamp ... Assuming now"
                        seen[node] = r
                    elif r > seen[node]:
                        seen[node] = r
                        probe[node] = now
                        renewal = True
                    was = ready.get(node, True)
                    # The pass at exactly probe + grace counts: the controller's clock has moved on by
                    # the pass's own run time (MODEL.md: 30-45 s at 40 s grace).
                    if was and now >= probe[node] + grace - 1e-9:
                        ready[node] = False
                        self.rec.state(now, "node-lifecycle", node, "Ready", "ready", "not-ready",
                                       f"lease not renewed for {grace:g}s (leader {self.host})")
                    elif not was and renewal:
                        # The kubelet posts Ready again once it reaches an apiserver; the
                        # controller itself only ever sets Unknown.
                        ready[node] = True
                        self.rec.state(now, "node-lifecycle", node, "Ready", "not-ready", "ready",
                                       "lease renewed")
            yield env.timeout(spec.node_monitor_period)
