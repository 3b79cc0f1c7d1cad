"""The apiserver access layouts kubespray offers, each as the variables that select it.

:func:`layouts_for` lists, for a rule set, every layout a user of that kubespray can
choose (docs/model.md, "Layouts"):

``default``
    no load balancer: every node uses the first master (the HA doc's "default" row).
``local-nginx`` / ``local-haproxy``
    a localhost nginx or HAProxy on every node (``loadbalancer_apiserver_localhost``,
    ``loadbalancer_apiserver_type``); kubespray's default today is ``local-nginx``.
``external-haproxy``
    one external HAProxy as the 2016 HA doc's example configures it (no ``check``).
``external-haproxy-keepalived``
    two external HAProxy instances with health checks behind a keepalived VRRP VIP.
``kube-vip``
    kube-vip's control-plane VIP on the masters (current kubespray only).
``etcd-multiaccess``
    the local nginx with every etcd member given to the clients (2016 rules only).

kargo's code of October 2016 could not deploy a local LB (docs/model.md), so
``kargo-2016-10`` offers only the default and the external layouts. :func:`current_layout`
names the layout an inventory already has.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hasim.kubespray.cluster import Cluster
from hasim.kubespray.endpoints import Endpoints, ansible_bool, evaluate_endpoints

#: The port of the external LB in the layouts hasim adds (the HA doc's example).
EXTERNAL_PORT = 8383


@dataclass(frozen=True)
class Layout:
    """One way for nodes to reach the apiservers."""

    name: str
    title: str
    #: The kubespray variables that select it; None means "leave undefined" (remove it).
    vars: dict[str, Any]
    #: The scenario's ``balancers`` section that simulates it.
    balancers: dict[str, Any] = field(default_factory=dict)
    #: Hosts the layout needs that an inventory does not hold (external LB instances).
    extra_hosts: list[str] = field(default_factory=list)
    #: What the user must know or do beyond the variables.
    note: str = ""

    @property
    def kube_vip(self) -> bool:
        return bool(self.vars.get("kube_vip_enabled"))


def free_address(cluster: Cluster) -> str:
    """An address for a VIP: the highest free one of the first master's /24 (IPv4) or
    /64 (IPv6), or a documentation address when the master has no IP address."""
    used = {a for h in cluster.hosts for a in (h.ip, h.access_ip, h.default_address)}
    try:
        first = ipaddress.ip_address(cluster.masters[0].access_ip)
    except ValueError:
        return "192.0.2.100"
    prefix = 24 if first.version == 4 else 64
    net = ipaddress.ip_network(f"{first}/{prefix}", strict=False)
    top = net.broadcast_address if first.version == 4 else net.network_address + 0xFFFF
    for offset in range(1, 250):
        candidate = str(top - offset)
        if candidate not in used:
            return candidate
    return str(top - 250)


def _local(kind: str) -> Layout:
    return Layout(
        f"local-{kind}", f"localhost {'nginx' if kind == 'nginx' else 'HAProxy'} on every node",
        {"loadbalancer_apiserver_localhost": True, "loadbalancer_apiserver_type": kind,
         "loadbalancer_apiserver": None},
        {"local": {"kind": kind}},
    )


def _external(address: str, rules: str, keepalived: bool) -> Layout:
    lb_vars: dict[str, Any] = {"loadbalancer_apiserver": {"address": address,
                                                          "port": EXTERNAL_PORT},
                               "loadbalancer_apiserver_localhost": False}
    if rules == "kargo-2016-10":
        # kargo wrote the /etc/hosts line only with the domain set (docs/model.md).
        lb_vars["apiserver_loadbalancer_domain_name"] = "lb-apiserver.kubernetes.local"
    if not keepalived:
        return Layout(
            "external-haproxy", "one external HAProxy (the 2016 HA doc's example)", lb_vars,
            {"external": {"kind": "haproxy"}}, ["extlb1"],
            note=f"run HAProxy on a host of its own at {address}:{EXTERNAL_PORT}; hasim "
                 "simulates it as the doc's example (servers without check)",
        )
    return Layout(
        "external-haproxy-keepalived",
        "two external HAProxy with health checks behind a keepalived VIP", lb_vars,
        {"external": {"kind": "haproxy", "instances": 2, "check": True,
                      "vip": {"kind": "keepalived"}}},
        ["extlb1", "extlb2"],
        note=f"run HAProxy (servers with check) and keepalived on two hosts of their own, "
             f"the VRRP VIP {address} (a free address of the masters' network: check it)",
    )


def _kube_vip(address: str) -> Layout:
    return Layout(
        "kube-vip", "kube-vip's control-plane VIP on the masters",
        {"kube_vip_enabled": True, "kube_vip_controlplane_enabled": True,
         "kube_vip_arp_enabled": True, "kube_vip_address": address,
         "loadbalancer_apiserver": {"address": address, "port": 6443},
         "loadbalancer_apiserver_localhost": False},
        {"external": {"kind": "haproxy", "vip": {"kind": "kube-vip"}}},
        note=f"the VIP {address} is a free address of the masters' network: check it",
    )


def layouts_for(rules: str, cluster: Cluster) -> list[Layout]:
    """Every layout kubespray of ``rules`` offers, in a fixed order."""
    vip = free_address(cluster)
    default = Layout("default", "no load balancer: every node uses the first master",
                     {"loadbalancer_apiserver_localhost": False, "loadbalancer_apiserver": None})
    if rules == "kargo-2016-10":
        return [default, _external(vip, rules, False), _external(vip, rules, True)]
    if rules == "ha-mode-2016":
        multi = Layout("etcd-multiaccess",
                       "localhost nginx, and every etcd member given to the clients",
                       {**_local("nginx").vars, "etcd_multiaccess": True},
                       {"local": {"kind": "nginx"}})
        default = Layout(default.name, default.title, {**default.vars, "etcd_multiaccess": False})
        return [default, _local("nginx"), _local("haproxy"), _external(vip, rules, False),
                _external(vip, rules, True), multi]
    off = {"kube_vip_enabled": False}
    return [Layout(default.name, default.title, {**default.vars, **off}),
            *(Layout(lo.name, lo.title, {**lo.vars, **off}, lo.balancers)
              for lo in (_local("nginx"), _local("haproxy"))),
            Layout((e := _external(vip, rules, True)).name, e.title, {**e.vars, **off},
                   e.balancers, e.extra_hosts, e.note),
            _kube_vip(vip)]


def classify(cluster: Cluster, rules: str, eps: Mapping[str, Endpoints] | None = None) -> str:
    """The name of the layout ``cluster`` has under ``rules`` (see :func:`layouts_for`)."""
    eps = eps if eps is not None else evaluate_endpoints(cluster, rules)
    nodes = [e for e in eps.values() if "kube-node" in e.roles] or list(eps.values())
    if any(e.external_lb_address for e in eps.values()):
        if any(ansible_bool(h.var("kube_vip_enabled")) for h in cluster.hosts):
            return "kube-vip"
        return "external-haproxy" if rules != "kubespray-2026-01" \
            else "external-haproxy-keepalived"
    kinds = {e.local_lb for e in nodes if e.local_lb}
    if kinds:
        kind = sorted(kinds)[0]
        if kind == "nginx" and rules == "ha-mode-2016" and any(
                ansible_bool(h.var("etcd_multiaccess")) for h in cluster.hosts):
            return "etcd-multiaccess"
        return f"local-{kind}"
    return "default"


def current_layout(cluster: Cluster, rules: str) -> str:
    """The layout the inventory selects, by the endpoints it gets."""
    return classify(cluster, rules)
