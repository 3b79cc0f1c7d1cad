"""Malformed scenario files, each with the words its one-line error must contain (the
field path as written in the file, or the problem). Shared by tests/test_malformed.py."""

from __future__ import annotations

BASE = """\
name: m
cluster:
  generate: {masters: 3, etcd: 3, nodes: 2}
  vars: {loadbalancer_apiserver_localhost: true}
balancers:
  local: {kind: nginx}
faults:
  - {at: 60s, target: "kube-master[0]", kind: crash, duration: 1m}
duration: 2m
"""
CLUSTER = "cluster:\n  generate: {masters: 3, etcd: 3, nodes: 2}\n"
FAULT = '  - {at: 60s, target: "kube-master[0]", kind: crash}\n'


def fault(text: str) -> str:
    return "name: m\n" + CLUSTER + "faults:\n  - " + text + "\n"


def extra(text: str) -> str:
    return BASE + text


def local(text: str) -> str:
    return BASE.replace("local: {kind: nginx}", text)


EXT = ("name: m\ncluster:\n  generate: {masters: 3, etcd: 3, nodes: 2}\n"
       "  vars: {loadbalancer_apiserver: {address: 10.0.0.100, port: 8383}}\n"
       "balancers:\n  external: ")

CASES: dict[str, tuple[str, list[str]]] = {
    # --- keys and types at the top
    "unknown-top-key": (extra("colour: red\n"), ["colour", "unknown key"]),
    "duration-list": (BASE.replace("duration: 2m", "duration: [1]"), ["duration"]),
    "duration-words": (BASE.replace("duration: 2m", "duration: 10 minutes"), ["duration"]),
    "duration-bad-unit": (BASE.replace("duration: 2m", "duration: 5x"), ["duration", "5x"]),
    "duration-negative": (BASE.replace("duration: 2m", "duration: -5s"), ["duration"]),
    "duration-zero": (BASE.replace("duration: 2m", "duration: 0s"), ["duration"]),
    "replications-zero": (extra("replications: 0\n"), ["replications"]),
    "replications-text": (extra("replications: many\n"), ["replications"]),
    "seed-negative": (extra("seed: -1\n"), ["seed"]),
    "seed-float": (extra("seed: 1.5\n"), ["seed"]),
    "name-empty": (BASE.replace("name: m", "name: ''"), ["name"]),
    "fidelity-unknown": (extra("fidelity: approximate\n"), ["fidelity"]),
    # --- the cluster
    "cluster-missing": ("name: m\nduration: 2m\n", ["cluster"]),
    "cluster-no-hosts": ("name: m\ncluster: {rules: ha-mode-2016}\n", ["cluster", "no hosts"]),
    "rules-unknown": ("name: m\ncluster: {rules: ha-mode-1999, generate: {nodes: 1}}\n",
                      ["cluster.rules", "ha-mode-1999"]),
    "masters-zero": ("name: m\ncluster: {generate: {masters: 0}}\n",
                     ["cluster.generate.masters"]),
    "nodes-text": ("name: m\ncluster: {generate: {nodes: ten}}\n", ["cluster.generate.nodes"]),
    "inventory-missing": ("name: m\ncluster: {inventory: ./no-such-inventory}\n",
                          ["cluster.inventory"]),
    "inventory-and-generate": ("name: m\ncluster: {inventory: x, generate: {nodes: 1}}\n",
                               ["cluster", "not both"]),
    "host-groups-not-list": ("name: m\ncluster:\n  hosts:\n    m1: {groups: 5}\n",
                             ["cluster.hosts.m1.groups"]),
    "lb-without-address": ("name: m\n" + CLUSTER + "  vars: {loadbalancer_apiserver: {port: 1}}\n",
                           ["loadbalancer_apiserver.address"]),
    # --- load balancers
    "local-kind-unknown": (local("local: {kind: envoy}"), ["balancers.local"]),
    "nginx-key-on-haproxy": (local("local: {kind: haproxy, max_fails: 1}"),
                             ["balancers.local.max_fails", "unknown key"]),
    "nginx-unknown-key": (local("local: {kind: nginx, max_fail: 1}"),
                          ["balancers.local.max_fail", "unknown key"]),
    "nginx-workers-zero": (local("local: {kind: nginx, workers: 0}"),
                           ["balancers.local.workers"]),
    "fail-timeout-word": (local("local: {kind: nginx, fail_timeout: fast}"),
                          ["balancers.local.fail_timeout"]),
    "haproxy-inter-bool": (local("local: {kind: haproxy, inter: true}"),
                           ["balancers.local.inter"]),
    "external-instances-zero": (EXT + "{kind: haproxy, instances: 0}\n",
                                ["balancers.external.instances"]),
    "vip-kind-unknown": (EXT + "{kind: haproxy, vip: {kind: carp}}\n",
                         ["balancers.external.vip.kind"]),
    "balance-unknown": (EXT + "{kind: haproxy, balance: random}\n",
                        ["balancers.external.balance"]),
    # --- clients and control loops
    "profile-unknown": (extra("clients: {profile: ancient}\n"), ["clients.profile"]),
    "election-timeout-unit": (extra("etcd: {election_timeout: 1 parsec}\n"),
                              ["etcd.election_timeout"]),
    "lease-duration-bool": (extra("kubelet: {lease_duration: true}\n"),
                            ["kubelet.lease_duration"]),
    "initial-leader-not-master": (extra("controller_manager: {initial_leader: node1}\n"),
                                  ["controller_manager.initial_leader"]),
    # --- faults
    "fault-kind-unknown": (fault("{at: 60s, target: master1, kind: meteor}"),
                           ["faults[0].kind"]),
    "fault-host-unknown": (fault("{at: 60s, target: master9, kind: crash}"),
                           ["faults[0].target", "master9"]),
    "fault-group-index": (fault('{at: 60s, target: "kube-master[7]", kind: crash}'),
                          ["faults[0].target"]),
    "fault-component-unknown": (fault("{at: 60s, target: master1/coredns, kind: crash}"),
                                ["faults[0].target"]),
    "fault-peers-unknown": (fault("{at: 60s, target: master1, kind: partition, peers: moon}"),
                            ["faults[0].peers"]),
    "fault-no-at": (fault("{target: master1, kind: crash}"), ["faults[0]", "'at'"]),
    "fault-partition-no-peers": (fault("{at: 1s, target: master1, kind: partition}"),
                                 ["faults[0]", "peers"]),
    "fault-random-no-mtbf": (fault("{kind: random, targets: kube-master, mttr: 1h}"),
                             ["faults[0]", "mtbf"]),
    "fault-at-word": (fault("{at: soon, target: master1, kind: crash}"), ["faults[0].at"]),
    "fault-unknown-key": (fault("{at: 1s, target: master1, kind: crash, when: 5}"),
                          ["faults[0].when", "unknown key"]),
    "faults-not-list": ("name: m\n" + CLUSTER + "faults: {at: 1s}\n", ["faults"]),
    # --- sweeps
    "sweep-unknown-key": (extra("sweep: {balancers.local.max_fail: [1, 2]}\n"),
                          ["sweep.balancers.local.max_fail"]),
    "sweep-unknown-top": (extra("sweep: {colour: [red]}\n"), ["sweep.colour"]),
    "sweep-empty": (extra("sweep: {duration: []}\n"), ["sweep.duration"]),
    "sweep-bad-value": (extra("sweep: {duration: [1m, forever]}\n"), ["sweep.duration[1]"]),
    "sweep-not-list": (extra("sweep: {duration: 1m}\n"), ["sweep.duration"]),
    "sweep-bad-target": (extra("sweep: {faults.0.target: [master1, master9]}\n"),
                         ["sweep.faults.0.target[1]", "master9"]),
    # --- not YAML, or not a map
    "yaml-unclosed": ("name: m\ncluster: {generate: {nodes: 1}\n", ["malformed YAML"]),
    "yaml-tab": ("name: m\ncluster:\n\tgenerate: {}\n", ["malformed YAML"]),
    "yaml-list": ("- name: m\n", ["expected a map"]),
    "yaml-empty": ("", ["expected a map"]),
    "yaml-scalar": ("just words\n", ["expected a map"]),
}
