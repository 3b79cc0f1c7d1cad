"""The ``hasim endpoints`` and ``hasim topology`` commands on every shipped input.

Expected endpoints are written by hand from docs/model.md, endpoint rules and the scenario /
inventory files:

* 2016 table: a master uses ``http://localhost:8080`` (its insecure port) unless an
  external LB is defined; a node uses ``https://localhost:<sp>`` with the local LB,
  ``https://lb-apiserver.kubernetes.local:<lp>`` with an external LB, else
  ``https://<m[0] access_ip>:<sp>``. etcd: ``http://127.0.0.1:2379`` (local proxy or
  local member), or every member over http with ``etcd_multiaccess``.
* kubespray-2026-01: control plane ``https://127.0.0.1:6443``, nodes with the local LB
  ``https://localhost:6443``, external LB ``https://<domain or address>:<port>``, etcd
  ``https://<member ip>:2379`` for everyone.

Component counts come from the per-host formula: a master running etcd has apiserver,
etcd, kubelet, kube-proxy, controller-manager, scheduler and flannel (7); a 2016 node has
kubelet, kube-proxy and flannel, plus an ``lb`` with the local LB and an ``etcd-proxy``
unless ``etcd_multiaccess`` is on.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from hasim.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
INVENTORIES = ROOT / "inventories"

MASTER_ROLES = ["kube-master", "etcd", "k8s-cluster"]
NODE_ROLES = ["kube-node", "k8s-cluster"]
LOCAL_ETCD = ["http://127.0.0.1:2379"]
GEN_ETCD_HTTP = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]
EXT_2016 = "https://lb-apiserver.kubernetes.local:8383"
EXT_HOSTS_LINE = ["10.0.0.100 lb-apiserver.kubernetes.local"]


def _expected(
    masters: list[str],
    nodes: list[str],
    master_api: str,
    node_api: str,
    etcd: list[str],
    etc_hosts: list[str] | None = None,
    node_lb: dict[str, Any] | None = None,
) -> dict[str, Any]:
    hosts: dict[str, Any] = {}
    for name, roles, api, lb in [(m, MASTER_ROLES, master_api, None) for m in masters] + [
        (n, NODE_ROLES, node_api, node_lb) for n in nodes
    ]:
        hosts[name] = {"roles": roles, "apiserver": api, "etcd": etcd,
                       "etc_hosts": etc_hosts or [], "local_lb": lb}
    return hosts


def _nginx(listen: str, masters: list[str], port: int) -> dict[str, Any]:
    """A local nginx on ``listen`` with every master's apiserver as a server."""
    return {"kind": "nginx", "listen": [listen],
            "backends": [f"https://{m}:{port}" for m in masters]}


# The 2016 template listens on `kube_apiserver_port` of every address; today's on loopback.
GEN_LB = _nginx("*:443", ["10.0.0.1", "10.0.0.2", "10.0.0.3"], 443)


GEN_MASTERS = ["master1", "master2", "master3"]
GEN_NODES = [f"node{i}" for i in range(1, 6)]

# (argv path, --rules or None, rules in the output, hosts, hosts in topology, components)
CASES: dict[str, tuple[Path, str | None, str, dict[str, Any], int, int]] = {
    "default-mode": (
        SCENARIOS / "default-mode.yaml", None, "ha-mode-2016",
        # m[0] = master1, its access_ip 192.168.0.1; sp = 443.
        _expected(GEN_MASTERS, GEN_NODES, "http://localhost:8080", "https://192.168.0.1:443",
                  LOCAL_ETCD),
        8, 3 * 7 + 5 * 4,
    ),
    "etcd-multiaccess": (
        SCENARIOS / "etcd-multiaccess.yaml", None, "ha-mode-2016",
        _expected(GEN_MASTERS, GEN_NODES, "http://localhost:8080", "https://localhost:443",
                  GEN_ETCD_HTTP, node_lb=GEN_LB),
        8, 3 * 7 + 5 * 4,
    ),
    "external-and-local-lb": (
        SCENARIOS / "external-and-local-lb.yaml", None, "ha-mode-2016",
        _expected(GEN_MASTERS, GEN_NODES, EXT_2016, EXT_2016, LOCAL_ETCD, EXT_HOSTS_LINE),
        9, 3 * 7 + 5 * 4 + 1,
    ),
    "external-lb": (
        SCENARIOS / "external-lb.yaml", None, "ha-mode-2016",
        _expected(GEN_MASTERS, GEN_NODES, EXT_2016, EXT_2016, LOCAL_ETCD, EXT_HOSTS_LINE),
        9, 3 * 7 + 5 * 4 + 1,
    ),
    "local-lb": (
        SCENARIOS / "local-lb.yaml", None, "ha-mode-2016",
        _expected(GEN_MASTERS, GEN_NODES, "http://localhost:8080", "https://localhost:443",
                  LOCAL_ETCD, node_lb=GEN_LB),
        8, 3 * 7 + 5 * 5,
    ),
    "kubespray-2016": (
        INVENTORIES / "kubespray-2016", None, "ha-mode-2016",
        # group_vars/all.yml: local LB on, sp 443, insecure port 8080; master1's access_ip
        # is 192.168.0.11, the others' defer to ip.
        _expected(GEN_MASTERS, GEN_NODES, "http://localhost:8080", "https://localhost:443",
                  LOCAL_ETCD,
                  node_lb=_nginx("*:443", ["192.168.0.11", "10.0.0.12", "10.0.0.13"], 443)),
        8, 3 * 7 + 5 * 5,
    ),
    "kubespray-current": (
        INVENTORIES / "kubespray-current", None, "ha-mode-2016",
        # The 2016 table on today's inventory: kube_apiserver_port 6443 from group_vars.
        _expected(["node1", "node2", "node3"], ["node4", "node5", "node6"],
                  "http://localhost:8080", "https://localhost:6443", LOCAL_ETCD,
                  node_lb=_nginx("*:6443", ["10.0.0.11", "10.0.0.12", "10.0.0.13"], 6443)),
        6, 3 * 7 + 3 * 5,
    ),
    "kubespray-current@2026": (
        INVENTORIES / "kubespray-current", "kubespray-2026-01", "kubespray-2026-01",
        _expected(["node1", "node2", "node3"], ["node4", "node5", "node6"],
                  "https://127.0.0.1:6443", "https://localhost:6443",
                  ["https://10.0.0.11:2379", "https://10.0.0.12:2379", "https://10.0.0.13:2379"],
                  node_lb=_nginx("127.0.0.1:6443", ["10.0.0.11", "10.0.0.12", "10.0.0.13"],
                                 6443)),
        # No flannel in etcd, no etcd proxy: masters 6 components and calico-node, nodes
        # kubelet/proxy/lb and calico-node (kube_network_plugin's default, calico).
        6, 3 * 7 + 3 * 4,
    ),
    "external-lb@2026": (
        SCENARIOS / "external-lb.yaml", "kubespray-2026-01", "kubespray-2026-01",
        # Rule 1 for all hosts; the domain defaults to the LB address, so no /etc/hosts line.
        _expected(GEN_MASTERS, GEN_NODES, "https://10.0.0.100:8383", "https://10.0.0.100:8383",
                  ["https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.3:2379"]),
        # Nodes: kubelet, kube-proxy; masters: apiserver, etcd, kubelet, kube-proxy, cm, sched;
        # calico-node on every host, through the in-cluster kubernetes Service (one node).
        9, 3 * 7 + 5 * 3 + 1 + 1,
    ),
}


def _args(path: Path, rules: str | None) -> list[str]:
    return [str(path)] + (["--rules", rules] if rules else [])


def test_every_scenario_and_inventory_is_covered() -> None:
    covered = {c[0] for c in CASES.values()}
    shipped = set(SCENARIOS.glob("*.yaml")) | {p for p in INVENTORIES.iterdir() if p.is_dir()}
    assert shipped <= covered


@pytest.mark.parametrize("case", CASES)
def test_endpoints_json(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, rules, name, hosts, _, _ = CASES[case]
    assert main(["endpoints", *_args(path, rules), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    doc = json.loads(out)
    assert doc == {"rules": name, "hosts": hosts, "warnings": []}
    assert list(doc["hosts"]) == list(hosts)  # inventory order


@pytest.mark.parametrize("case", ["default-mode", "external-lb", "kubespray-2016"])
def test_endpoints_table(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, rules, name, hosts, _, _ = CASES[case]
    assert main(["endpoints", *_args(path, rules)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"rules: {name}"
    assert lines[1].split() == ["HOST", "ROLES", "APISERVER", "ETCD", "/etc/hosts", "LOCAL",
                                "LB"]
    assert len(lines) == 2 + len(hosts)
    for line, (host, ep) in zip(lines[2:], hosts.items(), strict=True):
        cells = line.split("  ")
        cells = [c.strip() for c in cells if c.strip()]
        assert cells == [
            host,
            ",".join(ep["roles"]),
            ep["apiserver"],
            ",".join(ep["etcd"]),
            "; ".join(ep["etc_hosts"]) or "-",
            _lb_cell(ep["local_lb"]),
        ]


def _lb_cell(lb: dict[str, Any] | None) -> str:
    if lb is None:
        return "-"
    return f"{lb['kind']} {','.join(lb['listen'])} -> {len(lb['backends'])}"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("case", CASES)
def test_topology_audit_draw(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, rules, name, _, n_hosts, n_components = CASES[case]
    png = tmp_path / "sub" / "topology.png"
    assert main(["topology", *_args(path, rules), "--audit", "--draw", str(png)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    head = out.splitlines()[0]
    assert f"({name}): {n_hosts} hosts, {n_components} components" in head
    assert "Single points of failure" in out
    assert f"drawing written to {png}" in out
    width, height = _png_size(png)
    assert width == 16 * 110  # 16 in at 110 dpi
    assert 450 <= height <= 3000


def test_topology_audit_names_the_spofs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topology", str(SCENARIOS / "default-mode.yaml"), "--audit"]) == 0
    out = capsys.readouterr().out
    kubelet = next(ln for ln in out.splitlines() if ln.strip().startswith("kubelet@kube-node"))
    assert kubelet.rstrip().endswith("master1/apiserver [5/5]")
    # 5 etcd proxies x 3 members, all plain http between hosts.
    assert "Plaintext connections that cross hosts: 15" in out
    assert "etcd-proxy -> etcd (http) x15" in out


def test_lab_refuses_what_it_cannot_measure(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`hasim lab` (docs/interfaces.md): a scenario without nginx or HAProxy, or no trials, is bad
    input: exit 2, a message naming the file or the option, nothing run."""
    assert main(["lab", str(SCENARIOS / "default-mode.yaml"), "--trials", "1",
                 "--out", str(tmp_path / "lab")]) == 2
    err = capsys.readouterr().err
    assert "default-mode.yaml" in err and "load balancer" in err
    assert main(["lab", str(SCENARIOS / "local-lb.yaml"), "--trials", "0"]) == 2
    assert "--trials" in capsys.readouterr().err
    assert not (tmp_path / "lab").exists()
