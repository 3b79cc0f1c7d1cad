"""The audit: single points of failure per client class, plaintext edges.

Expected values come from the rules, not from a previous run: in the default mode every
node is pointed at m[0] = the first ``kube-master`` host in inventory order; with a local
LB a node's only way out is its own LB; with the 2016 etcd proxy a node's etcd clients
have only their own proxy; flannel takes ONE etcd server (the first member) under
``etcd_multiaccess``; an external LB is one process unless a VIP fronts several. A
component is a SPOF for a client when every path to any target (apiserver / etcd member)
passes through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hasim.graph.audit import Audit, ClassAudit, audit, format_audit, single_points
from hasim.graph.topology import build_topology
from hasim.kubespray.cluster import generate_cluster
from hasim.spec.scenario import load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parent.parent
MASTERS = ["master1", "master2", "master3"]
EXT = {"address": "10.0.0.100", "port": 8383}


def _scenario(rules: str = "ha-mode-2016", nodes: int = 5, hosts: Any = None,
              balancers: Any = None, **vars_: Any) -> Any:
    cluster: dict[str, Any] = {"rules": rules, "vars": vars_}
    if hosts:
        cluster["hosts"] = hosts
    else:
        cluster["generate"] = {"masters": 3, "etcd": 3, "nodes": nodes}
    raw: dict[str, Any] = {"name": "t", "cluster": cluster}
    if balancers:
        raw["balancers"] = balancers
    return scenario_from_dict(raw)


def _classes(result: Audit) -> dict[tuple[str, str], ClassAudit]:
    return {(c.client_class, c.purpose): c for c in result.classes}


def _spofs(subject: Any, cls: str, purpose: str) -> dict[str, int]:
    c = _classes(audit(build_topology(subject)))[(cls, purpose)]
    return c.spofs


def test_default_mode_first_master_is_the_spof_of_every_node() -> None:
    # The master group lists master3 first: m[0] is master3, not master1 (inventory order).
    hosts = {
        "master3": {"ip": "10.0.0.3", "groups": ["kube-master", "etcd"]},
        "master1": {"ip": "10.0.0.1", "groups": ["kube-master", "etcd"]},
        "master2": {"ip": "10.0.0.2", "groups": ["kube-master", "etcd"]},
        "node1": {"ip": "10.0.0.11", "groups": ["kube-node"]},
        "node2": {"ip": "10.0.0.12", "groups": ["kube-node"]},
    }
    s = _scenario(hosts=hosts)
    result = _classes(audit(build_topology(s)))
    for client in ("kubelet", "kube-proxy"):
        c = result[(f"{client}@kube-node", "apiserver")]
        assert c.clients == 2
        assert c.spofs == {"master3/apiserver": 2}
        # A master's own clients depend on their own apiserver only.
        assert result[(f"{client}@kube-master", "apiserver")].spofs == {"own apiserver": 3}


def test_default_mode_scenario_file() -> None:
    s = load_scenario(ROOT / "scenarios/default-mode.yaml")
    g = build_topology(s)
    assert single_points(g, "node1/kubelet", "apiserver") == ["master1/apiserver"]
    assert _spofs(s, "kube-proxy@kube-node", "apiserver") == {"master1/apiserver": 5}


def test_local_lb_each_node_depends_on_its_own_lb() -> None:
    s = _scenario(loadbalancer_apiserver_localhost=True)
    g = build_topology(s)
    # Three apiservers behind the LB: none of them is on every path.
    assert single_points(g, "node4/kubelet", "apiserver") == ["node4/lb"]
    assert _spofs(s, "kubelet@kube-node", "apiserver") == {"own lb": 5}
    assert _spofs(s, "kube-proxy@kube-node", "apiserver") == {"own lb": 5}


def test_etcd_proxy_is_the_spof_of_the_nodes_etcd_clients() -> None:
    s = _scenario(loadbalancer_apiserver_localhost=True)
    g = build_topology(s)
    assert single_points(g, "node2/flannel", "etcd") == ["node2/etcd-proxy"]
    assert _spofs(s, "flannel@kube-node", "etcd") == {"own etcd-proxy": 5}
    # An apiserver on an etcd member talks to its local member only (127.0.0.1:2379).
    assert _spofs(s, "apiserver", "etcd") == {"own etcd": 3}


def test_multiaccess_flannel_hangs_on_the_first_member() -> None:
    s = load_scenario(ROOT / "scenarios/etcd-multiaccess.yaml")
    result = _classes(audit(build_topology(s)))
    assert result[("flannel@kube-node", "etcd")].spofs == {"master1/etcd": 5}
    # On master1 the first member is its own; on master2 and master3 it is master1's.
    assert result[("flannel@kube-master", "etcd")].spofs == {"master1/etcd": 2, "own etcd": 1}
    # The apiservers balance over all three members themselves: no SPOF.
    assert result[("apiserver", "etcd")].spofs == {}


def test_external_lb_without_vip_is_a_spof_for_everyone() -> None:
    s = load_scenario(ROOT / "scenarios/external-lb.yaml")
    result = _classes(audit(build_topology(s)))
    for client in ("kubelet", "kube-proxy"):
        assert result[(f"{client}@kube-node", "apiserver")].spofs == {"extlb1/external-lb": 5}
        assert result[(f"{client}@kube-master", "apiserver")].spofs == {"extlb1/external-lb": 3}


def test_keepalived_vip_over_two_instances_has_no_spof() -> None:
    s = _scenario(
        loadbalancer_apiserver=EXT,
        balancers={"external": {"kind": "haproxy", "instances": 2, "vip": {"kind": "keepalived"}}},
    )
    result = _classes(audit(build_topology(s)))
    for client in ("kubelet", "kube-proxy"):
        for group, n in (("kube-node", 5), ("kube-master", 3)):
            c = result[(f"{client}@{group}", "apiserver")]
            assert (c.clients, c.spofs) == (n, {})


def test_keepalived_vip_over_one_instance_still_has_that_instance() -> None:
    # A VIP is an address, not a process: it is never listed; the lone LB behind it is.
    s = _scenario(
        loadbalancer_apiserver=EXT,
        balancers={"external": {"kind": "haproxy", "instances": 1, "vip": {"kind": "keepalived"}}},
    )
    g = build_topology(s)
    assert single_points(g, "node1/kubelet", "apiserver") == ["extlb1/external-lb"]


def test_plaintext_edges_crossing_hosts_are_the_etcd_proxy_links() -> None:
    g = build_topology(load_scenario(ROOT / "scenarios/local-lb.yaml"))
    result = audit(g)
    crossing = {(e.source, e.target) for e in result.plaintext if e.crosses_hosts}
    # 5 proxies x 3 members, plain http (docs/model.md, etcd access); TLS everywhere else between
    # hosts.
    expected = {(f"node{i}/etcd-proxy", f"{m}/etcd") for i in range(1, 6) for m in MASTERS}
    assert crossing == expected
    assert all(e.url.startswith("http://") for e in result.plaintext)
    local = {(e.source, e.target) for e in result.plaintext if not e.crosses_hosts}
    # Within a host: each node's flannel to its proxy; on each master kubelet, kube-proxy,
    # controller-manager, scheduler to the insecure port, and flannel + apiserver to etcd.
    assert len(local) == 5 + 3 * 6
    assert ("master2/scheduler", "master2/apiserver") in local
    text = format_audit(result)
    assert "Plaintext connections that cross hosts: 15" in text
    assert "etcd-proxy -> etcd (http) x15" in text


def test_multiaccess_plaintext_includes_flannel_and_apiserver_to_remote_members() -> None:
    result = audit(build_topology(load_scenario(ROOT / "scenarios/etcd-multiaccess.yaml")))
    crossing = {(e.source, e.target) for e in result.plaintext if e.crosses_hosts}
    expected = {(f"node{i}/flannel", "master1/etcd") for i in range(1, 6)}
    expected |= {("master2/flannel", "master1/etcd"), ("master3/flannel", "master1/etcd")}
    expected |= {(f"{a}/apiserver", f"{b}/etcd") for a in MASTERS for b in MASTERS if a != b}
    assert crossing == expected


def test_kubespray_2026_has_no_plaintext() -> None:
    s = _scenario(rules="kubespray-2026-01")
    assert audit(build_topology(s)).plaintext == []


def test_unreachable_client_is_reported() -> None:
    g = build_topology(_scenario())
    g.remove_edges_from(list(g.out_edges("node1/etcd-proxy")))
    assert single_points(g, "node1/flannel", "etcd") == ["unreachable"]
    c = _classes(audit(g))[("flannel@kube-node", "etcd")]
    assert c.spofs == {"own etcd-proxy": 4, "unreachable (no path)": 1}


@pytest.mark.parametrize("local_lb", [True, False])
def test_thousand_nodes_audit(local_lb: bool) -> None:
    cluster = generate_cluster(3, 3, 1000).with_vars({"loadbalancer_apiserver_localhost": local_lb})
    result = _classes(audit(build_topology(cluster)))
    expected = {"own lb": 1000} if local_lb else {"master1/apiserver": 1000}
    assert result[("kubelet@kube-node", "apiserver")].spofs == expected
    assert result[("flannel@kube-node", "etcd")].spofs == {"own etcd-proxy": 1000}


def test_to_dict_shape() -> None:
    d = audit(build_topology(_scenario(loadbalancer_apiserver_localhost=True))).to_dict()
    spofs = {(c["client_class"], c["purpose"]): c for c in d["single_points_of_failure"]}
    assert spofs[("kubelet@kube-node", "apiserver")] == {
        "client_class": "kubelet@kube-node", "purpose": "apiserver", "clients": 5,
        "spofs": {"own lb": 5},
        # 2016: each apiserver's etcd is its own member (127.0.0.1:2379); the LB keeps a
        # kubelet's connection on an apiserver that lost it.
        "pinned": {"master1/etcd": 5, "master2/etcd": 5, "master3/etcd": 5},
    }
    assert len(d["plaintext_edges"]) == 15 + 5 + 3 * 6


def _toy(cyclic: bool) -> Any:
    import networkx as nx

    g = nx.DiGraph()
    for n, comp in [("h/kubelet", "kubelet"), ("h/lb", "lb"), ("x/lb", "lb"),
                    ("m1/apiserver", "apiserver"), ("m2/apiserver", "apiserver")]:
        g.add_node(n, host=n.split("/")[0], component=comp)
    for u, v in [("h/kubelet", "h/lb"), ("h/lb", "x/lb"), ("x/lb", "m1/apiserver"),
                 ("x/lb", "m2/apiserver")] + ([("x/lb", "h/lb")] if cyclic else []):
        g.add_edge(u, v, purpose="apiserver")
    return g


@pytest.mark.parametrize("cyclic", [False, True])
def test_chain_of_proxies_both_algorithms(cyclic: bool) -> None:
    # Two proxies in a row, then two apiservers: both proxies are on every path, in order.
    assert single_points(_toy(cyclic), "h/kubelet", "apiserver") == ["h/lb", "x/lb"]


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.stem)
def test_memoised_paths_agree_with_dominators(path: Path) -> None:
    from hasim.graph.audit import _Paths

    g = build_topology(load_scenario(path))
    for purpose in ("apiserver", "etcd"):
        paths = _Paths(g, purpose)
        assert paths.order is not None  # the topology is a DAG
        for client in paths.sub:
            if client == "__sink__":
                continue
            chain = paths._dominator_chain(client)
            expected = ["unreachable"] if chain is None else chain
            assert paths.single_points(client) == expected, client
