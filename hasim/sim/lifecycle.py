"""kube-controller-manager: leader election and the node lifecycle controller.

Leader election (client-go ``tools/leaderelection/leaderelection.go``, component-base
defaults lease 15 s, renew deadline 10 s, retry 2 s), through each master's own apiserver
(in 2016 ``--master=http://127.0.0.1:8080``):

- The leader renews in ``renew()``: ``wait.Until(..., RetryPeriod)`` around
  ``wait.PollImmediateUntil(RetryPeriod, tryAcquireOrRenew, ctx with RenewDeadline)``: a
  renewal every ``retry_period``; when renewals keep failing for ``renew_deadline`` it
  stops leading (kube-controller-manager then exits: "leaderelection lost").
- A candidate tries in ``acquire()``: ``wait.JitterUntil(..., RetryPeriod, JitterFactor
  = 1.2, sliding)``: a try every ``retry_period x (1 + 1.2 U)``, 2 to 4.4 s.
- Expiry is judged on the candidate's OWN clock: ``observedTime`` is when the candidate
  last saw the record change (``setObservedRecord``), and the lease is valid while
  ``observedTime + LeaseDurationSeconds`` is after now (``isLeaseValid``). So after the
  leader's last renewal ``r`` a candidate notices it at its next try (up to 4.4 s later)
  and takes over at its first try at least ``lease_duration`` after that: between
  ``r + lease_duration`` and ``r + lease_duration + 2 x 4.4`` s. (Before this, the model
  compared the record's renew time with the candidate's clock and used a fixed 2 s retry,
  which bounded takeover to (13, 17] s after a crash instead of (13, 23.8).)
- A process that dies stops leading at once; a restarted one knows no record and waits a
  full lease duration from its first look.

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

import numpy as np

from hasim.sim.apiserver import Apiservers, ClusterState
from hasim.sim.kernel import Environment, Wait
from hasim.sim.model import Model, builds
from hasim.sim.network import Network, Proc
from hasim.sim.records import Recorder
from hasim.spec.scenario import ControllerManagerSpec

#: client-go ``leaderelection.JitterFactor``: the acquire loop's jitter.
JITTER_FACTOR = 1.2


class ControllerManager:
    """One kube-controller-manager on a master, candidate for the leader lease.

    With ``component="kube-scheduler"`` and no nodes it is a kube-scheduler: the same
    election (same defaults) for its own lease, and nothing to monitor.
    """

    def __init__(
        self,
        env: Environment,
        net: Network,
        rec: Recorder,
        apis: Apiservers,
        state: ClusterState,
        host: str,
        spec: ControllerManagerSpec,
        nodes: list[str],
        phase: float,
        rng: np.random.Generator | None = None,
        component: str = "controller-manager",
    ) -> None:
        self.env, self.net, self.rec, self.apis, self.state = env, net, rec, apis, state
        self.host = host
        self.proc: Proc = (host, component)
        self.api: Proc = (host, "apiserver")
        self.spec = spec
        self.nodes = nodes
        self.phase = phase
        self.leading = False
        self.last_renew = 0.0
        self.term = 0
        #: First failed renewal of the current ``renew()`` poll (None while renewals pass).
        self.fail_since: float | None = None
        #: The leader record (holder, renew time) this candidate last saw, and when.
        self.observed: tuple[str | None, float] | None = None
        self.observed_time = 0.0
        # Jitter of the acquire loop. engine.py gives no generator of its own yet; derive
        # one from this candidate's phase (drawn from the control-plane stream), which keeps
        # runs reproducible and identical across HA modes for one seed.
        self.rng = rng if rng is not None else np.random.default_rng(
            np.random.SeedSequence(entropy=int(phase * 2**52), spawn_key=(7,)))
        net.add_process(self.proc)
        net.watch(self.proc, self._on_state)

    def start(self, leader: bool) -> None:
        if leader:
            self._acquire("initial leader")
        self.env.process(self._elect())

    def _on_state(self, up: bool) -> None:
        if up:
            # A restarted process has an empty observedRecord: it must watch the record
            # for a whole lease duration before it may take it.
            self.observed = None
            self.fail_since = None
        elif self.leading:
            self._step_down("process died")

    def _api_ok(self) -> bool:
        return self.net.is_alive(self.proc) and self.apis.can_write(self.api)

    def _elect(self) -> Generator[Wait, Any, None]:
        env, spec = self.env, self.spec
        yield env.sleep(self.phase)
        while True:
            if not self.net.is_alive(self.proc):
                yield env.sleep(spec.leader_elect_retry_period)
                continue
            if self.leading:
                self._renew()
                yield env.sleep(spec.leader_elect_retry_period)  # wait.Until / Poll
            else:
                self._try_acquire()
                # wait.JitterUntil(..., RetryPeriod, JitterFactor=1.2, sliding=true)
                yield env.sleep(spec.leader_elect_retry_period
                                * (1 + JITTER_FACTOR * float(self.rng.random())))

    def _renew(self) -> None:
        now, st, spec = self.env.now, self.state, self.spec
        ok = self._api_ok()
        if ok and st.leader == self.host:
            st.leader_renewed = now
            self.last_renew = now
            self.fail_since = None
            return
        if ok and st.leader != self.host:
            self._step_down("lost lease")
            return
        if self.fail_since is None:
            self.fail_since = now
        elif now - self.fail_since >= spec.leader_elect_renew_deadline - 1e-9:
            self._step_down("renew deadline exceeded")

    def _try_acquire(self) -> None:
        now, st = self.env.now, self.state
        if not self._api_ok():
            return
        record = (st.leader, st.leader_renewed)
        if record != self.observed:  # setObservedRecord: observedTime = now
            self.observed = record
            self.observed_time = now
        if st.leader is None:
            self._acquire("no leader")
            return
        if self.observed_time + self.spec.leader_elect_lease_duration > now:  # isLeaseValid
            return
        self._acquire("lease expired")

    def _acquire(self, cause: str) -> None:
        st = self.state
        old = st.leader
        st.leader = self.host
        st.leader_renewed = self.env.now
        self.leading = True
        self.last_renew = self.env.now
        self.fail_since = None
        self.term += 1
        self.rec.state(self.env.now, self.proc[1], self.host, "leader",
                       "follower", "leader", cause + (f" (was {old})" if old else ""))
        if self.nodes:  # the scheduler elects a leader too, but monitors no node
            self.env.process(self._monitor(self.term))

    def _step_down(self, cause: str) -> None:
        self.leading = False
        self.term += 1
        self.rec.state(self.env.now, self.proc[1], self.host, "leader",
                       "leader", "follower", cause)

    def _monitor(self, term: int) -> Generator[Wait, Any, None]:
        """monitorNodeHealth, every node_monitor_period while this one leads."""
        env, spec, st = self.env, self.spec, self.state
        grace = spec.node_monitor_grace_period
        seen: dict[str, float] = {}
        probe: dict[str, float] = {}
        while self.term == term and self.leading:
            now = env.now
            # monitorNodeHealth reads nodes and leases from the shared informer cache
            # (``nc.nodeLister``/``nc.leaseLister``), not from etcd: a pass goes on while
            # storage is briefly unavailable (an etcd election after the etcd leader dies),
            # and only its status WRITE (marking Unknown) needs a working apiserver. Before
            # this fix a pass that met no etcd leader was skipped whole, so renewals seen
            # just before the fault got their probeTimestamp one period late and NotReady
            # came up to 50 s after the fault instead of docs/model.md's 30-45 s. No write can
            # commit without an etcd leader, so the shared lease state equals the cache.
            fed = self.net.is_alive(self.proc) and self.net.is_alive(self.api)
            can_mark = fed and self._api_ok()
            if fed:
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
                    # The pass at exactly probe + grace counts: the controller's clock has
                    # moved on by the pass's own run time (docs/model.md: 30-45 s at 40 s grace).
                    if was and can_mark and now >= probe[node] + grace - 1e-9:
                        ready[node] = False
                        self.rec.state(now, "node-lifecycle", node, "Ready", "ready", "not-ready",
                                       f"lease not renewed for {grace:g}s (leader {self.host})")
                    elif not was and renewal:
                        # The kubelet posts Ready again once it reaches an apiserver; the
                        # controller itself only ever sets Unknown.
                        ready[node] = True
                        self.rec.state(now, "node-lifecycle", node, "Ready", "not-ready", "ready",
                                       "lease renewed")
            yield env.sleep(spec.node_monitor_period)


@builds("controller-manager", "scheduler", stage="control-plane")
def _build_control_plane(m: Model, node: str, d: dict[str, Any]) -> None:
    """kube-controller-manager (node lifecycle) or kube-scheduler: each elects its leader
    on its own lease, through its own master's apiserver; the scheduler pauses scheduling,
    not node lifecycle. The initial leader is the scenario's, else the first master."""
    cm_spec, host = m.spec.controller_manager, d["host"]
    initial = cm_spec.initial_leader or next(
        e["host"] for _, e in m.g.nodes(data=True) if e["component"] == "apiserver")
    phase = float(m.rng["control-plane"].uniform(0, cm_spec.leader_elect_retry_period))
    if d["component"] == "controller-manager":
        c = ControllerManager(m.env, m.net, m.rec, m.apis, m.state, host, cm_spec, m.nodes,
                              phase=phase, rng=m.rng["leader-election"])
    else:
        c = ControllerManager(m.env, m.net, m.rec, m.apis, m.sched_state, host, cm_spec, [],
                              phase=phase, rng=m.rng["leader-election"], component="scheduler")
    c.start(leader=host == initial)
