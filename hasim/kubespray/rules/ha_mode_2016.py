"""``ha-mode-2016``: the table of kubespray's ``docs/ha-mode.md`` of October 2016.

The doc is the specification hasim implements (docs/model.md, "The 2016 doc table").
kubespray's own code of that month differed in three places;
:mod:`hasim.kubespray.rules.kargo_2016_10`
follows the code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hasim.kubespray.cluster import ETCD
from hasim.kubespray.endpoints import (
    ETCD_CLIENT_PORT,
    HostView,
    LocalLB,
    RuleSet,
    apiserver_urls,
    etcd_urls,
    external_balancer,
    ipwrap,
    lb_port,
    local_lb_kind,
    register,
)

DEFAULTS: Mapping[str, Any] = {
    "kube_apiserver_insecure_port": 8080,
    "kube_apiserver_port": 443,
    "apiserver_loadbalancer_domain_name": "lb-apiserver.kubernetes.local",
    "loadbalancer_apiserver_localhost": False,
    "etcd_multiaccess": False,
    # 2016 kubespray shipped nginx only; hasim also reads current kubespray's switch so
    # that a local HAProxy can be compared on the 2016 table.
    "loadbalancer_apiserver_type": "nginx",
}


def apiserver(h: HostView) -> str | None:
    if not h.in_k8s:
        return None
    lb = h.external_lb()
    if lb is not None:
        # External LB overrides any localhost LB, for masters and nodes alike.
        return f"https://{h.var('apiserver_loadbalancer_domain_name')}:{lb_port(h, lb)}"
    if h.is_master:
        # Masters reach their own apiserver on the insecure port (k8s < 1.5 TLS bugs).
        return f"http://localhost:{h.port('kube_apiserver_insecure_port')}"
    if h.flag("loadbalancer_apiserver_localhost"):
        return f"https://localhost:{h.port('kube_apiserver_port')}"
    return f"https://{ipwrap(h.first_master.access_ip)}:{h.port('kube_apiserver_port')}"


def local_lb(h: HostView) -> LocalLB | None:
    # The nginx proxy runs on every non-master k8s-cluster host when the local LB is on
    # and no external LB overrides it. kargo's nginx.conf of 2016 had `listen {{
    # kube_apiserver_port }};`: every address of the host, not only loopback.
    if not h.in_k8s or h.is_master or h.external_lb() is not None:
        return None
    if not h.flag("loadbalancer_apiserver_localhost"):
        return None
    sp = h.port("kube_apiserver_port")
    return LocalLB(local_lb_kind(h), [f"*:{sp}"], apiserver_urls(h, sp))


def etcd(h: HostView) -> list[str]:
    if not h.in_k8s:
        return []
    if h.flag("etcd_multiaccess"):
        return etcd_urls(h, h.cluster.etcd_members, "http")
    return [f"http://127.0.0.1:{ETCD_CLIENT_PORT}"]


def etcd_proxy_backends(h: HostView) -> list[str]:
    # A proxy fronts the members on 127.0.0.1:2379 of every k8s-cluster host, except a
    # host that is itself an etcd member: its member already listens there (the port
    # cannot be bound twice), which is kargo's `is_etcd_proxy` fact of 2016.
    if not h.in_k8s or ETCD in h.host.groups or h.flag("etcd_multiaccess"):
        return []
    return etcd_urls(h, h.cluster.etcd_members, "http")


def flannel_etcd(h: HostView) -> str | None:
    # flannel's pod takes ONE --etcd-server: the first of the list, so no HA (HA doc).
    urls = etcd(h)
    return urls[0] if urls else None


def etc_hosts(h: HostView) -> list[str]:
    lb = h.external_lb()
    if lb is None or not h.in_k8s:
        return []
    return [f"{lb['address']} {h.var('apiserver_loadbalancer_domain_name')}"]


RULE_SET: RuleSet = register(
    RuleSet(
        name="ha-mode-2016",
        summary="kubespray docs/ha-mode.md, October 2016 (the doc's table)",
        defaults=DEFAULTS,
        apiserver=apiserver,
        local_lb=local_lb,
        etcd=etcd,
        etcd_proxy_backends=etcd_proxy_backends,
        flannel_etcd=flannel_etcd,
        etc_hosts=etc_hosts,
        external_lb=external_balancer,
    )
)
