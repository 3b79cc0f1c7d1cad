"""Drawing the topology graph as a layered picture (matplotlib, no display needed).

Columns are the graph's layers (clients, local proxies, external LB, apiservers, etcd).
Past ``max_hosts`` hosts, hosts whose components connect alike (every node behind the
same masters, say) are merged into one counted class, so 1,000 nodes draw as one box
marked ``x997``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

_COLOURS = {
    "kubelet": "#9ecae1",
    "kube-proxy": "#9ecae1",
    "controller-manager": "#c6dbef",
    "scheduler": "#c6dbef",
    "flannel": "#fdd0a2",
    "calico": "#fdd0a2",
    "lb": "#a1d99b",
    "etcd-proxy": "#fdae6b",
    "vip": "#dadaeb",
    "external-lb": "#74c476",
    "apiserver": "#6baed6",
    "etcd": "#fd8d3c",
}


def summarize(g: nx.DiGraph) -> nx.DiGraph:
    """Hosts with the same shape of connections merged into classes with a ``count``.

    Two hosts have the same shape when their components are the same and each connects
    to the same remote components (a connection within the host counts as "own X").
    """
    shape: dict[str, tuple[object, ...]] = {}
    per_host: dict[str, list[str]] = defaultdict(list)
    for n, d in g.nodes(data=True):
        per_host[d["host"]].append(n)
    for host, nodes in per_host.items():
        items = []
        for n in nodes:
            outs = tuple(
                sorted(
                    ("own " + g.nodes[v]["component"]) if g.nodes[v]["host"] == host else v
                    for v in g.successors(n)
                )
            )
            ins_remote = any(g.nodes[u]["host"] != host for u in g.predecessors(n))
            items.append((g.nodes[n]["component"], outs, ins_remote))
        shape[host] = tuple(sorted(items))
    classes: dict[tuple[object, ...], list[str]] = defaultdict(list)
    for host in per_host:
        classes[shape[host]].append(host)
    rep = {}
    for hosts in classes.values():
        label = hosts[0] if len(hosts) == 1 else f"{hosts[0]}..{hosts[-1]} x{len(hosts)}"
        for h in hosts:
            rep[h] = (label, len(hosts))
    out = nx.DiGraph(**g.graph)
    for n, d in g.nodes(data=True):
        label, count = rep[d["host"]]
        m = f"{label}/{d['component']}"
        if m not in out:
            out.add_node(m, **{**d, "host": label, "count": count})
    for u, v, d in g.edges(data=True):
        a = f"{rep[g.nodes[u]['host']][0]}/{g.nodes[u]['component']}"
        b = f"{rep[g.nodes[v]['host']][0]}/{g.nodes[v]['component']}"
        out.add_edge(a, b, **d)
    return out


def draw_topology(g: nx.DiGraph, path: str | Path, max_hosts: int = 12, title: str = "") -> Path:
    """Draw ``g`` into a PNG at ``path``; returns the path."""
    hosts = {d["host"] for _, d in g.nodes(data=True)}
    shown = summarize(g) if len(hosts) > max_hosts else g
    layers: dict[int, list[str]] = defaultdict(list)
    for n, d in shown.nodes(data=True):
        layers[d["layer"]].append(n)
    pos: dict[str, tuple[float, float]] = {}
    tallest = max(len(v) for v in layers.values())
    for layer, nodes in layers.items():
        for i, n in enumerate(nodes):
            pos[n] = (layer * 3.2, -(i - (len(nodes) - 1) / 2) * (tallest / max(len(nodes), 1)) ** 0.3)
    height = max(4.0, 0.42 * tallest + 1.5)
    fig, ax = plt.subplots(figsize=(16, height))
    plain = [(u, v) for u, v, d in shown.edges(data=True) if not d["tls"]]
    secure = [(u, v) for u, v, d in shown.edges(data=True) if d["tls"]]
    nx.draw_networkx_edges(shown, pos, edgelist=secure, ax=ax, edge_color="#555555", arrows=True,
                           arrowsize=8, width=0.8, node_size=1600, alpha=0.6)
    nx.draw_networkx_edges(shown, pos, edgelist=plain, ax=ax, edge_color="#d62728", style="dashed",
                           arrows=True, arrowsize=8, width=0.8, node_size=1600, alpha=0.7)
    for n, d in shown.nodes(data=True):
        x, y = pos[n]
        label = n if d.get("count", 1) == 1 else f"{d['host']}\n{d['component']}"
        ax.text(x, y, label, ha="center", va="center", fontsize=7,
                bbox={"boxstyle": "round,pad=0.3", "fc": _COLOURS.get(d["component"], "#eeeeee"),
                      "ec": "#333333", "lw": 0.6})
    names = ["clients", "local proxies", "external LB / VIP", "apiservers", "etcd"]
    for layer in sorted(layers):
        ax.text(layer * 3.2, max(y for _, y in pos.values()) + 0.9, names[layer], ha="center",
                fontsize=10, fontweight="bold")
    ax.plot([], [], color="#555555", label="TLS")
    ax.plot([], [], color="#d62728", ls="--", label="plaintext")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"{g.graph.get('source', '')} ({g.graph.get('rules', '')}): "
                 f"{len(hosts)} hosts, {g.number_of_nodes()} components", fontsize=11)
    ax.set_axis_off()
    ax.margins(0.08, 0.12)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
