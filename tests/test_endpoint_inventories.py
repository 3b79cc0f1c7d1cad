"""Each rule set on real inventory files, in every style kubespray users write them.

Every case runs on 8 inventories holding the same cluster: INI and YAML, the 2016 group
names (``kube-master``, ``kube-node``, ``k8s-cluster``) and today's (``kube_control_plane``,
``kube_node``, ``k8s_cluster``), the case's variables in ``group_vars/all.yml`` or in
every host's ``host_vars``. The cluster: master1 and master2 (etcd on both), node1; each
host has ``ansible_host`` 192.168.0.x, ``ip`` 10.0.x.y and ``ip6`` fd00::x, no
``access_ip``, so a URL shows which address a rule took.

Expected values are written by hand from the rule sets' sources (docs/model.md,
"Endpoint rules"):

* ``ha-mode-2016``: the HA doc's table (p 8080, sp 443, lb ``lb-apiserver.kubernetes.local``);
* ``kargo-2016-10``: kargo's ``set_facts.yml``/``etchosts.yml`` of commit 91a101c8
  (2016-10-18): masters ``http://127.0.0.1:8080`` without an external LB; the local LB
  forced off; an external LB only with a port; the /etc/hosts line only with the domain
  set;
* ``kubespray-2026-01``: ``kube_apiserver_endpoint`` of ``roles/kubespray_defaults``
  (first match wins), ``main_access_ip`` of ``roles/network_facts``, the install
  conditions and listen lines of ``roles/kubernetes/node``.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hasim
from hasim.cli import main
from hasim.kubespray.cluster import build_cluster
from hasim.kubespray.endpoints import endpoint_warnings, evaluate_endpoints, ipwrap
from hasim.spec.scenario import cluster_from_inventory

K16, KARGO, K26 = "ha-mode-2016", "kargo-2016-10", "kubespray-2026-01"

#: name -> (ansible_host, ip, ip6)
HOSTS = {
    "master1": ("192.168.0.1", "10.0.0.1", "fd00::1"),
    "master2": ("192.168.0.2", "10.0.0.2", "fd00::2"),
    "node1": ("192.168.0.3", "10.0.1.1", "fd00::3"),
}
NAMES = {
    "old": {"master": "kube-master", "node": "kube-node", "k8s": "k8s-cluster"},
    "new": {"master": "kube_control_plane", "node": "kube_node", "k8s": "k8s_cluster"},
}
LAYOUTS = [(fmt, names, where) for fmt in ("ini", "yaml") for names in ("old", "new")
           for where in ("group_vars", "host_vars")]


def write_inventory(root: Path, fmt: str, names: str, where: str,
                    variables: dict[str, Any]) -> Path:
    """The test cluster as an inventory directory; returns the inventory file."""
    g = NAMES[names]
    groups = {g["master"]: ["master1", "master2"], "etcd": ["master1", "master2"],
              g["node"]: ["node1"]}
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "ini":
        lines = []
        for group, members in groups.items():
            lines.append(f"[{group}]")
            for h in members:
                addr, ip, ip6 = HOSTS[h]
                lines.append(f"{h} ansible_host={addr} ip={ip} ip6={ip6}")
        lines += [f"[{g['k8s']}:children]", g["master"], g["node"]]
        inv = root / "inventory.ini"
        inv.write_text("\n".join(lines) + "\n")
    else:
        hosts = {h: {"ansible_host": a, "ip": ip, "ip6": ip6} for h, (a, ip, ip6) in HOSTS.items()}
        doc = {"all": {"hosts": hosts, "children": {
            "etcd": {"hosts": {h: None for h in groups["etcd"]}},
            g["k8s"]: {"children": {
                g["master"]: {"hosts": {h: None for h in groups[g["master"]]}},
                g["node"]: {"hosts": {h: None for h in groups[g["node"]]}},
            }},
        }}}
        inv = root / "hosts.yaml"
        inv.write_text(yaml.safe_dump(doc))
    if variables:
        if where == "group_vars":
            (root / "group_vars").mkdir()
            (root / "group_vars" / "all.yml").write_text(yaml.safe_dump(variables))
        else:
            (root / "host_vars").mkdir()
            for h in HOSTS:
                (root / "host_vars" / f"{h}.yml").write_text(yaml.safe_dump(variables))
    return inv


EXT = {"address": "10.9.9.9", "port": 8383}
LB16 = "lb-apiserver.kubernetes.local"
PROXY_ETCD = ["http://127.0.0.1:2379"]
ETCD26 = ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]


def nginx(listen: list[str], port: int, v6: bool = False) -> dict[str, Any]:
    servers = ["[fd00::1]", "[fd00::2]"] if v6 else ["10.0.0.1", "10.0.0.2"]
    return {"kind": "nginx", "listen": listen, "backends": [f"https://{s}:{port}" for s in servers]}


#: Warning topics, each found by a phrase of its sentence.
TOPICS = {
    "forced-off": "forced it to false",
    "no-port": "has no port",
    "no-hosts-line": "wrote its /etc/hosts line only when",
    "dns": "must resolve through DNS on every host",
    "old-names": "belong only to the old group names",
    "new-names-2016": "belong to no group kargo's 2016 playbooks know",
}

# (id, rules, variables, master1 apiserver, node1 apiserver, node1 local_lb, node1 etcd,
#  node1 etc_hosts, warning topics whatever the group names)
CASES: list[tuple[str, str, dict[str, Any], str, str, Any, list[str], list[str], set[str]]] = [
    ("2016-default", K16, {}, "http://localhost:8080", "https://10.0.0.1:443", None,
     PROXY_ETCD, [], set()),
    ("2016-local-lb", K16, {"loadbalancer_apiserver_localhost": True},
     "http://localhost:8080", "https://localhost:443", nginx(["*:443"], 443), PROXY_ETCD,
     [], set()),
    ("2016-external-lb", K16, {"loadbalancer_apiserver": EXT}, f"https://{LB16}:8383",
     f"https://{LB16}:8383", None, PROXY_ETCD, [f"10.9.9.9 {LB16}"], set()),
    ("2016-external-lb-no-port", K16, {"loadbalancer_apiserver": {"address": "10.9.9.9"}},
     f"https://{LB16}:443", f"https://{LB16}:443", None, PROXY_ETCD, [f"10.9.9.9 {LB16}"],
     set()),
    ("2016-multiaccess", K16, {"etcd_multiaccess": True}, "http://localhost:8080",
     "https://10.0.0.1:443", None, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"], [], set()),
    ("kargo-default", KARGO, {}, "http://127.0.0.1:8080", "https://10.0.0.1:443", None,
     PROXY_ETCD, [], set()),
    ("kargo-local-lb-forced-off", KARGO, {"loadbalancer_apiserver_localhost": True},
     "http://127.0.0.1:8080", "https://10.0.0.1:443", None, PROXY_ETCD, [], {"forced-off"}),
    ("kargo-external-lb", KARGO, {"loadbalancer_apiserver": EXT}, f"https://{LB16}:8383",
     f"https://{LB16}:8383", None, PROXY_ETCD, [], {"no-hosts-line"}),
    ("kargo-external-lb-with-domain", KARGO,
     {"loadbalancer_apiserver": EXT, "apiserver_loadbalancer_domain_name": "lb.example"},
     "https://lb.example:8383", "https://lb.example:8383", None, PROXY_ETCD,
     ["10.9.9.9 lb.example"], set()),
    ("kargo-external-lb-no-port", KARGO, {"loadbalancer_apiserver": {"address": "10.9.9.9"}},
     "https://10.0.0.1:443", "https://10.0.0.1:443", None, PROXY_ETCD, [], {"no-port"}),
    ("2026-rule-1", K26, {"loadbalancer_apiserver": EXT}, "https://10.9.9.9:8383",
     "https://10.9.9.9:8383", None, ETCD26, [], set()),
    ("2026-rule-1-no-port", K26, {"loadbalancer_apiserver": {"address": "10.9.9.9"}},
     "https://10.9.9.9:6443", "https://10.9.9.9:6443", None, ETCD26, [], set()),
    ("2026-rule-1-no-port-custom-sp", K26,
     {"loadbalancer_apiserver": {"address": "10.9.9.9"}, "kube_apiserver_port": 7443},
     "https://10.9.9.9:7443", "https://10.9.9.9:7443", None, ETCD26, [], set()),
    ("2026-rule-1-domain", K26,
     {"loadbalancer_apiserver": EXT, "apiserver_loadbalancer_domain_name": "lb.example"},
     "https://lb.example:8383", "https://lb.example:8383", None, ETCD26, [], {"dns"}),
    ("2026-rule-2-3", K26, {}, "https://127.0.0.1:6443", "https://localhost:6443",
     nginx(["127.0.0.1:6443"], 6443), ETCD26, [], set()),
    ("2026-rule-2-lb-port", K26, {"loadbalancer_apiserver_port": 8443},
     "https://127.0.0.1:6443", "https://localhost:8443", nginx(["127.0.0.1:8443"], 6443),
     ETCD26, [], set()),
    # loadbalancer_apiserver_port has no default of its own: kube_apiserver_port.
    ("2026-rule-2-custom-sp", K26, {"kube_apiserver_port": 7443}, "https://127.0.0.1:7443",
     "https://localhost:7443", nginx(["127.0.0.1:7443"], 7443), ETCD26, [], set()),
    ("2026-rule-3-bind-address", K26, {"kube_apiserver_bind_address": "0.0.0.0"},
     "https://0.0.0.0:6443", "https://localhost:6443", nginx(["127.0.0.1:6443"], 6443),
     ETCD26, [], set()),
    ("2026-rule-4", K26, {"loadbalancer_apiserver_localhost": False},
     "https://127.0.0.1:6443", "https://10.0.0.1:6443", None, ETCD26, [], set()),
    ("2026-dual-stack", K26, {"ipv6_stack": True}, "https://127.0.0.1:6443",
     "https://localhost:6443", nginx(["127.0.0.1:6443", "[::1]:6443"], 6443), ETCD26, [],
     set()),
    ("2026-ipv6-only", K26, {"ipv4_stack": False, "ipv6_stack": True},
     "https://127.0.0.1:6443", "https://localhost:6443",
     nginx(["127.0.0.1:6443", "[::1]:6443"], 6443, v6=True),
     ["https://[fd00::1]:2379", "https://[fd00::2]:2379"], [], set()),
    ("2026-ipv6-only-rule-4", K26,
     {"ipv4_stack": False, "ipv6_stack": True, "loadbalancer_apiserver_localhost": False},
     "https://127.0.0.1:6443", "https://[fd00::1]:6443", None,
     ["https://[fd00::1]:2379", "https://[fd00::2]:2379"], [], set()),
]


def _topics(warnings: list[str]) -> set[str]:
    found = {t for t, phrase in TOPICS.items() for w in warnings if phrase in w}
    assert len(found) == len(warnings), warnings  # every warning is one known topic
    return found


@pytest.mark.parametrize(("fmt", "names", "where"), LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_rule_on_inventory(case: tuple[Any, ...], fmt: str, names: str, where: str,
                           tmp_path: Path) -> None:
    _, rules, variables, master_api, node_api, node_lb, etcd, etc_hosts, topics = case
    inv = write_inventory(tmp_path / "inv", fmt, names, where, variables)
    cluster = cluster_from_inventory(inv, source=str(inv), field="inventory")
    eps = {h: e.as_dict() for h, e in evaluate_endpoints(cluster, rules).items()}
    assert list(eps) == ["master1", "master2", "node1"]
    assert eps["master1"]["apiserver"] == master_api
    assert eps["node1"]["apiserver"] == node_api
    assert eps["node1"]["local_lb"] == node_lb
    assert eps["node1"]["etcd"] == etcd
    assert eps["node1"]["etc_hosts"] == etc_hosts
    expected = set(topics)
    if names == "old" and rules == K26:
        expected.add("old-names")
    if names == "new" and rules == KARGO:
        expected.add("new-names-2016")
    assert _topics(endpoint_warnings(cluster, rules)) == expected


def test_2026_bind_address_puts_the_local_lb_on_the_control_plane(tmp_path: Path) -> None:
    # roles/kubernetes/node/tasks/main.yml installs nginx where
    # `('kube_control_plane' not in group_names) or (kube_apiserver_bind_address != '::')`.
    inv = write_inventory(tmp_path, "yaml", "new", "host_vars", {})
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "master1.yml").write_text("kube_apiserver_bind_address: 10.0.0.1\n")
    cluster = cluster_from_inventory(inv, source=str(inv), field="inventory")
    eps = evaluate_endpoints(cluster, K26)
    assert eps["master1"].apiserver == "https://10.0.0.1:6443"
    assert eps["master1"].local_balancer == hasim.kubespray.endpoints.LocalLB(
        "nginx", ["127.0.0.1:6443"], ["https://10.0.0.1:6443", "https://10.0.0.2:6443"])
    assert eps["master2"].apiserver == "https://127.0.0.1:6443"  # bind `::`
    assert eps["master2"].local_lb is None


def test_2026_ipv6_bind_address_is_mangled_as_kubespray_mangles_it(tmp_path: Path) -> None:
    # regex_replace('::', '127.0.0.1') on "fd00::1" gives "fd00127.0.0.11".
    inv = write_inventory(tmp_path, "ini", "new", "group_vars",
                          {"kube_apiserver_bind_address": "fd00::1"})
    cluster = cluster_from_inventory(inv, source=str(inv), field="inventory")
    assert evaluate_endpoints(cluster, K26)["master1"].apiserver == "https://fd00127.0.0.11:6443"
    (warning,) = endpoint_warnings(cluster, K26)
    assert "kube_apiserver_bind_address fd00::1" in warning


def test_old_names_warning_on_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path, "ini", "old", "group_vars", {})
    assert main(["endpoints", str(inv), "--rules", K26, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    (warning,) = doc["warnings"]
    assert "master1, master2, node1 belong only to the old group names" in warning
    assert err == f"hasim: warning: {warning}\n"
    assert set(doc) == {"rules", "hosts", "warnings"}


# --- --diff ------------------------------------------------------------------------------------


def test_diff_doc_against_its_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path, "ini", "old", "group_vars",
                          {"loadbalancer_apiserver_localhost": True})
    assert main(["endpoints", str(inv), "--diff", K16, KARGO, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {
        "rules": [K16, KARGO],
        "hosts": {
            "master1": {"apiserver": {K16: "http://localhost:8080", KARGO: "http://127.0.0.1:8080"}},
            "master2": {"apiserver": {K16: "http://localhost:8080", KARGO: "http://127.0.0.1:8080"}},
            "node1": {
                "apiserver": {K16: "https://localhost:443", KARGO: "https://10.0.0.1:443"},
                "local_lb": {K16: nginx(["*:443"], 443), KARGO: None},
            },
        },
    }


def test_diff_table_and_agreement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path, "ini", "old", "group_vars", {})
    assert main(["endpoints", str(inv), "--diff", K16, K16]) == 0
    assert capsys.readouterr().out == f"{K16} and {K16} agree on every host\n"
    assert main(["endpoints", str(inv), "--diff", K16, K26]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "FIELD", K16, K26]
    node_api = next(ln.split() for ln in lines if ln.startswith("node1") and "apiserver" in ln)
    assert node_api == ["node1", "apiserver", "https://10.0.0.1:443", "https://localhost:6443"]
    # etcd differs everywhere (local proxy vs direct TLS); roles never do.
    assert {ln.split()[0] for ln in lines if " etcd " in ln} == set(HOSTS)
    assert not any(" roles " in ln for ln in lines)
    assert f"{K26}: master1, master2, node1 belong only to the old group names" in err


# --- bad input -----------------------------------------------------------------------------------


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.out == ""
    return captured.err


@pytest.mark.parametrize("rules", [K16, KARGO, K26])
@pytest.mark.parametrize("value", ["master-one", "10.0.0", "fd00::zz"])
def test_error_access_ip_not_an_address(rules: str, value: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path, "ini", "old", "group_vars", {})
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "master2.yml").write_text(f"access_ip: '{value}'\n")
    err = _cli_error(["endpoints", str(inv), "--rules", rules], capsys)
    assert err.startswith(
        f"hasim: error: {inv}: hostvars.master2.access_ip: '{value}' is not an IP address")


def test_error_ip6_not_ipv6(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path, "yaml", "new", "host_vars", {"ip6": "10.0.0.7"})
    err = _cli_error(["endpoints", str(inv), "--rules", K26], capsys)
    assert f"{inv}: hostvars.master1.ip6: '10.0.0.7' is not an IPv6 address" in err


@pytest.mark.parametrize("rules", [K16, KARGO, K26])
def test_error_no_control_plane_group(rules: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "inventory.ini"
    inv.write_text("[kube_node]\nnode1 ansible_host=192.168.0.3\n[etcd]\nnode1\n")
    err = _cli_error(["endpoints", str(inv), "--rules", rules], capsys)
    assert f"{inv}: groups.kube-master: no host in group kube-master" in err


@pytest.mark.parametrize("rules", [K16, KARGO, K26])
def test_error_external_lb_without_address(rules: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path, "ini", "new", "host_vars",
                          {"loadbalancer_apiserver": {"port": 8383}})
    err = _cli_error(["endpoints", str(inv), "--rules", rules], capsys)
    assert (f"{inv}: hostvars.master1.loadbalancer_apiserver.address: the external load "
            "balancer map has no 'address'") in err


# --- every URL is a URL -------------------------------------------------------------------------

_V4 = st.integers(0x0A000001, 0x0AFFFFFE).map(lambda i: str(ipaddress.IPv4Address(i)))
_V6 = st.integers(1, 2**64).map(lambda i: str(ipaddress.IPv6Address((0xFD00 << 112) | i)))
_ADDRESS_VARS = ("ip", "access_ip", "ansible_host", "ansible_ssh_host")


@st.composite
def _host_vars(draw: st.DrawFn, family: str) -> dict[str, Any]:
    fam = draw(st.sampled_from(["v4", "v6"])) if family == "mixed" else family
    addr = _V4 if fam == "v4" else _V6
    chosen = draw(st.sets(st.sampled_from(_ADDRESS_VARS)))
    out: dict[str, Any] = {k: draw(addr) for k in chosen}
    if draw(st.booleans()):
        out["ip6"] = draw(_V6)
    if draw(st.booleans()):
        out["access_ip6"] = draw(_V6)
    return out


@st.composite
def _clusters(draw: st.DrawFn) -> tuple[Any, dict[str, Any]]:
    family = draw(st.sampled_from(["v4", "v6", "mixed"]))
    n_masters, n_nodes = draw(st.integers(1, 3)), draw(st.integers(0, 3))
    rows = [(f"master{i}", ["kube-master", "etcd"], draw(_host_vars(family)))
            for i in range(1, n_masters + 1)]
    rows += [(f"node{i}", ["kube-node"], draw(_host_vars(family)))
             for i in range(1, n_nodes + 1)]
    lb_address = draw(st.one_of(_V4, _V6, st.just("lb.example.net")))
    extra = draw(st.sampled_from([
        {},
        {"loadbalancer_apiserver_localhost": True},
        {"loadbalancer_apiserver_localhost": False},
        {"loadbalancer_apiserver": {"address": lb_address, "port": 8383}},
        {"loadbalancer_apiserver": {"address": lb_address}},
        {"etcd_multiaccess": True, "loadbalancer_apiserver_localhost": True},
        {"ipv4_stack": False, "ipv6_stack": True},
        {"ipv6_stack": True, "loadbalancer_apiserver_localhost": False},
    ]))
    return build_cluster(rows).with_vars(extra), extra


def _urls(e: hasim.Endpoints) -> list[str]:
    return [u for u in [e.apiserver, e.flannel_etcd, *e.etcd, *e.etcd_proxy_backends,
                        *e.local_lb_backends, *e.external_lb_backends] if u is not None]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_clusters(), st.sampled_from([K16, KARGO, K26]))
def test_every_url_parses_and_round_trips(drawn: tuple[Any, dict[str, Any]], rules: str) -> None:
    cluster, extra = drawn
    # The names a URL may hold: loopback, the LB's name or address, or a host's own
    # address as the inventory gives it (any of its address variables, or its name).
    allowed = {"localhost", "127.0.0.1", "lb-apiserver.kubernetes.local"}
    if "loadbalancer_apiserver" in extra:
        allowed.add(extra["loadbalancer_apiserver"]["address"])
    for h in cluster.hosts:
        allowed.add(h.name)
        allowed |= {str(h.vars[k]) for k in (*_ADDRESS_VARS, "ip6", "access_ip6") if k in h.vars}
    for e in evaluate_endpoints(cluster, rules).values():
        for url in _urls(e):
            parts = urlsplit(url)
            assert parts.scheme in {"http", "https"}, url
            assert parts.hostname is not None and parts.port is not None, url
            assert parts.hostname in allowed, url
            assert f"{parts.scheme}://{ipwrap(parts.hostname)}:{parts.port}" == url


def test_ipv6_only_cluster_builds_a_topology(tmp_path: Path) -> None:
    # With ipv4_stack: false every URL holds an ip6 address; the graph finds its host.
    inv = write_inventory(tmp_path, "yaml", "new", "group_vars",
                          {"ipv4_stack": False, "ipv6_stack": True})
    cluster = cluster_from_inventory(inv, source=str(inv), field="inventory")
    from hasim.graph.topology import build_topology

    g = build_topology(cluster, rules=K26)
    lb_servers = sorted(g.edges["node1/lb", v]["url"] for v in g.successors("node1/lb"))
    assert lb_servers == ["https://[fd00::1]:6443", "https://[fd00::2]:6443"]
    assert sorted(g.successors("node1/lb")) == ["master1/apiserver", "master2/apiserver"]
