"""The topology graph and its drawing, against the endpoint rules of docs/model.md, endpoint rules.

Every expected edge is derived by hand from the rules: who a host's URL points at
(localhost: the host's own LB / etcd proxy / apiserver / etcd member; an address: the host
that has it; the external LB's address: the LB instance or the VIP in front of several),
with the URL's scheme and port. Masters are ``master1..3`` (10.0.0.1-3, etcd members),
nodes ``node1..`` (10.1.0.x) as ``generate`` makes them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

import hasim
from hasim.graph.draw import SERVER_COMPONENTS, _segment, summarize, topology_figure
from hasim.graph.topology import build_topology
from hasim.kubespray.cluster import generate_cluster
from hasim.kubespray.endpoints import HA_MODE_2016, RULES, HostView, register
from hasim.spec.scenario import load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parent.parent
MASTERS = ["master1", "master2", "master3"]
NODES5 = [f"node{i}" for i in range(1, 6)]
EXT = {"address": "10.0.0.100", "port": 8383}


def _scenario(nodes: int = 5, rules: str = "ha-mode-2016", balancers: Any = None,
              **vars_: Any) -> Any:
    raw: dict[str, Any] = {
        "name": "t",
        "cluster": {"rules": rules, "generate": {"masters": 3, "etcd": 3, "nodes": nodes},
                    "vars": vars_},
    }
    if balancers:
        raw["balancers"] = balancers
    return scenario_from_dict(raw)


def _edge(g: nx.DiGraph, u: str, v: str) -> dict[str, Any]:
    assert g.has_edge(u, v), f"missing edge {u} -> {v}; {u} goes to {list(g.successors(u))}"
    return dict(g.edges[u, v])


def _check(d: dict[str, Any], scheme: str, port: int, crosses: bool, purpose: str) -> None:
    assert (d["scheme"], d["port"], d["tls"], d["crosses_hosts"], d["purpose"]) == (
        scheme, port, scheme == "https", crosses, purpose
    )


# --- apiserver access by mode ----------------------------------------------------------------


def test_default_mode_every_node_goes_to_the_first_master() -> None:
    g = build_topology(load_scenario(ROOT / "scenarios/default-mode.yaml"))
    assert not [n for n, d in g.nodes(data=True) if d["component"] in {"lb", "external-lb"}]
    for node in NODES5:
        for client in ("kubelet", "kube-proxy"):
            # m[0] = master1, reached at its access_ip 192.168.0.1 on sp = 443.
            assert list(g.successors(f"{node}/{client}")) == ["master1/apiserver"]
            d = _edge(g, f"{node}/{client}", "master1/apiserver")
            assert d["url"] == "https://192.168.0.1:443"
            _check(d, "https", 443, True, "apiserver")
    for m in MASTERS:
        # A master's kubelet uses its own insecure port: http://localhost:8080.
        d = _edge(g, f"{m}/kubelet", f"{m}/apiserver")
        _check(d, "http", 8080, False, "apiserver")


def test_local_lb_node_goes_through_its_own_lb_to_every_master() -> None:
    g = build_topology(_scenario(loadbalancer_apiserver_localhost=True))
    for node in NODES5:
        assert g.nodes[f"{node}/lb"]["kind"] == "nginx"
        for client in ("kubelet", "kube-proxy"):
            assert list(g.successors(f"{node}/{client}")) == [f"{node}/lb"]
            _check(_edge(g, f"{node}/{client}", f"{node}/lb"), "https", 443, False, "apiserver")
        assert list(g.successors(f"{node}/lb")) == [f"{m}/apiserver" for m in MASTERS]
        for i, m in enumerate(MASTERS, 1):
            d = _edge(g, f"{node}/lb", f"{m}/apiserver")
            assert d["url"] == f"https://10.0.0.{i}:443"
            _check(d, "https", 443, True, "apiserver")
    # No LB on masters: the 2016 table gives them their own insecure port.
    assert "master1/lb" not in g


@pytest.mark.parametrize("path", ["external-lb.yaml", "external-and-local-lb.yaml"])
def test_external_lb_every_host_goes_through_extlb1(path: str) -> None:
    g = build_topology(load_scenario(ROOT / "scenarios" / path))
    assert g.graph["external_lb"] == {"address": "10.0.0.100", "port": 8383}
    assert "vip/vip" not in g
    assert not [n for n, d in g.nodes(data=True) if d["component"] == "lb"]
    for host in MASTERS + NODES5:
        for client in ("kubelet", "kube-proxy"):
            d = _edge(g, f"{host}/{client}", "extlb1/external-lb")
            assert d["url"] == "https://lb-apiserver.kubernetes.local:8383"
            _check(d, "https", 8383, True, "apiserver")
    assert list(g.successors("extlb1/external-lb")) == [f"{m}/apiserver" for m in MASTERS]
    for m in MASTERS:
        _check(_edge(g, "extlb1/external-lb", f"{m}/apiserver"), "https", 443, True, "apiserver")


def test_keepalived_vip_in_front_of_two_instances() -> None:
    s = _scenario(
        loadbalancer_apiserver=EXT,
        balancers={"external": {"kind": "haproxy", "instances": 2, "vip": {"kind": "keepalived"}}},
    )
    g = build_topology(s)
    assert g.nodes["vip/vip"]["kind"] == "keepalived"
    assert g.nodes["vip/vip"]["virtual"] is True
    assert g.nodes["vip/vip"]["address"] == "10.0.0.100"
    assert list(g.successors("vip/vip")) == ["extlb1/external-lb", "extlb2/external-lb"]
    for host in MASTERS + NODES5:
        d = _edge(g, f"{host}/kubelet", "vip/vip")
        # The VIP lives on an LB instance, never on the client's host.
        _check(d, "https", 8383, True, "apiserver")
    for lb in ("extlb1", "extlb2"):
        assert list(g.successors(f"{lb}/external-lb")) == [f"{m}/apiserver" for m in MASTERS]


def test_two_instances_without_vip_use_the_one_holding_the_address() -> None:
    s = _scenario(loadbalancer_apiserver=EXT,
                  balancers={"external": {"kind": "haproxy", "instances": 2}})
    g = build_topology(s)
    assert "vip/vip" not in g
    assert list(g.successors("node1/kubelet")) == ["extlb1/external-lb"]
    assert list(g.predecessors("extlb2/external-lb")) == []


# --- etcd access -----------------------------------------------------------------------------


def test_etcd_proxy_on_every_node_fronts_all_members_over_http() -> None:
    g = build_topology(_scenario())
    for node in NODES5:
        assert list(g.successors(f"{node}/flannel")) == [f"{node}/etcd-proxy"]
        d = _edge(g, f"{node}/flannel", f"{node}/etcd-proxy")
        assert d["url"] == "http://127.0.0.1:2379"
        _check(d, "http", 2379, False, "etcd")
        assert list(g.successors(f"{node}/etcd-proxy")) == [f"{m}/etcd" for m in MASTERS]
        for m in MASTERS:
            _check(_edge(g, f"{node}/etcd-proxy", f"{m}/etcd"), "http", 2379, True, "etcd")
    for m in MASTERS:
        # An etcd member's own 127.0.0.1:2379 is the member itself: no proxy there.
        assert f"{m}/etcd-proxy" not in g
        _check(_edge(g, f"{m}/flannel", f"{m}/etcd"), "http", 2379, False, "etcd")
        _check(_edge(g, f"{m}/apiserver", f"{m}/etcd"), "http", 2379, False, "etcd")


def test_multiaccess_flannel_takes_only_the_first_member() -> None:
    g = build_topology(load_scenario(ROOT / "scenarios/etcd-multiaccess.yaml"))
    assert not [n for n, d in g.nodes(data=True) if d["component"] == "etcd-proxy"]
    for host in MASTERS + NODES5:
        # flannel's one --etcd-server: the first of http://10.0.0.{1,2,3}:2379.
        assert list(g.successors(f"{host}/flannel")) == ["master1/etcd"]
        d = _edge(g, f"{host}/flannel", "master1/etcd")
        assert d["url"] == "http://10.0.0.1:2379"
        _check(d, "http", 2379, host != "master1", "etcd")
    for m in MASTERS:
        assert list(g.successors(f"{m}/apiserver")) == [f"{x}/etcd" for x in MASTERS]


# --- masters' own clients --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "url", "scheme", "port"),
    [
        ("ha-mode-2016", "http://127.0.0.1:8080", "http", 8080),
        ("kubespray-2026-01", "https://127.0.0.1:6443", "https", 6443),
    ],
)
def test_controller_manager_and_scheduler_use_their_own_apiserver(
    rules: str, url: str, scheme: str, port: int
) -> None:
    g = build_topology(_scenario(rules=rules, loadbalancer_apiserver_localhost=True))
    for m in MASTERS:
        for c in ("controller-manager", "scheduler"):
            assert list(g.successors(f"{m}/{c}")) == [f"{m}/apiserver"]
            d = _edge(g, f"{m}/{c}", f"{m}/apiserver")
            assert d["url"] == url
            _check(d, scheme, port, False, "apiserver")
            assert g.nodes[f"{m}/{c}"]["client_class"] == c


def test_kubespray_2026_has_no_etcd_proxy_or_flannel_and_tls_everywhere() -> None:
    g = build_topology(_scenario(rules="kubespray-2026-01"))
    kinds = Counter(d["component"] for _, d in g.nodes(data=True))
    assert kinds["etcd-proxy"] == kinds["flannel"] == 0
    assert kinds["lb"] == 5  # local LB on by default: no external LB defined
    assert all(d["tls"] for _, _, d in g.edges(data=True))
    for m in MASTERS:
        assert list(g.successors(f"{m}/apiserver")) == [f"{x}/etcd" for x in MASTERS]


# --- the graph follows the endpoint evaluation -----------------------------------------------


def test_every_client_edge_carries_the_url_of_its_endpoints() -> None:
    s = load_scenario(ROOT / "scenarios/local-lb.yaml")
    g = build_topology(s)
    eps = hasim.evaluate_endpoints(s)
    for host, ep in eps.items():
        assert ep.apiserver is not None
        for c in ("kubelet", "kube-proxy"):
            assert [g.edges[e]["url"] for e in g.out_edges(f"{host}/{c}")] == [ep.apiserver]
        assert [g.edges[e]["url"] for e in g.out_edges(f"{host}/flannel")] == ep.etcd[:1]


@pytest.fixture
def last_master_rules() -> Iterator[str]:
    """A fork's rule set: non-masters point at the LAST master instead of m[0]."""

    def apiserver(h: HostView) -> str | None:
        if h.is_master:
            return HA_MODE_2016.apiserver(h)
        return f"https://{h.cluster.masters[-1].access_ip}:{h.port('kube_apiserver_port')}"

    register(dataclasses.replace(HA_MODE_2016, name="test-last-master", apiserver=apiserver))
    try:
        yield "test-last-master"
    finally:
        RULES.pop("test-last-master", None)


def test_a_registered_rule_set_changes_the_graph(last_master_rules: str) -> None:
    g = build_topology(generate_cluster(3, 3, 4), rules=last_master_rules)
    assert g.graph["rules"] == last_master_rules
    for i in range(1, 5):
        assert list(g.successors(f"node{i}/kubelet")) == ["master3/apiserver"]


# --- size ------------------------------------------------------------------------------------

PER_NODE = ("kubelet", "kube-proxy", "flannel", "lb", "etcd-proxy")
PER_MASTER = ("apiserver", "etcd", "kubelet", "kube-proxy", "controller-manager", "scheduler",
              "flannel")


@pytest.fixture(scope="module")
def big() -> nx.DiGraph:
    cluster = generate_cluster(3, 3, 1000).with_vars({"loadbalancer_apiserver_localhost": True})
    return hasim.build_topology(cluster)


def test_thousand_nodes_component_count(big: nx.DiGraph) -> None:
    expected = Counter({c: 1000 for c in PER_NODE})
    expected.update({c: 3 for c in PER_MASTER})
    assert Counter(d["component"] for _, d in big.nodes(data=True)) == expected
    assert big.number_of_nodes() == 1000 * len(PER_NODE) + 3 * len(PER_MASTER)
    hosts = Counter(d["host"] for _, d in big.nodes(data=True))
    assert hosts["node1000"] == len(PER_NODE) and hosts["master3"] == len(PER_MASTER)


def test_thousand_nodes_from_a_scenario(big: nx.DiGraph) -> None:
    s = _scenario(nodes=1000, loadbalancer_apiserver_localhost=True)
    g = hasim.build_topology(s)
    assert g.number_of_nodes() == big.number_of_nodes()
    assert g.number_of_edges() == big.number_of_edges()


# --- drawing ---------------------------------------------------------------------------------


def _labels(fig: Any) -> dict[str, str]:
    return {t.get_gid(): t.get_text() for t in fig.axes[0].texts if t.get_gid()}


def test_small_cluster_draws_every_component_by_name() -> None:
    g = build_topology(load_scenario(ROOT / "scenarios/local-lb.yaml"))
    assert len({d["host"] for _, d in g.nodes(data=True)}) == 8
    fig = topology_figure(g)
    try:
        labels = _labels(fig)
        assert labels == {n: n for n in g.nodes}  # no summarising: one box per component
        # One arrow per edge, each starting at the right side of its source box.
        arrows = fig.axes[0].patches
        assert len(arrows) == g.number_of_edges()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_summarize_merges_the_thousand_nodes_but_not_the_masters(big: nx.DiGraph) -> None:
    s = summarize(big)
    hosts = Counter(d["host"] for _, d in s.nodes(data=True))
    node_class = "node1..node1000 x1000"
    assert set(hosts) == {"master1", "master2", "master3", node_class}
    for _, d in s.nodes(data=True):
        assert d["count"] == (1000 if d["host"] == node_class else 1)
        assert len(d["hosts"]) == d["count"]
    assert sorted(d["component"] for _, d in s.nodes(data=True) if d["host"] == node_class) == \
        sorted(PER_NODE)
    assert list(s.successors(f"{node_class}/lb")) == [f"{m}/apiserver" for m in MASTERS]
    assert list(s.successors(f"{node_class}/etcd-proxy")) == [f"{m}/etcd" for m in MASTERS]


def test_default_mode_at_scale_keeps_m0_distinct() -> None:
    g = build_topology(_scenario(nodes=40))
    s = summarize(g)
    # Every node points at master1, but servers are never merged: the picture must show
    # which master the whole class hangs on.
    assert list(s.successors("node1..node40 x40/kubelet")) == ["master1/apiserver"]
    assert {d["host"] for _, d in s.nodes(data=True) if d["component"] in SERVER_COMPONENTS} \
        == set(MASTERS)


def test_large_cluster_figure_shows_the_classes(big: nx.DiGraph) -> None:
    fig = topology_figure(big)
    try:
        labels = _labels(fig)
        assert labels["node1..node1000 x1000/kubelet"] == "node1..node1000 x1000\nkubelet"
        assert labels["master2/apiserver"] == "master2/apiserver"
        assert len(labels) == 1 * len(PER_NODE) + 3 * len(PER_MASTER)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_edges_leave_the_right_side_and_enter_the_left_side() -> None:
    # Boxes (cx, cy, half_w, half_h): edges run side to side, not centre to centre.
    assert _segment((0, 0, 1, 0.2), (10, 5, 2, 0.2)) == ((1, 0), (8, 5))
    # Stacked boxes: cut at top and bottom borders.
    assert _segment((0, 0, 1, 0.5), (0, 4, 1, 0.5)) == ((0, 0.5), (0, 3.5))
    assert _segment((0, 0, 1, 1), (0.5, 0.5, 1, 1)) is None
