"""Drawing the topology graph as a layered picture (matplotlib Agg, no display needed).

Columns are the graph's layers (clients, local proxies, external LB and VIP, apiservers,
etcd). Clients are stacked host by host and each host's local proxies sit level with its
clients, so a host's own connections run left to right; the shared servers are spread
over the height. Every edge runs from the border of one box to the border of the other.

Past ``max_hosts`` hosts, hosts whose components connect alike (every node behind the
same masters, say) are merged into one counted class, so 1,000 nodes draw as one box
marked ``x1000``. Hosts running a server (apiserver, etcd, external LB) are never merged:
which master a node depends on is what the picture is for.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from hasim.graph.topology import hosts as graph_hosts  # noqa: E402

_COLOURS = {
    "kubelet": "#9ecae1",
    "kube-proxy": "#9ecae1",
    "controller-manager": "#c6dbef",
    "scheduler": "#c6dbef",
    "flannel": "#fdd0a2",
    "calico-node": "#fdd0a2",
    "kube-flannel": "#fdd0a2",
    "cilium": "#fdd0a2",
    "lb": "#a1d99b",
    "service": "#dadaeb",
    "etcd-proxy": "#fdae6b",
    "vip": "#dadaeb",
    "external-lb": "#74c476",
    "apiserver": "#6baed6",
    "etcd": "#fd8d3c",
}
#: Components that make a host a server: such hosts are drawn one by one, never merged.
SERVER_COMPONENTS = frozenset({"apiserver", "etcd", "external-lb", "vip", "service"})
_LAYER_NAMES = ("clients", "local proxies", "external LB / VIP", "apiservers", "etcd")
_COLUMN = 3.2  # data units between two layers
_VIP_SHIFT = -1.5  # the VIP gets its own column just left of the LB instances
_HOST_GAP = 0.6  # extra space between two hosts' clients
_TLS: dict[str, Any] = {"color": "#555555", "linestyle": "-", "alpha": 0.7}
_PLAIN_REMOTE: dict[str, Any] = {"color": "#d62728", "linestyle": "--", "alpha": 0.8}
_PLAIN_LOCAL: dict[str, Any] = {"color": "#e6a100", "linestyle": ":", "alpha": 0.9}


def summarize(g: nx.DiGraph) -> nx.DiGraph:
    """Hosts with the same shape of connections merged into classes with a ``count``.

    Two hosts have the same shape when their components are the same and each connects
    to the same remote components (a connection within the host counts as "own X").
    Hosts running a server component (:data:`SERVER_COMPONENTS`) stay on their own.
    Every node of the result has ``count`` (hosts merged into it) and ``hosts`` (their
    names); ``host`` is the class label, e.g. ``node1..node1000 x1000``.
    """
    per_host: dict[str, list[str]] = defaultdict(list)
    for n, d in g.nodes(data=True):
        per_host[d["host"]].append(n)
    classes: dict[object, list[str]] = defaultdict(list)
    for host, nodes in per_host.items():
        if any(g.nodes[n]["component"] in SERVER_COMPONENTS for n in nodes):
            classes[("server", host)].append(host)
            continue
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
        classes[tuple(sorted(items))].append(host)
    rep: dict[str, tuple[str, list[str]]] = {}
    for hosts in classes.values():
        label = hosts[0] if len(hosts) == 1 else f"{hosts[0]}..{hosts[-1]} x{len(hosts)}"
        for h in hosts:
            rep[h] = (label, hosts)
    out = nx.DiGraph(**g.graph)
    for _, d in g.nodes(data=True):
        label, members = rep[d["host"]]
        m = f"{label}/{d['component']}"
        if m not in out:
            out.add_node(m, **{**d, "host": label, "count": len(members), "hosts": members})
    for u, v, d in g.edges(data=True):
        a = f"{rep[g.nodes[u]['host']][0]}/{g.nodes[u]['component']}"
        b = f"{rep[g.nodes[v]['host']][0]}/{g.nodes[v]['component']}"
        out.add_edge(a, b, **d)
    return out


def _label(node: str, d: dict[str, object]) -> str:
    if d["component"] == "service":  # the in-cluster Service: its ClusterIP URL
        return f"kubernetes Service\n{d.get('address', '')}"
    count = d.get("count", 1)
    return node if count == 1 else f"{d['host']}\n{d['component']}"


def _column(d: dict[str, object]) -> float:
    x = float(d["layer"]) * _COLUMN  # type: ignore[arg-type]
    return x + _VIP_SHIFT if d["component"] == "vip" else x


def _layout(g: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Positions: clients host by host from the top, then every other component level
    with its own host's clients; a column holding a host without clients (a separate
    etcd member, an LB instance, the VIP) is spread evenly over the height instead."""
    pos: dict[str, tuple[float, float]] = {}
    centre: dict[str, float] = {}
    y = 0.0
    by_host: dict[str, list[str]] = defaultdict(list)
    for n, d in g.nodes(data=True):
        if d["layer"] == 0:
            by_host[d["host"]].append(n)
    for host, clients in by_host.items():
        for n in clients:
            pos[n] = (_column(g.nodes[n]), y)
            y -= 1.0
        centre[host] = y + (len(clients) + 1) / 2
        y -= _HOST_GAP
    span = max(-(y + 1.0 + _HOST_GAP), 0.0) + 1.0
    columns: dict[float, list[str]] = defaultdict(list)
    for n, d in g.nodes(data=True):
        if d["layer"] != 0:
            columns[_column(d)].append(n)
    for x, nodes in columns.items():
        if all(g.nodes[n]["host"] in centre for n in nodes):
            same_host: dict[str, list[str]] = defaultdict(list)
            for n in nodes:
                same_host[g.nodes[n]["host"]].append(n)
            for host, group in same_host.items():
                for i, n in enumerate(group):
                    pos[n] = (x, centre[host] - (i - (len(group) - 1) / 2))
        else:
            step = span / len(nodes)
            for i, n in enumerate(nodes):
                pos[n] = (x, 0.5 - step * (i + 0.5))
    return pos


def _segment(
    a: tuple[float, float, float, float], b: tuple[float, float, float, float]
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Where an edge between boxes ``(cx, cy, half_w, half_h)`` starts and ends.

    The graph flows left to right, so an edge leaves the middle of its source's right
    side and enters the middle of its target's left side: a line can then never seem
    to start at a neighbouring box. Otherwise the centre line is cut at both borders
    (None when the boxes overlap).
    """
    if b[0] - b[2] > a[0] + a[2]:
        return (a[0] + a[2], a[1]), (b[0] - b[2], b[1])
    dx, dy = b[0] - a[0], b[1] - a[1]

    def exit_at(box: tuple[float, float, float, float]) -> float:
        tx = box[2] / abs(dx) if dx else float("inf")
        ty = box[3] / abs(dy) if dy else float("inf")
        return min(tx, ty)

    ta, tb = exit_at(a), exit_at(b)
    if ta + tb >= 1.0:
        return None
    return (a[0] + ta * dx, a[1] + ta * dy), (b[0] - tb * dx, b[1] - tb * dy)


def topology_figure(g: nx.DiGraph, max_hosts: int = 12, title: str = "") -> Figure:
    """The layered drawing of ``g`` as a matplotlib figure (classes past ``max_hosts``).

    Each box is a :class:`matplotlib.text.Text` whose ``gid`` is the graph node it draws
    (a node of :func:`summarize` when hosts were merged).
    """
    hosts = {d["host"] for _, d in g.nodes(data=True)}
    shown = summarize(g) if len(hosts) > max_hosts else g
    pos = _layout(shown)
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    rows = max(ys) - min(ys) + 1
    merged = any(d.get("count", 1) > 1 for _, d in shown.nodes(data=True))
    height = max(4.5, (0.36 if merged else 0.27) * rows + 1.8)
    fig = plt.figure(figsize=(16, height))
    ax = fig.add_subplot()
    boxes: dict[str, Text] = {}
    for n, d in shown.nodes(data=True):
        x, y = pos[n]
        boxes[n] = ax.text(
            x, y, _label(n, d), ha="center", va="center", fontsize=7, zorder=3, gid=n,
            bbox={"boxstyle": "round,pad=0.3", "fc": _COLOURS.get(d["component"], "#eeeeee"),
                  "ec": "#333333", "lw": 0.6},
        )
    top = max(ys) + 1.3
    headers: dict[int, list[float]] = defaultdict(list)
    for n, d in shown.nodes(data=True):
        headers[d["layer"]].append(pos[n][0])
    for layer, columns in sorted(headers.items()):
        x = (min(columns) + max(columns)) / 2
        ax.text(x, top, _LAYER_NAMES[layer], ha="center", va="bottom", fontsize=10,
                fontweight="bold")
    ax.set_xlim(min(xs) - 1.9, max(xs) + 1.9)
    ax.set_ylim(min(ys) - 1.0, top + 1.0)
    ax.set_axis_off()
    ax.legend(
        handles=[
            Line2D([], [], lw=1, label="TLS", **_TLS),
            Line2D([], [], lw=1, label="plaintext, crosses hosts", **_PLAIN_REMOTE),
            Line2D([], [], lw=1, label="plaintext, same host", **_PLAIN_LOCAL),
        ],
        loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False,
    )
    ax.set_title(title or f"{g.graph.get('source', '')} ({g.graph.get('rules', '')}): "
                 f"{len(graph_hosts(g))} hosts, "
                 f"{g.number_of_nodes()} components", fontsize=11)
    # Fixed margins (title above, legend below) instead of tight_layout, which would cost
    # a full extra rendering; the axes then fill the figure between them.
    fig.subplots_adjust(left=0.005, right=0.995, top=1 - 0.45 / height, bottom=0.4 / height)
    # Box sizes in data units are fixed once the layout is: measure them, then cut every
    # edge at the sides of its two boxes (sizes do not change with the saving dpi).
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    to_data = ax.transData.inverted()
    extent: dict[str, tuple[float, float, float, float]] = {}
    for n, t in boxes.items():
        t.update_bbox_position_size(renderer)
        patch = t.get_bbox_patch()
        assert patch is not None
        (x0, y0), (x1, y1) = to_data.transform(patch.get_window_extent(renderer).get_points())
        extent[n] = ((x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2)
    for u, v, d in shown.edges(data=True):
        seg = _segment(extent[u], extent[v])
        if seg is None:
            continue
        style = _TLS if d["tls"] else _PLAIN_REMOTE if d["crosses_hosts"] else _PLAIN_LOCAL
        ax.add_patch(FancyArrowPatch(
            seg[0], seg[1], arrowstyle="-|>", mutation_scale=8, shrinkA=0, shrinkB=0,
            lw=0.8, zorder=1, **style,
        ))
    return fig


def draw_topology(g: nx.DiGraph, path: str | Path, max_hosts: int = 12, title: str = "") -> Path:
    """Draw ``g`` into a PNG at ``path`` (see :func:`topology_figure`); returns the path."""
    fig = topology_figure(g, max_hosts=max_hosts, title=title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
