"""The topology: a networkx graph of every component on every host and whom it connects to.

Built from :func:`hasim.kubespray.endpoints.evaluate_endpoints` only, never from a second copy of
the
rules: each URL a host is given is resolved to the component that answers it, the way the
host would resolve it (``localhost``, ``/etc/hosts`` lines, addresses of other hosts).
The simulator instantiates its parts from this graph, and the drawing draws it, so the
model and the picture cannot disagree.

Nodes are ``"HOST/COMPONENT"`` with attributes ``host``, ``component``, ``layer`` (for
drawing: 0 clients, 1 local proxies, 2 external LB and VIP, 3 apiservers, 4 etcd) and
``client_class`` for clients. Edges mean "connects to" with ``purpose`` (``apiserver`` or
``etcd``), ``url``, ``scheme``, ``port``, ``tls`` and ``crosses_hosts``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import networkx as nx

from hasim.errors import ScenarioError
from hasim.kubespray.cluster import MASTER, Cluster
from hasim.kubespray.endpoints import DEFAULT_RULES, Endpoints, evaluate_endpoints, get_rules

API_CLIENTS = ("kubelet", "kube-proxy")
MASTER_CLIENTS = ("controller-manager", "scheduler")
#: Today's CNI agents that watch the apiserver (the rule set's ``cni``).
CNI_AGENTS = ("calico-node", "kube-flannel", "cilium")
LAYERS: Mapping[str, int] = {
    "kubelet": 0,
    "kube-proxy": 0,
    "controller-manager": 0,
    "scheduler": 0,
    "flannel": 0,
    **dict.fromkeys(CNI_AGENTS, 0),
    "lb": 1,
    "service": 1,
    "etcd-proxy": 1,
    "vip": 2,
    "external-lb": 2,
    "apiserver": 3,
    "etcd": 4,
}
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
VIP_NODE = "vip/vip"
#: The in-cluster ``kubernetes`` Service: every node's kube-proxy rules send a connection to
#: its ClusterIP to one of its endpoints, the apiservers (hasim.sim.service).
SERVICE_NODE = "service/kubernetes"


def node_id(host: str, component: str) -> str:
    """The graph node of ``component`` on ``host``."""
    return f"{host}/{component}"


def build_topology(cluster_or_scenario: Any, rules: str | None = None) -> nx.DiGraph:
    """The component graph of a :class:`~hasim.kubespray.cluster.Cluster` or a scenario.

    For a scenario, its rule set and its external LB instances and VIP are used; the graph
    attribute ``rules`` records the rule set, ``external_lb`` the LB's address and port.
    """
    scenario = cluster_or_scenario if hasattr(cluster_or_scenario, "spec") else None
    cluster: Cluster = getattr(cluster_or_scenario, "cluster", cluster_or_scenario)
    rule_name = rules or (scenario.rules if scenario is not None else DEFAULT_RULES)
    endpoints = evaluate_endpoints(cluster, rule_name)
    return _Builder(cluster, endpoints, rule_name, scenario).build()


class _Builder:
    def __init__(
        self,
        cluster: Cluster,
        endpoints: dict[str, Endpoints],
        rules: str,
        scenario: Any,
    ) -> None:
        self.cluster = cluster
        self.endpoints = endpoints
        self.rules = rules
        self.g = nx.DiGraph(rules=rules, source=cluster.source)
        self.addresses: dict[str, str] = {}
        for h in cluster.hosts:
            # Every address a rule set may write for the host (IPv6 ones for kubespray's
            # ipv4_stack: false), keyed as urlsplit() returns a hostname.
            v6 = [str(h.vars[k]) for k in ("ip6", "access_ip6") if h.vars.get(k)]
            for addr in (h.name, h.default_address, h.ip, h.access_ip, *v6):
                self.addresses.setdefault(addr, h.name)
                self.addresses.setdefault(addr.lower(), h.name)
        ext = getattr(getattr(getattr(scenario, "spec", None), "balancers", None), "external", None)
        self.ext_instances = ext.instances if ext is not None else 1
        self.vip_kind = ext.vip.kind if ext is not None else "none"
        self.every_node = ext is not None and ext.placement == "every-node"
        self.defaults = get_rules(rules).defaults

    def build(self) -> nx.DiGraph:
        g, cluster = self.g, self.cluster
        for h in cluster.hosts:
            ep = self.endpoints[h.name]
            if MASTER in h.groups:
                self._add(h.name, "apiserver")
            if ep.etcd_member:
                self._add(h.name, "etcd")
            if ep.local_lb:
                self._add(h.name, "lb", kind=ep.local_lb, listen=list(ep.local_lb_listen))
            if ep.etcd_proxy_backends:
                self._add(h.name, "etcd-proxy")
            if ep.apiserver is not None:
                for c in API_CLIENTS:
                    self._add(h.name, c, client_class=_client_class(c, h.groups))
                if MASTER in h.groups:
                    for c in MASTER_CLIENTS:
                        self._add(h.name, c, client_class=c)
            if ep.flannel_etcd:
                self._add(h.name, "flannel", client_class=_client_class("flannel", h.groups))
            if ep.cni_agent and ep.cni_apiserver:
                self._add(h.name, ep.cni_agent, client_class=_client_class(ep.cni_agent, h.groups))
        self._add_external_lb()
        for h in cluster.hosts:
            self._wire(h.name, self.endpoints[h.name])
        return g

    def _add(self, host: str, component: str, **attrs: Any) -> str:
        n = node_id(host, component)
        self.g.add_node(n, host=host, component=component, layer=LAYERS[component], **attrs)
        return n

    def _add_external_lb(self) -> None:
        ext = next((e for e in self.endpoints.values() if e.external_lb_address), None)
        if ext is None:
            return
        self.g.graph["external_lb"] = {
            "address": ext.external_lb_address,
            "port": ext.external_lb_port,
        }
        if self.vip_kind == "kube-vip":
            # kube-vip (ARP mode) puts the VIP on a control-plane node itself: traffic goes
            # straight to the holder's apiserver, with no LB instance in between.
            self.g.add_node(VIP_NODE, host="vip", component="vip", layer=LAYERS["vip"],
                            kind=self.vip_kind, address=ext.external_lb_address, virtual=True)
            for url in ext.external_lb_backends:
                api = self._at(url)
                self.g.add_edge(VIP_NODE, api, purpose="apiserver", url=url,
                                scheme="https", port=_url(url)[2], tls=True,
                                crosses_hosts=True)
            return
        if self.every_node:
            for h in self.cluster.hosts:
                if self.endpoints[h.name].external_lb_address and self.endpoints[h.name].apiserver:
                    n = self._add(h.name, "external-lb", kind="haproxy", external=True)
                    for url in ext.external_lb_backends:
                        self._edge(n, h.name, url, "apiserver", self._at(url))
            return
        for i in range(self.ext_instances):
            name = f"extlb{i + 1}"
            self._add(name, "external-lb", kind="haproxy", external=True)
            for url in ext.external_lb_backends:
                self._edge(node_id(name, "external-lb"), name, url, "apiserver", self._at(url))
        if self.vip_kind != "none":
            self.g.add_node(
                VIP_NODE,
                host="vip",
                component="vip",
                layer=LAYERS["vip"],
                kind=self.vip_kind,
                address=ext.external_lb_address,
                virtual=True,
            )
            for i in range(self.ext_instances):
                self.g.add_edge(
                    VIP_NODE,
                    node_id(f"extlb{i + 1}", "external-lb"),
                    purpose="apiserver",
                    url=f"vip {ext.external_lb_address}",
                    scheme="tcp",
                    port=ext.external_lb_port,
                    tls=True,
                    crosses_hosts=False,
                )

    def _wire(self, host: str, ep: Endpoints) -> None:
        h = self.cluster.host(host)
        if ep.apiserver is not None:
            target = self._resolve(host, ep.apiserver, ep, "apiserver")
            for c in API_CLIENTS:
                self._edge(node_id(host, c), host, ep.apiserver, "apiserver", target)
            if MASTER in h.groups:
                url = self._own_apiserver_url(host)
                for c in MASTER_CLIENTS:
                    self._edge(node_id(host, c), host, url, "apiserver", node_id(host, "apiserver"))
        if ep.local_lb:
            for url in ep.local_lb_backends:
                self._edge(node_id(host, "lb"), host, url, "apiserver", self._at(url))
        if ep.etcd_proxy_backends:
            for url in ep.etcd_proxy_backends:
                self._edge(node_id(host, "etcd-proxy"), host, url, "etcd", self._at(url))
        if MASTER in h.groups:
            for url in ep.etcd:
                target = self._resolve(host, url, ep, "etcd")
                self._edge(node_id(host, "apiserver"), host, url, "etcd", target)
        if ep.flannel_etcd:
            target = self._resolve(host, ep.flannel_etcd, ep, "etcd")
            self._edge(node_id(host, "flannel"), host, ep.flannel_etcd, "etcd", target)
        if ep.cni_agent and ep.cni_apiserver:
            agent = node_id(host, ep.cni_agent)
            if ep.service_backends:
                self._edge(agent, host, ep.cni_apiserver, "apiserver", self._service(ep))
            else:
                target = self._resolve(host, ep.cni_apiserver, ep, "apiserver")
                self._edge(agent, host, ep.cni_apiserver, "apiserver", target)

    def _service(self, ep: Endpoints) -> str:
        """The ``kubernetes`` Service's node, added with its endpoints on first use."""
        if SERVICE_NODE not in self.g:
            self.g.add_node(SERVICE_NODE, host="service", component="service",
                            layer=LAYERS["service"], address=ep.cni_apiserver, virtual=True)
            for url in ep.service_backends:
                api = self._at(url)
                self.g.add_edge(SERVICE_NODE, api, purpose="apiserver", url=url,
                                scheme="https", port=_url(url)[2], tls=True,
                                crosses_hosts=True)
        return SERVICE_NODE

    def _own_apiserver_url(self, host: str) -> str:
        # Controller-manager and scheduler talk to their own master's apiserver: in 2016 on
        # the insecure port (--master=http://127.0.0.1:8080), today over TLS on 127.0.0.1.
        h = self.cluster.host(host)
        if "kube_apiserver_insecure_port" in self.defaults:
            insecure = "kube_apiserver_insecure_port"
            return f"http://127.0.0.1:{h.var(insecure, self.defaults[insecure])}"
        port = h.var("kube_apiserver_port", self.defaults["kube_apiserver_port"])
        return f"https://127.0.0.1:{port}"

    def _resolve(self, host: str, url: str, ep: Endpoints, purpose: str) -> str:
        """The node answering ``url`` when a process on ``host`` connects to it."""
        name = _url(url)[1]
        if name in LOCAL_NAMES:
            if purpose == "etcd":
                local = "etcd-proxy" if ep.etcd_proxy_backends else "etcd"
            else:
                local = "lb" if ep.local_lb else "apiserver"
            n = node_id(host, local)
            if n not in self.g:
                raise ScenarioError(
                    f"{url} on {host} reaches no {local} (none runs on that host)",
                    file=self.cluster.source,
                    field=f"hosts.{host}",
                )
            return n
        for line in ep.etc_hosts:
            address, *names = line.split()
            if name in names:
                name = address
                break
        ext = self.g.graph.get("external_lb")
        if ext and name == ext["address"]:
            if self.every_node:
                return node_id(host, "external-lb")  # each host's own instance
            return VIP_NODE if VIP_NODE in self.g else node_id("extlb1", "external-lb")
        return self._at(url, name)

    def _at(self, url: str, name: str | None = None) -> str:
        _scheme, hostname, port = _url(url)
        name = name or hostname
        host = self.addresses.get(name)
        if host is None:
            raise ScenarioError(
                f"{url}: no host has the address {name!r}", file=self.cluster.source, field="hosts"
            )
        component = "etcd" if port == 2379 else "apiserver"
        n = node_id(host, component)
        if n not in self.g:
            raise ScenarioError(
                f"{url}: host {host} runs no {component}", file=self.cluster.source, field="hosts"
            )
        return n

    def _edge(self, src: str, host: str, url: str, purpose: str, dst: str) -> None:
        scheme, _hostname, port = _url(url)
        self.g.add_edge(
            src,
            dst,
            purpose=purpose,
            url=url,
            scheme=scheme,
            port=port,
            tls=scheme == "https",
            # A VIP is an address held by one of the LB instances, never by the client's
            # own host, so a connection to it leaves the host like any other.
            crosses_hosts=self.g.nodes[dst]["host"] != host,
        )


@lru_cache(maxsize=4096)
def _url(url: str) -> tuple[str, str, int | None]:
    """``(scheme, hostname, port)`` of an endpoint URL. Every node of a cluster names the
    same few URLs (localhost's, each master's), and ``SplitResult.port`` and ``hostname``
    parse the address again on every read: 230,000 times at 10,000 nodes."""
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


def _client_class(component: str, groups: frozenset[str]) -> str:
    return f"{component}@{'kube-master' if MASTER in groups else 'kube-node'}"


def hosts(g: nx.DiGraph) -> set[str]:
    """The graph's hosts: every node's host but the pseudo-hosts of virtual nodes (the VIP,
    the in-cluster Service)."""
    return {d["host"] for _, d in g.nodes(data=True) if not d.get("virtual")}


def components(g: nx.DiGraph, component: str) -> list[str]:
    """Nodes of one component kind, in graph (inventory) order."""
    return [n for n, d in g.nodes(data=True) if d["component"] == component]
