"""``kubespray-2026-01``: kubespray's ``roles/kubespray_defaults`` as of January 2026.

``kube_apiserver_endpoint`` (``defaults/main/main.yml``), first match wins:

1. ``loadbalancer_apiserver`` defined: ``https://{domain | ipwrap}:{lb.port |
   default(kube_apiserver_port)}`` on every host, control plane included;
2. not control plane and ``loadbalancer_apiserver_localhost``:
   ``https://localhost:{loadbalancer_apiserver_port | default(kube_apiserver_port)}``;
3. control plane: ``https://{kube_apiserver_bind_address | regex_replace('::',
   '127.0.0.1') | ipwrap}:{kube_apiserver_port}``;
4. otherwise the first control-plane host's ``main_access_ip``.

Addresses are ``main_access_ip`` (``roles/network_facts``): ``access_ip | default(ip)``
with ``ipv4_stack`` (the default), else ``access_ip6 | default(ip6)``. The local nginx or
HAProxy runs where ``('kube_control_plane' not in group_names) or
(kube_apiserver_bind_address != '::')`` and ``loadbalancer_apiserver_localhost`` hold
(``roles/kubernetes/node/tasks/main.yml``), on ``127.0.0.1`` and, with ``ipv6_stack``,
``[::1]``. etcd is reached directly over TLS at ``etcd_hosts``: group ``etcd``, else the
control plane (``etcd_deployment_type: kubeadm``). No ``/etc/hosts`` line is written
(kubespray #12382, July 2025).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from hasim.kubespray.cluster import Cluster, Host
from hasim.kubespray.endpoints import (
    CniAgent,
    Endpoints,
    HostView,
    LocalLB,
    RuleSet,
    ansible_bool,
    apiserver_urls,
    etcd_urls,
    external_balancer,
    ip_version,
    ipwrap,
    is_ipv6,
    lb_port,
    local_lb_kind,
    register,
)
from hasim.kubespray.rules import hosts_spelled_without, name_list

DEFAULTS: Mapping[str, Any] = {
    "kube_apiserver_port": 6443,
    "kube_apiserver_bind_address": "::",
    "loadbalancer_apiserver_type": "nginx",
    "ipv4_stack": True,
    # `ipv6_stack: "{{ enable_dual_stack_networks | default(false) }}"`, read in ipv6_stack().
    # The CNI agent (roles/kubespray_defaults, roles/network_plugin/calico_defaults).
    "kube_network_plugin": "calico",
    "calico_datastore": "kdd",
    "calico_bpf_enabled": False,
    "kube_service_addresses": "10.233.0.0/18",
}

#: The group names kubespray's plays address today (roles/dynamic_groups builds
#: k8s_cluster only from these, so hosts named only by the dash names are skipped).
GROUPS_TODAY = ("kube_control_plane", "kube_node", "k8s_cluster", "calico_rr")


def ipv6_stack(h: HostView) -> bool:
    value = h.host.var("ipv6_stack")
    return ansible_bool(h.host.var("enable_dual_stack_networks") if value is None else value)


def main_access_ip(h: HostView) -> str:
    """``main_access_ip``: the IPv4 access address with ``ipv4_stack``, else the IPv6 one.

    Where kubespray falls back to the gathered default address, hasim takes the address
    Ansible connects to (``ansible_host``), as for the 2016 rules.
    """
    host = h.host
    if h.flag("ipv4_stack"):
        return host.access_ip
    return str(host.var("access_ip6") or host.var("ip6") or host.default_address)


def main_ip(h: HostView) -> str:
    """``main_ip``: ``ip`` (IPv4 stack) or ``ip6``, the gathered default otherwise
    (``ansible_host`` in hasim); the apiserver advertises it (``kube_apiserver_address``)."""
    host = h.host
    if h.flag("ipv4_stack"):
        return host.ip
    return str(host.var("ip6") or host.default_address)


def localhost_lb(h: HostView) -> bool:
    # `loadbalancer_apiserver_localhost: "{{ loadbalancer_apiserver is not defined }}"`
    value = h.host.var("loadbalancer_apiserver_localhost")
    return h.external_lb() is None if value is None else ansible_bool(value)


def domain(h: HostView) -> str:
    # `'localhost' if loadbalancer_apiserver_localhost else loadbalancer_apiserver.address`
    name = h.var("apiserver_loadbalancer_domain_name")
    if name:
        return str(name)
    lb = h.external_lb()
    return "localhost" if localhost_lb(h) or lb is None else str(lb["address"])


def local_port(h: HostView) -> int:
    """``loadbalancer_apiserver_port | default(kube_apiserver_port)``."""
    return h.port("loadbalancer_apiserver_port",
                  h.host.var("loadbalancer_apiserver_port") or h.port("kube_apiserver_port"))


def bind(h: HostView) -> str:
    """``kube_apiserver_bind_address`` as set (default ``::``, every address)."""
    return str(h.var("kube_apiserver_bind_address"))


def bind_address(h: HostView) -> str:
    """Rule 3's address: ``kube_apiserver_bind_address | regex_replace('::', '127.0.0.1')``.

    The regex replaces ``::`` anywhere, so an IPv6 bind address such as ``fd00::1``
    becomes ``fd00127.0.0.11``; hasim writes what kubespray writes and warns.
    """
    return bind(h).replace("::", "127.0.0.1")


def apiserver(h: HostView) -> str | None:
    if not h.in_k8s:
        return None
    lb = h.external_lb()
    sp = h.port("kube_apiserver_port")
    if lb is not None:
        return f"https://{ipwrap(domain(h))}:{lb_port(h, lb)}"
    if not h.is_master and localhost_lb(h):
        return f"https://localhost:{local_port(h)}"
    if h.is_master:
        return f"https://{ipwrap(bind_address(h))}:{sp}"
    return f"https://{ipwrap(main_access_ip(h.view(h.first_master)))}:{sp}"


def local_lb(h: HostView) -> LocalLB | None:
    if not h.in_k8s or not localhost_lb(h):
        return None
    if h.is_master and bind(h) == "::":
        return None
    port = local_port(h)
    listen = [f"127.0.0.1:{port}"] + ([f"[::1]:{port}"] if ipv6_stack(h) else [])
    servers = apiserver_urls(h, h.port("kube_apiserver_port"), main_access_ip)
    return LocalLB(local_lb_kind(h), listen, servers)


def global_endpoint(h: HostView) -> str:
    """``kube_apiserver_global_endpoint``: the external LB, else localhost's LB port, else
    the first control-plane host (no local exception for control-plane hosts)."""
    lb = h.external_lb()
    if lb is not None:
        return f"https://{ipwrap(domain(h))}:{lb_port(h, lb)}"
    if localhost_lb(h):
        return f"https://localhost:{local_port(h)}"
    return f"https://{ipwrap(main_access_ip(h.view(h.first_master)))}:{h.port('kube_apiserver_port')}"


def kubernetes_service(h: HostView) -> str:
    """The in-cluster URL a pod gets (``KUBERNETES_SERVICE_HOST``/``_PORT``): the
    ``kubernetes`` Service, the first address of ``kube_service_addresses``, port 443."""
    net = ipaddress.ip_network(str(h.var("kube_service_addresses")), strict=False)
    return f"https://{ipwrap(str(net.network_address + 1))}:443"


#: The CNI agent's DaemonSet by ``kube_network_plugin``.
CNI_AGENTS: Mapping[str, str] = {"calico": "calico-node", "flannel": "kube-flannel",
                                 "cilium": "cilium"}


def cni(h: HostView) -> CniAgent | None:
    """The CNI agent on the host and the apiserver URL it uses, or None (another plugin,
    or calico with its etcd datastore, which hasim does not model).

    - calico (``calico-node.yml.j2``): ``envFrom`` the ``kubernetes-services-endpoint``
      ConfigMap, templated on a control-plane host, which sets ``KUBERNETES_SERVICE_HOST``
      and ``_PORT`` to ``kube_apiserver_global_endpoint`` only ``if calico_bpf_enabled or
      loadbalancer_apiserver_localhost``; otherwise (an external LB) the pod keeps the
      in-cluster ``kubernetes`` Service, whose endpoints are the apiservers themselves.
    - flannel (``cni-flannel.yml.j2``, ``--kube-subnet-mgr``): in-cluster config, the Service.
    - cilium (``values.yaml.j2``: ``k8sServiceHost``/``k8sServicePort``): the global
      endpoint.
    """
    if not h.in_k8s:
        return None
    agent = CNI_AGENTS.get(str(h.var("kube_network_plugin")))
    if agent is None:
        return None
    cp = h.view(h.first_master)  # the ConfigMap's host
    if agent == "calico-node" and str(h.var("calico_datastore")) != "kdd":
        return None
    if agent == "cilium" or (agent == "calico-node" and (
            cp.flag("calico_bpf_enabled") or localhost_lb(cp))):
        return CniAgent(agent, global_endpoint(cp))
    # The Service's endpoints: each apiserver's advertise address (kubeadm's
    # advertiseAddress: kube_apiserver_address, the host's main_ip) at kube_apiserver_port.
    backends = apiserver_urls(h, h.port("kube_apiserver_port"), main_ip)
    return CniAgent(agent, kubernetes_service(h), tuple(backends))


def etcd_hosts(cluster: Cluster) -> tuple[Host, ...]:
    # `etcd_hosts: groups['etcd'] | default(groups['kube_control_plane'])`: with no etcd
    # group (etcd_deployment_type: kubeadm) the control-plane hosts are the members.
    return cluster.etcd_members or cluster.masters


def etcd(h: HostView) -> list[str]:
    return etcd_urls(h, etcd_hosts(h.cluster), "https", main_access_ip) if h.in_k8s else []


def no_proxy(h: HostView) -> list[str]:
    return []


def no_flannel_etcd(h: HostView) -> str | None:
    # Current flannel keeps its state in the Kubernetes API (kube-subnet-mgr), not in etcd.
    return None


def etc_hosts(h: HostView) -> list[str]:
    # kubespray stopped writing the LB line into /etc/hosts in July 2025 (kubespray #12382,
    # commit 3fc552fcb): the LB domain must resolve through DNS.
    return []


def external_lb(h: HostView) -> tuple[str, int, list[str]] | None:
    return external_balancer(h, main_access_ip)


def warnings(views: Sequence[HostView], eps: Mapping[str, Endpoints]) -> list[str]:
    out = []
    skipped = hosts_spelled_without(views, GROUPS_TODAY)
    if skipped:
        out.append(
            f"{name_list(skipped)} belong only to the old group names (kube-master, "
            "kube-node, k8s-cluster): current kubespray builds k8s_cluster from "
            "kube_control_plane/kube_node only and skips these hosts (kubespray #12625); "
            "rename the groups to kube_control_plane, kube_node, k8s_cluster"
        )
    names = sorted({domain(v) for v in views if v.in_k8s and v.external_lb() is not None}
                   - {"localhost"})
    names = [n for n in names if ip_version(n) is None]
    if names:
        out.append(
            f"the apiserver is reached by the name {', '.join(names)}: current kubespray "
            "writes no /etc/hosts line for it (kubespray #12382), so it must resolve "
            "through DNS on every host"
        )
    mangled = sorted({bind(v) for v in views
                      if v.is_master and "::" in bind(v) and bind(v) != "::"})
    if mangled:
        out.append(
            f"kube_apiserver_bind_address {', '.join(mangled)}: kubespray's "
            "regex_replace('::', '127.0.0.1') turns it into a name that is no address, so "
            "control-plane hosts cannot reach their apiserver; write the address in full "
            "(without '::') or bind '::'"
        )
    if any(ipv6_stack(v) for v in views) and not any(v.flag("ipv4_stack") for v in views):
        without = [v.host.name for v in views if not v.host.var("ip6")
                   and not v.host.var("access_ip6") and not is_ipv6(v.host.default_address)]
        if without:
            out.append(
                f"IPv6-only cluster, but {name_list(without)} set no ip6/access_ip6 and "
                "Ansible reaches them by an IPv4 address or a name: kubespray uses the "
                "host's gathered default IPv6 address, which hasim cannot know"
            )
    return out


RULE_SET: RuleSet = register(
    RuleSet(
        name="kubespray-2026-01",
        summary="kubespray roles/kubespray_defaults, January 2026",
        defaults=DEFAULTS,
        apiserver=apiserver,
        local_lb=local_lb,
        etcd=etcd,
        etcd_proxy_backends=no_proxy,
        flannel_etcd=no_flannel_etcd,
        etc_hosts=etc_hosts,
        external_lb=external_lb,
        etcd_hosts=etcd_hosts,
        warnings=warnings,
        cni=cni,
    )
)
