"""Endpoint rules against the specification, not against hasim's own output.

Every expected URL below is written by hand from:

* ``kubespray's docs/ha-mode.md of October 2016`` (kubespray ``docs/ha-mode.md``, Oct 2016) and
  docs/model.md, the 2016 doc table (its table: ``http://lc:p``, ``https://lc:sp``, ``https://lb:lp``,
  ``https://m[0].aip:sp``; p=8080, sp=443, lb=``lb-apiserver.kubernetes.local``),
* docs/model.md, current kubespray (kubespray 2026-01, rules 1-4, first match wins, port 6443),
* docs/model.md, etcd access (local proxy ``http://127.0.0.1:2379`` or the member list),
* the design decisions documented in ``hasim/kubespray/endpoints.py`` (hosts outside
  ``k8s-cluster``, no etcd proxy on an etcd member, local LB only on non-masters, ...).

The test cluster has distinct ``ip`` (10.x) and ``access_ip`` (192.168.x) on every host
so that a test can tell which address a rule used.
"""

from __future__ import annotations

from typing import Any

import pytest

import hasim
from hasim.graph.topology import SERVICE_NODE, build_topology
from hasim.spec.scenario import scenario_from_dict

EXT_LB = {"address": "10.9.9.9", "port": 8383}
LB_2016 = "lb-apiserver.kubernetes.local"

MASTERS = ("master1", "master2", "master3")
NODES = ("node1", "node2")
ETCD_HOSTS = ("etcd1", "etcd2", "etcd3")


# --- helpers ---------------------------------------------------------------------------------


def _hosts(separate_etcd: bool = False) -> dict[str, dict[str, Any]]:
    """3 masters, 3 etcd members, 2 nodes; etcd on the masters or on etcd1..3."""
    hosts: dict[str, dict[str, Any]] = {}
    for i in (1, 2, 3):
        hosts[f"master{i}"] = {
            "ip": f"10.0.0.{i}",
            "access_ip": f"192.168.0.{i}",
            "groups": ["kube-master"] if separate_etcd else ["kube-master", "etcd"],
        }
    if separate_etcd:
        for i in (1, 2, 3):
            hosts[f"etcd{i}"] = {
                "ip": f"10.0.2.{i}",
                "access_ip": f"192.168.2.{i}",
                "groups": ["etcd"],
            }
    for i in (1, 2):
        hosts[f"node{i}"] = {
            "ip": f"10.0.1.{i}",
            "access_ip": f"192.168.1.{i}",
            "groups": ["kube-node"],
        }
    return hosts


def scenario(
    cluster_vars: dict[str, Any] | None = None,
    *,
    rules: str = "ha-mode-2016",
    hosts: dict[str, dict[str, Any]] | None = None,
    separate_etcd: bool = False,
) -> hasim.Scenario:
    return scenario_from_dict(
        {
            "name": "endpoints-test",
            "cluster": {
                "rules": rules,
                "hosts": hosts if hosts is not None else _hosts(separate_etcd),
                "vars": dict(cluster_vars or {}),
            },
        }
    )


def evaluate(
    cluster_vars: dict[str, Any] | None = None,
    *,
    rules: str = "ha-mode-2016",
    hosts: dict[str, dict[str, Any]] | None = None,
    separate_etcd: bool = False,
) -> dict[str, hasim.Endpoints]:
    sc = scenario(cluster_vars, rules=rules, hosts=hosts, separate_etcd=separate_etcd)
    return hasim.evaluate_endpoints(sc, rules=rules)


# --- 1. every cell of the 2016 table -----------------------------------------------------------

ROW_VARS = {
    "local-lb": {"loadbalancer_apiserver_localhost": True},
    "external-lb": {"loadbalancer_apiserver": EXT_LB},
    "default": {},
}

#: (row, kube-master cell, non-master cell) with p=8080, sp=443, lp=8383.
TABLE_DEFAULT_PORTS = [
    ("local-lb", "http://localhost:8080", "https://localhost:443"),
    ("external-lb", f"https://{LB_2016}:8383", f"https://{LB_2016}:8383"),
    ("default", "http://localhost:8080", "https://192.168.0.1:443"),
]

#: The same with kube_apiserver_insecure_port=18080, kube_apiserver_port=6443.
TABLE_CUSTOM_PORTS = [
    ("local-lb", "http://localhost:18080", "https://localhost:6443"),
    ("external-lb", f"https://{LB_2016}:8383", f"https://{LB_2016}:8383"),
    ("default", "http://localhost:18080", "https://192.168.0.1:6443"),
]
CUSTOM_PORTS = {"kube_apiserver_insecure_port": 18080, "kube_apiserver_port": 6443}


@pytest.mark.parametrize(("row", "master_url", "node_url"), TABLE_DEFAULT_PORTS)
def test_2016_table_default_ports(row: str, master_url: str, node_url: str) -> None:
    eps = evaluate(ROW_VARS[row])
    for m in MASTERS:
        assert eps[m].apiserver == master_url, m
    for n in NODES:
        assert eps[n].apiserver == node_url, n


@pytest.mark.parametrize(("row", "master_url", "node_url"), TABLE_CUSTOM_PORTS)
def test_2016_table_custom_ports(row: str, master_url: str, node_url: str) -> None:
    eps = evaluate({**ROW_VARS[row], **CUSTOM_PORTS})
    for m in MASTERS:
        assert eps[m].apiserver == master_url, m
    for n in NODES:
        assert eps[n].apiserver == node_url, n


def test_2016_is_the_default_rule_set() -> None:
    sc = scenario()
    eps = hasim.evaluate_endpoints(sc)
    assert eps["master2"].apiserver == "http://localhost:8080"
    assert eps["node2"].apiserver == "https://192.168.0.1:443"
    # A Cluster (not a Scenario) is accepted too.
    eps = hasim.evaluate_endpoints(sc.cluster)
    assert eps["node1"].apiserver == "https://192.168.0.1:443"


def test_2016_ports_given_as_strings() -> None:
    # Ansible variables from an INI inventory are strings.
    eps = evaluate({"kube_apiserver_insecure_port": "18080", "kube_apiserver_port": "6443"})
    assert eps["master1"].apiserver == "http://localhost:18080"
    assert eps["node1"].apiserver == "https://192.168.0.1:6443"


def test_2016_roles() -> None:
    eps = evaluate(separate_etcd=True)
    assert set(eps["master1"].roles) == {"kube-master", "k8s-cluster"}
    assert set(eps["node1"].roles) == {"kube-node", "k8s-cluster"}
    assert set(eps["etcd1"].roles) == {"etcd"}
    eps = evaluate()
    assert set(eps["master3"].roles) == {"kube-master", "etcd", "k8s-cluster"}


# --- 2. deferrals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "url"),
    [
        ({}, f"https://{LB_2016}:443"),
        ({"kube_apiserver_port": 6443}, f"https://{LB_2016}:6443"),
    ],
)
def test_lp_defers_to_sp(extra: dict[str, Any], url: str) -> None:
    eps = evaluate({"loadbalancer_apiserver": {"address": "10.9.9.9"}, **extra})
    for h in MASTERS + NODES:
        assert eps[h].apiserver == url, h


@pytest.mark.parametrize(
    ("master1", "url"),
    [
        (
            {"ip": "10.0.0.1", "access_ip": "192.168.0.1", "ansible_host": "172.16.0.1"},
            "https://192.168.0.1:443",
        ),
        ({"ip": "10.0.0.1", "ansible_host": "172.16.0.1"}, "https://10.0.0.1:443"),
        ({"ansible_host": "172.16.0.1"}, "https://172.16.0.1:443"),
        ({}, "https://master1:443"),
    ],
    ids=["access_ip", "ip", "ansible_host", "hostname"],
)
def test_aip_deferral_for_m0(master1: dict[str, Any], url: str) -> None:
    hosts = _hosts()
    hosts["master1"] = {**master1, "groups": ["kube-master", "etcd"]}
    eps = evaluate(hosts=hosts)
    assert eps["node1"].apiserver == url
    assert eps["node2"].apiserver == url
    assert eps["master1"].apiserver == "http://localhost:8080"


def test_aip_deferral_via_host_vars() -> None:
    # The same addresses given as plain host variables instead of the HostSpec fields.
    hosts = _hosts()
    hosts["master1"] = {"groups": ["kube-master"], "vars": {"ip": "10.0.0.1"}}
    eps = evaluate(hosts=hosts)
    assert eps["node1"].apiserver == "https://10.0.0.1:443"


def test_lb_domain_default() -> None:
    eps = evaluate({"loadbalancer_apiserver": EXT_LB})
    assert eps["node1"].apiserver == "https://lb-apiserver.kubernetes.local:8383"
    assert eps["node1"].etc_hosts == ["10.9.9.9 lb-apiserver.kubernetes.local"]


def test_lb_domain_custom() -> None:
    eps = evaluate(
        {"loadbalancer_apiserver": EXT_LB, "apiserver_loadbalancer_domain_name": "api.example.com"}
    )
    for h in MASTERS + NODES:
        assert eps[h].apiserver == "https://api.example.com:8383", h
        assert eps[h].etc_hosts == ["10.9.9.9 api.example.com"], h


@pytest.mark.parametrize("localhost", [True, False])
def test_external_lb_overrides_local_lb(localhost: bool) -> None:
    eps = evaluate(
        {"loadbalancer_apiserver": EXT_LB, "loadbalancer_apiserver_localhost": localhost}
    )
    for h in MASTERS + NODES:
        assert eps[h].apiserver == "https://lb-apiserver.kubernetes.local:8383", h
        assert eps[h].local_lb is None, h
        assert eps[h].local_lb_backends == [], h


def test_external_lb_fields() -> None:
    eps = evaluate({"loadbalancer_apiserver": EXT_LB})
    assert eps["node1"].external_lb_address == "10.9.9.9"
    assert eps["node1"].external_lb_port == 8383
    # The doc's HAProxy example: `server masterN <IPN>:443` (the secure port).
    assert eps["node1"].external_lb_backends == [
        "https://192.168.0.1:443",
        "https://192.168.0.2:443",
        "https://192.168.0.3:443",
    ]
    eps = evaluate()
    assert eps["node1"].external_lb_address is None
    assert eps["node1"].external_lb_backends == []


def test_m0_follows_inventory_order() -> None:
    base = _hosts()
    hosts = {"master3": base.pop("master3"), **base}
    eps = evaluate(hosts=hosts)
    assert eps["node1"].apiserver == "https://192.168.0.3:443"
    assert eps["node2"].apiserver == "https://192.168.0.3:443"
    eps = evaluate({"loadbalancer_apiserver_localhost": True}, hosts=hosts)
    assert eps["node1"].local_lb_backends == [
        "https://192.168.0.3:443",
        "https://192.168.0.1:443",
        "https://192.168.0.2:443",
    ]


@pytest.mark.parametrize("flag", [True, "true", "yes"])
def test_local_lb_only_on_non_masters(flag: Any) -> None:
    eps = evaluate({"loadbalancer_apiserver_localhost": flag})
    for n in NODES:
        assert eps[n].apiserver == "https://localhost:443", n
        assert eps[n].local_lb == "nginx", n
        assert eps[n].local_lb_backends == [
            "https://192.168.0.1:443",
            "https://192.168.0.2:443",
            "https://192.168.0.3:443",
        ], n
    for m in MASTERS:
        assert eps[m].apiserver == "http://localhost:8080", m
        assert eps[m].local_lb is None, m
        assert eps[m].local_lb_backends == [], m


def test_local_lb_backends_use_custom_sp() -> None:
    eps = evaluate({"loadbalancer_apiserver_localhost": True, "kube_apiserver_port": 6443})
    assert eps["node2"].local_lb_backends == [
        "https://192.168.0.1:6443",
        "https://192.168.0.2:6443",
        "https://192.168.0.3:6443",
    ]


def test_no_local_lb_by_default() -> None:
    eps = evaluate()
    for h in MASTERS + NODES:
        assert eps[h].local_lb is None, h
        assert eps[h].local_lb_backends == [], h


def test_current_group_spellings() -> None:
    hosts = _hosts()
    for i in (1, 2, 3):
        hosts[f"master{i}"]["groups"] = ["kube_control_plane", "etcd"]
    for i in (1, 2):
        hosts[f"node{i}"]["groups"] = ["kube_node", "k8s_cluster"]
    eps = evaluate(hosts=hosts)
    assert eps["master1"].apiserver == "http://localhost:8080"
    assert eps["node1"].apiserver == "https://192.168.0.1:443"
    assert eps["node2"].etcd == ["http://127.0.0.1:2379"]
    eps = evaluate({"loadbalancer_apiserver_localhost": True}, hosts=hosts)
    assert eps["node1"].apiserver == "https://localhost:443"
    assert eps["node1"].local_lb == "nginx"


def test_k8s_cluster_contains_masters_and_nodes_implicitly() -> None:
    # No host names k8s-cluster; masters and nodes are in it anyway.
    eps = evaluate({"loadbalancer_apiserver": EXT_LB}, separate_etcd=True)
    for h in MASTERS + NODES:
        assert "k8s-cluster" in eps[h].roles, h
        assert eps[h].apiserver == "https://lb-apiserver.kubernetes.local:8383", h
        assert eps[h].etc_hosts == ["10.9.9.9 lb-apiserver.kubernetes.local"], h


# --- 3. /etc/hosts -----------------------------------------------------------------------------


def test_etc_hosts_with_external_lb() -> None:
    eps = evaluate({"loadbalancer_apiserver": EXT_LB}, separate_etcd=True)
    for h in MASTERS + NODES:
        assert eps[h].etc_hosts == ["10.9.9.9 lb-apiserver.kubernetes.local"], h
    for e in ETCD_HOSTS:
        assert eps[e].etc_hosts == [], e


@pytest.mark.parametrize("row", ["local-lb", "default"])
def test_no_etc_hosts_without_external_lb(row: str) -> None:
    eps = evaluate(ROW_VARS[row], separate_etcd=True)
    for h in MASTERS + NODES + ETCD_HOSTS:
        assert eps[h].etc_hosts == [], h


def test_host_outside_k8s_cluster() -> None:
    for row in ROW_VARS.values():
        eps = evaluate(row, separate_etcd=True)
        for e in ETCD_HOSTS:
            assert eps[e].apiserver is None, e
            assert eps[e].etcd == [], e
            assert eps[e].local_lb is None, e
            assert eps[e].etcd_proxy_backends == [], e


# --- 4. etcd -----------------------------------------------------------------------------------

MEMBERS_ON_MASTERS = ["http://192.168.0.1:2379", "http://192.168.0.2:2379", "http://192.168.0.3:2379"]
MEMBERS_SEPARATE = ["http://192.168.2.1:2379", "http://192.168.2.2:2379", "http://192.168.2.3:2379"]


@pytest.mark.parametrize("multiaccess", [None, False, "false"])
def test_etcd_proxy_mode(multiaccess: Any) -> None:
    extra = {} if multiaccess is None else {"etcd_multiaccess": multiaccess}
    eps = evaluate(extra)
    for h in MASTERS + NODES:
        assert eps[h].etcd == ["http://127.0.0.1:2379"], h
        assert eps[h].flannel_etcd == "http://127.0.0.1:2379", h
    # Masters are etcd members here: their member listens on 127.0.0.1:2379, no proxy.
    for m in MASTERS:
        assert eps[m].etcd_proxy_backends == [], m
    for n in NODES:
        assert eps[n].etcd_proxy_backends == MEMBERS_ON_MASTERS, n


def test_etcd_proxy_on_every_k8s_host_with_separate_etcd() -> None:
    eps = evaluate(separate_etcd=True)
    for h in MASTERS + NODES:
        assert eps[h].etcd == ["http://127.0.0.1:2379"], h
        assert eps[h].etcd_proxy_backends == MEMBERS_SEPARATE, h
        assert eps[h].flannel_etcd == "http://127.0.0.1:2379", h


@pytest.mark.parametrize("multiaccess", [True, "true", "yes"])
def test_etcd_multiaccess(multiaccess: Any) -> None:
    eps = evaluate({"etcd_multiaccess": multiaccess})
    for h in MASTERS + NODES:
        assert eps[h].etcd == MEMBERS_ON_MASTERS, h
        assert eps[h].flannel_etcd == "http://192.168.0.1:2379", h
    eps = evaluate({"etcd_multiaccess": multiaccess}, separate_etcd=True)
    for h in MASTERS + NODES:
        assert eps[h].etcd == MEMBERS_SEPARATE, h
        assert eps[h].flannel_etcd == "http://192.168.2.1:2379", h


def test_etcd_backend_defers_to_ip_without_access_ip() -> None:
    hosts = _hosts(separate_etcd=True)
    del hosts["etcd2"]["access_ip"]
    eps = evaluate(hosts=hosts)
    assert eps["node1"].etcd_proxy_backends == [
        "http://192.168.2.1:2379",
        "http://10.0.2.2:2379",
        "http://192.168.2.3:2379",
    ]
    eps = evaluate({"etcd_multiaccess": True}, hosts=hosts)
    assert eps["master1"].etcd == [
        "http://192.168.2.1:2379",
        "http://10.0.2.2:2379",
        "http://192.168.2.3:2379",
    ]


# --- 5. kubespray-2026-01 ----------------------------------------------------------------------

K26 = "kubespray-2026-01"
BACKENDS_6443 = ["https://192.168.0.1:6443", "https://192.168.0.2:6443", "https://192.168.0.3:6443"]


def test_2026_defaults_local_lb_on() -> None:
    # loadbalancer_apiserver_localhost defaults to "external LB not defined": true here.
    eps = evaluate(rules=K26)
    for m in MASTERS:
        assert eps[m].apiserver == "https://127.0.0.1:6443", m  # rule 3
        assert eps[m].local_lb is None, m
    for n in NODES:
        assert eps[n].apiserver == "https://localhost:6443", n  # rule 2
        assert eps[n].local_lb == "nginx", n
        assert eps[n].local_lb_backends == BACKENDS_6443, n
    for h in MASTERS + NODES:
        assert eps[h].etc_hosts == [], h


def test_2026_rule_4_without_any_lb() -> None:
    eps = evaluate({"loadbalancer_apiserver_localhost": False}, rules=K26)
    for m in MASTERS:
        assert eps[m].apiserver == "https://127.0.0.1:6443", m
    for n in NODES:
        assert eps[n].apiserver == "https://192.168.0.1:6443", n
        assert eps[n].local_lb is None, n


def test_2026_rule_4_m0_defers_to_ip_and_follows_order() -> None:
    base = _hosts()
    m3 = base.pop("master3")
    del m3["access_ip"]
    hosts = {"master3": m3, **base}
    eps = evaluate({"loadbalancer_apiserver_localhost": False}, rules=K26, hosts=hosts)
    assert eps["node1"].apiserver == "https://10.0.0.3:6443"


def test_2026_rule_2_port() -> None:
    eps = evaluate({"loadbalancer_apiserver_port": 8081}, rules=K26)
    assert eps["node1"].apiserver == "https://localhost:8081"
    assert eps["master1"].apiserver == "https://127.0.0.1:6443"


def test_2026_rule_1_external_lb_for_all_hosts() -> None:
    eps = evaluate({"loadbalancer_apiserver": EXT_LB}, rules=K26)
    for h in MASTERS + NODES:
        # Domain defaults to the LB's address (no local LB, since an external one exists).
        assert eps[h].apiserver == "https://10.9.9.9:8383", h
        assert eps[h].local_lb is None, h
        assert eps[h].etc_hosts == [], h  # domain == address: no line


def test_2026_rule_1_port_defaults_to_6443() -> None:
    eps = evaluate({"loadbalancer_apiserver": {"address": "10.9.9.9"}}, rules=K26)
    for h in MASTERS + NODES:
        assert eps[h].apiserver == "https://10.9.9.9:6443", h


def test_2026_rule_1_custom_domain_and_no_etc_hosts_line() -> None:
    # Kubespray removed the LB line from /etc/hosts in July 2025 (KS #12382, 3fc552fcb).
    eps = evaluate(
        {"loadbalancer_apiserver": EXT_LB, "apiserver_loadbalancer_domain_name": "api.example.com"},
        rules=K26,
        separate_etcd=True,
    )
    for h in MASTERS + NODES:
        assert eps[h].apiserver == "https://api.example.com:8383", h
        assert eps[h].etc_hosts == [], h
    for e in ETCD_HOSTS:
        assert eps[e].apiserver is None, e
        assert eps[e].etc_hosts == [], e


def test_2026_rule_1_wins_over_local_lb_with_localhost_domain() -> None:
    # Both set: rule 1 matches first; the domain default is `localhost` with a local LB.
    eps = evaluate(
        {"loadbalancer_apiserver": EXT_LB, "loadbalancer_apiserver_localhost": True}, rules=K26
    )
    for h in MASTERS + NODES:
        assert eps[h].apiserver == "https://localhost:8383", h
        assert eps[h].etc_hosts == [], h


def test_2026_kube_vip() -> None:
    eps = evaluate({"loadbalancer_apiserver": {"address": "10.0.0.100", "port": 6443}}, rules=K26)
    for h in MASTERS + NODES:
        assert eps[h].apiserver == "https://10.0.0.100:6443", h
        assert eps[h].local_lb is None, h
        assert eps[h].etc_hosts == [], h


def test_2026_haproxy_local_lb() -> None:
    eps = evaluate({"loadbalancer_apiserver_type": "haproxy"}, rules=K26)
    for n in NODES:
        assert eps[n].local_lb == "haproxy", n
        assert eps[n].local_lb_backends == BACKENDS_6443, n
        assert eps[n].apiserver == "https://localhost:6443", n
    for m in MASTERS:
        assert eps[m].local_lb is None, m


def test_2026_etcd_direct_https() -> None:
    eps = evaluate(rules=K26)
    for h in MASTERS + NODES:
        assert eps[h].etcd == [
            "https://192.168.0.1:2379",
            "https://192.168.0.2:2379",
            "https://192.168.0.3:2379",
        ], h
        assert eps[h].etcd_proxy_backends == [], h
    eps = evaluate(rules=K26, separate_etcd=True)
    for h in MASTERS + NODES:
        assert eps[h].etcd == [
            "https://192.168.2.1:2379",
            "https://192.168.2.2:2379",
            "https://192.168.2.3:2379",
        ], h
        assert eps[h].etcd_proxy_backends == [], h
    for e in ETCD_HOSTS:
        assert eps[e].apiserver is None, e
        assert eps[e].etcd == [], e


def test_2026_via_rules_argument_on_a_2016_scenario() -> None:
    sc = scenario()  # cluster.rules: ha-mode-2016
    eps = hasim.evaluate_endpoints(sc, rules=K26)
    assert eps["master1"].apiserver == "https://127.0.0.1:6443"
    assert eps["node1"].apiserver == "https://localhost:6443"


def test_2026_scenario_rules_used_by_default() -> None:
    sc = scenario(rules=K26)
    eps = hasim.evaluate_endpoints(sc)
    assert eps["master1"].apiserver == "https://127.0.0.1:6443"
    assert eps["node1"].apiserver == "https://localhost:6443"


# --- 6. a generated 1,000-node cluster ---------------------------------------------------------


def _generated(cluster_vars: dict[str, Any] | None = None) -> dict[str, hasim.Endpoints]:
    sc = scenario_from_dict(
        {
            "name": "big",
            "cluster": {
                "generate": {"masters": 3, "etcd": 3, "nodes": 1000},
                "vars": dict(cluster_vars or {}),
            },
        }
    )
    return hasim.evaluate_endpoints(sc)


@pytest.mark.parametrize(
    ("cluster_vars", "node_url"),
    [
        ({}, "https://10.0.0.1:443"),
        ({"loadbalancer_apiserver_localhost": True}, "https://localhost:443"),
    ],
    ids=["default", "local-lb"],
)
def test_generated_1000_nodes(cluster_vars: dict[str, Any], node_url: str) -> None:
    eps = _generated(cluster_vars)
    nodes = [e for e in eps.values() if "kube-node" in e.roles]
    masters = [e for e in eps.values() if "kube-master" in e.roles]
    assert len(nodes) == 1000
    assert len(masters) == 3
    assert len(eps) == 1003
    assert all(e.apiserver == node_url for e in nodes)
    assert all(e.apiserver == "http://localhost:8080" for e in masters)
    assert eps["node1"].apiserver == node_url
    assert eps["node1000"].apiserver == node_url
    assert all(e.etcd == ["http://127.0.0.1:2379"] for e in eps.values())


def test_generated_local_lb_backends() -> None:
    eps = _generated({"loadbalancer_apiserver_localhost": True})
    assert eps["node500"].local_lb == "nginx"
    assert eps["node500"].local_lb_backends == [
        "https://10.0.0.1:443",
        "https://10.0.0.2:443",
        "https://10.0.0.3:443",
    ]
    assert eps["node500"].etcd_proxy_backends == [
        "http://10.0.0.1:2379",
        "http://10.0.0.2:2379",
        "http://10.0.0.3:2379",
    ]


# --- 7. errors ---------------------------------------------------------------------------------


def test_error_no_master() -> None:
    hosts = {
        "etcd1": {"ip": "10.0.2.1", "groups": ["etcd"]},
        "node1": {"ip": "10.0.1.1", "groups": ["kube-node"]},
    }
    with pytest.raises(hasim.ScenarioError) as exc:
        sc = scenario(hosts=hosts)
        hasim.evaluate_endpoints(sc)
    assert "kube-master" in str(exc.value)


@pytest.mark.parametrize("rules", ["ha-mode-2016", K26])
def test_error_external_lb_without_address(rules: str) -> None:
    with pytest.raises(hasim.ScenarioError) as exc:
        sc = scenario({"loadbalancer_apiserver": {"port": 8383}}, rules=rules)
        hasim.evaluate_endpoints(sc, rules=rules)
    assert "loadbalancer_apiserver.address" in str(exc.value)


@pytest.mark.parametrize("rules", ["ha-mode-2016", K26])
@pytest.mark.parametrize("value", ["10.9.9.9", ["10.9.9.9", 8383]])
def test_error_external_lb_not_a_map(rules: str, value: Any) -> None:
    with pytest.raises(hasim.ScenarioError) as exc:
        sc = scenario({"loadbalancer_apiserver": value}, rules=rules)
        hasim.evaluate_endpoints(sc, rules=rules)
    assert "loadbalancer_apiserver" in str(exc.value)


def test_error_unknown_rules_in_scenario() -> None:
    with pytest.raises(hasim.ScenarioError) as exc:
        scenario(rules="ha-mode-2015")
    message = str(exc.value)
    assert "ha-mode-2015" in message
    assert "cluster.rules" in message


def test_error_unknown_rules_argument() -> None:
    sc = scenario()
    with pytest.raises(hasim.ScenarioError) as exc:
        hasim.evaluate_endpoints(sc, rules="ha-mode-2015")
    message = str(exc.value)
    assert "ha-mode-2015" in message
    assert "rules" in message
    with pytest.raises(hasim.ScenarioError) as exc:
        hasim.evaluate_endpoints(sc.cluster, rules="ha-mode-2015")
    assert "ha-mode-2015" in str(exc.value)


# --- issue 19: host address, IPv6, etcd on the control plane --------------------------------


def test_ansible_ssh_host_is_the_default_address_of_a_2016_inventory(tmp_path: Any) -> None:
    # kargo's 2016 inventory.example: `node1 ansible_ssh_host=10.99.0.26`, no ip/access_ip.
    inv = tmp_path / "inventory.ini"
    inv.write_text(
        "[kube-master]\nnode1 ansible_ssh_host=10.99.0.26\n"
        "[etcd]\nnode1\n"
        "[kube-node]\nnode2 ansible_ssh_host=10.99.0.27\n"
        "[k8s-cluster:children]\nkube-node\nkube-master\n"
    )
    from hasim.spec.scenario import cluster_from_inventory

    cluster = cluster_from_inventory(inv, source=str(inv), field="inventory")
    eps = hasim.evaluate_endpoints(cluster, "ha-mode-2016")
    assert eps["node2"].apiserver == "https://10.99.0.26:443"
    assert eps["node2"].etcd == ["http://127.0.0.1:2379"]
    assert eps["node2"].etcd_proxy_backends == ["http://10.99.0.26:2379"]


def _v6_hosts() -> dict[str, dict[str, Any]]:
    hosts = _hosts()
    for i, name in enumerate(("master1", "master2", "master3", "node1", "node2"), start=1):
        hosts[name]["ip"] = f"fd00:20::{i}"
        hosts[name]["access_ip"] = f"fd00:20::{i}"
    return hosts


@pytest.mark.parametrize("rules", ["ha-mode-2016", K26])
def test_ipv6_addresses_are_bracketed_in_every_url(rules: str) -> None:
    # ansible.utils.ipwrap, as kubespray's templates apply it: https://[fd00:20::1]:6443.
    from urllib.parse import urlsplit

    port = 443 if rules == "ha-mode-2016" else 6443
    # The default row: the first master's address, written into the URL.
    plain = {"loadbalancer_apiserver_localhost": False}
    eps = hasim.evaluate_endpoints(scenario(plain, hosts=_v6_hosts(), rules=rules))
    lb = hasim.evaluate_endpoints(
        scenario({"loadbalancer_apiserver_localhost": True}, hosts=_v6_hosts(), rules=rules)
    )
    assert lb["node1"].local_lb_backends[0] == f"https://[fd00:20::1]:{port}"
    assert eps["node1"].apiserver == f"https://[fd00:20::1]:{port}"
    if rules == K26:
        assert eps["node1"].etcd[0] == "https://[fd00:20::1]:2379"
    for e in [*eps.values(), *lb.values()]:
        for url in [e.apiserver, *e.etcd, *e.etcd_proxy_backends, *e.local_lb_backends]:
            if url is None:
                continue
            parts = urlsplit(url)
            assert parts.hostname is not None and parts.port is not None, url


def test_2026_etcd_on_the_control_plane_without_an_etcd_group() -> None:
    # roles/kubespray_defaults: etcd_hosts = groups['etcd'] | default(groups['kube_control_plane']).
    hosts = _hosts()
    for name in MASTERS:
        hosts[name]["groups"] = ["kube-master"]
    kubeadm_etcd = scenario({"etcd_deployment_type": "kubeadm"}, hosts=hosts, rules=K26)
    eps = hasim.evaluate_endpoints(kubeadm_etcd)
    assert eps["node1"].etcd == [f"https://192.168.0.{i}:2379" for i in (1, 2, 3)]
    # The topology places the members where the clients are sent: on the control plane.
    g = hasim.build_topology(kubeadm_etcd)
    etcd_hosts = sorted(d["host"] for _, d in g.nodes(data=True) if d["component"] == "etcd")
    assert etcd_hosts == sorted(MASTERS)


# --- 6. CNI agents (kubespray-2026-01) ----------------------------------------------------------
# From kubespray's templates (docs/model.md, "CNI agents"): calico-node reads
# KUBERNETES_SERVICE_HOST/_PORT from the kubernetes-services-endpoint ConfigMap, which holds
# kube_apiserver_global_endpoint only `if calico_bpf_enabled or
# loadbalancer_apiserver_localhost`; flannel's --kube-subnet-mgr keeps the in-cluster
# Service; cilium gets the global endpoint.

SERVICE = "https://10.233.0.1:443"  # first address of kube_service_addresses 10.233.0.0/18
#: The Service's endpoints: each apiserver's advertise address, main_ip (``ip``), port 6443.
ADVERTISED = ["https://10.0.0.1:6443", "https://10.0.0.2:6443", "https://10.0.0.3:6443"]


def test_calico_behind_the_localhost_lb_uses_localhost() -> None:
    eps = evaluate(rules=K26)
    for h in MASTERS + NODES:
        assert eps[h].cni_agent == "calico-node", h
        # the global endpoint has no control-plane exception: localhost on masters too
        assert eps[h].cni_apiserver == "https://localhost:6443", h
        assert eps[h].service_backends == [], h
    g = build_topology(scenario(rules=K26))
    # localhost:6443 is the local LB on a worker and the apiserver itself on a master
    assert list(g.successors("node1/calico-node")) == ["node1/lb"]
    assert list(g.successors("master1/calico-node")) == ["master1/apiserver"]
    assert g.nodes["node1/calico-node"]["client_class"] == "calico-node@kube-node"


def test_calico_behind_an_external_lb_takes_the_kubernetes_service() -> None:
    eps = evaluate({"loadbalancer_apiserver": EXT_LB}, rules=K26)
    for h in MASTERS + NODES:
        assert eps[h].cni_apiserver == SERVICE, h
        assert eps[h].service_backends == ADVERTISED, h
    g = build_topology(scenario({"loadbalancer_apiserver": EXT_LB}, rules=K26))
    assert list(g.successors("node1/calico-node")) == [SERVICE_NODE]
    assert sorted(g.successors(SERVICE_NODE)) == [f"{m}/apiserver" for m in MASTERS]
    assert g.nodes[SERVICE_NODE]["virtual"]


@pytest.mark.parametrize(("extra", "url"), [
    ({"calico_bpf_enabled": True}, "https://10.9.9.9:8383"),  # eBPF: the global endpoint
    ({"kube_service_addresses": "10.96.0.0/12"}, "https://10.96.0.1:443"),
])
def test_calico_variants(extra: dict[str, Any], url: str) -> None:
    eps = evaluate({"loadbalancer_apiserver": EXT_LB, **extra}, rules=K26)
    assert eps["node1"].cni_apiserver == url


def test_other_plugins_and_layouts() -> None:
    flannel = evaluate({"kube_network_plugin": "flannel"}, rules=K26)
    assert flannel["node1"].cni_agent == "kube-flannel"
    assert flannel["node1"].cni_apiserver == SERVICE  # in-cluster config, even with a local LB
    cilium = evaluate({"kube_network_plugin": "cilium", "loadbalancer_apiserver": EXT_LB},
                      rules=K26)
    assert cilium["node1"].cni_apiserver == "https://10.9.9.9:8383"
    no_lb = evaluate({"loadbalancer_apiserver_localhost": False}, rules=K26)
    assert no_lb["node1"].cni_apiserver == SERVICE  # the ConfigMap is empty
    etcd = evaluate({"calico_datastore": "etcd"}, rules=K26)
    assert etcd["node1"].cni_agent is None  # calico on etcd: not modelled
    assert evaluate({"kube_network_plugin": "cni"}, rules=K26)["node1"].cni_agent is None
    # The 2016 layouts' CNI agent is flannel on etcd, not an apiserver client.
    assert evaluate()["node1"].cni_agent is None


