"""Endpoint rule sets: which URL every host uses to reach the apiserver and etcd.

A rule set is data (its variable defaults) plus a few small functions of one host. Two
ship with hasim:

``ha-mode-2016`` (the default)
    The table of kubespray's ``docs/ha-mode.md`` of October 2016 (MODEL.md §1.1, §1.3).
    The table is the specification: in kubespray's own code of that month the local-LB
    row could not be reached (a misindented ``when:`` forced
    ``loadbalancer_apiserver_localhost`` to false until commit 32a54534, 2016-11-21) and
    an external LB without ``port`` fell through to the default row until kubespray #5529
    (2020). hasim implements what the doc says.

``kubespray-2026-01``
    kubespray's ``roles/kubespray_defaults`` as of January 2026 (MODEL.md §1.2): first
    match wins, no insecure port, etcd reached directly over TLS, the LB domain defaulting
    to ``localhost`` or to the external LB's address.

A third rule set (a fork's) is one small module that builds a :class:`RuleSet` and calls
:func:`register`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hasim.cluster import ETCD, K8S, MASTER, NODE, ROLE_ORDER, Cluster, Host
from hasim.errors import ScenarioError

DEFAULT_RULES = "ha-mode-2016"
ETCD_CLIENT_PORT = 2379


@dataclass(frozen=True)
class Endpoints:
    """What one host's components connect to (CONTRACT.md: ``apiserver``, ``etcd``,
    ``etc_hosts``, ``roles``), plus what the topology needs to place proxies.

    ``apiserver`` is the URL kubelet and kube-proxy use (on a 2016 master also the
    controller-manager and scheduler); None on hosts outside ``k8s-cluster``.
    ``etcd`` is the list of URLs etcd clients on the host are given.
    """

    host: str
    roles: list[str]
    apiserver: str | None
    etcd: list[str]
    etc_hosts: list[str]
    #: Kind of the load balancer listening on localhost for the apiserver, if any.
    local_lb: str | None = None
    #: The local LB's upstream servers (URLs of the apiservers), in upstream order.
    local_lb_backends: list[str] = field(default_factory=list)
    #: Backends of the etcd proxy on this host; empty when no proxy runs here.
    etcd_proxy_backends: list[str] = field(default_factory=list)
    #: The ONE endpoint flannel's config writer is given (``--etcd-server``), if any.
    flannel_etcd: str | None = None
    #: Whether an etcd member runs on this host (the rule set's ``etcd_hosts``).
    etcd_member: bool = False
    #: Where the external LB sends traffic (its server lines), when one is configured.
    external_lb_backends: list[str] = field(default_factory=list)
    #: The external LB's address (the VIP of the HA doc) and port, when configured.
    external_lb_address: str | None = None
    external_lb_port: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The CONTRACT.md JSON form of this host's endpoints."""
        return {
            "roles": list(self.roles),
            "apiserver": self.apiserver,
            "etcd": list(self.etcd),
            "etc_hosts": list(self.etc_hosts),
        }


@dataclass(frozen=True)
class HostView:
    """One host seen through a rule set: its variables with the rule set's defaults."""

    host: Host
    cluster: Cluster
    defaults: Mapping[str, Any]
    source: str

    def var(self, name: str) -> Any:
        """The host's value of ``name``, else the rule set's default (None if neither)."""
        value = self.host.var(name)
        return self.defaults.get(name) if value is None else value

    def flag(self, name: str) -> bool:
        """A boolean variable read as Ansible's ``| bool`` filter reads it."""
        return ansible_bool(self.var(name))

    def port(self, name: str, value: Any = None) -> int:
        """A port variable (or ``value``) as an int, with a clear error when it is not one."""
        raw = self.var(name) if value is None else value
        try:
            port = int(raw)
        except (TypeError, ValueError):
            raise ScenarioError(
                f"expected a TCP port number, got {raw!r}", file=self.source, field=name
            ) from None
        if not 0 < port < 65536:
            raise ScenarioError(f"port {port} is out of range 1-65535", file=self.source,
                                field=name)
        return port

    @property
    def is_master(self) -> bool:
        return MASTER in self.host.groups

    @property
    def in_k8s(self) -> bool:
        return K8S in self.host.groups

    @property
    def first_master(self) -> Host:
        """``groups['kube-master'][0]``: the first master in inventory order."""
        return self.cluster.masters[0]

    def external_lb(self) -> dict[str, Any] | None:
        """``loadbalancer_apiserver`` when defined, checked to be a map with an address."""
        lb = self.var("loadbalancer_apiserver")
        if lb is None:
            return None
        if not isinstance(lb, Mapping):
            raise ScenarioError(
                f"must be a map with 'address' (and optionally 'port'), got {lb!r}",
                file=self.source,
                field="loadbalancer_apiserver",
            )
        if not lb.get("address"):
            raise ScenarioError(
                "the external load balancer map has no 'address'",
                file=self.source,
                field="loadbalancer_apiserver.address",
            )
        return dict(lb)


def ipwrap(address: str) -> str:
    """``ansible.utils.ipwrap``: an IPv6 address in brackets, anything else as it is, so
    that ``scheme://ADDRESS:PORT`` is a URL for both families."""
    try:
        if isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address):
            return f"[{address}]"
    except ValueError:
        pass
    return address


def ansible_bool(value: Any) -> bool:
    """Ansible's ``bool`` filter: ``yes/on/1/true`` (any case) are true, the rest false."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float):
        return value == 1
    return str(value).strip().lower() in {"yes", "on", "1", "true", "y", "t"}


def etcd_group(cluster: Cluster) -> tuple[Host, ...]:
    """The etcd members as the 2016 rules place them: the hosts of group ``etcd``."""
    return cluster.etcd_members


@dataclass(frozen=True)
class RuleSet:
    """An endpoint rule set: variable defaults plus one function per question."""

    name: str
    summary: str
    defaults: Mapping[str, Any]
    apiserver: Callable[[HostView], str | None]
    local_lb: Callable[[HostView], tuple[str, list[str]] | None]
    etcd: Callable[[HostView], list[str]]
    etcd_proxy_backends: Callable[[HostView], list[str]]
    flannel_etcd: Callable[[HostView], str | None]
    etc_hosts: Callable[[HostView], list[str]]
    external_lb: Callable[[HostView], tuple[str, int, list[str]] | None]
    #: The hosts that run an etcd member, in the order clients are given them.
    etcd_hosts: Callable[[Cluster], tuple[Host, ...]] = etcd_group


RULES: dict[str, RuleSet] = {}


def register(rules: RuleSet) -> RuleSet:
    """Make a rule set available by name to :func:`evaluate_endpoints` and the CLI."""
    RULES[rules.name] = rules
    return rules


def get_rules(name: str, source: str = "<scenario>") -> RuleSet:
    """The rule set called ``name``, or a :class:`ScenarioError` listing the known ones."""
    try:
        return RULES[name]
    except KeyError:
        known = ", ".join(sorted(RULES))
        raise ScenarioError(
            f"unknown rule set {name!r}; known: {known}", file=source, field="rules"
        ) from None


# --- ha-mode-2016 --------------------------------------------------------------------------

_DEFAULTS_2016: Mapping[str, Any] = {
    "kube_apiserver_insecure_port": 8080,
    "kube_apiserver_port": 443,
    "apiserver_loadbalancer_domain_name": "lb-apiserver.kubernetes.local",
    "loadbalancer_apiserver_localhost": False,
    "etcd_multiaccess": False,
    "loadbalancer_apiserver_type": "nginx",
}


def _apiserver_2016(h: HostView) -> str | None:
    if not h.in_k8s:
        return None
    lb = h.external_lb()
    if lb is not None:
        # External LB overrides any localhost LB, for masters and nodes alike.
        sp = h.port("kube_apiserver_port")
        lp = h.port("loadbalancer_apiserver.port", lb.get("port", sp))
        return f"https://{h.var('apiserver_loadbalancer_domain_name')}:{lp}"
    if h.is_master:
        # Masters reach their own apiserver on the insecure port (k8s < 1.5 TLS bugs).
        return f"http://localhost:{h.port('kube_apiserver_insecure_port')}"
    if h.flag("loadbalancer_apiserver_localhost"):
        return f"https://localhost:{h.port('kube_apiserver_port')}"
    return f"https://{ipwrap(h.first_master.access_ip)}:{h.port('kube_apiserver_port')}"


def _local_lb_2016(h: HostView) -> tuple[str, list[str]] | None:
    # The nginx proxy runs on every non-master k8s-cluster host when the local LB is on
    # and no external LB overrides it.
    if not h.in_k8s or h.is_master or h.external_lb() is not None:
        return None
    if not h.flag("loadbalancer_apiserver_localhost"):
        return None
    sp = h.port("kube_apiserver_port")
    return _local_lb_kind(h), _apiservers(h, sp)


def _apiservers(h: HostView, port: int) -> list[str]:
    """Every master's apiserver at its access address, in inventory order: the server
    lines of a local or external LB (kubespray's templates loop over the same group)."""
    return [f"https://{ipwrap(m.access_ip)}:{port}" for m in h.cluster.masters]


def _local_lb_kind(h: HostView) -> str:
    # 2016 kubespray shipped nginx only; hasim also reads `loadbalancer_apiserver_type`
    # (current kubespray's switch) so that a local HAProxy can be compared on the 2016 table.
    kind = str(h.var("loadbalancer_apiserver_type")).lower()
    if kind not in {"nginx", "haproxy"}:
        raise ScenarioError(
            f"expected nginx or haproxy, got {kind!r}",
            file=h.source,
            field="loadbalancer_apiserver_type",
        )
    return kind


def _etcd_members(members: tuple[Host, ...], scheme: str) -> list[str]:
    return [f"{scheme}://{ipwrap(m.access_ip)}:{ETCD_CLIENT_PORT}" for m in members]


def _etcd_2016(h: HostView) -> list[str]:
    if not h.in_k8s:
        return []
    if h.flag("etcd_multiaccess"):
        return _etcd_members(h.cluster.etcd_members, "http")
    return [f"http://127.0.0.1:{ETCD_CLIENT_PORT}"]


def _etcd_proxy_2016(h: HostView) -> list[str]:
    # A proxy fronts the members on 127.0.0.1:2379 of every k8s-cluster host, except a
    # host that is itself an etcd member: its member already listens there (the port
    # cannot be bound twice), which is kargo's `is_etcd_proxy` fact of 2016.
    if not h.in_k8s or ETCD in h.host.groups or h.flag("etcd_multiaccess"):
        return []
    return _etcd_members(h.cluster.etcd_members, "http")


def _flannel_2016(h: HostView) -> str | None:
    # flannel's pod takes ONE --etcd-server: the first of the list, so no HA (HA doc).
    urls = _etcd_2016(h)
    return urls[0] if urls else None


def _etc_hosts_2016(h: HostView) -> list[str]:
    lb = h.external_lb()
    if lb is None or not h.in_k8s:
        return []
    return [f"{lb['address']} {h.var('apiserver_loadbalancer_domain_name')}"]


def _external_2016(h: HostView) -> tuple[str, int, list[str]] | None:
    lb = h.external_lb()
    if lb is None:
        return None
    sp = h.port("kube_apiserver_port")
    lp = h.port("loadbalancer_apiserver.port", lb.get("port", sp))
    return str(lb["address"]), lp, _apiservers(h, sp)


HA_MODE_2016 = register(
    RuleSet(
        name="ha-mode-2016",
        summary="kubespray docs/ha-mode.md, October 2016 (the doc's table)",
        defaults=_DEFAULTS_2016,
        apiserver=_apiserver_2016,
        local_lb=_local_lb_2016,
        etcd=_etcd_2016,
        etcd_proxy_backends=_etcd_proxy_2016,
        flannel_etcd=_flannel_2016,
        etc_hosts=_etc_hosts_2016,
        external_lb=_external_2016,
    )
)


# --- kubespray-2026-01 ---------------------------------------------------------------------

_DEFAULTS_2026: Mapping[str, Any] = {
    "kube_apiserver_port": 6443,
    "loadbalancer_apiserver_port": 6443,
    "loadbalancer_apiserver_type": "nginx",
}


def _localhost_lb_2026(h: HostView) -> bool:
    # Default: on exactly when no external LB is defined.
    value = h.host.var("loadbalancer_apiserver_localhost")
    return h.external_lb() is None if value is None else ansible_bool(value)


def _domain_2026(h: HostView) -> str:
    domain = h.var("apiserver_loadbalancer_domain_name")
    if domain:
        return str(domain)
    if _localhost_lb_2026(h):
        return "localhost"
    lb = h.external_lb()
    return str(lb["address"]) if lb else "localhost"


def _apiserver_2026(h: HostView) -> str | None:
    if not h.in_k8s:
        return None
    lb = h.external_lb()
    if lb is not None:
        port = h.port("loadbalancer_apiserver.port", lb.get("port", 6443))
        return f"https://{ipwrap(_domain_2026(h))}:{port}"
    if not h.is_master and _localhost_lb_2026(h):
        return f"https://localhost:{h.port('loadbalancer_apiserver_port')}"
    if h.is_master:
        # The apiserver binds `::`; kubespray points local clients at 127.0.0.1.
        return f"https://127.0.0.1:{h.port('kube_apiserver_port')}"
    return f"https://{ipwrap(h.first_master.access_ip)}:{h.port('kube_apiserver_port')}"


def _local_lb_2026(h: HostView) -> tuple[str, list[str]] | None:
    if not h.in_k8s or h.is_master or h.external_lb() is not None:
        return None
    if not _localhost_lb_2026(h):
        return None
    sp = h.port("kube_apiserver_port")
    return _local_lb_kind(h), _apiservers(h, sp)


def _etcd_hosts_2026(cluster: Cluster) -> tuple[Host, ...]:
    # `etcd_hosts: groups['etcd'] | default(groups['kube_control_plane'])`: with no etcd
    # group (etcd_deployment_type: kubeadm) the control-plane hosts are the members.
    return cluster.etcd_members or cluster.masters


def _etcd_2026(h: HostView) -> list[str]:
    return _etcd_members(_etcd_hosts_2026(h.cluster), "https") if h.in_k8s else []


def _no_proxy(h: HostView) -> list[str]:
    return []


def _no_flannel_etcd(h: HostView) -> str | None:
    # Current flannel keeps its state in the Kubernetes API (kube-subnet-mgr), not in etcd.
    return None


def _etc_hosts_2026(h: HostView) -> list[str]:
    # kubespray stopped writing the LB line into /etc/hosts in July 2025 (kubespray #12382,
    # commit 3fc552fcb): the LB domain must resolve through DNS.
    return []


def _external_2026(h: HostView) -> tuple[str, int, list[str]] | None:
    lb = h.external_lb()
    if lb is None:
        return None
    sp = h.port("kube_apiserver_port")
    port = h.port("loadbalancer_apiserver.port", lb.get("port", 6443))
    return str(lb["address"]), port, _apiservers(h, sp)


KUBESPRAY_2026_01 = register(
    RuleSet(
        name="kubespray-2026-01",
        summary="kubespray roles/kubespray_defaults, January 2026",
        defaults=_DEFAULTS_2026,
        apiserver=_apiserver_2026,
        local_lb=_local_lb_2026,
        etcd=_etcd_2026,
        etcd_proxy_backends=_no_proxy,
        flannel_etcd=_no_flannel_etcd,
        etc_hosts=_etc_hosts_2026,
        external_lb=_external_2026,
        etcd_hosts=_etcd_hosts_2026,
    )
)


# --- evaluation ----------------------------------------------------------------------------


def evaluate_endpoints(cluster: Any, rules: str | RuleSet | None = None) -> dict[str, Endpoints]:
    """Every host's :class:`Endpoints` under a rule set, in inventory order.

    ``cluster`` is a :class:`~hasim.cluster.Cluster` or anything with a ``cluster``
    attribute that is one (a :class:`~hasim.scenario.Scenario`). ``rules`` names the rule
    set; when None, a scenario's own rule set is used, else ``ha-mode-2016``. Raises
    :class:`ScenarioError` when the cluster cannot be evaluated: no master, or a
    malformed ``loadbalancer_apiserver``.
    """
    if not isinstance(cluster, Cluster):
        if rules is None:
            rules = getattr(cluster, "rules", None)
        cluster = cluster.cluster
    rules = DEFAULT_RULES if rules is None else rules
    rule_set = rules if isinstance(rules, RuleSet) else get_rules(rules, cluster.source)
    if not cluster.members(MASTER):
        raise ScenarioError(
            "no host in group kube-master (or kube_control_plane): kubespray needs at least one",
            file=cluster.source,
            field="groups.kube-master",
        )
    out: dict[str, Endpoints] = {}
    etcd_hosts = {m.name for m in rule_set.etcd_hosts(cluster)}
    for host in cluster.hosts:
        view = HostView(host, cluster, rule_set.defaults, cluster.source)
        lb = rule_set.local_lb(view)
        ext = rule_set.external_lb(view)
        out[host.name] = Endpoints(
            host=host.name,
            roles=[r for r in ROLE_ORDER if r in host.groups]
            + sorted(g for g in host.groups if g not in ROLE_ORDER),
            apiserver=rule_set.apiserver(view),
            etcd=rule_set.etcd(view),
            etc_hosts=rule_set.etc_hosts(view),
            local_lb=lb[0] if lb else None,
            local_lb_backends=lb[1] if lb else [],
            etcd_proxy_backends=rule_set.etcd_proxy_backends(view),
            flannel_etcd=rule_set.flannel_etcd(view),
            etcd_member=host.name in etcd_hosts,
            external_lb_backends=ext[2] if ext else [],
            external_lb_address=ext[0] if ext else None,
            external_lb_port=ext[1] if ext else None,
        )
    return out


__all__ = [
    "DEFAULT_RULES",
    "Endpoints",
    "HostView",
    "RULES",
    "RuleSet",
    "ansible_bool",
    "etcd_group",
    "evaluate_endpoints",
    "get_rules",
    "ipwrap",
    "register",
    "NODE",
]
