"""Tests for hasim.kubespray.inventory: reading real Ansible inventories through ansible-core.

Expected values are taken by hand from the inventory files in ``inventories/`` or from the
small inventories each test writes to ``tmp_path``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hasim.errors import HasimError
from hasim.kubespray.inventory import InventoryData, InventoryError, InventoryHost, read_inventory

INVENTORIES = Path(__file__).resolve().parent.parent / "inventories"
OLD = INVENTORIES / "kubespray-2016"
CURRENT = INVENTORIES / "kubespray-current"

MASTERS = ("master1", "master2", "master3")
NODES = ("node1", "node2", "node3", "node4", "node5")


def write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the 2016-style example inventory --------------------------------------------------------


def test_2016_range_expands_in_order() -> None:
    inventory = read_inventory(OLD)
    assert inventory.groups["kube-node"] == NODES


def test_2016_groups_and_children() -> None:
    inventory = read_inventory(OLD)
    assert inventory.groups["kube-master"] == MASTERS
    assert inventory.groups["etcd"] == MASTERS
    # [k8s-cluster:children] lists kube-master before kube-node.
    assert inventory.groups["k8s-cluster"] == MASTERS + NODES
    assert set(inventory.groups) == {"kube-master", "etcd", "kube-node", "k8s-cluster"}
    assert tuple(h.name for h in inventory.hosts) == MASTERS + NODES
    assert inventory.host("master1").groups == ("kube-master", "etcd", "k8s-cluster")
    assert inventory.host("node4").groups == ("kube-node", "k8s-cluster")


def test_2016_host_and_group_vars() -> None:
    inventory = read_inventory(OLD)
    master1 = inventory.host("master1")
    assert master1.vars["ansible_host"] == "192.168.0.11"
    assert master1.vars["ip"] == "10.0.0.11"
    assert master1.vars["access_ip"] == "192.168.0.11"
    assert "access_ip" not in inventory.host("master2").vars
    # The range nodes get their addresses from host_vars/nodeN.yml.
    for n in range(1, 6):
        node = inventory.host(f"node{n}")
        assert node.vars["ip"] == f"10.0.0.2{n}"
        assert node.vars["ansible_host"] == f"192.168.0.2{n}"
    for host in inventory.hosts:
        assert host.vars["kube_apiserver_port"] == 443
        assert host.vars["kube_apiserver_insecure_port"] == 8080
        assert host.vars["loadbalancer_apiserver_localhost"] is True
        assert host.vars["etcd_multiaccess"] is False
        assert host.vars["kube_network_plugin"] == "flannel"
        # Only a comment in group_vars/all.yml.
        assert "loadbalancer_apiserver" not in host.vars


def test_magic_and_connection_vars_are_dropped() -> None:
    node = read_inventory(OLD).host("node1")
    for magic in (
        "inventory_hostname",
        "inventory_hostname_short",
        "inventory_file",
        "inventory_dir",
        "groups",
        "group_names",
        "omit",
        "playbook_dir",
        "hostvars",
        "ansible_playbook_python",
        "ansible_config_file",
        "ansible_facts",
    ):
        assert magic not in node.vars
    assert node.vars["ansible_host"] == "192.168.0.21"


def test_kept_ansible_vars(tmp_path: Path) -> None:
    write(
        tmp_path / "hosts.yaml",
        "all:\n  hosts:\n    m1:\n      ansible_host: 192.168.0.11\n      ansible_port: 2222\n"
        "      ansible_user: core\n      ansible_become: true\n"
        "      ansible_default_ipv4: {address: 10.0.0.11}\n",
    )
    assert read_inventory(tmp_path / "hosts.yaml").host("m1").vars == {
        "ansible_host": "192.168.0.11",
        "ansible_port": 2222,
        "ansible_default_ipv4": {"address": "10.0.0.11"},
    }


def test_directory_and_file_give_same_result() -> None:
    for directory, file in ((OLD, OLD / "inventory.ini"), (CURRENT, CURRENT / "hosts.yaml")):
        from_dir = read_inventory(directory)
        from_file = read_inventory(file)
        assert from_dir.hosts == from_file.hosts
        assert from_dir.groups == from_file.groups
        assert from_dir.source == str(directory)
        assert from_file.source == str(file)


# --- today's example inventory ----------------------------------------------------------------


def test_current_yaml_inventory() -> None:
    inventory = read_inventory(CURRENT)
    assert isinstance(inventory, InventoryData)
    control_plane = ("node1", "node2", "node3")
    workers = ("node4", "node5", "node6")
    assert inventory.groups["kube_control_plane"] == control_plane
    assert inventory.groups["etcd"] == control_plane
    assert inventory.groups["kube_node"] == workers
    assert inventory.groups["k8s_cluster"] == control_plane + workers
    assert inventory.groups["calico_rr"] == ()
    assert tuple(h.name for h in inventory.hosts) == control_plane + workers
    node5 = inventory.host("node5")
    assert isinstance(node5, InventoryHost)
    assert node5.groups == ("kube_node", "k8s_cluster")
    assert node5.vars["ip"] == "10.0.0.22"
    assert node5.vars["access_ip"] == "10.0.0.22"
    assert node5.vars["ansible_host"] == "192.168.0.22"
    for host in inventory.hosts:
        assert host.vars["kube_apiserver_port"] == 6443
        assert host.vars["loadbalancer_apiserver_localhost"] is True
        assert host.vars["loadbalancer_apiserver_type"] == "nginx"


# --- small inventories built for one rule each -------------------------------------------------


def test_zero_padded_range(tmp_path: Path) -> None:
    inv = write(tmp_path / "hosts.ini", "[kube-node]\nnode[08:11] ip=10.0.0.1\n")
    assert read_inventory(inv).groups["kube-node"] == ("node08", "node09", "node10", "node11")


def test_group_member_order_is_inventory_order(tmp_path: Path) -> None:
    inv = write(
        tmp_path / "hosts.ini",
        "[kube-master]\nmaster3\nmaster1\nmaster2\n\n[etcd]\nmaster1\nmaster2\nmaster3\n",
    )
    inventory = read_inventory(inv)
    # kubespray's first master is groups['kube-master'][0]: master3 here, not master1.
    assert inventory.groups["kube-master"] == ("master3", "master1", "master2")
    assert inventory.groups["etcd"] == ("master1", "master2", "master3")
    assert tuple(h.name for h in inventory.hosts) == ("master3", "master1", "master2")


def test_variable_precedence(tmp_path: Path) -> None:
    write(
        tmp_path / "hosts.ini",
        "[kube-master]\nm1 inline=from_ini_line\nm2\n\n"
        "[kube-node]\nn1\n\n"
        "[k8s-cluster:children]\nkube-master\nkube-node\n\n"
        "[kube-master:vars]\ngroup_inline=from_ini_section\n",
    )
    write(tmp_path / "group_vars" / "all.yml", "level: all\nonly_all: yes_all\n")
    write(tmp_path / "group_vars" / "k8s-cluster.yml", "level: k8s-cluster\n")
    write(
        tmp_path / "group_vars" / "kube-master.yml",
        "level: kube-master\ngroup_inline: from_group_vars_file\n",
    )
    write(tmp_path / "host_vars" / "m1.yml", "level: host\ninline: from_host_vars_file\n")
    inventory = read_inventory(tmp_path)
    m1, m2, n1 = (inventory.host(name) for name in ("m1", "m2", "n1"))
    # host_vars beat group_vars; a child group beats its parent, which beats all.
    assert m1.vars["level"] == "host"
    assert m2.vars["level"] == "kube-master"
    assert n1.vars["level"] == "k8s-cluster"
    assert {h.vars["only_all"] for h in (m1, m2, n1)} == {"yes_all"}
    # Ansible's documented order puts host_vars/ and group_vars/ files above the variables
    # written in the inventory file itself.
    assert m1.vars["inline"] == "from_host_vars_file"
    assert m2.vars["group_inline"] == "from_group_vars_file"


def test_kubespray_layout_with_var_directories(tmp_path: Path) -> None:
    cluster = tmp_path / "inventory" / "mycluster"
    write(
        cluster / "hosts.ini",
        "[kube-master]\nmaster1 ip=10.0.0.1\n\n[kube-node]\nnode1 ip=10.0.0.2\n\n"
        "[k8s-cluster:children]\nkube-master\nkube-node\n\n[etcd]\nmaster1\n",
    )
    write(cluster / "group_vars" / "all" / "all.yml", "loadbalancer_apiserver_localhost: true\n")
    write(cluster / "group_vars" / "all" / "docker.yml", "docker_version: '1.12'\n")
    write(cluster / "group_vars" / "k8s-cluster" / "k8s-cluster.yml", "kube_apiserver_port: 443\n")
    for source in (cluster, cluster / "hosts.ini"):
        inventory = read_inventory(source)
        assert tuple(h.name for h in inventory.hosts) == ("master1", "node1")
        for host in inventory.hosts:
            assert host.vars["loadbalancer_apiserver_localhost"] is True
            assert host.vars["docker_version"] == "1.12"
            assert host.vars["kube_apiserver_port"] == 443


def test_templates_are_resolved(tmp_path: Path) -> None:
    write(
        tmp_path / "hosts.ini",
        '[kube-master]\nm2 ip=10.0.0.2 access_ip="{{ ip }}"\nm1 ip=10.0.0.1\n\n[etcd]\nm1\n',
    )
    write(
        tmp_path / "group_vars" / "all.yml",
        'kube_apiserver_port: "{{ 6000 + 443 }}"\n'
        "first_master: \"{{ groups['kube-master'][0] }}\"\n"
        "etcd_ip: \"{{ hostvars[groups['etcd'][0]]['ip'] }}\"\n"
        'unresolved: "{{ not_defined_anywhere }}"\n'
        'mixed: {resolved: "{{ ip }}", raw: "{{ nope }}", number: 3}\n'
        "listed: ['{{ ip }}', 2]\n",
    )
    m2 = read_inventory(tmp_path).host("m2")
    assert m2.vars["access_ip"] == "10.0.0.2"
    assert m2.vars["kube_apiserver_port"] == 6443
    assert type(m2.vars["kube_apiserver_port"]) is int
    assert m2.vars["first_master"] == "m2"
    assert m2.vars["etcd_ip"] == "10.0.0.1"
    assert m2.vars["unresolved"] == "{{ not_defined_anywhere }}"
    assert m2.vars["mixed"] == {"resolved": "10.0.0.2", "raw": "{{ nope }}", "number": 3}
    assert m2.vars["listed"] == ["10.0.0.2", 2]
    assert type(m2.vars["ip"]) is str  # Ansible's tagged str subclass is not leaked


def test_reading_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # Dashes in group names normally make Ansible print an "Invalid characters" warning.
    read_inventory(OLD)
    with pytest.raises(InventoryError):
        read_inventory(write(tmp_path / "bad.ini", "[kube-master]\nm1 not a var\n"))
    assert capfd.readouterr() == ("", "")


def test_thousand_hosts(tmp_path: Path) -> None:
    lines = ["[kube-master]"] + [f"master{i} ip=10.0.0.{i}" for i in (1, 2, 3)]
    lines += ["", "[etcd]", "master[1:3]", "", "[kube-node]"]
    lines += [f"node{i:03d} ip=10.1.{i // 250}.{i % 250 + 1}" for i in range(997)]
    lines += ["", "[k8s-cluster:children]", "kube-master", "kube-node", ""]
    write(tmp_path / "hosts.ini", "\n".join(lines))
    write(tmp_path / "group_vars" / "all.yml", "kube_apiserver_port: 443\n")
    write(tmp_path / "group_vars" / "k8s-cluster.yml", "kube_network_plugin: calico\n")
    started = time.monotonic()
    inventory = read_inventory(tmp_path)
    elapsed = time.monotonic() - started
    assert len(inventory.hosts) == 1000
    assert len(inventory.groups["k8s-cluster"]) == 1000
    assert inventory.groups["kube-node"][0] == "node000"
    assert inventory.groups["kube-node"][-1] == "node996"
    assert inventory.groups["etcd"] == ("master1", "master2", "master3")
    last = inventory.host("node996")
    assert last.vars["ip"] == "10.1.3.247"
    assert last.vars["kube_apiserver_port"] == 443
    assert last.vars["kube_network_plugin"] == "calico"
    # About 2 s on a laptop; a quadratic slip would take minutes.
    assert elapsed < 60


# --- errors -------------------------------------------------------------------------------------


def assert_one_line_error(error: pytest.ExceptionInfo[InventoryError], path: Path) -> None:
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message
    assert isinstance(error.value, ValueError)
    assert isinstance(error.value, HasimError)


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "inventory"
    with pytest.raises(InventoryError, match="does not exist") as error:
        read_inventory(missing)
    assert str(error.value) == f"inventory path does not exist: {missing}"


def test_unparsable_ini(tmp_path: Path) -> None:
    bad = write(tmp_path / "hosts.ini", "[kube-master]\nmaster1 this is not key=value\n")
    with pytest.raises(InventoryError, match="cannot parse") as error:
        read_inventory(bad)
    assert_one_line_error(error, bad)


def test_unparsable_yaml(tmp_path: Path) -> None:
    bad = write(tmp_path / "hosts.yaml", "all:\n  hosts: [node1, node2\n")
    with pytest.raises(InventoryError, match="cannot parse") as error:
        read_inventory(bad)
    assert_one_line_error(error, bad)


def test_unparsable_file_in_directory_is_named(tmp_path: Path) -> None:
    write(tmp_path / "good.ini", "[kube-master]\nmaster1\n")
    bad = write(tmp_path / "bad.ini", "[kube-master\nmaster1\n")
    with pytest.raises(InventoryError) as error:
        read_inventory(tmp_path)
    assert_one_line_error(error, tmp_path)
    assert str(bad) in str(error.value)


def test_inventory_without_hosts(tmp_path: Path) -> None:
    empty = write(tmp_path / "hosts.ini", "# nothing yet\n[kube-master]\n[kube-node]\n")
    with pytest.raises(InventoryError, match="no hosts") as error:
        read_inventory(empty)
    assert_one_line_error(error, empty)


def test_directory_without_inventory_files(tmp_path: Path) -> None:
    write(tmp_path / "group_vars" / "all.yml", "kube_apiserver_port: 443\n")
    with pytest.raises(InventoryError) as error:
        read_inventory(tmp_path)
    assert_one_line_error(error, tmp_path)


def test_broken_group_vars_file(tmp_path: Path) -> None:
    inv = write(tmp_path / "hosts.ini", "[kube-master]\nmaster1\n")
    broken = write(tmp_path / "group_vars" / "all.yml", "kube_apiserver_port: [443\n")
    with pytest.raises(InventoryError) as error:
        read_inventory(inv)
    assert_one_line_error(error, inv)
    assert str(broken) in str(error.value)


def test_import_does_not_load_ansible() -> None:
    code = "import sys, hasim.kubespray.inventory; print('ansible' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
