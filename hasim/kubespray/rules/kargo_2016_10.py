"""``kargo-2016-10``: what kubespray's (then kargo's) code of 2016-10-18 really configured.

Read from commit 91a101c8, the code of the day the HA doc was written
(``roles/kubernetes/preinstall/tasks/set_facts.yml`` and ``etchosts.yml``,
``roles/kubernetes/node/tasks/main.yml``). It differs from the doc's table
(:mod:`hasim.kubespray.rules.ha_mode_2016`) in three places (docs/model.md, "kargo's code of
October 2016"):

1. ``loadbalancer_apiserver_localhost`` is always false: the ``when:`` of the task meant
   to clear it only with an external LB is indented into ``set_fact``'s arguments, so the
   fact is set to false unconditionally (fixed in commit 32a54534, 2016-11-21). The local
   LB row cannot be reached and no nginx proxy is installed.
2. An external LB is used only when ``loadbalancer_apiserver.port`` is defined; without a
   port every host, masters included, falls through to ``https://<first master>:443``
   (until kubespray #5529, 2020).
3. The ``/etc/hosts`` line for the LB domain is written only when
   ``apiserver_loadbalancer_domain_name`` is set in the inventory, although the URL uses
   the default ``lb-apiserver.kubernetes.local`` (kubespray #1993, commit 8aafe643, 2017).

Masters use ``http://127.0.0.1:8080`` (the doc writes ``localhost``), and etcd access is
the doc's. kargo wrote IPv6 addresses into URLs without brackets; hasim brackets them, as
everywhere, and warns that such a cluster could not have been deployed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hasim.kubespray.cluster import ETCD
from hasim.kubespray.endpoints import (
    Endpoints,
    HostView,
    LocalLB,
    RuleSet,
    external_balancer,
    ipwrap,
    is_ipv6,
    lb_port,
    register,
)
from hasim.kubespray.rules import ha_mode_2016, hosts_spelled_without, name_list

DEFAULT_DOMAIN = "lb-apiserver.kubernetes.local"

#: The 2016 defaults, minus the LB domain: whether the inventory sets it decides item 3.
DEFAULTS: Mapping[str, Any] = {
    k: v for k, v in ha_mode_2016.DEFAULTS.items() if k != "apiserver_loadbalancer_domain_name"
}

#: The group names kargo's playbooks of 2016 address (cluster.yml).
GROUPS_2016 = ("kube-master", "kube-node", "k8s-cluster")


def _lb_with_port(h: HostView) -> Mapping[str, Any] | None:
    # `loadbalancer_apiserver is defined and loadbalancer_apiserver.port is defined`
    lb = h.external_lb()
    return lb if lb is not None and lb.get("port") is not None else None


def apiserver(h: HostView) -> str | None:
    if not h.in_k8s:
        return None
    # Row "not is_kube_master and loadbalancer_apiserver_localhost" never matches (item 1).
    if h.is_master and h.external_lb() is None:
        return f"http://127.0.0.1:{h.port('kube_apiserver_insecure_port')}"
    lb = _lb_with_port(h)
    if lb is not None:
        domain = h.var("apiserver_loadbalancer_domain_name") or DEFAULT_DOMAIN
        return f"https://{domain}:{lb_port(h, lb)}"
    return f"https://{ipwrap(h.first_master.access_ip)}:{h.port('kube_apiserver_port')}"


def local_lb(h: HostView) -> LocalLB | None:
    # nginx-proxy.yml runs `when: is_kube_master == false and loadbalancer_apiserver_localhost`
    # and the fact is false (item 1).
    return None


def etc_hosts(h: HostView) -> list[str]:
    # preinstall (and with it etchosts.yml) runs on `k8s-cluster` and on `etcd:!k8s-cluster`.
    lb = h.external_lb()
    if lb is None or not h.defined("apiserver_loadbalancer_domain_name"):
        return []
    if not (h.in_k8s or ETCD in h.host.groups):
        return []
    return [f"{lb['address']} {h.var('apiserver_loadbalancer_domain_name')}"]


def external_lb(h: HostView) -> tuple[str, int, list[str]] | None:
    # An LB without a port is configured on no host (item 2), so none is placed.
    return external_balancer(h) if _lb_with_port(h) is not None else None


def warnings(views: Sequence[HostView], eps: Mapping[str, Endpoints]) -> list[str]:
    out = []
    asked = [v.host.name for v in views
             if v.in_k8s and not v.is_master and v.defined("loadbalancer_apiserver_localhost")
             and v.flag("loadbalancer_apiserver_localhost") and v.external_lb() is None]
    if asked:
        out.append(
            f"loadbalancer_apiserver_localhost is true for {name_list(asked)}, but kargo's "
            "code of October 2016 forced it to false (a misindented when:, fixed 2016-11-21): "
            "no nginx proxy ran and nodes used the first master directly"
        )
    portless = [v.host.name for v in views
                if v.in_k8s and v.external_lb() is not None and _lb_with_port(v) is None]
    if portless:
        out.append(
            f"loadbalancer_apiserver has no port on {name_list(portless)}: kargo's code of "
            "October 2016 then ignored the external LB and used the first master directly "
            "(fixed in kubespray #5529, 2020); set loadbalancer_apiserver.port"
        )
    unresolved = [v.host.name for v in views
                  if v.in_k8s and _lb_with_port(v) is not None
                  and not v.defined("apiserver_loadbalancer_domain_name")]
    if unresolved:
        out.append(
            f"{DEFAULT_DOMAIN} is the apiserver name on {name_list(unresolved)}, but kargo "
            "wrote its /etc/hosts line only when apiserver_loadbalancer_domain_name is set "
            "(fixed in kubespray #1993, 2017): it must resolve through DNS"
        )
    skipped = hosts_spelled_without(views, GROUPS_2016)
    if skipped:
        out.append(
            f"{name_list(skipped)} belong to no group kargo's 2016 playbooks know "
            "(kube-master, kube-node, k8s-cluster): kargo would not have deployed them; "
            "hasim reads kube_control_plane/kube_node/k8s_cluster as those groups"
        )
    if any(is_ipv6(v.host.access_ip) for v in views):
        out.append(
            "IPv6 addresses: kargo's code of 2016 wrote them into URLs without brackets "
            "(no ipwrap), so such a cluster could not be deployed; hasim brackets them"
        )
    return out


RULE_SET: RuleSet = register(
    RuleSet(
        name="kargo-2016-10",
        summary="kubespray (kargo) code of 2016-10-18, commit 91a101c8 (what a 2016 cluster got)",
        defaults=DEFAULTS,
        apiserver=apiserver,
        local_lb=local_lb,
        etcd=ha_mode_2016.etcd,
        etcd_proxy_backends=ha_mode_2016.etcd_proxy_backends,
        flannel_etcd=ha_mode_2016.flannel_etcd,
        etc_hosts=etc_hosts,
        external_lb=external_lb,
        warnings=warnings,
    )
)
