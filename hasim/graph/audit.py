"""The audit of a topology: single points of failure per client class, plaintext edges.

A component is a single point of failure for a client when every path from the client to
what it needs passes through it: for an apiserver client any apiserver, for an etcd client
any etcd member: the dominators of a sink joined to every target. A VIP is an address,
not a process, so it is never listed itself; the LB instance behind it is, when there is
only one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import networkx as nx

_SINK = "__sink__"


@dataclass(frozen=True)
class ClassAudit:
    """Single points of failure shared by the clients of one class.

    ``spofs`` maps a description (``"own lb"``, ``"master1/apiserver"``) to how many of
    the class's ``clients`` depend on it.
    """

    client_class: str
    purpose: str
    clients: int
    spofs: dict[str, int] = field(default_factory=dict)
    #: Failures that no balancer routes around for a client whose connection already sits
    #: on the apiserver that depends on them (see :func:`pinned_points`).
    pinned: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PlainEdge:
    """A plaintext connection: who, to whom, whether it leaves the host."""

    source: str
    target: str
    url: str
    crosses_hosts: bool


@dataclass(frozen=True)
class Audit:
    """The whole audit of one topology."""

    classes: list[ClassAudit]
    plaintext: list[PlainEdge]

    def to_dict(self) -> dict[str, object]:
        return {
            "single_points_of_failure": [
                {
                    "client_class": c.client_class,
                    "purpose": c.purpose,
                    "clients": c.clients,
                    "spofs": c.spofs,
                    "pinned": c.pinned,
                }
                for c in self.classes
            ],
            "plaintext_edges": [
                {
                    "source": e.source,
                    "target": e.target,
                    "url": e.url,
                    "crosses_hosts": e.crosses_hosts,
                }
                for e in self.plaintext
            ],
        }


def single_points(g: nx.DiGraph, client: str, purpose: str) -> list[str]:
    """Components on every path from ``client`` to any target of ``purpose``.

    Targets: apiservers for ``"apiserver"``, etcd members for ``"etcd"``. Only edges of
    that purpose are followed. A client that reaches no target returns ``["unreachable"]``.
    """
    return _Paths(g, purpose).single_points(client)


def pinned_points(g: nx.DiGraph, client: str, paths: dict[str, _Paths] | None = None
                  ) -> list[str]:
    """What an apiserver client loses writes to while its connection stays put.

    A client that reaches several apiservers (through a load balancer) survives the loss
    of one of them: its connection breaks and the next one goes elsewhere. It does NOT
    survive the loss of what that apiserver itself depends on (its etcd endpoint: in 2016,
    127.0.0.1:2379, its own member): the apiserver stays up and keeps the connection, nginx
    has no health checks and HAProxy keeps established sessions on mark-down (no
    `shutdown-sessions`), so a kubelet pinned there fails its writes for the whole outage
    (docs/model.md: nginx, HAProxy, etcd). Returns those components, the client's own single points
    of
    failure excluded, in graph order.
    """
    if g.nodes[client]["component"] == "kube-proxy":
        return []  # it only lists (resourceVersion=0) and watches: the watch cache answers
    if paths is None:
        paths = {p: _Paths(g, p) for p in ("apiserver", "etcd")}
    own = set(paths["apiserver"].single_points(client))
    etcd = paths["etcd"]
    apis = [n for n in nx.descendants(g, client)
            if g.nodes[n]["component"] == "apiserver" and n not in own]
    if len(apis) < 2:
        return []  # one apiserver only: its losses are the client's own SPOFs
    out: dict[str, None] = {}
    for a in apis:
        for p in etcd.single_points(a):
            if p not in own and p != "unreachable":
                out[p] = None
    order = {n: i for i, n in enumerate(g)}
    return sorted(out, key=lambda n: order[n])


class _Paths:
    """The edges of one purpose with every target joined to a common sink, built once and
    shared by all clients, so a 1,000-node audit stays linear in the graph's size.

    On a DAG (the topology always is one: connections run from clients towards servers)
    the nodes on every path from ``n`` to the sink are ``∩ over successors s of ({s} ∪
    P(s))``, memoised over the graph. Otherwise: the sink's dominator chain
    (Lengauer-Tarjan, :func:`networkx.immediate_dominators`), per client.
    """

    def __init__(self, g: nx.DiGraph, purpose: str) -> None:
        target_kind = "apiserver" if purpose == "apiserver" else "etcd"
        sub = nx.DiGraph()
        sub.add_edges_from((u, v) for u, v, d in g.edges(data=True) if d["purpose"] == purpose)
        sub.add_edges_from(
            (t, _SINK) for t in list(sub) if g.nodes[t]["component"] == target_kind
        )
        self.g, self.sub = g, sub
        self.order: dict[str, int] | None = None
        if nx.is_directed_acyclic_graph(sub):
            self.order = {n: i for i, n in enumerate(nx.topological_sort(sub))}
        self.memo: dict[str, frozenset[str] | None] = {_SINK: frozenset()}

    def single_points(self, client: str) -> list[str]:
        if client not in self.sub:
            return ["unreachable"]
        if self.order is None:
            chain = self._dominator_chain(client)
        else:
            on_all = self._on_every_path(client)
            order = self.order
            chain = None if on_all is None else sorted(on_all - {_SINK}, key=lambda n: order[n])
        if chain is None:
            return ["unreachable"]
        return [n for n in chain if not self.g.nodes[n].get("virtual")]

    def _on_every_path(self, node: str) -> frozenset[str] | None:
        """Nodes on every path from ``node`` to the sink; None when there is no path."""
        if node in self.memo:
            return self.memo[node]
        result: frozenset[str] | None = None
        for s in self.sub.successors(node):
            below = self._on_every_path(s)
            if below is None:
                continue
            through = below | {s}
            result = through if result is None else result & through
        self.memo[node] = result
        return result

    def _dominator_chain(self, client: str) -> list[str] | None:
        idom = nx.immediate_dominators(self.sub, client)
        if _SINK not in idom:
            return None
        chain, node = [], idom[_SINK]
        while node != client:
            chain.append(node)
            node = idom[node]
        return list(reversed(chain))


def audit(g: nx.DiGraph, pinned_too: bool = True) -> Audit:
    """Single points of failure per client class and plaintext edges of a topology;
    ``pinned_too=False`` skips :func:`pinned_points` (quadratic in the clients)."""
    per_class: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    pinned: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    sizes: Counter[tuple[str, str]] = Counter()
    paths = {p: _Paths(g, p) for p in ("apiserver", "etcd")}
    for n, d in g.nodes(data=True):
        cls = d.get("client_class")
        if cls is None and d["component"] == "apiserver":
            cls = "apiserver"  # the apiserver is an etcd client
        if cls is None:
            continue
        for purpose in sorted({e["purpose"] for _, _, e in g.out_edges(n, data=True)}):
            if cls == "apiserver" and purpose != "etcd":
                continue
            key = (cls, purpose)
            sizes[key] += 1
            for spof in paths[purpose].single_points(n):
                per_class[key][_describe(g, n, spof)] += 1
            if purpose == "apiserver" and pinned_too:
                for p in pinned_points(g, n, paths):
                    pinned[key][_describe(g, n, p)] += 1
    classes = [
        ClassAudit(*key, sizes[key], dict(per_class[key].most_common()),
                   dict(pinned[key].most_common()))
        for key in sorted(sizes)
    ]
    plain = [
        PlainEdge(u, v, d["url"], d["crosses_hosts"])
        for u, v, d in g.edges(data=True)
        if not d["tls"] and d["scheme"] in {"http", "tcp"}
    ]
    return Audit(classes, plain)


def _describe(g: nx.DiGraph, client: str, spof: str) -> str:
    if spof == "unreachable":
        return "unreachable (no path)"
    if g.nodes[spof]["host"] == g.nodes[client]["host"]:
        return f"own {g.nodes[spof]['component']}"
    return spof


def format_audit(result: Audit) -> str:
    """The audit as text for the terminal."""
    lines = ["Single points of failure (every path from the client passes through them):"]
    for c in result.classes:
        head = f"  {c.client_class:<30} -> {c.purpose:<9} ({c.clients} client(s)): "
        if not c.spofs:
            lines.append(head + "none")
            continue
        parts = [f"{name} [{n}/{c.clients}]" for name, n in c.spofs.items()]
        lines.append(head + ", ".join(parts))
    held = [c for c in result.classes if c.pinned]
    if held:
        lines.append("")
        lines.append("Not routed around once connected (the apiserver stays up, the LB keeps "
                     "the connection, its writes fail):")
        for c in held:
            head = f"  {c.client_class:<30} -> {c.purpose:<9} ({c.clients} client(s)): "
            lines.append(head + ", ".join(f"{name} [{n}/{c.clients}]"
                                          for name, n in c.pinned.items()))
    crossing = [e for e in result.plaintext if e.crosses_hosts]
    local = [e for e in result.plaintext if not e.crosses_hosts]
    lines.append("")
    lines.append(f"Plaintext connections that cross hosts: {len(crossing)}")
    shown: Counter[str] = Counter()
    for e in crossing:
        shown[f"{e.source.split('/')[1]} -> {e.target.split('/')[1]} ({e.url.split(':')[0]})"] += 1
    for text, n in shown.most_common():
        lines.append(f"  {text} x{n}")
    if local:
        lines.append(
            f"Plaintext connections within a host (localhost only): {len(local)}"
            " (masters' insecure port, local etcd endpoints)"
        )
    return "\n".join(lines)
