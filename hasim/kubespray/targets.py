"""Fault targets: a host, a group, a group member by position, or one component of a host.

``master1``, ``kube-master`` (every member), ``kube-master[0]`` (inventory order, negative
positions count from the end), ``master1/apiserver``. The external LB instances a scenario
declares are hosts too, named ``extlb1``, ``extlb2``... and grouped as ``external-lb``.
"""

from __future__ import annotations

import re
from typing import Any

from hasim.kubespray.cluster import Cluster, canonical_group

#: Components a ``HOST/COMPONENT`` target may name.
COMPONENTS = (
    "apiserver",
    "etcd",
    "etcd-proxy",
    "kubelet",
    "kube-proxy",
    "controller-manager",
    "scheduler",
    "flannel",
    "calico-node",
    "kube-flannel",
    "cilium",
    "lb",
    "keepalived",
)
EXTERNAL_LB_GROUP = "external-lb"
_MEMBER = re.compile(r"^(?P<group>[^\[\]/]+)\[(?P<index>-?\d+)\]$")


class TargetError(ValueError):
    """A target names nothing in the cluster."""


def external_lb_hosts(scenario: Any) -> list[str]:
    """Names of the external LB instances: one per ``balancers.external.instances`` (1 by
    default) when the cluster defines ``loadbalancer_apiserver``; none behind kube-vip,
    whose VIP lives on the control-plane nodes themselves."""
    cluster = getattr(scenario, "cluster", scenario)
    if not any(h.var("loadbalancer_apiserver") is not None for h in cluster.hosts):
        return []
    spec = getattr(scenario, "spec", None)
    ext = getattr(getattr(spec, "balancers", None), "external", None)
    if ext is None:
        return ["extlb1"]
    if ext.vip.kind == "kube-vip" or ext.placement == "every-node":
        return []  # no LB hosts of their own: target HOST/lb instead
    return [f"extlb{i + 1}" for i in range(ext.instances)]


def resolve_target(scenario_or_cluster: Any, text: str) -> list[tuple[str, str | None]]:
    """The ``(host, component or None)`` pairs a target names, in inventory order."""
    cluster: Cluster = getattr(scenario_or_cluster, "cluster", scenario_or_cluster)
    extlbs = external_lb_hosts(scenario_or_cluster)
    text = text.strip()
    component: str | None = None
    if "/" in text:
        text, component = (part.strip() for part in text.split("/", 1))
        if component not in COMPONENTS:
            raise TargetError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
    hosts = _hosts(cluster, extlbs, text)
    return [(h, component) for h in hosts]


def _hosts(cluster: Cluster, extlbs: list[str], text: str) -> list[str]:
    if cluster.has_host(text) or text in extlbs:
        return [text]
    match = _MEMBER.match(text)
    if match:
        members = _group(cluster, extlbs, match.group("group"))
        idx = int(match.group("index"))
        if not -len(members) <= idx < len(members):
            raise TargetError(
                f"{text!r}: group {match.group('group')!r} has {len(members)} member(s)"
            )
        return [members[idx]]
    return _group(cluster, extlbs, text)


def _group(cluster: Cluster, extlbs: list[str], name: str) -> list[str]:
    if name == EXTERNAL_LB_GROUP:
        if not extlbs:
            raise TargetError("no external load balancer is configured (balancers.external)")
        return list(extlbs)
    members = cluster.members(name) if name != "all" else tuple(h.name for h in cluster.hosts)
    if not members:
        known = sorted({canonical_group(g) for g in cluster.groups})
        raise TargetError(f"no host or group {name!r}; groups: {', '.join(known)}")
    return list(members)
