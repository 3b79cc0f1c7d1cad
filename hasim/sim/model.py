"""Elaboration: the simulated parts built from the topology graph, one builder per kind.

Each component kind's module registers how one graph node of that kind becomes a simulated
part (:func:`builds`); the engine (:mod:`hasim.sim.engine`) only walks the graph, calls the
builders, runs and collects. A builder reads what it needs from the :class:`Model` (the
environment, the network, the scenario's settings, the random streams, the parts already
built) and registers what others need from it: a part that answers connections for its
node (a load balancer, the VIP, the Service) in :attr:`Model.entries`, a client in
:attr:`Model.clients`, something to start in :attr:`Model.starters`.

Builders run in the order of their ``stage`` and, within a stage, in graph order. The order
is part of reproducibility: the random streams are drawn in it. A client whose node has no
apiserver connection, or a node whose kind has no builder, fails before time zero with a
message naming it (desmod's elaboration step does the same for an unconnected port).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hasim.errors import HasimError

if TYPE_CHECKING:  # the builders' modules import this one
    import networkx as nx
    import numpy as np

    from hasim.sim.apiserver import Apiservers, ClusterState
    from hasim.sim.etcd import EtcdCluster
    from hasim.sim.kernel import Environment
    from hasim.sim.network import Network, Proc
    from hasim.sim.records import Recorder
    from hasim.sim.sampling import AggregateChecks
    from hasim.spec.scenario import Scenario

#: The stages, in the order they are built.
STAGES = ("members", "servers", "balancers", "vip", "service", "clients", "etcd-clients",
          "control-plane")

Builder = Callable[["Model", str, dict[str, Any]], None]


@dataclass(frozen=True)
class _Entry:
    stage: int
    build: Builder


_BUILDERS: dict[str, _Entry] = {}


def builds(*kinds: str, stage: str) -> Callable[[Builder], Builder]:
    """Register the decorated function as the builder of graph nodes of ``kinds``: a
    component name, or ``COMPONENT:KIND`` for a component whose ``kind`` attribute picks
    the part (``lb:nginx``, ``lb:haproxy``)."""
    def register(fn: Builder) -> Builder:
        for k in kinds:
            _BUILDERS[k] = _Entry(STAGES.index(stage), fn)
        return fn
    return register


def builder_of(d: dict[str, Any]) -> _Entry:
    """The builder of a graph node (by ``component:kind``, else ``component``)."""
    comp = d["component"]
    entry = _BUILDERS.get(f"{comp}:{d['kind']}") if d.get("kind") else None
    entry = entry or _BUILDERS.get(comp)
    if entry is None:
        raise HasimError(f"the topology has a {comp!r} component ({d['host']}/{comp}) that "
                         "hasim cannot simulate: no builder for it")
    return entry


@dataclass
class Model:
    """What a run's builders share."""

    scenario: Scenario
    g: nx.DiGraph
    env: Environment
    net: Network
    rec: Recorder
    apis: Apiservers
    etcd: EtcdCluster
    rng: dict[str, np.random.Generator]
    #: Hosts whose clients run in aggregate (scenario ``sampling``), and their checks.
    skip: frozenset[str] | set[str]
    agg: AggregateChecks | None
    clock_phase: float
    #: Node-lifecycle state the kubelets write and the controller-manager reads.
    state: ClusterState
    #: The scheduler's leader election (its own lease).
    sched_state: ClusterState
    #: Graph node -> the part that answers connections to it (balancers, the VIP, the
    #: Service); an apiserver is dialled directly.
    entries: dict[str, Any] = field(default_factory=dict)
    #: Graph node -> the etcd v2 proxy built for it.
    proxies: dict[str, Any] = field(default_factory=dict)
    #: Client name -> (host, client class), for the result tables.
    clients: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Parts started together once everything is built.
    starters: list[Any] = field(default_factory=list)
    #: Hosts whose kubelet runs, in graph order (the controller-manager watches them).
    nodes: list[str] = field(default_factory=list)
    #: Called with the processes a ``stop`` fault is about to stop.
    stop_hooks: list[Callable[[set[Proc]], None]] = field(default_factory=list)
    vip: Any = None

    @property
    def spec(self) -> Any:
        return self.scenario.spec

    def proc(self, node: str) -> Proc:
        d = self.g.nodes[node]
        return (d["host"], d["component"])

    def successors(self, node: str, purpose: str | None = None) -> list[str]:
        g = self.g
        return [v for v in g.successors(node)
                if purpose is None or g.edges[node, v]["purpose"] == purpose]

    def add_client(self, client: Any, d: dict[str, Any]) -> None:
        """A client process of graph node ``d``: started with the others, and tabled."""
        self.starters.append(client)
        self.clients[client.name] = (d["host"], d["client_class"])

    def dialer_for(self, node: str) -> Any:
        """What a client on ``node`` dials for the apiserver: its first apiserver
        connection's :meth:`dialer_to`."""
        targets = self.successors(node, "apiserver")
        if not targets:
            raise HasimError(f"{node} has no connection to an apiserver in the topology "
                             "(unwired): nothing for it to dial")
        return self.dialer_to(targets[0])

    def dialer_to(self, target: str) -> Any:
        """What dials graph node ``target``: the part that answers for it (a balancer, the
        VIP, the Service), else its process directly."""
        from hasim.sim.clients import DirectDialer

        if target in self.entries:
            return self.entries[target]
        return DirectDialer(self.env, self.net, self.proc(target),
                            self.spec.clients.tcp_syn_timeout)

    def etcd_path(self, node: str) -> tuple[Any, list[Proc]]:
        """How a component reaches etcd: (its proxy, []) or (None, [members])."""
        targets = self.successors(node, "etcd")
        via = [self.proxies[v] for v in targets if v in self.proxies]
        return (via[0] if via else None), [self.proc(v) for v in targets
                                           if v not in self.proxies]


def elaborate(m: Model, stages: tuple[str, ...] = STAGES) -> None:
    """Build every graph node's part, stage by stage, in graph order."""
    order = [(n, d, builder_of(d)) for n, d in m.g.nodes(data=True)]
    for stage in stages:
        i = STAGES.index(stage)
        for n, d, entry in order:
            if entry.stage == i:
                entry.build(m, n, d)
