"""Endpoint rules: which URL every host uses to reach the apiserver and etcd.

A rule set is data (its variable defaults) plus a few small functions of one host; the
three that ship with hasim live in :mod:`hasim.kubespray.rules` (docs/model.md, "Endpoint rules"):

``ha-mode-2016`` (the default)
    The table of kubespray's ``docs/ha-mode.md`` of October 2016: what the doc promised.
``kargo-2016-10``
    kubespray's (then kargo's) own code of the doc's day: what a 2016 cluster really got.
``kubespray-2026-01``
    kubespray's ``roles/kubespray_defaults`` as of January 2026: today.

A fork's rule set is one small module that builds a :class:`RuleSet` and calls
:func:`register`. This module holds what the rule sets share: the per-host view of the
variables, the address helpers, evaluation, warnings and the comparison of two rule sets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hasim.errors import ScenarioError
from hasim.kubespray.cluster import ETCD, K8S, MASTER, NODE, ROLE_ORDER, Cluster, Host

DEFAULT_RULES = "ha-mode-2016"
ETCD_CLIENT_PORT = 2379


@dataclass(frozen=True)
class LocalLB:
    """A load balancer on the host itself that kubelet and kube-proxy reach on localhost."""

    #: ``nginx`` or ``haproxy``.
    kind: str
    #: The addresses it listens on, ``ADDRESS:PORT`` (``*`` for every address).
    listen: list[str]
    #: Its upstream servers (URLs of the apiservers), in upstream order.
    backends: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "listen": list(self.listen), "backends": list(self.backends)}


@dataclass(frozen=True)
class Endpoints:
    """What one host's components connect to (docs/interfaces.md: ``apiserver``, ``etcd``,
    ``etc_hosts``, ``roles``, ``local_lb``), plus what the topology needs to place proxies.

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
    #: The local LB's listen addresses (``ADDRESS:PORT``).
    local_lb_listen: list[str] = field(default_factory=list)
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
    #: The CNI agent that runs here as an apiserver client (``calico-node``,
    #: ``kube-flannel``, ``cilium``), and the URL it uses; None where the rule set has none.
    cni_agent: str | None = None
    cni_apiserver: str | None = None
    #: When ``cni_apiserver`` is the in-cluster ``kubernetes`` Service: its endpoints,
    #: the apiservers' URLs (empty otherwise).
    service_backends: list[str] = field(default_factory=list)

    @property
    def local_balancer(self) -> LocalLB | None:
        """The local LB as one value, or None when none runs on the host."""
        if self.local_lb is None:
            return None
        return LocalLB(self.local_lb, list(self.local_lb_listen), list(self.local_lb_backends))

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of this host's endpoints (docs/interfaces.md)."""
        lb = self.local_balancer
        return {
            "roles": list(self.roles),
            "apiserver": self.apiserver,
            "etcd": list(self.etcd),
            "etc_hosts": list(self.etc_hosts),
            "local_lb": lb.as_dict() if lb else None,
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

    def defined(self, name: str) -> bool:
        """Whether the inventory itself sets ``name`` (Jinja2's ``is defined``)."""
        return self.host.var(name) is not None

    def flag(self, name: str) -> bool:
        """A boolean variable read as Ansible's ``| bool`` filter reads it."""
        return ansible_bool(self.var(name))

    def field(self, name: str) -> str:
        """Where an error about variable ``name`` of this host points."""
        return f"hostvars.{self.host.name}.{name}"

    def port(self, name: str, value: Any = None) -> int:
        """A port variable (or ``value``) as an int, with a clear error when it is not one."""
        raw = self.var(name) if value is None else value
        try:
            port = int(raw)
        except (TypeError, ValueError):
            raise ScenarioError(
                f"expected a TCP port number, got {raw!r}", file=self.source,
                field=self.field(name),
            ) from None
        if not 0 < port < 65536:
            raise ScenarioError(f"port {port} is out of range 1-65535", file=self.source,
                                field=self.field(name))
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

    def view(self, host: Host) -> HostView:
        """Another host through the same rule set (``hostvars[other]``)."""
        return HostView(host, self.cluster, self.defaults, self.source)

    def external_lb(self) -> dict[str, Any] | None:
        """``loadbalancer_apiserver`` when defined, checked to be a map with an address."""
        lb = self.var("loadbalancer_apiserver")
        if lb is None:
            return None
        if not isinstance(lb, Mapping):
            raise ScenarioError(
                f"must be a map with 'address' (and optionally 'port'), got {lb!r}",
                file=self.source,
                field=self.field("loadbalancer_apiserver"),
            )
        if not lb.get("address"):
            raise ScenarioError(
                "the external load balancer map has no 'address'",
                file=self.source,
                field=self.field("loadbalancer_apiserver.address"),
            )
        return dict(lb)


def ip_version(address: str) -> int | None:
    """4 or 6 for an IP address, None for anything else (a host name)."""
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return None


def is_ipv6(address: str) -> bool:
    """Whether ``address`` is an IPv6 address (a name or an IPv4 address is not)."""
    return ":" in address and ip_version(address) == 6


def ipwrap(address: str) -> str:
    """``ansible.utils.ipwrap``: an IPv6 address in brackets, anything else as it is, so
    that ``scheme://ADDRESS:PORT`` is a URL for both families. (Without a colon it is no
    IPv6 address: the common case returns without parsing.)"""
    return f"[{address}]" if is_ipv6(address) else address


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


def access_address(h: HostView) -> str:
    """A host's ``access_ip | default(ip | default(<its address>))`` (the 2016 rules)."""
    return h.host.access_ip


def _urls(h: HostView, members: Sequence[Host], scheme: str, port: int,
          address: Callable[[HostView], str]) -> list[str]:
    # The list depends on the listed hosts only, not on the host asking: computed once per
    # (immutable) cluster, not once per host of a 5,000-node cluster. Each entry holds the
    # defaults it was made with, so their id() in the key cannot be reused meanwhile.
    memo: dict[tuple[Any, ...], tuple[Mapping[str, Any], list[str]]] = \
        h.cluster.__dict__.setdefault("_urls", {})
    key = (id(h.defaults), scheme, port, address, tuple(m.name for m in members))
    hit = memo.get(key)
    if hit is None:
        urls = [f"{scheme}://{ipwrap(address(h.view(m)))}:{port}" for m in members]
        hit = memo[key] = (h.defaults, urls)
    return list(hit[1])


def apiserver_urls(h: HostView, port: int,
                   address: Callable[[HostView], str] = access_address) -> list[str]:
    """Every master's apiserver at its access address, in inventory order: the server
    lines of a local or external LB (kubespray's templates loop over the same group)."""
    return _urls(h, h.cluster.masters, "https", port, address)


def etcd_urls(h: HostView, members: Sequence[Host], scheme: str,
              address: Callable[[HostView], str] = access_address) -> list[str]:
    """``scheme://ADDRESS:2379`` of every etcd member, in group order."""
    return _urls(h, members, scheme, ETCD_CLIENT_PORT, address)


def lb_port(h: HostView, lb: Mapping[str, Any]) -> int:
    """``loadbalancer_apiserver.port | default(kube_apiserver_port)``: every rule set's
    port of the external LB."""
    return h.port("loadbalancer_apiserver.port", lb.get("port", h.port("kube_apiserver_port")))


def external_balancer(h: HostView, address: Callable[[HostView], str] = access_address
                      ) -> tuple[str, int, list[str]] | None:
    """The external LB as a rule set places it: its address, port and server lines
    (every master at ``address:kube_apiserver_port``), or None when none is defined."""
    lb = h.external_lb()
    if lb is None:
        return None
    return (str(lb["address"]), lb_port(h, lb),
            apiserver_urls(h, h.port("kube_apiserver_port"), address))


def local_lb_kind(h: HostView) -> str:
    """``loadbalancer_apiserver_type``, checked: ``nginx`` or ``haproxy``."""
    kind = str(h.var("loadbalancer_apiserver_type")).lower()
    if kind not in {"nginx", "haproxy"}:
        raise ScenarioError(
            f"expected nginx or haproxy, got {kind!r}",
            file=h.source,
            field=h.field("loadbalancer_apiserver_type"),
        )
    return kind


def no_warnings(views: Sequence[HostView], eps: Mapping[str, Endpoints]) -> list[str]:
    return []


@dataclass(frozen=True)
class CniAgent:
    """A CNI agent that is an apiserver client: its DaemonSet's name and the URL it uses."""

    agent: str
    url: str
    #: When ``url`` is the in-cluster ``kubernetes`` Service (``KUBERNETES_SERVICE_HOST``):
    #: the Service's endpoints, the apiservers at their advertised addresses.
    service_backends: tuple[str, ...] = ()


def no_cni(h: HostView) -> CniAgent | None:
    # The 2016 layouts' CNI agent is flannel on etcd (``flannel_etcd``).
    return None


@dataclass(frozen=True)
class RuleSet:
    """An endpoint rule set: variable defaults plus one function per question."""

    name: str
    summary: str
    defaults: Mapping[str, Any]
    apiserver: Callable[[HostView], str | None]
    local_lb: Callable[[HostView], LocalLB | None]
    etcd: Callable[[HostView], list[str]]
    etcd_proxy_backends: Callable[[HostView], list[str]]
    flannel_etcd: Callable[[HostView], str | None]
    etc_hosts: Callable[[HostView], list[str]]
    external_lb: Callable[[HostView], tuple[str, int, list[str]] | None]
    #: The hosts that run an etcd member, in the order clients are given them.
    etcd_hosts: Callable[[Cluster], tuple[Host, ...]] = etcd_group
    #: What the user should know about this inventory under these rules (one line each).
    warnings: Callable[[Sequence[HostView], Mapping[str, Endpoints]], list[str]] = no_warnings
    #: The CNI agent as an apiserver client: (agent, URL), or None.
    cni: Callable[[HostView], CniAgent | None] = no_cni


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


# --- evaluation ----------------------------------------------------------------------------

#: Variables that must hold an IP address when set (kubespray binds and signs them), and
#: the family they must be of (None: either).
_ADDRESS_VARS: Mapping[str, type | None] = {
    "ip": None,
    "access_ip": None,
    "ip6": ipaddress.IPv6Address,
    "access_ip6": ipaddress.IPv6Address,
}


def _check_addresses(host: Host, source: str) -> None:
    for name, family in _ADDRESS_VARS.items():
        value = host.var(name)
        if value is None:
            continue
        try:
            parsed = ipaddress.ip_address(str(value).strip())
        except ValueError:
            raise ScenarioError(
                f"{value!r} is not an IP address (kubespray binds and signs certificates "
                "for it; put a host name in ansible_host instead)",
                file=source, field=f"hostvars.{host.name}.{name}",
            ) from None
        if family is not None and not isinstance(parsed, family):
            raise ScenarioError(f"{value!r} is not an IPv6 address", file=source,
                                field=f"hostvars.{host.name}.{name}")


def _resolve(cluster: Any, rules: str | RuleSet | None) -> tuple[Cluster, RuleSet]:
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
    return cluster, rule_set


def _views(cluster: Cluster, rule_set: RuleSet) -> list[HostView]:
    views = []
    for host in cluster.hosts:
        _check_addresses(host, cluster.source)
        views.append(HostView(host, cluster, rule_set.defaults, cluster.source))
    return views


def _evaluate(cluster: Cluster, rule_set: RuleSet,
              views: Sequence[HostView]) -> dict[str, Endpoints]:
    out: dict[str, Endpoints] = {}
    etcd_hosts = {m.name for m in rule_set.etcd_hosts(cluster)}
    _fill(out, rule_set, views, etcd_hosts)
    return out


def _fill(out: dict[str, Endpoints], rule_set: RuleSet, views: Sequence[HostView],
          etcd_hosts: set[str]) -> None:
    for view in views:
        host = view.host
        lb = rule_set.local_lb(view)
        ext = rule_set.external_lb(view)
        agent = rule_set.cni(view)
        out[host.name] = Endpoints(
            host=host.name,
            roles=[r for r in ROLE_ORDER if r in host.groups]
            + sorted(g for g in host.groups if g not in ROLE_ORDER),
            apiserver=rule_set.apiserver(view),
            etcd=rule_set.etcd(view),
            etc_hosts=rule_set.etc_hosts(view),
            local_lb=lb.kind if lb else None,
            local_lb_backends=list(lb.backends) if lb else [],
            local_lb_listen=list(lb.listen) if lb else [],
            etcd_proxy_backends=rule_set.etcd_proxy_backends(view),
            flannel_etcd=rule_set.flannel_etcd(view),
            etcd_member=host.name in etcd_hosts,
            external_lb_backends=ext[2] if ext else [],
            external_lb_address=ext[0] if ext else None,
            external_lb_port=ext[1] if ext else None,
            cni_agent=agent.agent if agent else None,
            cni_apiserver=agent.url if agent else None,
            service_backends=list(agent.service_backends) if agent else [],
        )



def evaluate_endpoints(cluster: Any, rules: str | RuleSet | None = None) -> dict[str, Endpoints]:
    """Every host's :class:`Endpoints` under a rule set, in inventory order.

    ``cluster`` is a :class:`~hasim.kubespray.cluster.Cluster` or anything with a ``cluster``
    attribute that is one (a :class:`~hasim.spec.scenario.Scenario`). ``rules`` names the rule
    set; when None, a scenario's own rule set is used, else ``ha-mode-2016``. Raises
    :class:`ScenarioError` when the cluster cannot be evaluated: no master, an ``ip`` or
    ``access_ip`` that is not an address, or a malformed ``loadbalancer_apiserver``.
    """
    cluster, rule_set = _resolve(cluster, rules)
    # A cluster is immutable: its endpoints under a rule set are computed once.
    memo: dict[str, dict[str, Endpoints]] = cluster.__dict__.setdefault("_endpoints", {})
    key = f"{rule_set.name}@{id(rule_set)}"
    if key not in memo:
        memo[key] = _evaluate(cluster, rule_set, _views(cluster, rule_set))
    return dict(memo[key])


def endpoint_warnings(cluster: Any, rules: str | RuleSet | None = None) -> list[str]:
    """What a user should know about how kubespray treats this cluster under ``rules``:
    skipped hosts, names that must resolve through DNS, settings the code overrides.

    One sentence each, in a stable order; empty when there is nothing to say.
    """
    cluster, rule_set = _resolve(cluster, rules)
    eps = evaluate_endpoints(cluster, rule_set)  # computed once per cluster and rule set
    return rule_set.warnings(_views(cluster, rule_set), eps)


#: The per-host cells :func:`diff_endpoints` compares, in output order.
DIFF_FIELDS = ("roles", "apiserver", "etcd", "etc_hosts", "local_lb")


def diff_endpoints(cluster: Any, rules_a: str, rules_b: str) -> dict[str, dict[str, Any]]:
    """The host/field cells where two rule sets disagree, with both values.

    ``{HOST: {FIELD: {rules_a: value, rules_b: value}}}`` in inventory order, only hosts
    with a difference; values are in the JSON form of :meth:`Endpoints.as_dict`.
    """
    a = {h: e.as_dict() for h, e in evaluate_endpoints(cluster, rules_a).items()}
    b = {h: e.as_dict() for h, e in evaluate_endpoints(cluster, rules_b).items()}
    out: dict[str, dict[str, Any]] = {}
    for host, cells in a.items():
        diff = {f: {rules_a: cells[f], rules_b: b[host][f]}
                for f in DIFF_FIELDS if cells[f] != b[host][f]}
        if diff:
            out[host] = diff
    return out


# The rule sets register themselves; imported last because they build on the above.
from hasim.kubespray.rules import ha_mode_2016, kargo_2016_10, kubespray_2026_01  # noqa: E402

HA_MODE_2016: RuleSet = ha_mode_2016.RULE_SET
KARGO_2016_10: RuleSet = kargo_2016_10.RULE_SET
KUBESPRAY_2026_01: RuleSet = kubespray_2026_01.RULE_SET

__all__ = [
    "DEFAULT_RULES",
    "DIFF_FIELDS",
    "Endpoints",
    "ETCD",
    "HA_MODE_2016",
    "HostView",
    "KARGO_2016_10",
    "KUBESPRAY_2026_01",
    "LocalLB",
    "NODE",
    "RULES",
    "RuleSet",
    "ansible_bool",
    "diff_endpoints",
    "endpoint_warnings",
    "etcd_group",
    "evaluate_endpoints",
    "get_rules",
    "ipwrap",
    "register",
]
